import { mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { PGlite } from '@electric-sql/pglite';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator';
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js';
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import type { Config } from '../config.js';
import { lockDataDir } from './data-dir-lock.js';
import { DatabaseQueryError, PgliteWorkerClient, StatementTimeoutError } from './pglite-client.js';
import { approximateRowBytes } from './row-bytes.mjs';
import * as tables from './tables.js';

export type Db = PgDatabase<PgQueryResultHKT, typeof tables>;

export interface ReadOnlyQuery {
  sql: string;
  params: string[];
  timeoutMs: number;
  /** Stop reading once the rows read so far add up to this many bytes (JSON text, roughly); default unlimited. */
  maxBytes?: number;
  /** The only schema unqualified names resolve in (besides pg_catalog, which Postgres always adds). */
  searchPath: string;
  /**
   * The database role the statement runs as (SET LOCAL ROLE): a tenant's tenants.db_role, which may
   * only read its schema. Without it the statement runs as the service's own role, which reads
   * everything; only the service's own reads (introspection, the demo API) may leave it out.
   */
  role?: string;
}

/**
 * What every read-only statement starts with, after READ ONLY: the role, then the search path. Both are
 * SET LOCAL, so they end with the transaction (commit or rollback) and a pooled connection carries
 * neither to the next statement.
 */
function transactionSettings(query: ReadOnlyQuery): string[] {
  return [
    ...(query.role === undefined ? [] : [`SET LOCAL ROLE ${quoteIdentifier(query.role)}`]),
    `SET LOCAL search_path TO ${quoteIdentifier(query.searchPath)}`,
  ];
}

export interface ExecutionLease {
  release(): Promise<void>;
}

export interface ResultColumn {
  name: string;
  typeOid: number;
}

export interface ReadOnlyResult {
  rows: Record<string, unknown>[];
  columns: ResultColumn[];
  /** True when maxBytes stopped the read before the last row. */
  truncatedByBytes: boolean;
}


export interface Database {
  kind: 'pglite' | 'postgres';
  db: Db;
  /** Runs one statement in a READ ONLY transaction; throws StatementTimeoutError or DatabaseQueryError. */
  runReadOnly(query: ReadOnlyQuery): Promise<ReadOnlyResult>;
  /**
   * Exclusive right to run one execution, held until released: null when another process holds it.
   * On PostgreSQL a session advisory lock on a reserved connection, so it ends when that process dies.
   */
  acquireExecutionLease(executionId: string): Promise<ExecutionLease | null>;
  /** Whether the database answers a trivial query within timeoutMs (the query itself is not cancelled). */
  ping(timeoutMs: number): Promise<boolean>;
  /** Runs several statements (DDL, bulk loads) in one transaction. */
  runScriptInTransaction(script: string): Promise<void>;
  /** Waits up to graceMs for statements in progress, then closes (PGlite must be closed, or its next start recovers). */
  close(graceMs?: number): Promise<void>;
}

export { DatabaseQueryError, StatementTimeoutError };

const migrationsFolder = fileURLToPath(new URL('../../drizzle', import.meta.url));
const MIGRATION_LOCK_KEY = 4_242_001;

// Returned as Postgres prints them, so that both drivers hand the same text to records.ts (int8, numeric, dates, times).
const RAW_TEXT_TYPE_OIDS = [20, 1700, 1082, 1083, 1114, 1184, 1186, 1182, 1115, 1185, 1187];

export function quoteIdentifier(identifier: string): string {
  return `"${identifier.replaceAll('"', '""')}"`;
}

function pingWith(query: () => Promise<unknown>): (timeoutMs: number) => Promise<boolean> {
  return async (timeoutMs) => {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        query().then(() => true),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
      ]);
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  };
}

export async function openDatabase(
  database: Config['database'],
  { leaseConnections = 4 }: { leaseConnections?: number } = {},
): Promise<Database> {
  return database.kind === 'pglite'
    ? openPglite(database.dataDir ?? './data')
    : openPostgres(database.url, database.poolSize, leaseConnections);
}

async function openPglite(dataDir: string): Promise<Database> {
  await mkdir(dataDir, { recursive: true });
  const unlock = await lockDataDir(dataDir);
  let pending: PgliteWorkerClient | undefined;
  let db: Db;
  try {
    pending = await PgliteWorkerClient.open(dataDir);
    db = drizzlePglite({ client: pending as unknown as PGlite, schema: tables }) as unknown as Db;
    await migratePglite(db as never, { migrationsFolder });
  } catch (error) {
    await pending?.close();
    await unlock();
    throw error;
  }
  const client = pending;
  const rawTypes = Object.fromEntries(RAW_TEXT_TYPE_OIDS.map((oid) => [oid, true]));
  return {
    kind: 'pglite',
    db,
    runReadOnly: (query) =>
      client.transaction(async (tx) => {
        await tx.query('SET TRANSACTION READ ONLY');
        for (const setting of transactionSettings(query)) await tx.query(setting);
        const result = await tx.query<Record<string, unknown>>(query.sql, query.params, {
          parsers: rawTypes,
          timeoutMs: query.timeoutMs,
          maxBytes: query.maxBytes,
        });
        return {
          rows: result.rows,
          columns: result.fields.map((f) => ({ name: f.name, typeOid: f.dataTypeID })),
          truncatedByBytes: result.truncatedByBytes ?? false,
        };
      }),
    ping: pingWith(() => client.query('SELECT 1')),
    // A PGlite data directory belongs to one process, so there is nobody to share executions with.
    acquireExecutionLease: async () => ({ release: async () => undefined }),
    runScriptInTransaction: async (script) => {
      await client.execInTransaction(script);
    },
    close: async (graceMs) => {
      await client.close(graceMs);
      await unlock();
    },
  };
}

async function openPostgres(url: string, poolSize: number, leaseConnections: number): Promise<Database> {
  await runMigrationsOnPostgres(url);
  const client = postgres(url, { max: poolSize, onnotice: () => undefined });
  // Leases hold a connection for a whole run; their own pool keeps them from starving every other query.
  const leaseClient = postgres(url, { max: leaseConnections, onnotice: () => undefined });
  const db = drizzlePostgres({ client, schema: tables }) as unknown as Db;
  return {
    kind: 'postgres',
    db,
    runReadOnly: async (query) => {
      try {
        return await client.begin('read only', async (tx) => {
          await tx.unsafe(`SET LOCAL statement_timeout = ${Math.max(1, Math.floor(query.timeoutMs))}`);
          for (const setting of transactionSettings(query)) await tx.unsafe(setting);
          return readWithCursor(client, tx, query);
        });
      } catch (error) {
        throw toDatabaseError(error, query.timeoutMs);
      }
    },
    ping: pingWith(() => client`SELECT 1`),
    acquireExecutionLease: async (executionId) => {
      const [high, low] = advisoryLockKeys(executionId);
      const connection = await leaseClient.reserve();
      try {
        const [row] = await connection`SELECT pg_try_advisory_lock(${high}, ${low}) AS acquired`;
        if (row?.acquired) {
          return {
            release: async () => {
              try {
                await connection`SELECT pg_advisory_unlock(${high}, ${low})`;
              } finally {
                connection.release();
              }
            },
          };
        }
      } catch (error) {
        connection.release();
        throw error;
      }
      connection.release();
      return null;
    },
    runScriptInTransaction: async (script) => {
      await client.begin((tx) => tx.unsafe(script));
    },
    close: async (graceMs = 5_000) => {
      await Promise.all([client.end({ timeout: graceMs / 1000 }), leaseClient.end({ timeout: graceMs / 1000 })]);
    },
  };
}

/** The two int4 keys of an execution's advisory lock, from the first 16 hex digits of its UUID. */
function advisoryLockKeys(executionId: string): [number, number] {
  const hex = executionId.replaceAll('-', '');
  return [Number.parseInt(hex.slice(0, 8), 16) | 0, Number.parseInt(hex.slice(8, 16), 16) | 0];
}

const CURSOR_BATCH_ROWS = 500;
// postgres.js types omit `simple`; false forces the extended protocol even without parameters.
const EXTENDED_PROTOCOL = { simple: false } as postgres.UnsafeQueryOptions;

/**
 * Reads a statement in batches so that a huge result stops at maxBytes instead of filling memory.
 * The extended protocol (simple: false) also refuses a string with more than one statement.
 */
async function readWithCursor(
  client: postgres.Sql,
  tx: postgres.TransactionSql,
  query: ReadOnlyQuery,
): Promise<ReadOnlyResult> {
  const rows: Record<string, unknown>[] = [];
  let columns: ResultColumn[] | undefined;
  let bytes = 0;
  let truncatedByBytes = false;
  const maxBytes = query.maxBytes ?? Number.POSITIVE_INFINITY;
  await tx.unsafe(query.sql, query.params, EXTENDED_PROTOCOL).cursor(CURSOR_BATCH_ROWS, (batch) => {
    const described = batch as unknown as Record<string, unknown>[] & { columns?: postgres.ColumnList<string> };
    columns ??= described.columns?.map((c) => ({ name: c.name, typeOid: c.type }));
    for (const row of described) {
      bytes += approximateRowBytes(row);
      if (bytes > maxBytes) {
        truncatedByBytes = true;
        return client.CLOSE;
      }
      rows.push(row);
    }
    return undefined;
  });
  if (!columns) {
    const described = await tx.unsafe(query.sql, query.params, EXTENDED_PROTOCOL).describe();
    columns = described.columns.map((c) => ({ name: c.name, typeOid: c.type }));
  }
  return { rows, columns, truncatedByBytes };
}

async function runMigrationsOnPostgres(url: string): Promise<void> {
  const client = postgres(url, { max: 1, onnotice: () => undefined });
  try {
    // Several replicas may start at once; one migrates while the others wait.
    await client`SELECT pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
    await migratePostgres(drizzlePostgres({ client }), { migrationsFolder });
    await client`SELECT pg_advisory_unlock(${MIGRATION_LOCK_KEY})`;
  } finally {
    await client.end({ timeout: 5 });
  }
}

function toDatabaseError(error: unknown, timeoutMs: number): Error {
  if (!(error instanceof postgres.PostgresError)) return error instanceof Error ? error : new Error(String(error));
  if (error.code === '57014') return new StatementTimeoutError(timeoutMs);
  return Object.assign(new DatabaseQueryError(error.message), {
    code: error.code,
    detail: error.detail,
    hint: error.hint,
    position: error.position,
  });
}
