// What a step's own database work costs in stepcast's current protocol, measured beside the floor: a raw postgres.js
// loop with none of stepcast's code but the texts it sends (its settings, its size-check wrapper, its step
// relations). Per step it commits one state change (the step's end and the next step's start together: one
// single-row upsert, where stepcast also writes the step rows and appends the events) and runs the step's statement
// as stepcast sends it to PostgreSQL: in its own READ ONLY transaction, as a tenant's role, under the same limits,
// wrapped in the same size checks, reading the previous step's records as a parameter, in one flight on a connection
// of its own, its COMMIT not waited for. As in stepcast, a plan's first step runs once its start has committed, and
// every later one while its start commits. No events, step rows, lease, guard, records, samples or publishing:
// stepcast's figure minus this one is what its own work costs. Another order can cost less (a statement seen before
// run prepared): see ARCHITECTURE.md, Speed.
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { loadConfig } from '../src/config.js';
import { tenantTransactionSettings, wrapTenantStatement, type TenantQueryLimits } from '../src/db/tenant-query.js';
import { buildStepRelations } from '../src/executor/steps/sql.js';

/** One step of the loop: plan `plan`'s step `step`, by worker `worker` (each has a connection of its own for reads). */
export type BoundStep = (plan: number, step: number, worker: number) => Promise<void>;

const TABLE = 'bench_bound_runs';
// The limits and timeout stepcast gives a step's statement by default (as src/app.ts passes them on).
const { executor } = loadConfig({});
const LIMITS: TenantQueryLimits = {
  rowCap: executor.rowCap,
  rowMaxBytes: executor.rowMaxBytes,
  readMaxBytes: executor.stepMaxBytes,
  workMemMb: executor.sqlWorkMemMb,
  tempFileLimitMb: executor.sqlTempFileLimitMb,
};
const TIMEOUT_MS = executor.stepTimeoutMs;

export async function postgresBoundStep(url: string, workers: number): Promise<{ step: BoundStep; close(): Promise<void> }> {
  const sql = postgres(url, { max: workers, onnotice: () => undefined });
  const readers = Array.from({ length: workers }, () => postgres(url, { max: 1, onnotice: () => undefined }));
  const role = `bench_bound_reader_${randomBytes(4).toString('hex')}`;
  const close = async () => {
    await sql.unsafe(`DROP TABLE IF EXISTS ${TABLE}`).catch(() => undefined);
    await Promise.all(readers.map((reader) => reader.end()));
    await sql.unsafe(`DROP ROLE IF EXISTS ${role}`).catch(() => undefined);
    await sql.end();
  };
  try {
    await sql.unsafe(`DROP TABLE IF EXISTS ${TABLE}`);
    await sql.unsafe(`CREATE TABLE ${TABLE} (plan integer PRIMARY KEY, step integer NOT NULL)`);
    await sql.unsafe(`CREATE ROLE ${role} NOLOGIN`);
  } catch (error) {
    await close();
    throw error;
  }
  const settings = ['BEGIN READ ONLY', `SET LOCAL statement_timeout = ${TIMEOUT_MS}`, ...tenantTransactionSettings({ role, searchPath: 'public', limits: LIMITS })];
  return {
    step: async (plan, step, worker) => {
      // The step's start (with the end of the one before), committed.
      const committed = sql`INSERT INTO bench_bound_runs (plan, step) VALUES (${plan}, ${step}) ON CONFLICT (plan) DO UPDATE SET step = excluded.step`.execute();
      if (step === 1) await committed;
      // The step's statement: the first reads nothing, each later one the records of the one before.
      const earlier = step === 1 ? [] : [{ index: step - 1, records: [{ n: step - 1 }], columns: [{ name: 'n', type: 'integer' }] }];
      const relations = buildStepRelations(earlier as never, step === 1 ? [] : [`step_${step - 1}`]);
      const statement = step === 1 ? 'SELECT 1 AS n' : `SELECT n + 1 AS n FROM step_${step - 1}`;
      const { before, after } = wrapTenantStatement({ relations, limits: LIMITS });
      const reader = readers[worker]!;
      // postgres.js sends a query only once it is awaited or executed: each is executed at once, so that the three go
      // out in one flight, as stepcast sends them.
      await Promise.all([
        committed,
        reader.unsafe(`${settings.join('; ')}; SELECT pg_backend_pid() AS pid, now()::text AS started`).execute(),
        reader
          .unsafe(`DECLARE bound_rows NO SCROLL CURSOR FOR ${before}${statement}${after}`, relations.params.map((param) => reader.typed(param, 25)), {
            simple: false,
          } as postgres.UnsafeQueryOptions)
          .execute(),
        reader.unsafe(`SET LOCAL statement_timeout = ${TIMEOUT_MS}; FETCH 16 FROM bound_rows`).execute(),
      ]);
      reader.unsafe('COMMIT').catch(() => undefined);
    },
    close,
  };
}
