import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generateApiKey, parseApiKey, secretMatches } from '../src/auth/api-keys.js';
import { KEY_FILE_NAME, loadSecretBox, SecretBox, SecretsError } from '../src/auth/secrets.js';

describe('SecretBox', () => {
  const box = new SecretBox(randomBytes(32));

  it('opens what it sealed for the same tenant, and never shows the plaintext', () => {
    const sealed = box.sealJson({ authorization: 'Bearer s3cret' }, 'acme');
    expect(sealed).not.toContain('s3cret');
    expect(box.openJson(sealed, 'acme')).toEqual({ authorization: 'Bearer s3cret' });
    expect(box.seal('same', 'acme')).not.toBe(box.seal('same', 'acme'));
  });

  it('refuses a value moved to another tenant, tampered with, or sealed under another key', () => {
    const sealed = box.seal('s3cret', 'acme');
    expect(() => box.open(sealed, 'other')).toThrow(SecretsError);
    const parts = sealed.split(':');
    const body = Buffer.from(parts[4]!, 'base64url');
    body[0]! ^= 1;
    parts[4] = body.toString('base64url');
    expect(() => box.open(parts.join(':'), 'acme')).toThrow(/tampered/);
    expect(() => new SecretBox(randomBytes(32)).open(sealed, 'acme')).toThrow(/another key/);
    expect(() => box.open('plain text', 'acme')).toThrow(/not a sealed secret/);
  });
});

describe('the development key file', () => {
  const dirs: string[] = [];
  afterAll(async () => Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true }))));

  it('is created once with mode 0600 and reused, and a configured key wins', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stepcast-key-'));
    dirs.push(dir);
    const first = await loadSecretBox(undefined, dir);
    const second = await loadSecretBox(undefined, dir);
    expect(first.source).toBe('key-file');
    expect(second.box.keyId).toBe(first.box.keyId);
    expect((await stat(join(dir, KEY_FILE_NAME))).mode & 0o777).toBe(0o600);
    expect(Buffer.from(await readFile(join(dir, KEY_FILE_NAME), 'utf8'), 'base64')).toHaveLength(32);
    const configured = await loadSecretBox(randomBytes(32), dir);
    expect(configured.source).toBe('config');
    expect(configured.box.keyId).not.toBe(first.box.keyId);
  });
});

describe('API keys', () => {
  it('are random, parse back, and match only their own secret', () => {
    const a = generateApiKey();
    const b = generateApiKey();
    expect(a.token).not.toBe(b.token);
    const parsed = parseApiKey(a.token)!;
    expect(parsed.id).toBe(a.id);
    expect(secretMatches(parsed.secret, a.secretHash)).toBe(true);
    expect(secretMatches(parseApiKey(b.token)!.secret, a.secretHash)).toBe(false);
    expect(a.secretHash).not.toContain(parsed.secret);
    for (const malformed of ['', 'sc_', `sc_${a.id}`, a.token.slice(0, -1), `${a.token}x`, a.token.toUpperCase()]) {
      expect(parseApiKey(malformed), malformed).toBeNull();
    }
  });
});
