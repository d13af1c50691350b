import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { promptOf, startScriptedLlm, type ScriptedLlm } from './fixtures/scripted-llm.js';
import { backends } from './support/database.js';
import { sampleValue, scrapeMetrics } from './support/prometheus.js';
import { ExecuteQueryMutation, ExecutionsQuery, PlanQueryQuery, StepUpdatesSubscription } from './support/operations.js';
import { describeUpdates, fetchExecution } from './support/plans.js';
import { startTestServer, type TestServer } from './support/server.js';
import { settlesWithin } from './support/timing.js';

const PLAN = {
  reasoning: 'Find the suspended users, then count their group memberships.',
  steps: [
    { kind: 'SQL', queryContext: 'suspended users', entity: 'users', reasoning: null, critical: true },
    { kind: 'SQL', queryContext: 'memberships of those users', entity: 'group_members', reasoning: 'join step 1', critical: true },
  ],
};

const isPlanner = (request: { body: { response_format?: { json_schema?: { name: string } } } }) =>
  request.body.response_format?.json_schema?.name === 'plan';
const asks = (text: string) => (request: Parameters<typeof promptOf>[0]) =>
  !isPlanner(request) && promptOf(request).includes(text);

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`planner on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let llm: ScriptedLlm;
    let server: TestServer;
    beforeAll(async () => {
      llm = await startScriptedLlm();
      server = await startTestServer(backend, {
        env: { OPENAI_BASE_URL: llm.baseUrl, STEPCAST_PLANNER_MODEL: 'planner-model', STEPCAST_LLM_MAX_RETRIES: '0' },
      });
    });
    afterAll(async () => {
      await server?.close();
      await llm?.close();
    });

    it('planQuery returns the planner plan, asked with the tenant tables, and stores nothing', async () => {
      llm.script({ when: isPlanner, replies: [{ content: PLAN }] });
      const before = await server.request(ExecutionsQuery, { first: 100 });
      const response = await server.request(PlanQueryQuery, { query: 'How many memberships do suspended users have?' });
      expect(response.errors).toBeUndefined();
      expect(response.data!.planQuery).toEqual({
        query: 'How many memberships do suspended users have?',
        reasoning: PLAN.reasoning,
        steps: PLAN.steps.map((step) => ({ ...step, sql: null, code: null })),
      });
      const [request] = llm.requests;
      expect(request!.body.model).toBe('planner-model');
      expect(promptOf(request!)).toContain('How many memberships do suspended users have?');
      expect(promptOf(request!)).toMatch(/group_members \(~\d+ rows\)/);
      const after = await server.request(ExecutionsQuery, { first: 100 });
      expect(after.data!.executions.edges.length).toBe(before.data!.executions.edges.length);
    });

    it('executeQuery plans, then runs the plan written in words, with PLAN_CREATED as update 1 and the planner tokens counted', async () => {
      llm.script(
        { when: isPlanner, replies: [{ content: PLAN }] },
        { when: asks('What this step must find: suspended users'), replies: [{ content: { sql: "SELECT id FROM users WHERE status = 'suspended' ORDER BY id", explanation: '' } }] },
        { when: asks('What this step must find: memberships of those users'), replies: [{ content: { sql: 'SELECT count(*) AS memberships FROM group_members m JOIN step_1 s ON s.id = m.user_id', explanation: '' } }] },
      );
      const response = await server.request(ExecuteQueryMutation, {
        query: 'How many memberships do suspended users have?',
        options: { correlationId: 'planned-1' },
      });
      expect(response.errors).toBeUndefined();
      const created = response.data!.executeQuery;
      expect(created.lastSequence).toBe(1);
      expect(created.plan.steps.map((s) => s.queryContext)).toEqual(['suspended users', 'memberships of those users']);
      const results = await server.subscribeWs(StepUpdatesSubscription, { executionId: created.id });
      const updates = results.map((r) => r.data!.stepUpdates);
      expect(describeUpdates(updates)).toEqual([
        'PLAN_CREATED',
        'EXECUTION_STARTED',
        'STEP_STARTED:1',
        'STEP_SUCCEEDED:1',
        'STEP_STARTED:2',
        'STEP_SUCCEEDED:2',
        'EXECUTION_SUCCEEDED',
      ]);
      expect(updates.map((u) => u.sequence)).toEqual([1, 2, 3, 4, 5, 6, 7]);
      expect(updates[0]).toMatchObject({ status: 'QUEUED', step: null });
      const execution = await fetchExecution(server, created.id);
      expect(execution.status).toBe('SUCCEEDED');
      expect(execution.correlationId).toBe('planned-1');
      expect((execution.finalResult as { memberships: number }[])[0]!.memberships).toBeGreaterThan(0);
      expect(execution.usage!.totalTokens).toBe(360);
    });

    it('rejects a plan from the planner that would not pass client validation, storing nothing', async () => {
      llm.script({ when: isPlanner, replies: [{ content: { reasoning: 'r', steps: [{ ...PLAN.steps[0], queryContext: '  ' }] } }] });
      const response = await server.request(PlanQueryQuery, { query: 'q' });
      expect(response.errors![0]!.extensions).toMatchObject({ code: 'AGENT_OUTPUT_INVALID', retryable: false });
      expect(response.errors![0]!.message).toMatch(/queryContext must not be empty/);
    });

    it('answers a bad question or bad options with BAD_USER_INPUT before asking the planner', async () => {
      llm.script({ when: isPlanner, replies: [{ content: PLAN }], repeat: true });
      const empty = await server.request(PlanQueryQuery, { query: ' ' });
      expect(empty.errors![0]!.extensions).toMatchObject({ code: 'BAD_USER_INPUT' });
      const badOptions = await server.request(ExecuteQueryMutation, { query: 'q', options: { sampleSize: 500 } });
      expect(badOptions.errors![0]!.extensions).toMatchObject({ code: 'BAD_USER_INPUT' });
      expect(llm.requests).toHaveLength(0);
    });

    it('reports a failing model as AGENT_FAILED with retryable, storing nothing', async () => {
      llm.script({ when: isPlanner, replies: [{ status: 503 }], repeat: true });
      const before = await server.request(ExecutionsQuery, { first: 100 });
      const response = await server.request(ExecuteQueryMutation, { query: 'q' });
      expect(response.errors![0]!.extensions).toMatchObject({ code: 'AGENT_FAILED', retryable: true });
      const after = await server.request(ExecutionsQuery, { first: 100 });
      expect(after.data!.executions.edges.length).toBe(before.data!.executions.edges.length);
    });

    it('stops planning when the client of planQuery goes away: the model request is closed, long before STEPCAST_PLANNER_TIMEOUT_MS, and counted as cancelled', async () => {
      const plannerCalls = async (outcome: string) =>
        sampleValue((await scrapeMetrics(server.url)).samples, 'stepcast_model_calls_total', { agent: 'planner', outcome }) ?? 0;
      const [cancelledBefore, errorsBefore] = [await plannerCalls('cancelled'), await plannerCalls('error')];
      llm.script({ when: isPlanner, replies: [{ hang: true }] });
      const client = new AbortController();
      const answered = fetch(server.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
        body: JSON.stringify({ query: PlanQueryQuery.toString(), variables: { query: 'How many users are there?' } }),
        signal: client.signal,
      }).catch((error: unknown) => error);
      await vi.waitFor(() => expect(llm.hanging).toHaveLength(1), { timeout: 30_000, interval: 20 });
      client.abort();
      expect(await answered).toMatchObject({ name: 'AbortError' });
      // The planner's limit is 120 s here: only the client's going away can close the request this soon.
      expect(await settlesWithin(llm.hanging[0]!.closed, 5_000)).toBe(true);
      // Told as a cancel, not as the model's failure to answer in time.
      await vi.waitFor(async () => expect(await plannerCalls('cancelled')).toBe(cancelledBefore + 1), { timeout: 10_000, interval: 50 });
      expect(await plannerCalls('error')).toBe(errorsBefore);
    });
  });
}
