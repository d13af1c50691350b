import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { count } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createTenant } from '../src/admin/tenants.js';
import { executions } from '../src/db/tables.js';
import { promptOf, startScriptedLlm, type RecordedRequest, type ScriptedLlm, type ScriptedReply } from './fixtures/scripted-llm.js';
import { backends } from './support/database.js';
import {
  ExecutePlanMutation,
  ExecuteQueryMutation,
  ExecutionsQuery,
  PlanQueryQuery,
  StepUpdatesSubscription,
} from './support/operations.js';
import { describeUpdates, fetchExecution, runPlan, sqlStep, submitPlan } from './support/plans.js';
import { startTestServer, type TestClient, type TestServer } from './support/server.js';

interface RawResponse {
  status: number;
  headers: Headers;
  text: string;
  json: {
    data?: Record<string, unknown> | null;
    errors?: { message: string; extensions?: Record<string, unknown> }[];
  };
}

/** Posts an operation and keeps what HTTP said (status, headers), not only the GraphQL body. */
async function post(server: TestServer, document: { toString(): string }, variables: unknown): Promise<RawResponse> {
  const response = await fetch(server.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
    body: JSON.stringify({ query: document.toString(), variables }),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text, json: JSON.parse(text) as RawResponse['json'] };
}

/** What the tenant can see of its history and what the table holds; asking also shows the server still answers. */
async function stored(server: TestServer) {
  const response = await server.request(ExecutionsQuery, { first: 100 });
  expect(response.errors, 'the server must still answer').toBeUndefined();
  const [row] = await server.app.database.db.select({ n: count() }).from(executions);
  return { listed: response.data!.executions.edges.length, rows: row!.n };
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const VALID_PLAN = { query: 'how many users?', steps: [sqlStep('SELECT count(*) AS n FROM users')] };
const BAD_PLAN = { query: 'q', steps: [{ ...sqlStep('SELECT 1 AS one'), queryContext: '' }] };

for (const { backend, skipReason } of backends) {
  const suffix = `on ${backend}${skipReason ? ` (${skipReason})` : ''}`;

  describe.skipIf(skipReason !== null)(`tenant rate limit ${suffix}`, () => {
    const BURST = 3;
    let server: TestServer;
    beforeAll(async () => {
      // One token a minute: none comes back while the test runs.
      server = await startTestServer(backend, {
        env: { STEPCAST_TENANT_RATE_BURST: String(BURST), STEPCAST_TENANT_RATE_PER_MINUTE: '1', STEPCAST_DEMO_API: 'off' },
      });
    });
    afterAll(async () => {
      await server?.close();
    });

    it('accepts a burst, then answers RATE_LIMITED with HTTP 429 and Retry-After, storing nothing', async () => {
      const before = await stored(server);

      // Bad input is answered before the rate limit and spends no token.
      for (let i = 0; i < BURST + 2; i++) {
        const rejected = await post(server, ExecutePlanMutation, { plan: BAD_PLAN });
        expect(rejected.json.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
      }
      for (let i = 0; i < BURST; i++) {
        const accepted = await post(server, ExecutePlanMutation, { plan: VALID_PLAN });
        expect(accepted.json.errors, accepted.text).toBeUndefined();
        expect(accepted.status).toBe(200);
      }
      expect(await stored(server)).toEqual({ listed: before.listed + BURST, rows: before.rows + BURST });

      const limited = await post(server, ExecutePlanMutation, { plan: VALID_PLAN });
      expect(limited.status).toBe(429);
      expect(limited.json.data ?? null).toBeNull();
      expect(limited.json.errors).toHaveLength(1);
      const error = limited.json.errors![0]!;
      expect(error.extensions?.code).toBe('RATE_LIMITED');
      const retryAfter = error.extensions?.retryAfter as number;
      expect(Number.isInteger(retryAfter)).toBe(true);
      // Empty bucket, one token a minute: the next one is at most a minute away.
      expect(retryAfter).toBeGreaterThanOrEqual(1);
      expect(retryAfter).toBeLessThanOrEqual(60);
      expect(limited.headers.get('retry-after')).toBe(String(retryAfter));
      expect(error.message).toMatch(/rate limit/);
      expect(limited.text).not.toContain('"http"');

      // Nothing stored for the refused call, and the server answers the next query.
      expect(await stored(server)).toEqual({ listed: before.listed + BURST, rows: before.rows + BURST });
    });

    it('counts executeQuery against the same bucket', async () => {
      const before = await stored(server);
      const limited = await post(server, ExecuteQueryMutation, { query: 'which users are suspended?' });
      expect(limited.status).toBe(429);
      expect(limited.json.errors![0]!.extensions).toMatchObject({ code: 'RATE_LIMITED' });
      expect(await stored(server)).toEqual(before);
    });
  });

  describe.skipIf(skipReason !== null)(`per-tenant concurrency and input sizes ${suffix}`, () => {
    let llm: ScriptedLlm;
    let server: TestServer;
    /** SQL agent requests held by the scripted model until the test answers them. */
    const held: { request: RecordedRequest; answer: (reply: ScriptedReply) => void }[] = [];

    beforeAll(async () => {
      llm = await startScriptedLlm();
      server = await startTestServer(backend, {
        env: {
          OPENAI_BASE_URL: llm.baseUrl,
          STEPCAST_LLM_MAX_RETRIES: '0',
          STEPCAST_TENANT_MAX_CONCURRENT_EXECUTIONS: '1',
          STEPCAST_TENANT_RATE_BURST: '100',
          STEPCAST_PLAN_MAX_STEPS: '3',
          STEPCAST_MAX_QUERY_CONTEXT_CHARS: '150',
          STEPCAST_MAX_SQL_CHARS: '200',
          STEPCAST_MAX_CODE_CHARS: '250',
        },
      });
    });
    afterAll(async () => {
      for (const { answer } of held) answer({ status: 500 });
      await server?.close();
      await llm?.close();
    });

    it('runs one execution of the tenant at a time, in submission order; the others wait QUEUED', async () => {
      llm.script({
        when: (request) => request.body.response_format?.json_schema?.name === 'sql_step',
        repeat: true,
        replies: [(request) => new Promise<ScriptedReply>((answer) => held.push({ request, answer }))],
      });
      const names = ['first', 'second', 'third'];
      const ids: string[] = [];
      for (const name of names) {
        ids.push(await submitPlan(server, { query: name, steps: [{ kind: 'SQL', queryContext: `quota plan ${name}` }] }));
      }
      const statuses = async () => Promise.all(ids.map(async (id) => (await fetchExecution(server, id)).status));

      for (const [i, name] of names.entries()) {
        // Execution i is running and cannot finish until its SQL is answered: the ones after it wait.
        await waitFor(`the SQL agent request of the ${name} plan`, () => held.length === i + 1);
        expect(promptOf(held[i]!.request)).toContain(`quota plan ${name}`);
        expect(await statuses()).toEqual(names.map((_, j) => (j < i ? 'SUCCEEDED' : j === i ? 'RUNNING' : 'QUEUED')));
        held[i]!.answer({ content: { sql: `SELECT ${i + 1} AS n`, explanation: '' } });
      }
      const replay = await server.subscribeWs(StepUpdatesSubscription, { executionId: ids[2]! });
      expect(describeUpdates(replay.map((r) => r.data!.stepUpdates)).at(-1)).toBe('EXECUTION_SUCCEEDED');
      expect(held).toHaveLength(3);

      // The stored history agrees: each started after the previous one finished, and all were queued before.
      const runs = await Promise.all(ids.map((id) => fetchExecution(server, id)));
      expect(runs.map((run) => run.status)).toEqual(['SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED']);
      expect(runs.map((run) => run.finalResult)).toEqual([[{ n: 1 }], [{ n: 2 }], [{ n: 3 }]]);
      const time = (value: string | null | undefined) => new Date(value!).getTime();
      for (let i = 1; i < runs.length; i++) {
        expect(time(runs[i]!.startedAt)).toBeGreaterThanOrEqual(time(runs[i - 1]!.finishedAt));
        expect(time(runs[i]!.createdAt)).toBeLessThan(time(runs[0]!.finishedAt));
      }
    });

    const apiStep = (code: string) => ({ kind: 'API', queryContext: 'a program', code });
    /** A read-only SELECT of exactly `length` characters. */
    const sqlOfLength = (length: number) => `SELECT '${'x'.repeat(length - "SELECT '' AS padding".length)}' AS padding`;
    const codeOfLength = (length: number) => `return [{ n: 1 }]; // ${'x'.repeat(length - 'return [{ n: 1 }]; // '.length)}`;
    const bounds: { field: string; atBound: unknown; overBound: unknown; message: RegExp }[] = [
      {
        field: 'the number of steps (STEPCAST_PLAN_MAX_STEPS)',
        atBound: { query: 'q', steps: Array.from({ length: 3 }, () => sqlStep('SELECT 1 AS one')) },
        overBound: { query: 'q', steps: Array.from({ length: 4 }, () => sqlStep('SELECT 1 AS one')) },
        message: /plan\.steps holds 4 steps; the limit is 3/,
      },
      {
        field: 'queryContext (STEPCAST_MAX_QUERY_CONTEXT_CHARS)',
        atBound: { query: 'q', steps: [sqlStep('SELECT 1 AS one', { queryContext: 'c'.repeat(150) })] },
        overBound: { query: 'q', steps: [sqlStep('SELECT 1 AS one', { queryContext: 'c'.repeat(151) })] },
        message: /plan\.steps\[0\]\.queryContext is 151 characters; the limit is 150/,
      },
      {
        field: 'sql (STEPCAST_MAX_SQL_CHARS)',
        atBound: { query: 'q', steps: [sqlStep(sqlOfLength(200))] },
        overBound: { query: 'q', steps: [sqlStep(sqlOfLength(201))] },
        message: /plan\.steps\[0\]\.sql is 201 characters; the limit is 200/,
      },
      {
        field: 'code (STEPCAST_MAX_CODE_CHARS)',
        atBound: { query: 'q', steps: [apiStep(codeOfLength(250))] },
        overBound: { query: 'q', steps: [sqlStep('SELECT 1 AS one'), apiStep(codeOfLength(251))] },
        message: /plan\.steps\[1\]\.code is 251 characters; the limit is 250/,
      },
      {
        field: 'plan.query (4,000 characters, not a setting)',
        atBound: { query: 'q'.repeat(4_000), steps: [sqlStep('SELECT 1 AS one')] },
        overBound: { query: 'q'.repeat(4_001), steps: [sqlStep('SELECT 1 AS one')] },
        message: /plan\.query is 4001 characters; the limit is 4000/,
      },
    ];

    for (const { field, atBound, overBound, message } of bounds) {
      it(`accepts ${field} at its bound and rejects one more with BAD_USER_INPUT, storing nothing`, async () => {
        const before = await stored(server);
        const rejected = await post(server, ExecutePlanMutation, { plan: overBound });
        expect(rejected.status).toBe(400);
        expect(rejected.json.errors).toHaveLength(1);
        expect(rejected.json.errors![0]!.extensions?.code).toBe('BAD_USER_INPUT');
        expect(rejected.json.errors![0]!.message).toMatch(message);
        expect(await stored(server)).toEqual(before);

        const accepted = await post(server, ExecutePlanMutation, { plan: atBound });
        expect(accepted.json.errors, accepted.text).toBeUndefined();
        const id = (accepted.json.data as { executePlan: { id: string } }).executePlan.id;
        expect(await stored(server)).toEqual({ listed: before.listed + 1, rows: before.rows + 1 });
        // Let it finish, so the next case does not queue behind it (one execution at a time here).
        const updates = await server.subscribeWs(StepUpdatesSubscription, { executionId: id });
        expect(describeUpdates(updates.map((r) => r.data!.stepUpdates)).at(-1)).toBe('EXECUTION_SUCCEEDED');
      });
    }

    it('rejects a planQuery or executeQuery question over 4,000 characters before asking the model', async () => {
      llm.script();
      const before = await stored(server);
      for (const operation of [PlanQueryQuery, ExecuteQueryMutation]) {
        const rejected = await post(server, operation, { query: 'q'.repeat(4_001) });
        expect(rejected.json.errors![0]!.extensions?.code).toBe('BAD_USER_INPUT');
        expect(rejected.json.errors![0]!.message).toMatch(/query is 4001 characters; the limit is 4000/);
      }
      expect(llm.requests).toHaveLength(0);
      expect(await stored(server)).toEqual(before);
    });
  });

  describe.skipIf(skipReason !== null)(`fair shares of the execution slots ${suffix}`, () => {
    let server: TestServer;
    /** The API of tenants alpha and bravo: it answers only once the test lets go, so a step holds its slot without the database. */
    let holdingApi: Server;
    const held: ServerResponse[] = [];
    let holding = true;
    const letGo = () => {
      holding = false;
      for (const response of held.splice(0)) response.end(JSON.stringify({ released: true }));
    };
    let alpha: TestClient;
    let bravo: TestClient;
    let charlie: TestClient;

    beforeAll(async () => {
      holdingApi = createServer((request, response) => {
        response.setHeader('content-type', 'application/json');
        if (holding) held.push(response);
        else response.end(JSON.stringify({ released: true }));
      });
      await new Promise<void>((resolve) => holdingApi.listen(0, '127.0.0.1', resolve));
      server = await startTestServer(backend, {
        env: {
          STEPCAST_AUTH: 'on',
          STEPCAST_DEMO: 'off',
          STEPCAST_DEMO_API: 'off',
          STEPCAST_MAX_CONCURRENT_EXECUTIONS: '4',
          STEPCAST_TENANT_MAX_CONCURRENT_EXECUTIONS: '2',
          STEPCAST_API_REQUEST_TIMEOUT_MS: '120000',
        },
      });
      const { database, secrets } = server.app;
      const apiBaseUrl = `http://127.0.0.1:${(holdingApi.address() as AddressInfo).port}`;
      const openapi = {
        openapi: '3.0.3',
        info: { title: 'Holding API', version: '1' },
        paths: { '/hold': { get: { operationId: 'hold', responses: { '200': { description: 'answered when the test lets go' } } } } },
      };
      const clientOf = async (id: string, api: boolean) => {
        await createTenant(database, secrets, { name: id, id, ...(api ? { apiBaseUrl, openapi } : {}) });
        return server.as(`Bearer ${(await createApiKey(database, id)).token}`);
      };
      alpha = await clientOf('alpha', true);
      bravo = await clientOf('bravo', true);
      charlie = await clientOf('charlie', false);
    });
    afterAll(async () => {
      letGo();
      await server?.close();
      await new Promise((resolve) => holdingApi?.close(resolve));
    });

    it("runs a third tenant's plan at once while two tenants' executions hold the other slots", async () => {
      const holdSlot = {
        query: 'hold a slot',
        steps: [{ kind: 'API' as const, queryContext: 'wait for the API', code: "return [await api.call('hold', {})];" }],
      };
      const submitHolds = async (client: TestClient) => [
        await submitPlan(client, holdSlot, { stepTimeoutMs: 60_000 }),
        await submitPlan(client, holdSlot, { stepTimeoutMs: 60_000 }),
      ];
      const statuses = async (client: TestClient, ids: string[]) =>
        Promise.all(ids.map(async (id) => (await fetchExecution(client, id)).status));
      const alphaIds = await submitHolds(alpha);
      const bravoIds = await submitHolds(bravo);
      // Alpha runs its two (its cap), bravo one: the fourth slot is kept for a tenant with nothing running.
      await waitFor('three executions waiting on the API', () => held.length === 3, 30_000);

      const { execution } = await runPlan(charlie, { query: 'one row', steps: [sqlStep('SELECT 1 AS one')] });
      expect(execution.status).toBe('SUCCEEDED');
      expect(execution.steps[0]!.result).toEqual([{ one: 1 }]);
      expect(await statuses(alpha, alphaIds)).toEqual(['RUNNING', 'RUNNING']);
      expect(await statuses(bravo, bravoIds)).toEqual(['RUNNING', 'QUEUED']);
      expect(held).toHaveLength(3);

      letGo();
      for (const [client, ids] of [[alpha, alphaIds], [bravo, bravoIds]] as const) {
        for (const id of ids) {
          const updates = await client.subscribeWs(StepUpdatesSubscription, { executionId: id });
          expect(describeUpdates(updates.map((r) => r.data!.stepUpdates)).at(-1)).toBe('EXECUTION_SUCCEEDED');
        }
        expect((await fetchExecution(client, ids[1]!)).finalResult).toEqual([{ released: true }]);
      }
    });
  });
}
