import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../src/admin/tenants.js';
import { DEMO_TENANT_ID } from '../src/db/demo-data.js';
import { DurableExecutionQuery, ExecutePlanMutation, ExecutionsQuery, StepUpdatesSubscription } from './support/operations.js';
import { sqlStep } from './support/plans.js';
import { createPgCluster, throwawayClusterSkipReason, type PgCluster } from './support/pg-cluster.js';
import { startTestServer, type TestServer } from './support/server.js';

const skipReason = await throwawayClusterSkipReason();

interface Answer {
  status: number;
  retryAfter: string | null;
  body: { data?: unknown; errors?: { message: string; extensions?: Record<string, unknown> }[] };
}

async function queryExecutions(server: TestServer, authorization?: string): Promise<Answer> {
  const response = await fetch(server.url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/graphql-response+json',
      ...(authorization ? { authorization } : {}),
    },
    body: JSON.stringify({ query: ExecutionsQuery.toString(), variables: { first: 5 } }),
  });
  return { status: response.status, retryAfter: response.headers.get('retry-after'), body: (await response.json()) as Answer['body'] };
}

async function readiness(server: TestServer): Promise<number> {
  return (await fetch(new URL('/ready', server.url))).status;
}

/** Polls until check() holds (the outage and the recovery take however long the machine needs). */
async function until(check: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function expectServiceUnavailable(answer: Answer) {
  expect(answer.status).toBe(503);
  expect(answer.retryAfter).toMatch(/^[1-9]\d*$/);
  expect(answer.body.errors?.map((e) => e.extensions?.code)).toEqual(['SERVICE_UNAVAILABLE']);
  expect(answer.body.errors?.[0]?.message).not.toBe('Unexpected error.');
}

/** An answer given while the database goes away is either a success or a retryable 503, never a masked error. */
function expectSuccessOrUnavailable(answer: Answer) {
  if (answer.status === 200 && !answer.body.errors) return;
  expectServiceUnavailable(answer);
}

describe.skipIf(skipReason !== null)(`the service when PostgreSQL goes away ${skipReason ?? ''}`, () => {
  let cluster: PgCluster;
  beforeAll(async () => {
    cluster = await createPgCluster();
  });
  afterAll(async () => {
    await cluster?.destroy();
  });

  it('survives the termination of its backends and a restart with requests in flight, answers 503 meanwhile, and serves again after', async () => {
    const server = await startTestServer('postgres', { env: { DATABASE_URL: cluster.url } });
    try {
      expect((await queryExecutions(server)).status).toBe(200);
      const answers: Answer[] = [];
      let load = true;
      const inFlight = Promise.all(
        Array.from({ length: 4 }, async () => {
          while (load) answers.push(await queryExecutions(server));
        }),
      );
      try {
        await until(async () => answers.length >= 8, 'requests are flowing');
        expect(await cluster.terminateBackends()).toBeGreaterThan(0);
        await until(async () => (await queryExecutions(server)).status === 200, 'requests succeed after the backends were terminated');
        await cluster.restart();
        await until(async () => (await queryExecutions(server)).status === 200, 'requests succeed after the restart');
      } finally {
        load = false;
        await inFlight;
      }
      for (const answer of answers) expectSuccessOrUnavailable(answer);

      await cluster.stop();
      expectServiceUnavailable(await queryExecutions(server));
      expect(await readiness(server)).toBe(503);
      // Subscriptions meet the outage when they look the execution up: the same code over graphql-ws and SSE.
      const executionId = '00000000-0000-4000-8000-000000000000';
      const overWs = await server.subscribeWs(StepUpdatesSubscription, { executionId });
      expect(overWs.flatMap((result) => result.errors ?? []).map((e) => e.extensions?.code)).toEqual(['SERVICE_UNAVAILABLE']);
      const overSse = await server.subscribeSse(StepUpdatesSubscription, { executionId });
      expect(overSse.flatMap((result) => result.errors ?? []).map((e) => e.extensions?.code)).toEqual(['SERVICE_UNAVAILABLE']);
      await cluster.start();
      await until(async () => (await queryExecutions(server)).status === 200, 'requests succeed once the server is back');
      expect(await readiness(server)).toBe(200);
    } finally {
      await server.close();
    }
  });

  it('pauses runs in flight while its backends are terminated and the server restarts, and resumes them to success', async () => {
    const server = await startTestServer('postgres', {
      env: { DATABASE_URL: cluster.url, STEPCAST_RECOVERY_INTERVAL_MS: '200', STEPCAST_DEMO_API: 'off' },
    });
    try {
      const plan = {
        query: 'a run that outlives two outages',
        steps: [
          sqlStep('SELECT id FROM users ORDER BY id LIMIT 20'),
          // A statement of a second or so: the outage below cuts it while it runs.
          sqlStep('WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 2000000) SELECT count(*) AS n FROM r'),
          sqlStep('SELECT count(*) AS n FROM users a, users b, step_1 s'),
          sqlStep('SELECT s.id FROM step_1 s ORDER BY s.id LIMIT 3'),
        ],
      };
      const ids: string[] = [];
      for (let i = 0; i < 4; i++) {
        const submitted = await server.request(ExecutePlanMutation, { plan, options: { stepTimeoutMs: 60_000 } });
        expect(submitted.errors).toBeUndefined();
        ids.push(submitted.data!.executePlan.id);
      }
      const statuses = async () =>
        Promise.all(ids.map(async (id) => (await server.request(DurableExecutionQuery, { id })).data?.execution ?? null));
      await until(async () => (await statuses()).some((e) => e?.steps[1]?.status === 'RUNNING'), 'a long statement runs');
      expect(await cluster.terminateBackends()).toBeGreaterThan(0);
      await until(async () => (await queryExecutions(server)).status === 200, 'requests succeed after the backends were terminated');
      await cluster.restart();
      await until(
        async () => (await statuses()).every((e) => e !== null && ['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(e.status)),
        'every run has ended',
        120_000,
      );
      const executions = await statuses();
      // Nothing was failed by the outages: the runs paused and continued from their last committed step.
      expect(executions.map((e) => [e!.status, e!.error?.code ?? null])).toEqual(ids.map(() => ['SUCCEEDED', null]));
      let resumed = 0;
      for (const id of ids) {
        const updates = (await server.subscribeSse(StepUpdatesSubscription, { executionId: id })).map((r) => r.data!.stepUpdates);
        expect(updates.map((u) => u.sequence)).toEqual(updates.map((_, i) => i + 1));
        for (let index = 1; index <= plan.steps.length; index++) {
          expect(updates.filter((u) => u.type === 'STEP_SUCCEEDED' && u.step?.index === index)).toHaveLength(1);
        }
        expect(updates.at(-1)!.type).toBe('EXECUTION_SUCCEEDED');
        resumed += updates.filter((u) => u.type === 'EXECUTION_RESUMED').length;
      }
      // A statement cut by the outage paused its run, which this process took back: a resume, not counted
      // against STEPCAST_MAX_RESUMES (no step is to blame).
      expect(resumed).toBeGreaterThan(0);
      expect(executions.map((e) => e!.resumes)).toEqual(ids.map(() => 0));
    } finally {
      await server.close();
    }
  });

  it('starts while the database is down: not ready and 503 until it comes up, then ready without a restart', async () => {
    await cluster.stop();
    const server = await startTestServer('postgres', { env: { DATABASE_URL: cluster.url } });
    try {
      expect(await readiness(server)).toBe(503);
      expectServiceUnavailable(await queryExecutions(server));
      await cluster.start();
      await until(async () => (await readiness(server)) === 200, 'the service is ready');
      const answer = await queryExecutions(server);
      expect(answer.status).toBe(200);
      expect(answer.body.errors).toBeUndefined();
    } finally {
      await server.close();
    }
  });

  it('with authentication on, a request and a WebSocket whose key cannot be checked are told to retry, not refused', async () => {
    const server = await startTestServer('postgres', {
      env: { DATABASE_URL: cluster.url, STEPCAST_AUTH: 'on', STEPCAST_JWT_SECRET: randomBytes(32).toString('base64url') },
    });
    try {
      const key = `Bearer ${(await createApiKey(server.app.database, DEMO_TENANT_ID, 'outage')).token}`;
      expect((await queryExecutions(server, key)).status).toBe(200);
      await cluster.stop();
      expectServiceUnavailable(await queryExecutions(server, key));
      // 1013 "try again later": graphql-ws clients retry it, where 4403 would tell them the key is bad.
      const socket = new WebSocket(server.wsUrl, 'graphql-transport-ws');
      await once(socket, 'open');
      socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: key } }));
      const [code, reason] = (await once(socket, 'close')) as [number, Buffer];
      expect({ code, reason: reason.toString() }).toEqual({ code: 1013, reason: expect.stringContaining('SERVICE_UNAVAILABLE') });
    } finally {
      await cluster.start();
      await server.close();
    }
  });
});
