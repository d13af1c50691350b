import { randomBytes } from 'node:crypto';
import { mkdir, readFile, realpath, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Config } from '../config.js';
import { isProcessAlive } from '../db/data-dir-lock.js';

export const SERVER_RECORD_FILE_NAME = 'stepcast.server.json';

/**
 * Which database a process works on: the embedded one's directory, or a PostgreSQL server's host, port and database
 * (never its user or password). The CLI uses a recorded server only when it names the database the CLI would open.
 */
export type DatabaseIdentity = { kind: 'pglite'; dataDir: string } | { kind: 'postgres'; host: string; port: number; database: string };

/** Where a running server listens, kept in its data directory so that `npm run admin` can find it. */
export interface ServerRecord {
  pid: number;
  /** Random for each start: tells this server from whatever listens on its port after it is gone (GET /admin/instance). */
  instanceId: string;
  /** The GraphQL URL; the admin API is at /admin/ on the same origin. */
  url: string;
  /** false: the server runs without an admin token (production without STEPCAST_ADMIN_TOKEN). */
  adminApi: boolean;
  database: DatabaseIdentity;
}

/** A new instance id, for a server about to start. */
export function newInstanceId(): string {
  return randomBytes(16).toString('base64url');
}

async function canonicalPath(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch {
    return resolve(path);
  }
}

/** The database a configuration names; undefined for a PostgreSQL URL it cannot read (then nothing matches it). */
export async function databaseIdentity(database: Config['database']): Promise<DatabaseIdentity | undefined> {
  if (database.kind === 'pglite') return { kind: 'pglite', dataDir: await canonicalPath(database.dataDir ?? '.') };
  let url: URL;
  try {
    url = new URL(database.url);
  } catch {
    return undefined;
  }
  const host = decodeURIComponent(url.hostname).toLowerCase();
  // Several hosts, or a host given elsewhere (a socket in ?host=): not compared, so never taken for the same.
  if (!host || host.includes(',') || url.searchParams.has('host')) return undefined;
  const name = decodeURIComponent(url.pathname.replace(/^\//, '')) || decodeURIComponent(url.username) || 'postgres';
  return { kind: 'postgres', host: host.replace(/^\[|\]$/g, ''), port: Number(url.port || 5432), database: name };
}

export function sameDatabase(a: DatabaseIdentity | undefined, b: DatabaseIdentity | undefined): boolean {
  if (!a || !b) return false;
  if (a.kind === 'pglite' && b.kind === 'pglite') return a.dataDir === b.dataDir;
  if (a.kind === 'postgres' && b.kind === 'postgres') return a.host === b.host && a.port === b.port && a.database === b.database;
  return false;
}

/**
 * Writes the record (to a temporary file renamed over it: a reader sees the old record or the new one, never half of
 * one); the function it returns removes it, unless another process has written its own since.
 */
export async function recordRunningServer(dataDir: string, record: Omit<ServerRecord, 'pid'>): Promise<() => Promise<void>> {
  const path = join(dataDir, SERVER_RECORD_FILE_NAME);
  await mkdir(dataDir, { recursive: true });
  const temporary = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(temporary, `${JSON.stringify({ pid: process.pid, ...record })}\n`);
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
  return () => forgetServer(dataDir, { pid: process.pid, instanceId: record.instanceId });
}

/** Removes the record if it still names that server (not one started since). */
export async function forgetServer(dataDir: string, server: Pick<ServerRecord, 'pid' | 'instanceId'>): Promise<void> {
  const path = join(dataDir, SERVER_RECORD_FILE_NAME);
  const current = await readServerRecord(path);
  if (current?.pid === server.pid && current.instanceId === server.instanceId) await rm(path, { force: true });
}

function isDatabaseIdentity(value: unknown): value is DatabaseIdentity {
  const identity = value as Partial<Record<string, unknown>> | null;
  if (typeof identity !== 'object' || identity === null) return false;
  if (identity.kind === 'pglite') return typeof identity.dataDir === 'string';
  return identity.kind === 'postgres' && typeof identity.host === 'string' && typeof identity.port === 'number' && typeof identity.database === 'string';
}

async function readServerRecord(path: string): Promise<ServerRecord | undefined> {
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as Partial<ServerRecord>;
    if (typeof parsed.pid !== 'number' || typeof parsed.url !== 'string' || typeof parsed.instanceId !== 'string') return undefined;
    // A record without the database it serves (an older server's) names none: the CLI goes to its own database.
    if (!isDatabaseIdentity(parsed.database)) return undefined;
    return { pid: parsed.pid, instanceId: parsed.instanceId, url: parsed.url, adminApi: parsed.adminApi !== false, database: parsed.database };
  } catch {
    return undefined;
  }
}

/**
 * The server recorded in this data directory, if its process lives. A live pid is not proof (after a SIGKILL, pid 1
 * of a container is another process): the CLI checks the instance id at the URL before it relies on the record.
 */
export async function findRunningServer(dataDir: string): Promise<ServerRecord | undefined> {
  const record = await readServerRecord(join(dataDir, SERVER_RECORD_FILE_NAME));
  return record && record.pid !== process.pid && isProcessAlive(record.pid) ? record : undefined;
}
