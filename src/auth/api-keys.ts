import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * API keys read `sc_<id>_<secret>`: the id (12 lowercase letters and digits) names the key in lists
 * and revocations; the secret (32 random bytes, base64url) is shown once and stored only as SHA-256.
 * A key this random needs no slow hash: nobody can guess their way to a preimage.
 */
const KEY_PATTERN = /^sc_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$/;
const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

export interface GeneratedApiKey {
  id: string;
  /** The whole key, to hand to the client once. */
  token: string;
  secretHash: string;
}

export function generateApiKey(): GeneratedApiKey {
  const idBytes = randomBytes(12);
  const id = Array.from(idBytes, (byte) => ID_ALPHABET[byte % ID_ALPHABET.length]).join('');
  const secret = randomBytes(32).toString('base64url');
  return { id, token: `sc_${id}_${secret}`, secretHash: hashSecret(secret) };
}

export function parseApiKey(token: string): { id: string; secret: string } | null {
  const match = KEY_PATTERN.exec(token);
  return match ? { id: match[1]!, secret: match[2]! } : null;
}

export function looksLikeApiKey(token: string): boolean {
  return token.startsWith('sc_');
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

export function secretMatches(secret: string, storedHash: string): boolean {
  const actual = Buffer.from(hashSecret(secret), 'hex');
  const expected = Buffer.from(storedHash, 'hex');
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}
