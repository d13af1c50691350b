import { fileURLToPath } from 'node:url';
import type { PGlite } from '@electric-sql/pglite';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator';
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js';
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import type { Config } from '../config.js';
import { DatabaseQueryError, StatementTimeoutError } from './pglite-client.js';
import { openPgliteDirectory, type OpenedPgliteDirectory } from './pglite-open.js';
import { TenantSessions } from './tenant-sessions.js';
import * as tables from './tables.js';
import {
  quoteIdentifier,
  readOnlySettings,
  tenantQueryError,
  tenantTransactionSettings,
  TenantRowReader,
  type ResultColumn,
  type TenantQuery,
  type TenantQueryResult,
} from './tenant-query.js';

export type Db = PgDatabase<PgQueryResultHKT, typeof tables>;

export interface ReadOnlyQuery {
  sql: string;
  params: string[];
  timeoutMs: number;
  /** The only schema unqualified names resolve in (besides pg_catalog, which Postgres always adds). */
  searchPath: string;
  /**
   * The database role the statement runs as (SET LOCAL ROLE). Without it the statement runs as the
   * service's own role, which reads everything. Tenants' statements go through runTenantQuery instead.
   */
  role?: string;
}

export interface ReadOnlyResult {
  rows: Record<string, unknown>[];
  columns: ResultColumn[];
}

export interface Database {
  kind: 'pglite' | 'postgres';
  db: Db;
  /** Runs one of the service's own statements in a READ ONLY transaction; throws StatementTimeoutError or DatabaseQueryError. */
  runReadOnly(query: ReadOnlyQuery): Promise<ReadOnlyResult>;
  /**
   * Runs a tenant's statement in a READ ONLY transaction as the tenant's role, with the database enforcing
   * its row, byte, memory and temporary-file limits. Throws RowTooLargeError, DatabaseResourceError,
   * StatementTimeoutError or DatabaseQueryError.
   */
  runTenantQuery(query: TenantQuery): Promise<TenantQueryResult>;
  /**
   * Runs one of the service's own statements with parameters, prepared (once per connection): for the few written
   * as text because they run at every step.
   */
  query(text: string, params: unknown[]): Promise<Record<string, unknown>[]>;
  /** Whether the database answers a trivial query within timeoutMs (the query itself is not cancelled). */
  ping(timeoutMs: number): Promise<boolean>;
  /** Runs several statements (DDL, bulk loads) in one transaction. */
  runScriptInTransaction(script: string): Promise<void>;
  /** Waits up to graceMs for statements in progress, then closes (PGlite must be closed, or its next start recovers). */
  close(graceMs?: number): Promise<void>;
}

export { DatabaseQueryError, StatementTimeoutError, quoteIdentifier, type ResultColumn };

/** WAL a restarted PGlite worker may have to replay, at most (more is checkpointed before a tenant statement). */
const PGLITE_RECOVERY_WAL_BYTES = 8 * 1_048_576;

const migrationsFolder = fileURLToPath(new URL('../../drizzle', import.meta.url));
const MIGRATION_LOCK_KEY = 4_242_001;

// Returned as Postgres prints them, so that both drivers hand the same text to records.ts (int8, numeric, dates, times).
const RAW_TEXT_TYPE_OIDS = [20, 1700, 1082, 1083, 1114, 1184, 1186, 1182, 1115, 1185, 1187];
// json and jsonb too, for tenants' statements: records.ts parses them one value at a time, counting what they cost.
const TENANT_RAW_TEXT_TYPE_OIDS = [...RAW_TEXT_TYPE_OIDS, 114, 3802];

/**
 * The service's own client as drizzle gets it: every statement prepared (postgres.js keeps it per connection by its
 * text and types), in transactions too. drizzle sends every query through `unsafe()`, which postgres.js does not
 * prepare, and then asks the server to describe each query with parameters before binding them: a round trip of
 * its own for every statement. Prepared, a statement seen before on the connection is parsed, bound and run in one
 * flight. The service's statements come in a few dozen shapes, so what each connection keeps stays small (postgres.js
 * never lets one go until the connection closes): a statement with many parameters, whose text varies with a list's
 * length (a list of keys), is not prepared. Tenants' statements never come through here.
 */
const MAX_PREPARED_PARAMETERS = 32;

function preparing<T extends postgres.Sql | postgres.TransactionSql>(client: T): T {
  return new Proxy(client, {
    get(target, property, receiver) {
      if (property === 'unsafe') {
        return (query: string, params?: postgres.ParameterOrJSON<never>[], options?: postgres.UnsafeQueryOptions) =>
          target.unsafe(query, params, { ...options, prepare: (params?.length ?? 0) <= MAX_PREPARED_PARAMETERS });
      }
      if (property === 'begin' || property === 'savepoint') {
        const original = Reflect.get(target, property, receiver) as (...args: unknown[]) => unknown;
        return (...args: unknown[]) => {
          const callback = args.at(-1) as (tx: postgres.TransactionSql) => unknown;
          return original.apply(target, [...args.slice(0, -1), (tx: postgres.TransactionSql) => callback(preparing(tx))]);
        };
      }
      return Reflect.get(target, property, receiver);
    },
  });
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

/**
 * Seconds before a closed connection is opened again, after `retries` failed connections in a row. postgres.js's
 * own grows to 20 s, so a short outage (a restart of half a second) kept the service failing for 10 s and more
 * after the server was back; at most 2 s, it serves again about 2 s after, at the cost of a connection attempt
 * per pooled connection every 2 s while requests keep coming during the outage.
 */
const reconnectBackoff = (retries: number) => Math.min(0.05 * 2 ** retries, 2);

/** Connections kept apart from the main pool (PostgreSQL): tenants' statements. */
export interface DatabaseConnections {
  tenantStatements: number;
}

/**
 * `pglite`: the embedded database's directory, already being opened (src/main.ts starts that before it loads the
 * service); without it, openDatabase opens it.
 */
export async function openDatabase(
  database: Config['database'],
  connections: DatabaseConnections = { tenantStatements: 4 },
  pglite?: Promise<OpenedPgliteDirectory>,
): Promise<Database> {
  return database.kind === 'pglite'
    ? openPglite(pglite ?? openPgliteDirectory(database.dataDir ?? './data'), database.maxMemoryMb)
    : openPostgres(database.url, database.poolSize, connections);
}

async function openPglite(opening: Promise<OpenedPgliteDirectory>, maxMemoryMb: number): Promise<Database> {
  const { client, unlock } = await opening;
  let db: Db;
  try {
    db = drizzlePglite({ client: client as unknown as PGlite, schema: tables }) as unknown as Db;
    await migratePglite(db as never, { migrationsFolder });
  } catch (error) {
    await client.close();
    await unlock();
    throw error;
  }
  const rawTypes = Object.fromEntries(RAW_TEXT_TYPE_OIDS.map((oid) => [oid, true]));
  const tenantRawTypes = Object.fromEntries(TENANT_RAW_TEXT_TYPE_OIDS.map((oid) => [oid, true]));
  return {
    kind: 'pglite',
    db,
    query: async (text, params) => (await client.query<Record<string, unknown>>(text, params)).rows,
    runReadOnly: async (query) => {
      // A read as a tenant's role (the values of its columns, for the prompts) may run out of time, which restarts
      // the worker: the restart should be short, as for a tenant's statement.
      if (query.role !== undefined) await client.checkpointAbove(PGLITE_RECOVERY_WAL_BYTES);
      return client.transaction(async (tx) => {
        await tx.query('SET TRANSACTION READ ONLY');
        for (const setting of readOnlySettings(query)) await tx.query(setting);
        const result = await tx.query<Record<string, unknown>>(query.sql, query.params, {
          parsers: rawTypes,
          timeoutMs: query.timeoutMs,
        });
        return { rows: result.rows, columns: result.fields.map((f) => ({ name: f.name, typeOid: f.dataTypeID })) };
      });
    },
    runTenantQuery: async (query) => {
      const reader = new TenantRowReader(query);
      const { signal } = query;
      let ran = false;
      try {
        // A statement that is aborted or runs out of time restarts the worker: the restart should be short.
        await client.checkpointAbove(PGLITE_RECOVERY_WAL_BYTES, signal);
        await client.transaction(async (tx) => {
          ran = true;
          // Posted with the DECLARE and the first FETCH without waiting between them: the worker runs them in order,
          // and in this transaction a setting that fails fails every statement after it, and none of them runs.
          const settings = ['SET TRANSACTION READ ONLY', ...tenantTransactionSettings(query)].map((setting) => tx.query(setting, [], { signal }));
          for (const setting of settings) setting.catch(() => undefined);
          try {
            await reader.read({
              declare: async (sql, params, timeoutMs) => {
                await tx.query(sql, params, { timeoutMs, signal });
              },
              fetch: async (sql, timeoutMs) => {
                const result = await tx.query<Record<string, unknown>>(sql, [], { parsers: tenantRawTypes, timeoutMs, signal });
                return { rows: result.rows, columns: result.fields.map((f) => ({ name: f.name, typeOid: f.dataTypeID })) };
              },
            });
          } finally {
            // A setting that failed is why the statements after it failed.
            await Promise.all(settings);
          }
        }, signal);
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        if (!reader.stoppedAtReadLimit(error)) {
          throw (error instanceof DatabaseQueryError && tenantQueryError(error, query.limits)) || error;
        }
      } finally {
        // The database runs in this process: what a tenant's statement made it grow is given back (a statement
        // aborted before its turn came made nothing grow, and must not wait for the turn).
        if (ran) await client.releaseMemoryAbove(maxMemoryMb * 1_048_576);
      }
      return reader.result();
    },
    ping: pingWith(() => client.query('SELECT 1')),
    runScriptInTransaction: async (script) => {
      await client.execInTransaction(script);
    },
    close: async (graceMs) => {
      await client.close(graceMs);
      await unlock();
    },
  };
}

async function openPostgres(url: string, poolSize: number, connections: DatabaseConnections): Promise<Database> {
  await runMigrationsOnPostgres(url);
  const client = postgres(url, { max: poolSize, onnotice: () => undefined, backoff: reconnectBackoff });
  // Tenants' statements have connections of their own too, which hand json and jsonb over as text (see records.ts).
  const tenantSessions = new TenantSessions(connections.tenantStatements, () => {
    const session = postgres(url, { max: 1, onnotice: () => undefined, backoff: reconnectBackoff });
    for (const oid of TENANT_RAW_TEXT_TYPE_OIDS) session.options.parsers[oid] = (text: string) => text;
    return session;
  });
  const prepared = preparing(client);
  const db = drizzlePostgres({ client: prepared, schema: tables }) as unknown as Db;
  return {
    kind: 'postgres',
    db,
    // Always prepared: the caller's statements take a few shapes whatever their number of parameters.
    query: async (text, params) => [...(await client.unsafe(text, params as postgres.ParameterOrJSON<never>[], { prepare: true }))],
    runReadOnly: async (query) => {
      try {
        return await client.begin('read only', async (tx) => {
          await tx.unsafe(`SET LOCAL statement_timeout = ${Math.max(1, Math.floor(query.timeoutMs))}`);
          for (const setting of readOnlySettings(query)) await tx.unsafe(setting);
          const rows = await tx.unsafe(query.sql, query.params, EXTENDED_PROTOCOL);
          return { rows: [...rows], columns: columnsOf(rows) };
        });
      } catch (error) {
        throw toDatabaseError(error, query.timeoutMs);
      }
    },
    runTenantQuery: async (query) => {
      const reader = new TenantRowReader(query);
      const statements = new CancellableStatements(client, query.signal);
      let session: postgres.Sql | undefined;
      try {
        // Aborted while it waits for a connection, it rejects at once.
        session = await tenantSessions.acquire(query.signal);
        const connection = session;
        // The transaction's start, every setting, and the backend's pid (which a cancel that came too early for the
        // server to act on is repeated with) in one statement (the simple protocol takes several). The DECLARE and
        // the first FETCH follow in the same flight without waiting for it: in this transaction, a setting that fails
        // fails every statement after it, and none of them runs. The DECLARE cannot run outside a transaction block
        // either, so the tenant's statement never runs without the settings, whatever becomes of the connection.
        const settings = [
          'BEGIN READ ONLY',
          `SET LOCAL statement_timeout = ${Math.max(1, Math.floor(query.timeoutMs))}`,
          ...tenantTransactionSettings(query),
          // now() is the transaction's start: with the pid, it names this transaction and no later one on the backend.
          'SELECT pg_backend_pid() AS pid, now()::text AS started',
        ];
        const set = statements.run(() => connection.unsafe(settings.join('; ')) as unknown as Promise<postgres.RowList<postgres.Row[]>[]>);
        set.then((results) => {
          statements.backendPid = Number(results.at(-1)?.[0]?.pid);
          statements.transactionStart = String(results.at(-1)?.[0]?.started);
        }, () => undefined);
        try {
          await reader.read({
            declare: async (sql, params) => {
              // Typed as text (what `$n::text::jsonb` reads), so that the driver needs no description of the
              // statement before it binds them, and sends it in one flight with the statements around it.
              const typed = params.map((param) => connection.typed(param, TEXT_OID));
              await statements.run(() => connection.unsafe(sql, typed, EXTENDED_PROTOCOL));
            },
            fetch: async (sql, timeoutMs) => {
              // What is left of the step's time, for this FETCH; in the same round trip.
              const results = await statements.run(
                () => connection.unsafe(`SET LOCAL statement_timeout = ${Math.max(1, Math.floor(timeoutMs))}; ${sql}`) as unknown as Promise<postgres.RowList<postgres.Row[]>[]>,
              );
              const rows = results.at(-1)!;
              return { rows: [...rows], columns: columnsOf(rows) };
            },
          });
        } catch (error) {
          // A setting that failed is why the statements after it failed.
          await set;
          throw error;
        }
      } catch (error) {
        // Aborted: whatever the abort made of the statement (a 57014, a rollback), the caller's reason stands.
        if (query.signal?.aborted) throw query.signal.reason;
        if (!reader.stoppedAtReadLimit(error)) {
          const postgresError = error instanceof postgres.PostgresError ? error : undefined;
          throw (postgresError && tenantQueryError(postgresError, query.limits)) || toDatabaseError(error, query.timeoutMs);
        }
      } finally {
        statements.close();
        // Its COMMIT goes behind whatever is still in flight on the connection (a FETCH sent behind a failed DECLARE).
        if (session) tenantSessions.release(session, { cancelSent: statements.cancelSent });
      }
      return reader.result();
    },
    ping: pingWith(() => client`SELECT 1`),
    runScriptInTransaction: async (script) => {
      await client.begin((tx) => tx.unsafe(script));
    },
    close: async (graceMs = 5_000) => {
      const timeout = graceMs / 1000;
      await Promise.all([client.end({ timeout }), tenantSessions.end(timeout)]);
    },
  };
}

/** How often a cancel is repeated while the cancelled statement has not ended. */
const CANCEL_REPEAT_MS = 250;

/**
 * The statements of one tenant query on PostgreSQL, cancelled on the server when the signal aborts.
 * postgres.js's `cancel()` opens a new connection and sends a CancelRequest with the statement's backend
 * pid and secret key. The server drops a cancel that reaches the backend while it is still reading the
 * statement (a DECLARE with large step_N parameters takes a while to read), so while the statement has
 * not ended the cancel is repeated with pg_cancel_backend on the service's pool.
 */
class CancellableStatements {
  backendPid: number | undefined;
  transactionStart: string | undefined;
  /** Statements sent and not answered yet, in the order they were sent: the backend runs the first. */
  private readonly inFlight: postgres.PendingQuery<postgres.Row[]>[] = [];
  private repeat: NodeJS.Timeout | undefined;
  private closed = false;
  /**
   * A cancel was sent (a CancelRequest, or pg_cancel_backend). It acts on whatever the backend runs when it arrives,
   * which may be after these statements ended: the connection is not handed to anybody else's statements.
   */
  cancelSent = false;
  /** A pg_cancel_backend is on its way. */
  private cancelling = false;

  constructor(
    private readonly service: postgres.Sql,
    private readonly signal: AbortSignal | undefined,
  ) {
    signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /**
   * Sends one statement (made by `make`, so that none is made once aborted) and waits for it. Statements
   * sent while others wait are pipelined behind them on the transaction's connection.
   */
  async run<T>(make: () => Promise<T>): Promise<T> {
    this.signal?.throwIfAborted();
    const pending = make();
    const statement = pending as unknown as postgres.PendingQuery<postgres.Row[]>;
    this.inFlight.push(statement);
    try {
      return await pending;
    } finally {
      this.inFlight.splice(this.inFlight.indexOf(statement), 1);
    }
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.repeat);
    this.signal?.removeEventListener('abort', this.onAbort);
  }

  /** Sends a CancelRequest for the statement the connection runs now, if there is one (once per statement). */
  private cancelRunning(): void {
    const statement = this.inFlight[0];
    if (!statement || !(statement as unknown as { active: boolean }).active) return;
    this.cancelSent = true;
    // postgres.js sends it at the first call, and ignores the calls after.
    statement.cancel();
  }

  /** pg_cancel_backend on the service's pool, one at a time, once the backend's pid and transaction are known. */
  private cancelOnServer(): void {
    const pid = this.backendPid;
    const started = this.transactionStart;
    // The pid comes with the settings, which the statements after them were sent with: it may not be here yet. Only
    // while the backend still runs this transaction: by the time the service's pool sends this, the statement may
    // have ended and the connection moved on to another tenant's statement.
    if (pid === undefined || started === undefined || !Number.isInteger(pid) || this.cancelling) return;
    this.cancelSent = true;
    this.cancelling = true;
    this.service`SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid = ${pid} AND xact_start = ${started}::timestamptz`.then(
      () => (this.cancelling = false),
      () => (this.cancelling = false),
    );
  }

  /**
   * At once, and every CANCEL_REPEAT_MS while statements are in flight (whether or not the service's pool answers: it
   * may be busy): a CancelRequest for the statement the connection runs now, and after the first time
   * pg_cancel_backend too. The CancelRequest goes only to the statement postgres.js has made current (`active`):
   * postgres.js 3.4.9 mishandles the cancel of one it has not sent (the connection's first statement, which waits for
   * it to open, dropped that way, leaves the connection waiting forever) or one queued behind another on the
   * connection (the next holder's, behind the last holder's COMMIT: its answers are then taken for those of the
   * statement after it). A statement not running yet gets its CancelRequest at a later round, once it runs.
   */
  private readonly onAbort = (): void => {
    const round = (first: boolean) => {
      if (this.closed || this.inFlight.length === 0) return;
      this.cancelRunning();
      if (!first) this.cancelOnServer();
      this.repeat = setTimeout(round, CANCEL_REPEAT_MS, false);
    };
    round(true);
  };
}

// postgres.js types omit `simple`; false forces the extended protocol even without parameters, which also
// refuses a string holding more than one statement.
const EXTENDED_PROTOCOL = { simple: false } as postgres.UnsafeQueryOptions;
const TEXT_OID = 25;

function columnsOf(rows: postgres.RowList<postgres.Row[]>): ResultColumn[] {
  return rows.columns.map((column) => ({ name: column.name, typeOid: column.type }));
}

async function runMigrationsOnPostgres(url: string): Promise<void> {
  const client = postgres(url, { max: 1, onnotice: () => undefined, backoff: reconnectBackoff });
  try {
    // Several replicas may start at once; one migrates while the others wait.
    await client`SELECT pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
    await migratePostgres(drizzlePostgres({ client }), { migrationsFolder });
    await client`SELECT pg_advisory_unlock(${MIGRATION_LOCK_KEY})`;
    await checkTenantSettingsAllowed(client);
  } finally {
    await client.end({ timeout: 5 });
  }
}

/** Refuses to start where tenants' statements could not run: each sets temp_file_limit, which not every role may. */
async function checkTenantSettingsAllowed(client: postgres.Sql): Promise<void> {
  try {
    await client.begin((tx) => tx.unsafe("SET LOCAL temp_file_limit = '1MB'; SET LOCAL work_mem = '1MB'"));
  } catch (error) {
    if (!(error instanceof postgres.PostgresError) || error.code !== '42501') throw error;
    const [row] = await client<{ user: string }[]>`SELECT current_user AS user`;
    const user = row?.user ?? 'stepcast connects as';
    throw new Error(
      `the database user ${user} may not set temp_file_limit, which bounds the temporary files of every tenant statement: ` +
        `run stepcast as a superuser, or GRANT SET ON PARAMETER temp_file_limit TO ${quoteIdentifier(user)} (PostgreSQL 15 and later)`,
      { cause: error },
    );
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
    statementPosition: (error as { statementPosition?: number }).statementPosition,
  });
}
