import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, postgresUrl, type TestDatabase } from './support/database.js';
import { ExecutePlanMutation } from './support/operations.js';
import { sqlStep } from './support/plans.js';
import { startServiceProcess, type ServiceProcess } from './support/process.js';

const KILLS = 20;
const PLANS_PER_LIFE = 4;

/** Four steps, each a few hundred milliseconds on this data, the later ones reading the earlier ones. */
const PLAN = {
  query: 'a multi-step run that a crash may cut at any point',
  steps: [
    sqlStep('SELECT id FROM users ORDER BY id LIMIT 50'),
    sqlStep('SELECT count(*) AS n FROM users a, users b, users c WHERE a.id <= 120'),
    sqlStep('SELECT s.id, n.n FROM step_1 s, step_2 n ORDER BY s.id LIMIT 10'),
    sqlStep('SELECT count(*) AS rows FROM step_3 t, users a, users b'),
  ],
};

interface EventRow {
  execution_id: string;
  sequence: number;
  type: string;
  step_index: number | null;
}

/**
 * The service is killed (SIGKILL) at random moments of multi-step runs, again and again, and restarted each
 * time. Whatever was accepted must end, each step run to success once, with a well-formed log, by resuming.
 */
describe.skipIf(!postgresUrl)(`crashes during runs on postgres${postgresUrl ? '' : ' (skipped: TEST_DATABASE_URL is not set)'}`, () => {
  let database: TestDatabase;
  let sql: postgres.Sql;
  const services: ServiceProcess[] = [];
  let env: Record<string, string>;

  let dataDir: string;

  beforeAll(async () => {
    // The key file for tenant credentials lives here (the database is PostgreSQL).
    dataDir = await mkdtemp(join(tmpdir(), 'stepcast-crash-'));
    database = await createTestDatabase();
    sql = postgres(database.url, { max: 2, onnotice: () => undefined });
    env = {
      DATABASE_URL: database.url,
      DATA_DIR: dataDir,
      STEPCAST_DEMO_USERS: '200',
      STEPCAST_DEMO_API: 'off',
      STEPCAST_LEASE_TTL_MS: '1500',
      STEPCAST_RECOVERY_INTERVAL_MS: '200',
      // Every kill may cut the same execution; this test is about resuming, not about giving up.
      STEPCAST_MAX_RESUMES: String(KILLS + 1),
      STEPCAST_SHUTDOWN_GRACE_MS: '5000',
    };
  });

  afterAll(async () => {
    for (const service of services) if (service.child.exitCode === null && service.child.signalCode === null) service.child.kill('SIGKILL');
    await Promise.all(services.map((service) => service.exited));
    await sql?.end();
    await database?.drop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  async function submit(service: ServiceProcess): Promise<string | null> {
    try {
      const response = await fetch(service.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query: ExecutePlanMutation.toString(), variables: { plan: PLAN } }),
      });
      const body = (await response.json()) as { data?: { executePlan: { id: string } } };
      return body.data?.executePlan.id ?? null;
    } catch {
      // The kill came first: the request was not accepted (or its answer was lost; the table is the truth).
      return null;
    }
  }

  it(`finishes every accepted execution after ${KILLS} kills at random moments, each by resuming`, async () => {
    const cutMidRun = new Set<string>();
    for (let life = 0; life < KILLS; life++) {
      const service = await startServiceProcess(env);
      services.push(service);
      const submitting = Array.from({ length: PLANS_PER_LIFE }, () => submit(service));
      // Somewhere in the first steps of the new runs, or in runs resumed from the last life.
      await new Promise((resolve) => setTimeout(resolve, 100 + Math.floor(Math.random() * 1_400)));
      service.child.kill('SIGKILL');
      await service.exited;
      await Promise.all(submitting);
      for (const row of await sql<{ id: string }[]>`SELECT id FROM executions WHERE status = 'RUNNING'`) cutMidRun.add(row.id);
    }
    expect(cutMidRun.size).toBeGreaterThan(0);

    const last = await startServiceProcess(env);
    services.push(last);
    await expect
      .poll(async () => (await sql`SELECT count(*)::int AS n FROM executions WHERE status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')`)[0]!.n, {
        timeout: 120_000,
        interval: 500,
      })
      .toBe(0);

    const executions = await sql<{ id: string; status: string; resumes: number; error: unknown }[]>`
      SELECT id, status, resumes, error FROM executions ORDER BY created_at`;
    expect(executions.length).toBeGreaterThanOrEqual(PLANS_PER_LIFE);
    // Nothing failed: not INTERRUPTED, not anything else.
    expect(executions.filter((e) => e.status !== 'SUCCEEDED')).toEqual([]);

    const events = await sql<EventRow[]>`SELECT execution_id, sequence, type, step_index FROM step_events ORDER BY execution_id, sequence`;
    const byExecution = new Map<string, EventRow[]>();
    for (const event of events) byExecution.set(event.execution_id, [...(byExecution.get(event.execution_id) ?? []), event]);
    for (const execution of executions) {
      const log = byExecution.get(execution.id) ?? [];
      expect(log.map((e) => e.sequence)).toEqual(log.map((_, i) => i + 1));
      expect(log.filter((e) => e.type.startsWith('EXECUTION_') && !['EXECUTION_STARTED', 'EXECUTION_RESUMED'].includes(e.type))).toHaveLength(1);
      expect(log.at(-1)!.type).toBe('EXECUTION_SUCCEEDED');
      for (let index = 1; index <= PLAN.steps.length; index++) {
        // No step that succeeded was started (or succeeded) twice.
        expect(log.filter((e) => e.type === 'STEP_STARTED' && e.step_index === index)).toHaveLength(1);
        expect(log.filter((e) => e.type === 'STEP_SUCCEEDED' && e.step_index === index)).toHaveLength(1);
      }
      // A holder may be killed between taking the lease (a resume counted) and writing EXECUTION_RESUMED.
      const resumedInLog = log.filter((e) => e.type === 'EXECUTION_RESUMED').length;
      expect(resumedInLog).toBeLessThanOrEqual(execution.resumes);
      // Every execution a kill cut mid-run finished by resuming.
      if (cutMidRun.has(execution.id)) expect(resumedInLog).toBeGreaterThanOrEqual(1);
    }
    const steps = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM step_results WHERE status <> 'SUCCEEDED'`;
    expect(steps[0]!.n).toBe(0);
  }, 420_000);
});
