import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { link, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AdminError } from './tenants.js';

export const ADMIN_TOKEN_FILE_NAME = 'stepcast.admin-token';
/** Reads of an empty token file before it counts as empty (50 ms apart). */
const EMPTY_TOKEN_RETRIES = 10;

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
  // Written whole under another name, then linked in place (link fails if the file exists): a process starting at the
  // same time finds no file or the whole token, never an empty file.
  const temporary = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const token = `${randomBytes(32).toString('base64url')}\n`;
  try {
    await writeFile(temporary, token, { flag: 'wx', mode: 0o600 });
    await link(temporary, path).catch(async (error: unknown) => {
      const code = (error as NodeJS.ErrnoException).code;
      // A file system without hard links: created and written in two steps; a concurrent reader retries.
      if (code === 'EPERM' || code === 'ENOTSUP' || code === 'ENOSYS') await writeFile(path, token, { flag: 'wx', mode: 0o600 });
      else throw error;
    });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  } finally {
    await rm(temporary, { force: true });
  }
  const stored = await readTokenFile(path);
  if (!stored) throw new Error(`the admin token file ${path} is empty: delete it and start again to make a new one`);
  return { token: stored, source: 'token-file' };
}

/** Retries briefly: one written by an older version (created empty, then written) may be read in between. */
async function readTokenFile(path: string): Promise<string | undefined> {
  for (let attempt = 0; ; attempt++) {
    const token = (await readFile(path, 'utf8')).trim();
    if (token || attempt >= EMPTY_TOKEN_RETRIES) return token || undefined;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** What the admin CLI sends: STEPCAST_ADMIN_TOKEN, else the token file of the data directory, if it can read it. */
export async function readAdminToken(configuredToken: string | undefined, dataDir: string): Promise<string | undefined> {
  if (configuredToken) return configuredToken;
  const path = join(dataDir, ADMIN_TOKEN_FILE_NAME);
  try {
    return await readTokenFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw new AdminError(
      `cannot read the admin token file ${path} (${code ?? String(error)}): run as its owner, or set STEPCAST_ADMIN_TOKEN`,
    );
  }
}

/** Constant-time: both sides are hashed first, so neither their contents nor their lengths show in the timing. */
export function adminTokenMatches(given: string, expected: string): boolean {
  const digest = (text: string) => createHash('sha256').update(text, 'utf8').digest();
  return timingSafeEqual(digest(given), digest(expected));
}
