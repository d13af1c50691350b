import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const SERVER_RECORD_FILE_NAME = 'stepcast.server.json';

/** Where a running server listens, kept in its data directory so that `npm run admin` can find it. */
export interface ServerRecord {
  pid: number;
  /** The GraphQL URL; the admin API is at /admin/ on the same origin. */
  url: string;
  /** false: the server runs without an admin token (production without STEPCAST_ADMIN_TOKEN). */
  adminApi: boolean;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Writes the record; the function it returns removes it, unless another process has written its own since. */
export async function recordRunningServer(dataDir: string, record: Omit<ServerRecord, 'pid'>): Promise<() => Promise<void>> {
  const path = join(dataDir, SERVER_RECORD_FILE_NAME);
  await mkdir(dataDir, { recursive: true });
  await writeFile(path, `${JSON.stringify({ pid: process.pid, ...record })}\n`);
  return async () => {
    const current = await readServerRecord(path);
    if (current?.pid === process.pid) await rm(path, { force: true });
  };
}

async function readServerRecord(path: string): Promise<ServerRecord | undefined> {
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as Partial<ServerRecord>;
    if (typeof parsed.pid !== 'number' || typeof parsed.url !== 'string') return undefined;
    return { pid: parsed.pid, url: parsed.url, adminApi: parsed.adminApi !== false };
  } catch {
    return undefined;
  }
}

/** The server that runs on this data directory now: a record whose process is gone (a crash) is no server. */
export async function findRunningServer(dataDir: string): Promise<ServerRecord | undefined> {
  const record = await readServerRecord(join(dataDir, SERVER_RECORD_FILE_NAME));
  return record && record.pid !== process.pid && isAlive(record.pid) ? record : undefined;
}
