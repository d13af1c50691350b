import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const ADMIN_TOKEN_FILE_NAME = 'stepcast.admin-token';

/**
 * The credential of the admin API: STEPCAST_ADMIN_TOKEN, or (outside production) a token kept in
 * `<dataDir>/stepcast.admin-token`, made with mode 0600 on first start like the encryption key file.
 * undefined: the admin API is off (production without STEPCAST_ADMIN_TOKEN).
 */
export async function loadAdminToken(
  configuredToken: string | undefined,
  dataDir: string,
  { production }: { production: boolean },
): Promise<{ token: string; source: 'config' | 'token-file' } | undefined> {
  if (configuredToken) return { token: configuredToken, source: 'config' };
  if (production) return undefined;
  await mkdir(dataDir, { recursive: true });
  const path = join(dataDir, ADMIN_TOKEN_FILE_NAME);
  try {
    await writeFile(path, `${randomBytes(32).toString('base64url')}\n`, { flag: 'wx', mode: 0o600 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  return { token: (await readFile(path, 'utf8')).trim(), source: 'token-file' };
}

/** What the admin CLI sends: STEPCAST_ADMIN_TOKEN, else the token file of the data directory, if it can read it. */
export async function readAdminToken(configuredToken: string | undefined, dataDir: string): Promise<string | undefined> {
  if (configuredToken) return configuredToken;
  try {
    return (await readFile(join(dataDir, ADMIN_TOKEN_FILE_NAME), 'utf8')).trim() || undefined;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** Constant-time: both sides are hashed first, so neither their contents nor their lengths show in the timing. */
export function adminTokenMatches(given: string, expected: string): boolean {
  const digest = (text: string) => createHash('sha256').update(text, 'utf8').digest();
  return timingSafeEqual(digest(given), digest(expected));
}
