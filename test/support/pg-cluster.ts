import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import postgres from 'postgres';

const run = promisify(execFile);

/**
 * The directory holding this machine's initdb, pg_ctl and postgres: `pg_config --bindir`, else the newest
 * /usr/lib/postgresql/N/bin (Debian's layout); undefined when there is none.
 */
export async function findPostgresBinaries(): Promise<string | undefined> {
  const hasServer = (dir: string) => ['initdb', 'pg_ctl', 'postgres'].every((name) => existsSync(join(dir, name)));
  try {
    const { stdout } = await run('pg_config', ['--bindir']);
    const dir = stdout.trim();
    if (hasServer(dir)) return dir;
  } catch {
    // No pg_config on PATH: look where Debian and Ubuntu put the server.
  }
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((name) => /^\d+$/.test(name))
    .sort((a, b) => Number(b) - Number(a));
  return versions.map((version) => join(root, version, 'bin')).find(hasServer);
}

/** Why tests on a throwaway cluster cannot run here, or null when they can. */
export async function throwawayClusterSkipReason(): Promise<string | null> {
  if (!process.env.TEST_DATABASE_URL) return 'skipped: TEST_DATABASE_URL is not set';
  if (!(await findPostgresBinaries())) return 'skipped: no PostgreSQL server binaries (initdb, pg_ctl) on this machine';
  return null;
}

export interface PgCluster {
  /** postgres://postgres@127.0.0.1:PORT/postgres */
  url: string;
  port: number;
  /** Starts the server and waits until it accepts connections. */
  start(): Promise<void>;
  /** Fast shutdown: open sessions are terminated, the server waits for nothing. */
  stop(): Promise<void>;
  restart(): Promise<void>;
  /** pg_terminate_backend on every client backend but the caller's; resolves with how many were terminated. */
  terminateBackends(): Promise<number>;
  /** Stops the server (if running) and deletes its directory. */
  destroy(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/**
 * A PostgreSQL cluster of its own in a temporary directory, on a free port, with trust authentication, for tests
 * that stop, restart or cut off the database (never the shared server the other tests use). initdb refuses to
 * run as root, so as root the server runs as the `postgres` OS user.
 */
export async function createPgCluster(): Promise<PgCluster> {
  const bin = await findPostgresBinaries();
  if (!bin) throw new Error('no PostgreSQL server binaries (initdb, pg_ctl) found');
  const asRoot = userInfo().uid === 0;
  const dir = await mkdtemp(join(tmpdir(), 'stepcast-pg-'));
  const dataDir = join(dir, 'data');
  const logFile = join(dir, 'server.log');
  if (asRoot) {
    const { stdout } = await run('id', ['-u', 'postgres']);
    const { stdout: gid } = await run('id', ['-g', 'postgres']);
    await chown(dir, Number(stdout.trim()), Number(gid.trim()));
  }
  const pg = async (tool: string, args: string[]) => {
    const command = join(bin, tool);
    const { stdout } = asRoot
      ? await run('runuser', ['-u', 'postgres', '--', command, ...args])
      : await run(command, args);
    return stdout;
  };
  const port = await freePort();
  await pg('initdb', ['-D', dataDir, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8']);
  // Its own socket directory, so that it never collides with (or reaches) the machine's server.
  const serverOptions = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100`;
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  let running = false;

  const cluster: PgCluster = {
    url,
    port,
    start: async () => {
      await pg('pg_ctl', ['start', '-w', '-t', '60', '-D', dataDir, '-l', logFile, '-o', serverOptions]);
      running = true;
    },
    stop: async () => {
      await pg('pg_ctl', ['stop', '-w', '-t', '60', '-m', 'fast', '-D', dataDir]);
      running = false;
    },
    restart: async () => {
      await cluster.stop();
      await cluster.start();
    },
    terminateBackends: async () => {
      const admin = postgres(url, { max: 1, onnotice: () => undefined });
      try {
        const rows = await admin<{ terminated: boolean }[]>`
          SELECT pg_terminate_backend(pid) AS terminated FROM pg_stat_activity
          WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'`;
        return rows.filter((row) => row.terminated).length;
      } finally {
        await admin.end();
      }
    },
    destroy: async () => {
      if (running) await pg('pg_ctl', ['stop', '-w', '-t', '60', '-m', 'immediate', '-D', dataDir]).catch(() => undefined);
      running = false;
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    await cluster.start();
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  return cluster;
}
