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
import { DatabaseQueryError, PgliteWorkerClient, StatementTimeoutError } from './pglite-client.js';
import * as tables from './tables.js';

export type Db = PgDatabase<PgQueryResultHKT, typeof tables>;

export interface ReadOnlyQuery {
  sql: string;
  params: string[];
  timeoutMs: number;
  /** The only schema unqualified names resolve in (besides pg_catalog, which Postgres always adds). */
  searchPath: string;
}

export interface ResultColumn {
  name: string;
  typeOid: number;
}

export interface ReadOnlyResult {
  rows: Record<string, unknown>[];
  columns: ResultColumn[];
}

export interface Database {
  kind: 'pglite' | 'postgres';
  db: Db;
  /** Runs one statement in a READ ONLY transaction; throws StatementTimeoutError or DatabaseQueryError. */
  runReadOnly(query: ReadOnlyQuery): Promise<ReadOnlyResult>;
  /** Runs several statements (DDL, bulk loads) in one transaction. */
  runScriptInTransaction(script: string): Promise<void>;
  /** Waits up to graceMs for statements in progress, then closes (PGlite must be closed, or its next start recovers). */
  close(graceMs?: number): Promise<void>;
}

export { DatabaseQueryError, StatementTimeoutError };

const migrationsFolder = fileURLToPath(new URL('../../drizzle', import.meta.url));
const MIGRATION_LOCK_KEY = 4_242_001;

const TEMPORAL_TYPE_OIDS = [1082, 1083, 1114, 1184, 1186, 1182, 1115, 1185, 1187];

export function quoteIdentifier(identifier: string): string {
  return `"${identifier.replaceAll('"', '""')}"`;
}

export async function openDatabase(database: Config['database']): Promise<Database> {
  return database.kind === 'pglite' ? openPglite(database.dataDir ?? './data') : openPostgres(database.url, database.poolSize);
}

async function openPglite(dataDir: string): Promise<Database> {
  await mkdir(dataDir, { recursive: true });
  const client = await PgliteWorkerClient.open(dataDir);
  const db = drizzlePglite({ client: client as unknown as PGlite, schema: tables }) as unknown as Db;
  await migratePglite(db as never, { migrationsFolder });
  const rawTypes = Object.fromEntries(TEMPORAL_TYPE_OIDS.map((oid) => [oid, true]));
  return {
    kind: 'pglite',
    db,
    runReadOnly: (query) =>
      client.transaction(async (tx) => {
        await tx.query('SET TRANSACTION READ ONLY');
        await tx.query(`SET LOCAL search_path TO ${quoteIdentifier(query.searchPath)}`);
        const result = await tx.query<Record<string, unknown>>(query.sql, query.params, {
          parsers: rawTypes,
          timeoutMs: query.timeoutMs,
        });
        return { rows: result.rows, columns: result.fields.map((f) => ({ name: f.name, typeOid: f.dataTypeID })) };
      }),
    runScriptInTransaction: async (script) => {
      await client.execInTransaction(script);
    },
    close: (graceMs) => client.close(graceMs),
  };
}

async function openPostgres(url: string, poolSize: number): Promise<Database> {
  await runMigrationsOnPostgres(url);
  const client = postgres(url, { max: poolSize, onnotice: () => undefined });
  const db = drizzlePostgres({ client, schema: tables }) as unknown as Db;
  return {
    kind: 'postgres',
    db,
    runReadOnly: async (query) => {
      try {
        return await client.begin('read only', async (tx) => {
          await tx.unsafe(`SET LOCAL statement_timeout = ${Math.max(1, Math.floor(query.timeoutMs))}`);
          await tx.unsafe(`SET LOCAL search_path TO ${quoteIdentifier(query.searchPath)}`);
          const rows = await tx.unsafe(query.sql, query.params);
          return {
            rows: rows as unknown as Record<string, unknown>[],
            columns: rows.columns.map((c) => ({ name: c.name, typeOid: c.type })),
          };
        });
      } catch (error) {
        throw toDatabaseError(error, query.timeoutMs);
      }
    },
    runScriptInTransaction: async (script) => {
      await client.begin((tx) => tx.unsafe(script));
    },
    close: (graceMs = 5_000) => client.end({ timeout: graceMs / 1000 }),
  };
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
