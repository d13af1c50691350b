import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const LOCK_FILE = 'stepcast.lock';
const heldHere = new Set<string>();

export class DataDirInUseError extends Error {
  override name = 'DataDirInUseError';
}

/** Whether a process with this pid exists (EPERM: it does, and belongs to another user). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * An embedded database belongs to one process: two processes writing one PGlite directory corrupt it.
 * The lock file holds the owner's pid; a lock whose process is gone (a crash) is taken over.
 */
export async function lockDataDir(dataDir: string): Promise<() => Promise<void>> {
  const path = join(dataDir, LOCK_FILE);
  for (let attempt = 0; attempt < 3; attempt++) {
    if (heldHere.has(path)) throw new DataDirInUseError(`the data directory ${dataDir} is already open in this process`);
    try {
      await writeFile(path, String(process.pid), { flag: 'wx' });
      heldHere.add(path);
      return async () => {
        heldHere.delete(path);
        await rm(path, { force: true });
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const owner = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
    if (Number.isInteger(owner) && owner !== process.pid && isProcessAlive(owner)) {
      throw new DataDirInUseError(
        `the data directory ${dataDir} is in use by process ${owner}: stop it first, or use PostgreSQL (DATABASE_URL) to share a database`,
      );
    }
    await rm(path, { force: true });
  }
  throw new DataDirInUseError(`could not lock the data directory ${dataDir}`);
}
