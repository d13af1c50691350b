import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { lockDataDir } from './data-dir-lock.js';
import { PgliteWorkerClient } from './pglite-client.js';

/** An embedded database whose directory is locked and whose worker is up, not migrated yet. */
export interface OpenedPgliteDirectory {
  client: PgliteWorkerClient;
  unlock(): Promise<void>;
}

/**
 * A pristine cluster (PGlite's initdb, nothing else) that `npm run build` makes beside the built code, with the PGlite
 * version that made it. Run from the source, there is none, and PGlite runs initdb itself.
 */
const initdbTemplate = fileURLToPath(new URL('../pglite-initdb', import.meta.url));
const initdbTemplateVersion = fileURLToPath(new URL('../pglite-initdb.json', import.meta.url));

/**
 * Locks the data directory and starts PGlite on it in its worker thread. It imports nothing heavy, so that
 * `src/main.ts` can start it before it loads the rest of the service: PGlite boots in its thread while the
 * main thread loads the modules (openDatabase migrates once both are done).
 */
export async function openPgliteDirectory(dataDir: string): Promise<OpenedPgliteDirectory> {
  await mkdir(dataDir, { recursive: true });
  const unlock = await lockDataDir(dataDir);
  try {
    await copyInitdbTemplate(dataDir);
    return { client: await PgliteWorkerClient.open(dataDir), unlock };
  } catch (error) {
    await unlock();
    throw error;
  }
}

/**
 * A directory without a cluster (no PG_VERSION, which is what PGlite looks for) starts as a copy of the build's
 * pristine one: PGlite's initdb takes about 3.5 s of CPU, a copy a fraction of a second. Without a usable template
 * (none, another PGlite's, or one the copy fails on) PGlite runs initdb itself: slower, never a failed start.
 */
async function copyInitdbTemplate(dataDir: string): Promise<void> {
  if (existsSync(join(dataDir, 'PG_VERSION'))) return;
  const made = await readFile(initdbTemplateVersion, 'utf8').then(
    (text) => (JSON.parse(text) as { pgliteVersion?: string }).pgliteVersion,
    () => undefined,
  );
  if (made === undefined || made !== (await installedPgliteVersion())) return;
  await copyTemplateCluster(initdbTemplate, dataDir);
}

/**
 * Copies the cluster in `template` into `dataDir`, if it is whole (PG_VERSION, which the build writes last, is in
 * it). PG_VERSION is copied last too, so that a copy cut short is made again at the next start. A copy that fails
 * is removed (what it copied; the lock file stays) so that PGlite's own initdb starts on a clean directory. Says
 * whether it copied.
 */
export async function copyTemplateCluster(template: string, dataDir: string): Promise<boolean> {
  if (!existsSync(join(template, 'PG_VERSION'))) return false;
  let names: string[] = [];
  try {
    names = await readdir(template);
    await copyTree(template, dataDir, (name) => name !== 'PG_VERSION');
    await copyFile(join(template, 'PG_VERSION'), join(dataDir, 'PG_VERSION'));
    return true;
  } catch {
    await Promise.all(names.map((name) => rm(join(dataDir, name), { recursive: true, force: true })));
    return false;
  }
}

/**
 * Copies a directory's files (about a thousand, 40 MB) all at once, as libuv's threads can: fs.cp goes one file
 * after another through JavaScript, and took 1 to 3.5 s of a loaded 2-core machine where this takes a fifth of it.
 */
async function copyTree(from: string, to: string, include: (name: string) => boolean = () => true): Promise<void> {
  await mkdir(to, { recursive: true });
  const entries = (await readdir(from, { withFileTypes: true })).filter((entry) => include(entry.name));
  await Promise.all(
    entries.map((entry) =>
      entry.isDirectory() ? copyTree(join(from, entry.name), join(to, entry.name)) : copyFile(join(from, entry.name), join(to, entry.name)),
    ),
  );
}

async function installedPgliteVersion(): Promise<string | undefined> {
  const entry = createRequire(import.meta.url).resolve('@electric-sql/pglite');
  const root = /^(.*[\\/]@electric-sql[\\/]pglite)[\\/]/.exec(entry)?.[1];
  if (!root) return undefined;
  return (JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { version?: string }).version;
}
