import { count, eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createTenant } from '../src/admin/tenants.js';
import { DEMO_TENANT_ID } from '../src/db/demo-data.js';
import { executions } from '../src/db/tables.js';
import { startScriptedLlm, type RecordedRequest, type ScriptedLlm } from './fixtures/scripted-llm.js';
import { bearer } from './support/attacks.js';
import { backends } from './support/database.js';
import { ExecutePlanMutation, ExecuteQueryMutation, PlanQueryQuery, StepUpdatesSubscription } from './support/operations.js';
import { fetchExecution, runPlan, sqlStep } from './support/plans.js';
import { overWs, startTestServer, type GraphQLResponse, type TestClient, type TestServer } from './support/server.js';

/**
 * Bounded model cost: every planQuery, executeQuery and agent call takes one of the tenant's model calls
 * (here bursts of 2, one a minute: none comes back while a test runs), and a request may select one
 * planQuery or executeQuery. Each test uses tenants of its own, so each starts with full buckets.
 */

const MODEL_CALLS_BURST = 2;
const EXECUTIONS_BURST = 3;

const schemaOf = (request: RecordedRequest) => request.body.response_format?.json_schema?.name;
const PLANNER = { when: (request: RecordedRequest) => schemaOf(request) === 'plan', repeat: true };
const SQL_AGENT = { when: (request: RecordedRequest) => schemaOf(request) === 'sql_step', repeat: true };
const API_AGENT = { when: (request: RecordedRequest) => schemaOf(request) === 'api_step', repeat: true };

const TWO_STEP_PLAN = {
  reasoning: 'two counts',
  steps: [
    { kind: 'SQL', queryContext: 'the first count', entity: null, reasoning: null, critical: true },
    { kind: 'SQL', queryContext: 'the second count', entity: null, reasoning: null, critical: true },
  ],
};
const agentStep = (queryContext: string) => ({ kind: 'SQL' as const, queryContext });
const SQL_PLAN = { query: 'one', steps: [sqlStep('SELECT 1 AS one')] };

type Result = GraphQLResponse<Record<string, unknown>>;
const codesOf = (result: Result) => (result.errors ?? []).map((error) => error.extensions?.code);

/** A raw POST, keeping what HTTP said (status, Retry-After) besides the GraphQL body. */
async function post(server: TestServer, authorization: string, query: { toString(): string }, variables?: Record<string, unknown>) {
  const response = await fetch(server.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json', authorization },
    body: JSON.stringify({ query: query.toString(), variables }),
  });
  return { status: response.status, retryAfter: response.headers.get('retry-after'), ...((await response.json()) as Result) };
}


function expectRateLimited(result: Awaited<ReturnType<typeof post>>) {
  expect(result.status).toBe(429);
  expect(result.data ?? null).toBeNull();
  expect(codesOf(result)).toEqual(['RATE_LIMITED']);
  const retryAfter = result.errors![0]!.extensions!.retryAfter as number;
  expect(Number.isInteger(retryAfter)).toBe(true);
  // An empty bucket that gains one token a minute.
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  expect(retryAfter).toBeLessThanOrEqual(60);
  expect(result.retryAfter).toBe(String(retryAfter));
}

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`model budget on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let llm: ScriptedLlm;
    let server: TestServer;
    beforeAll(async () => {
      llm = await startScriptedLlm();
      server = await startTestServer(backend, {
        env: {
          STEPCAST_AUTH: 'on',
          OPENAI_BASE_URL: llm.baseUrl,
          STEPCAST_LLM_MAX_RETRIES: '0',
          STEPCAST_TENANT_MODEL_CALLS_BURST: String(MODEL_CALLS_BURST),
          STEPCAST_TENANT_MODEL_CALLS_PER_MINUTE: '1',
          STEPCAST_TENANT_RATE_BURST: String(EXECUTIONS_BURST),
          STEPCAST_TENANT_RATE_PER_MINUTE: '1',
        },
      });
    });
    afterAll(async () => {
      await server?.close();
      await llm?.close();
    });

    /** A new tenant (its own schema, role and buckets) and its key. */
    async function newTenant(id: string): Promise<{ id: string; authorization: string; client: TestClient }> {
      const { database, secrets } = server.app;
      await createTenant(database, secrets, { name: id, id });
      const key = await createApiKey(database, id, 'model budget');
      return { id, authorization: bearer(key.token), client: server.as(bearer(key.token)) };
    }

    async function storedExecutions(tenantId: string): Promise<number> {
      const [row] = await server.app.database.db.select({ n: count() }).from(executions).where(eq(executions.tenantId, tenantId));
      return row!.n;
    }

    it('refuses an operation that selects more than one planQuery or executeQuery before anything runs, over HTTP and graphql-ws', async () => {
      llm.script(
        { ...PLANNER, replies: [{ content: TWO_STEP_PLAN }] },
        { ...SQL_AGENT, replies: [{ content: { sql: 'SELECT 1 AS one', explanation: '' } }] },
      );
      const tenant = await newTenant('aliases');
      const ws = tenant.client.wsClient();
      const fifteenPlans = `{ ${Array.from({ length: 15 }, (_, i) => `p${i}: planQuery(query: "question ${i}") { query }`).join(' ')} }`;
      const documents: [string, number][] = [
        [fifteenPlans, 15],
        ['{ planQuery(query: "a") { query } ...More } fragment More on Query { again: planQuery(query: "b") { query } }', 2],
        ['mutation { a: executeQuery(query: "a") { id } b: executeQuery(query: "b") { id } }', 2],
        ['mutation { executeQuery(query: "a") { id } ... on Mutation { again: executeQuery(query: "b") { id } } }', 2],
        ['mutation ($q: String!) { executeQuery(query: $q) { id } skipped: executeQuery(query: $q) @skip(if: true) { id } }', 2],
      ];
      for (const [document, calls] of documents) {
        const http = await post(server, tenant.authorization, document, { q: 'q' });
        expect(http.status, document).toBe(400);
        for (const result of [http, await overWs(ws, document, { q: 'q' })]) {
          expect(result.data ?? undefined, document).toBeUndefined();
          expect(codesOf(result), document).toEqual(['TOO_MANY_MODEL_CALLS']);
          expect(result.errors![0]!.message).toBe(
            `The operation asks a model ${calls} times (planQuery, executeQuery), over the limit of 1 per request.`,
          );
          expect(result.errors![0]!.extensions).toMatchObject({ code: 'TOO_MANY_MODEL_CALLS', limit: 1 });
        }
      }
      expect(llm.requests).toHaveLength(0);
      expect(await storedExecutions(tenant.id)).toBe(0);

      // The refusals took nothing from the tenant's budget: its two model calls are all there, one per request.
      for (const result of [await post(server, tenant.authorization, PlanQueryQuery, { query: 'q' }), await overWs(ws, PlanQueryQuery.toString(), { query: 'q' })]) {
        expect(result.errors).toBeUndefined();
        expect(result.data).toHaveProperty('planQuery.query', 'q');
      }
      expect(llm.requests).toHaveLength(2);
    });

    it('gives a tenant its burst of model calls: the next planQuery answers RATE_LIMITED with retryAfter, without asking the model', async () => {
      llm.script({ ...PLANNER, replies: [{ content: TWO_STEP_PLAN }] });
      const tenant = await newTenant('planner');
      for (let i = 0; i < MODEL_CALLS_BURST; i++) {
        const planned = await post(server, tenant.authorization, PlanQueryQuery, { query: `question ${i}` });
        expect(planned.errors).toBeUndefined();
        expect(planned.status).toBe(200);
      }
      expect(llm.requests).toHaveLength(MODEL_CALLS_BURST);

      const limited = await post(server, tenant.authorization, PlanQueryQuery, { query: 'one more' });
      expectRateLimited(limited);
      expect(limited.errors![0]!.message).toMatch(/may call a model again/);
      const overSocket = await overWs(tenant.client.wsClient(), PlanQueryQuery.toString(), { query: 'one more' });
      expect(codesOf(overSocket)).toEqual(['RATE_LIMITED']);
      expect(overSocket.errors![0]!.extensions).not.toHaveProperty('http');
      expect(llm.requests).toHaveLength(MODEL_CALLS_BURST);
      expect(await storedExecutions(tenant.id)).toBe(0);

      // Buckets are per tenant: another tenant still plans.
      const other = await newTenant('planner_other');
      expect((await post(server, other.authorization, PlanQueryQuery, { query: 'mine' })).errors).toBeUndefined();
      expect(llm.requests).toHaveLength(MODEL_CALLS_BURST + 1);
    });

    it('counts every SQL agent call: a step past the budget fails MODEL_RATE_LIMITED, naming the setting, without asking the model', async () => {
      llm.script({ ...SQL_AGENT, replies: [{ content: { sql: 'SELECT 1 AS one', explanation: '' } }] });
      const tenant = await newTenant('sql_agent');
      const { execution } = await runPlan(tenant.client, {
        query: 'three counts',
        steps: [agentStep('the first count'), agentStep('the second count'), agentStep('the third count')],
      });
      expect(execution.steps.map((step) => step.status)).toEqual(['SUCCEEDED', 'SUCCEEDED', 'FAILED']);
      const error = execution.steps[2]!.error!;
      expect(error).toMatchObject({ code: 'MODEL_RATE_LIMITED', retryable: true });
      expect(error.message).toContain('STEPCAST_TENANT_MODEL_CALLS_PER_MINUTE');
      expect(error.message).toMatch(/step 3 needs the SQL agent to write its sql/);
      expect(execution.steps[2]!.usage).toBeNull();
      expect(execution.status).toBe('FAILED');
      expect(execution.error).toMatchObject({ code: 'MODEL_RATE_LIMITED' });
      expect(llm.requests).toHaveLength(MODEL_CALLS_BURST);
      expect(llm.requests.every((request) => schemaOf(request) === 'sql_step')).toBe(true);
    });

    it('counts a repair round as an agent call of its own: with no call left, the repair fails MODEL_RATE_LIMITED unasked', async () => {
      llm.script({
        ...SQL_AGENT,
        repeat: false,
        replies: [
          { content: { sql: 'SELECT 1 AS one', explanation: '' } },
          { content: { sql: 'SELECT pg_sleep(1)', explanation: 'refused by the guard' } },
          { content: { sql: 'SELECT 2 AS two', explanation: 'the repair, never asked for' } },
        ],
      });
      const tenant = await newTenant('sql_repair');
      const { execution } = await runPlan(tenant.client, { query: 'q', steps: [agentStep('the first count'), agentStep('needs a repair')] });
      const step = execution.steps[1]!;
      expect(step.status).toBe('FAILED');
      expect(step.error).toMatchObject({ code: 'MODEL_RATE_LIMITED', retryable: true });
      expect(step.attempts).toBe(2);
      expect(llm.requests).toHaveLength(MODEL_CALLS_BURST);
    });

    it('counts the API code agent: past the budget its step fails MODEL_RATE_LIMITED without asking the model', async () => {
      llm.script({ ...PLANNER, replies: [{ content: TWO_STEP_PLAN }] }, { ...API_AGENT, replies: [{ content: { code: 'return [];', explanation: '' } }] });
      // The demo tenant has an API; no other test here spends its model calls.
      const key = await createApiKey(server.app.database, DEMO_TENANT_ID, 'model budget');
      const demo = server.as(bearer(key.token));
      for (let i = 0; i < MODEL_CALLS_BURST; i++) expect((await demo.request(PlanQueryQuery, { query: `q${i}` })).errors).toBeUndefined();
      const { execution } = await runPlan(demo, { query: 'users from the API', steps: [{ kind: 'API', queryContext: 'list the users' }] });
      expect(execution.steps[0]!.error).toMatchObject({ code: 'MODEL_RATE_LIMITED', retryable: true });
      expect(execution.steps[0]!.error!.message).toMatch(/step 1 needs the API code agent to write its code.*STEPCAST_TENANT_MODEL_CALLS_BURST/);
      expect(llm.requests.map(schemaOf)).toEqual(['plan', 'plan']);
    });

    it('makes executeQuery take an execution token and a model call, both or neither', async () => {
      llm.script(
        { ...PLANNER, replies: [{ content: TWO_STEP_PLAN }] },
        { ...SQL_AGENT, replies: [{ content: { sql: 'SELECT 1 AS one', explanation: '' } }] },
      );
      const tenant = await newTenant('execute_query');
      // One model call for the planner, one for step 1's agent; step 2 finds the budget empty.
      const accepted = await post(server, tenant.authorization, ExecuteQueryMutation, { query: 'two counts' });
      expect(accepted.errors).toBeUndefined();
      const { id } = accepted.data!.executeQuery as { id: string };
      await tenant.client.subscribeWs(StepUpdatesSubscription, { executionId: id });
      const execution = await fetchExecution(tenant.client, id);
      expect(execution.steps.map((step) => step.error?.code ?? step.status)).toEqual(['SUCCEEDED', 'MODEL_RATE_LIMITED']);
      expect(llm.requests.map(schemaOf)).toEqual(['plan', 'sql_step']);

      // No model call left: refused, the model not asked, nothing stored, and no execution token spent.
      const limited = await post(server, tenant.authorization, ExecuteQueryMutation, { query: 'again' });
      expectRateLimited(limited);
      expect(limited.errors![0]!.message).toMatch(/may call a model again/);
      expect(llm.requests).toHaveLength(2);
      expect(await storedExecutions(tenant.id)).toBe(1);
      for (let i = 1; i < EXECUTIONS_BURST; i++) {
        expect((await post(server, tenant.authorization, ExecutePlanMutation, { plan: SQL_PLAN })).errors).toBeUndefined();
      }
      expectRateLimited(await post(server, tenant.authorization, ExecutePlanMutation, { plan: SQL_PLAN }));

      // And the other way round: no execution token left, so no model call is spent either.
      llm.script({ ...PLANNER, replies: [{ content: TWO_STEP_PLAN }] });
      const other = await newTenant('execute_query_other');
      for (let i = 0; i < EXECUTIONS_BURST; i++) {
        expect((await post(server, other.authorization, ExecutePlanMutation, { plan: SQL_PLAN })).errors).toBeUndefined();
      }
      const refused = await post(server, other.authorization, ExecuteQueryMutation, { query: 'two counts' });
      expectRateLimited(refused);
      expect(refused.errors![0]!.message).toMatch(/start another execution/);
      expect(llm.requests).toHaveLength(0);
      expect(await storedExecutions(other.id)).toBe(EXECUTIONS_BURST);
      for (let i = 0; i < MODEL_CALLS_BURST; i++) {
        expect((await post(server, other.authorization, PlanQueryQuery, { query: `q${i}` })).errors).toBeUndefined();
      }
      expectRateLimited(await post(server, other.authorization, PlanQueryQuery, { query: 'one more' }));
      expect(llm.requests).toHaveLength(MODEL_CALLS_BURST);
    });
  });
}
