import { createHash } from 'node:crypto';
import { cp, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inject } from 'vitest';
import { openDatabase } from '../../src/db/client.js';

/**
 * A PGlite directory made by initdb and migrated costs seconds of CPU (most of a test server's start);
 * a copy costs a few milliseconds. The global setup (test/support/global-setup.ts) migrates one template
 * per run through the service's own openDatabase, and every PGlite the tests start begins as a copy of it:
 * the service then runs its migrations as always, and they find nothing to do.
 */

declare module 'vitest' {
  export interface ProvidedContext {
    /** The migrated PGlite directory to copy, and the hash of drizzle/ it was migrated from. */
    pgliteTemplate: { dir: string; migrationsHash: string } | null;
  }
}

const migrationsFolder = fileURLToPath(new URL('../../drizzle', import.meta.url));

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name))
    .sort();
}

/** The hash of every file in drizzle/ (names and contents): a template from other migrations is not used. */
export async function migrationsHash(): Promise<string> {
  const hash = createHash('sha256');
  for (const file of await filesUnder(migrationsFolder)) {
    hash.update(relative(migrationsFolder, file)).update('\0').update(await readFile(file)).update('\0');
  }
  return hash.digest('hex').slice(0, 16);
}

/** Migrates a new PGlite directory under the OS temp dir; remove() deletes it. */
export async function buildPgliteTemplate(): Promise<{ dir: string; migrationsHash: string; remove(): Promise<void> }> {
  const hash = await migrationsHash();
  const root = await mkdtemp(join(tmpdir(), `stepcast-template-${hash}-`));
  const dir = join(root, 'data');
  try {
    const database = await openDatabase({ kind: 'pglite', dataDir: dir, maxMemoryMb: 512 });
    // Closing releases the data-dir lock (stepcast.lock), so the copies start unlocked.
    await database.close();
  } catch (error) {
    await rm(root, { recursive: true, force: true });
    throw error;
  }
  return { dir, migrationsHash: hash, remove: () => rm(root, { recursive: true, force: true }) };
}

/**
 * Fills `dataDir` (new or empty) with a copy of the run's migrated template. Without a template, or when
 * drizzle/ changed since it was made (watch mode), it does nothing and the service migrates from scratch.
 */
export async function seedPgliteDataDir(dataDir: string): Promise<void> {
  const template = inject('pgliteTemplate');
  if (!template || template.migrationsHash !== (await migrationsHash())) return;
  // Entry by entry: Node 22 and later refuse to copy a directory onto one that exists with errorOnExist (Node 20 merged).
  for (const name of await readdir(template.dir)) {
    await cp(join(template.dir, name), join(dataDir, name), { recursive: true, errorOnExist: true, force: false });
  }
}
