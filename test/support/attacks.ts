import { randomBytes } from 'node:crypto';
import { eq, sql } from 'drizzle-orm';
import { SignJWT } from 'jose';
import { expect } from 'vitest';
import { createApiKey, createTenant, type CreatedApiKey } from '../../src/admin/tenants.js';
import type { Database } from '../../src/db/client.js';
import { DEMO_TENANT_ID } from '../../src/db/demo-data.js';
import { executions, stepEvents, stepResults, tenants } from '../../src/db/tables.js';
import { tenantRolePrefix } from '../../src/db/tenant-roles.js';
import type { PlanInput } from '../generated/graphql.js';
import type { Backend } from './database.js';
import { ExecutionsQuery } from './operations.js';
import { runPlan, sqlStep } from './plans.js';
import { startTestServer, type TestClient, type TestServer } from './server.js';

/**
 * The attack suites (test/attacks-*.test.ts) run against the production path: authentication on,
 * the demo tenant with its API, a second tenant with data of its own, and keys made with createApiKey.
 */

export const JWT_SECRET = randomBytes(32).toString('base64url');
export const OTHER_TENANT_ID = 'other';
export const OTHER_SCHEMA = `tenant_${OTHER_TENANT_ID}`;
/** Rows of the demo dataset (test/support/server.ts starts it with STEPCAST_DEMO_USERS=200). */
export const DEMO_USERS = 200;

export const ATTACK_ENV: Record<string, string> = {
  STEPCAST_AUTH: 'on',
  STEPCAST_DEMO: 'on',
  STEPCAST_JWT_SECRET: JWT_SECRET,
  // The suites submit many plans in a row; the rate limit has its own tests (test/tenant-quotas.test.ts).
  STEPCAST_TENANT_RATE_BURST: '100000',
  STEPCAST_TENANT_RATE_PER_MINUTE: '100000',
  // Small sandbox limits, so that loops and bombs end quickly.
  STEPCAST_SANDBOX_CPU_MS: '300',
  STEPCAST_SANDBOX_MEMORY_MB: '16',
  STEPCAST_SANDBOX_MAX_RESULT_BYTES: '65536',
  STEPCAST_API_MAX_REQUESTS: '10',
};

export interface AttackTarget {
  server: TestServer;
  /** Requests with a key of the demo tenant. */
  demo: TestClient;
  /** Requests with a key of the second tenant ("other"), whose schema holds a table of secrets. */
  other: TestClient;
  demoKey: CreatedApiKey;
  otherKey: CreatedApiKey;
}

export const bearer = (token: string) => `Bearer ${token}`;

export async function startAttackTarget(backend: Backend, env: Record<string, string> = {}): Promise<AttackTarget> {
  const server = await startTestServer(backend, { env: { ...ATTACK_ENV, ...env } });
  try {
    const { database, secrets } = server.app;
    await createTenant(database, secrets, { name: 'Other', id: OTHER_TENANT_ID });
    await database.runScriptInTransaction(`
      CREATE TABLE ${OTHER_SCHEMA}.secrets (id integer PRIMARY KEY, secret text NOT NULL);
      INSERT INTO ${OTHER_SCHEMA}.secrets VALUES (1, 'other-tenant-secret');`);
    const demoKey = await createApiKey(database, DEMO_TENANT_ID, 'attacks');
    const otherKey = await createApiKey(database, OTHER_TENANT_ID, 'attacks');
    return {
      server,
      demo: server.as(bearer(demoKey.token)),
      other: server.as(bearer(otherKey.token)),
      demoKey,
      otherKey,
    };
  } catch (error) {
    await server.close();
    throw error;
  }
}

export async function hs256(claims: Record<string, unknown>, expiresIn: string | number = '5m'): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuedAt()
    .setExpirationTime(expiresIn)
    .sign(new TextEncoder().encode(JWT_SECRET));
}

/** Rows of a statement run as the service itself (which reads everything), on either driver. */
export async function serviceRows<Row = Record<string, unknown>>(database: Database, query: string): Promise<Row[]> {
  const result = (await database.db.execute(sql.raw(query))) as unknown;
  return (Array.isArray(result) ? result : (result as { rows: unknown[] }).rows) as Row[];
}

/** Tenant roles of every test database share this shape; only this database's are ours to watch. */
const ANY_TENANT_ROLE = /^stepcast_[0-9a-f]{10}_/;

export interface DatabaseState {
  schemas: string[];
  /** Every relation outside the system schemas: tables, views, sequences, indexes... */
  relations: string[];
  /** Functions and procedures outside the system schemas. */
  functions: string[];
  /** Roles of the server, but tenant roles of other test databases (other files run alongside). */
  roles: string[];
  /** Per-role or per-database settings (ALTER ROLE/DATABASE ... SET). */
  roleSettings: number;
  largeObjects: number;
  /** Row count and MD5 of every table of every tenant schema, and of the tenants and api_keys tables. */
  data: Record<string, string>;
}

/** What an attack must leave exactly as it was, read as the service (two statements, so that it is quick on PGlite). */
export async function databaseState(database: Database): Promise<DatabaseState> {
  const notSystem = (column: string) =>
    `${column} NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND ${column} NOT LIKE 'pg_temp%' AND ${column} NOT LIKE 'pg_toast_temp%'`;
  const [objects] = await serviceRows<Omit<DatabaseState, 'data' | 'roles'> & { roles: string[]; database: string }>(
    database,
    `SELECT current_database() AS database,
       (SELECT coalesce(json_agg(nspname ORDER BY nspname), '[]') FROM pg_namespace WHERE ${notSystem('nspname')}) AS schemas,
       (SELECT coalesce(json_agg(n.nspname || '.' || c.relname || ':' || c.relkind::text ORDER BY n.nspname, c.relname), '[]')
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ${notSystem('n.nspname')}) AS relations,
       (SELECT coalesce(json_agg(n.nspname || '.' || p.proname ORDER BY n.nspname, p.proname), '[]')
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE ${notSystem('n.nspname')}) AS functions,
       (SELECT coalesce(json_agg(rolname ORDER BY rolname), '[]') FROM pg_roles) AS roles,
       (SELECT count(*)::int FROM pg_db_role_setting) AS "roleSettings",
       (SELECT count(*)::int FROM pg_largeobject_metadata) AS "largeObjects"`,
  );
  const { database: databaseName, roles, ...rest } = objects!;
  const prefix = tenantRolePrefix(databaseName);
  const tenantSchemas = (await database.db.select({ schema: tenants.dataSchema }).from(tenants)).map((row) => row.schema);
  const tables = rest.relations
    .filter((relation) => relation.endsWith(':r'))
    .map((relation) => relation.slice(0, -2))
    .filter((table) => tenantSchemas.includes(table.split('.')[0]!) || table === 'public.tenants' || table === 'public.api_keys');
  const digests = tables.map(
    (table, i) =>
      `(SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM ${table} t) AS "${i}"`,
  );
  const [row] = await serviceRows<Record<string, string>>(database, `SELECT ${digests.join(', ')}`);
  return {
    ...rest,
    roles: roles.filter((role) => !ANY_TENANT_ROLE.test(role) || role.startsWith(prefix)),
    data: Object.fromEntries(tables.map((table, i) => [table, row![String(i)]!])),
  };
}

/** How many executions, step results and step events the service holds (all tenants). */
export async function storedCounts(database: Database): Promise<{ executions: number; stepResults: number; stepEvents: number }> {
  const [row] = await serviceRows<{ executions: number; step_results: number; step_events: number }>(
    database,
    `SELECT (SELECT count(*)::int FROM executions) AS executions, (SELECT count(*)::int FROM step_results) AS step_results,
            (SELECT count(*)::int FROM step_events) AS step_events`,
  );
  return { executions: row!.executions, stepResults: row!.step_results, stepEvents: row!.step_events };
}

/** The data a run left in step_results: any row with records, a sample or a count is data. */
export async function storedStepData(database: Database, executionId: string) {
  const rows = await database.db
    .select({ result: stepResults.result, sample: stepResults.sample, recordCount: stepResults.recordCount, columns: stepResults.columns })
    .from(stepResults)
    .where(eq(stepResults.executionId, executionId));
  const [execution] = await database.db
    .select({ finalResult: executions.finalResult })
    .from(executions)
    .where(eq(executions.id, executionId));
  const events = await database.db.select({ step: stepEvents.step }).from(stepEvents).where(eq(stepEvents.executionId, executionId));
  return {
    steps: rows.length,
    withData: rows.filter((row) => row.result !== null || row.sample !== null || row.recordCount !== null || row.columns !== null).length,
    eventsWithSample: events.filter((event) => event.step?.keptOnStep?.includes('sample') || event.step?.recordCount != null).length,
    finalResult: execution?.finalResult ?? null,
  };
}

export interface Snapshot {
  state: DatabaseState;
  counts: Awaited<ReturnType<typeof storedCounts>>;
}

/** What a hostile step row compares against afterwards: the database's objects and data, and the service's counts. */
export async function snapshot(database: Database): Promise<Snapshot> {
  return { state: await databaseState(database), counts: await storedCounts(database) };
}

/**
 * Check (2) of a hostile step: nothing changed, and nothing but the failed run itself was stored
 * (one execution, its one step, with no records, sample, count or final result anywhere).
 */
export async function expectOnlyTheFailedRun(database: Database, before: Snapshot, executionId: string): Promise<void> {
  expect(await databaseState(database)).toEqual(before.state);
  const after = await storedCounts(database);
  expect(after.executions - before.counts.executions).toBe(1);
  expect(after.stepResults - before.counts.stepResults).toBe(1);
  expect(await storedStepData(database, executionId)).toEqual({ steps: 1, withData: 0, eventsWithSample: 0, finalResult: null });
}

/** The next request after an attack: the tenant's history answers, and so do the database and the demo API. */
export async function expectStillServing(client: TestClient): Promise<void> {
  const page = await client.request(ExecutionsQuery, { first: 1 });
  expect(page.errors, 'the next request must be answered').toBeUndefined();
  expect(page.data?.executions.pageInfo).toBeDefined();
  const plan: PlanInput = {
    query: 'still serving?',
    steps: [
      sqlStep('SELECT count(*) AS n FROM users'),
      { kind: 'API', queryContext: 'one user', code: "const user = await api.call('getUser', { id: 1 }); return [{ id: user.id }];" },
    ],
  };
  const { execution } = await runPlan(client, plan);
  expect(execution.error, 'the next plan must run').toBeNull();
  expect(execution.status).toBe('SUCCEEDED');
  expect(execution.steps.map((step) => step.result)).toEqual([[{ n: DEMO_USERS }], [{ id: 1 }]]);
}
