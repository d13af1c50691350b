import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const ALGORITHM = 'aes-256-gcm';
const VERSION = 'v1';
export const KEY_FILE_NAME = 'stepcast.key';

export class SecretsError extends Error {
  override name = 'SecretsError';
}

/**
 * Encrypts small secrets (tenant API credentials) at rest with AES-256-GCM. Each value is bound to
 * a context (the tenant id) as additional data, so a ciphertext copied onto another row does not open.
 */
export class SecretBox {
  /** The first bytes of the key's SHA-256: a value sealed under another key is reported as such. */
  readonly keyId: string;

  constructor(private readonly key: Buffer) {
    if (key.length !== 32) throw new SecretsError('the encryption key must be 32 bytes');
    this.keyId = createHash('sha256').update(key).digest('hex').slice(0, 8);
  }

  seal(plaintext: string, context: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv(ALGORITHM, this.key, iv);
    cipher.setAAD(Buffer.from(context, 'utf8'));
    const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    const tag = cipher.getAuthTag();
    return [VERSION, this.keyId, iv.toString('base64url'), tag.toString('base64url'), ciphertext.toString('base64url')].join(':');
  }

  open(sealed: string, context: string): string {
    const [version, keyId, iv, tag, ciphertext, ...rest] = sealed.split(':');
    if (version !== VERSION || !keyId || !iv || !tag || ciphertext === undefined || rest.length > 0) {
      throw new SecretsError('not a sealed secret');
    }
    if (keyId !== this.keyId) {
      throw new SecretsError(`the secret was sealed with another key (${keyId}); this service's key is ${this.keyId}`);
    }
    try {
      const decipher = createDecipheriv(ALGORITHM, this.key, Buffer.from(iv, 'base64url'));
      decipher.setAAD(Buffer.from(context, 'utf8'));
      decipher.setAuthTag(Buffer.from(tag, 'base64url'));
      return Buffer.concat([decipher.update(Buffer.from(ciphertext, 'base64url')), decipher.final()]).toString('utf8');
    } catch {
      throw new SecretsError('the secret does not open: it was tampered with or belongs to another tenant');
    }
  }

  sealJson(value: unknown, context: string): string {
    return this.seal(JSON.stringify(value), context);
  }

  openJson<T>(sealed: string, context: string): T {
    return JSON.parse(this.open(sealed, context)) as T;
  }
}

/**
 * The configured key, or (outside production, where the config refuses to start without one) a key
 * kept in `<dataDir>/stepcast.key`, created with mode 0600 on first start.
 */
export async function loadSecretBox(
  configuredKey: Buffer | undefined,
  dataDir: string,
): Promise<{ box: SecretBox; source: 'config' | 'key-file' }> {
  if (configuredKey) return { box: new SecretBox(configuredKey), source: 'config' };
  await mkdir(dataDir, { recursive: true });
  const path = join(dataDir, KEY_FILE_NAME);
  try {
    await writeFile(path, randomBytes(32).toString('base64'), { flag: 'wx', mode: 0o600 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  const key = Buffer.from((await readFile(path, 'utf8')).trim(), 'base64');
  if (key.length !== 32) throw new SecretsError(`${KEY_FILE_NAME} in the data directory does not hold a 32-byte key`);
  return { box: new SecretBox(key), source: 'key-file' };
}
