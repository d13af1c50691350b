import { randomBytes } from 'node:crypto';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import postgres from 'postgres';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTenant } from '../src/admin/tenants.js';
import type { PlanInput } from '../src/executor/plan.js';
import { postgresUrl } from './support/database.js';
import { redisUrl } from './support/redis.js';
import { startTestServer, type TestServer } from './support/server.js';

const skipReason = !postgresUrl ? 'skipped: TEST_DATABASE_URL is not set' : !redisUrl ? 'skipped: TEST_REDIS_URL is not set' : null;

/**
 * A tenant API whose GET /wait-forever never answers and whose GET /gate answers once the test opens the gate: steps
 * that hold a worker's slot for as long as the test wants, without costing the machine any CPU.
 */
async function startGateApi() {
  const held: ServerResponse[] = [];
  /** The paths asked for, as they arrive. */
  const requests: string[] = [];
  let open = false;
  const answer = (response: ServerResponse) => {
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ answered: true }));
  };
  const server = createServer((request, response) => {
    requests.push(request.url ?? '');
    if (request.url === '/wait-forever') return;
    if (request.url === '/gate') return open ? answer(response) : void held.push(response);
    response.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const operation = (operationId: string) => ({ get: { operationId, responses: { '200': { description: 'an answer' } } } });
  return {
    url,
    requests,
    openapi: {
      openapi: '3.0.3',
      info: { title: 'gate', version: '1' },
      servers: [{ url }],
      paths: { '/wait-forever': operation('waitForever'), '/gate': operation('gate') },
    },
    openGate() {
      open = true;
      for (const response of held.splice(0)) answer(response);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

const apiStep = (code: string) => ({ kind: 'API' as const, queryContext: 'a program', code });
/** Holds its worker's slot until cancelled (or the worker stops). */
const FOREVER: PlanInput = { query: 'forever', steps: [apiStep("return [await api.call('waitForever', {})];")] };
/** Holds its worker's slot until the gate opens. */
const GATED: PlanInput = { query: 'gated', steps: [apiStep("return [await api.call('gate', {})];")] };
const QUICK: PlanInput = { query: 'quick', steps: [apiStep('return [{ one: 1 }];')] };

describe.skipIf(skipReason !== null)(`admission on a cluster of workers${skipReason ? ` (${skipReason})` : ''}`, () => {
  /** Each tenant's API (a tenant's calls share its connections: alpha's endless call must not hold up bravo's). */
  const gates: Record<string, Awaited<ReturnType<typeof startGateApi>>> = {};
  let api: TestServer;
  let sql: postgres.Sql;
  const workers: TestServer[] = [];
  const shared = {
    REDIS_URL: redisUrl!,
    STEPCAST_REDIS_PREFIX: `test${randomBytes(4).toString('hex')}:`,
    STEPCAST_ENCRYPTION_KEY: randomBytes(32).toString('hex'),
    STEPCAST_DEMO_API: 'off',
    STEPCAST_TENANT_MAX_CONCURRENT_EXECUTIONS: '1',
    STEPCAST_RECOVERY_INTERVAL_MS: '100',
    STEPCAST_QUEUE_POLL_MS: '100',
    STEPCAST_STEP_TIMEOUT_MS: '600000',
    STEPCAST_MAX_STEP_TIMEOUT_MS: '600000',
    STEPCAST_API_REQUEST_TIMEOUT_MS: '600000',
    STEPCAST_TENANT_RATE_BURST: '1000',
    STEPCAST_TENANT_RATE_PER_MINUTE: '100000',
  };
  const startWorker = async (env: Record<string, string>) => {
    const worker = await startTestServer('postgres', { joinDatabaseOf: api, env: { ...shared, STEPCAST_ROLE: 'worker', ...env } });
    workers.push(worker);
    return worker;
  };
  const statusOf = async (id: string) => (await sql<{ status: string }[]>`SELECT status FROM executions WHERE id = ${id}`)[0]!.status;
  const untilStatus = (id: string, status: string, timeout = 15_000) =>
    expect.poll(() => statusOf(id), { timeout, interval: 50 }).toBe(status);
  /** Until every job of the execution was taken and completed (a worker's admission answered). */
  const untilJobsCompleted = (id: string) =>
    expect
      .poll(
        async () => {
          const jobs = await sql<{ state: string }[]>`SELECT state FROM pgboss.job WHERE singleton_key = ${id}`;
          return jobs.length > 0 && jobs.every((job) => job.state === 'completed');
        },
        { timeout: 15_000, interval: 50 },
      )
      .toBe(true);

  beforeAll(async () => {
    api = await startTestServer('postgres', { env: { ...shared, STEPCAST_ROLE: 'api' } });
    sql = postgres(api.databaseUrl!, { max: 2, onnotice: () => undefined });
    for (const id of ['alpha', 'bravo', 'charlie']) {
      const gate = (gates[id] = await startGateApi());
      await createTenant(api.app.database, api.app.secrets, { name: id, id, apiBaseUrl: gate.url, openapi: gate.openapi });
    }
  }, 60_000);
  afterEach(async () => {
    // Nothing left running: what a test left unfinished is cancelled, then its workers stop.
    const unfinished = await sql<{ id: string; tenant_id: string }[]>`
      SELECT id, tenant_id FROM executions WHERE status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')`;
    await Promise.all(unfinished.map((e) => api.app.executor.cancelExecution(e.tenant_id, e.id)));
    await Promise.all(workers.splice(0).map((worker) => worker.close()));
  });
  afterAll(async () => {
    await sql?.end();
    await api?.close();
    await Promise.all(Object.values(gates).map((gate) => gate.close()));
  });

  it("starts a tenant's queued execution in a free slot even while another tenant's older executions wait at their cap", async () => {
    const first = await startWorker({ STEPCAST_MAX_CONCURRENT_EXECUTIONS: '3', STEPCAST_SHUTDOWN_GRACE_MS: '5000' });
    // alpha: one run that holds its cap, and a backlog behind it (their jobs answered "at capacity"), more than a
    // sweep lists at once (500 executions, oldest first).
    const alphaRunning = (await api.app.executor.submitPlan('alpha', FOREVER)).id;
    await untilStatus(alphaRunning, 'RUNNING');
    let alphaQueued = '';
    for (let i = 0; i < 25; i++) {
      const batch = await Promise.all(Array.from({ length: 20 }, () => api.app.executor.submitPlan('alpha', QUICK)));
      alphaQueued = batch.at(-1)!.id;
    }
    await untilJobsCompleted(alphaQueued);
    // bravo: the same, submitted after alpha's.
    const bravoRunning = (await api.app.executor.submitPlan('bravo', GATED)).id;
    await untilStatus(bravoRunning, 'RUNNING');
    const bravoQueued = (await api.app.executor.submitPlan('bravo', QUICK)).id;
    await untilJobsCompleted(bravoQueued);
    expect(await statusOf(bravoQueued)).toBe('QUEUED');
    // bravo's step waits at the gate: opened, it ends at once.
    await expect.poll(() => gates.bravo!.requests.includes('/gate'), { timeout: 15_000, interval: 20 }).toBe(true);

    // The worker drains: bravo's run ends within the grace period, alpha's is let go at its end.
    const closing = first.app.close();
    gates.bravo!.openGate();
    await untilStatus(bravoRunning, 'SUCCEEDED');
    await closing;

    // Another worker, with two slots: one takes up alpha's run; bravo has no run and the other slot is free.
    await startWorker({ STEPCAST_MAX_CONCURRENT_EXECUTIONS: '2' });
    await untilStatus(alphaRunning, 'RUNNING');
    await untilStatus(bravoQueued, 'SUCCEEDED', 10_000);
    expect(await statusOf(alphaQueued)).toBe('QUEUED');
  }, 60_000);

  it('cancels at once, from an API replica, a run on a worker that is draining', async () => {
    // Its lease is renewed every 20 s, and the grace period lasts 20 s: neither ends the run before the signal does.
    const worker = await startWorker({ STEPCAST_MAX_CONCURRENT_EXECUTIONS: '2', STEPCAST_SHUTDOWN_GRACE_MS: '20000', STEPCAST_LEASE_TTL_MS: '60000' });
    const id = (await api.app.executor.submitPlan('alpha', FOREVER)).id;
    await untilStatus(id, 'RUNNING');
    await expect.poll(() => gates.alpha!.requests.includes('/wait-forever'), { timeout: 15_000, interval: 20 }).toBe(true);
    const closing = worker.app.close();
    try {
      const asked = performance.now();
      await api.app.executor.cancelExecution('alpha', id);
      await untilStatus(id, 'CANCELLED', 5_000);
      // The issue's bound is 2 s; on a loaded machine the sandbox may take longer to stop, never the 20 s of a renewal.
      expect(performance.now() - asked).toBeLessThan(5_000);
    } finally {
      await closing;
    }
  }, 60_000);

  it('stores one job per submitted execution: the one sent in the transaction that stores it', async () => {
    await startWorker({ STEPCAST_MAX_CONCURRENT_EXECUTIONS: '2' });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await api.app.executor.submitPlan(i % 2 === 0 ? 'alpha' : 'bravo', QUICK)).id);
    for (const id of ids) await untilStatus(id, 'SUCCEEDED');
    const jobs = await sql<{ singleton_key: string; n: number }[]>`
      SELECT singleton_key, count(*)::int AS n FROM pgboss.job WHERE singleton_key = ANY(${ids}) GROUP BY singleton_key`;
    expect(Object.fromEntries(jobs.map((job) => [job.singleton_key, job.n]))).toEqual(Object.fromEntries(ids.map((id) => [id, 1])));
  }, 60_000);

  it('starts a third tenant\'s execution while two others keep every slot busy with their backlogs', async () => {
    const step = { kind: 'SQL' as const, queryContext: 'one', sql: 'SELECT 1 AS one' };
    const backlog = async (tenantId: string) => {
      const ids: string[] = [];
      for (let i = 0; i < 4; i++) {
        const batch = await Promise.all(Array.from({ length: 20 }, () => api.app.executor.submitPlan(tenantId, { query: 'q', steps: [step] })));
        ids.push(...batch.map((e) => e.id));
      }
      return ids;
    };
    // Both backlogs wait before the worker starts: its two slots go to alpha and bravo, one each (their caps).
    const [alpha, bravo] = await Promise.all([backlog('alpha'), backlog('bravo')]);
    await startWorker({ STEPCAST_MAX_CONCURRENT_EXECUTIONS: '2' });
    await untilStatus(alpha[0]!, 'SUCCEEDED');
    const charlie = (await api.app.executor.submitPlan('charlie', { query: 'q', steps: [step] })).id;
    await untilStatus(charlie, 'SUCCEEDED', 60_000);
    // It did not wait for the others' backlogs to drain: most of them had not started when it did.
    const [after] = await sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM executions
      WHERE id = ANY(${[...alpha, ...bravo]})
        AND (started_at IS NULL OR started_at > (SELECT started_at FROM executions WHERE id = ${charlie}))`;
    expect(after!.n).toBeGreaterThan(alpha.length / 2);
  }, 90_000);
});
