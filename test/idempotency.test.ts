import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ExecutePlanMutationVariables, PlanInput } from './generated/graphql.js';
import { startScriptedLlm, type RecordedRequest, type ScriptedLlm } from './fixtures/scripted-llm.js';
import { OTHER_TENANT_ID, serviceRows, startAttackTarget, type AttackTarget } from './support/attacks.js';
import { backends } from './support/database.js';
import { ExecutePlanMutation, ExecuteQueryMutation, StepUpdatesSubscription } from './support/operations.js';
import type { TestClient } from './support/server.js';
import { DEMO_TENANT_ID } from '../src/db/demo-data.js';
import { canonicalJson, requestHash } from '../src/executor/idempotency.js';

const PLANNED = {
  reasoning: 'Count the users, then say it again.',
  steps: [
    { kind: 'SQL', queryContext: 'how many users there are', entity: 'users', reasoning: null, critical: true },
    { kind: 'SQL', queryContext: 'the same count once more', entity: 'users', reasoning: null, critical: true },
  ],
};

const isPlanner = (request: RecordedRequest) => request.body.response_format?.json_schema?.name === 'plan';

function twoSteps(query: string): PlanInput {
  return {
    query,
    steps: [
      { kind: 'SQL', queryContext: 'count the users', sql: 'SELECT count(*) AS users FROM users' },
      { kind: 'SQL', queryContext: 'read it back', sql: 'SELECT users FROM step_1' },
    ],
  };
}

type Options = NonNullable<ExecutePlanMutationVariables['options']>;

// GraphQL hands the server input objects in the schema's field order; a request hash must not depend on it anyway.
describe('the request an idempotency key is compared by', () => {
  it('is the same for the same values whatever the order of their keys, and differs for any other value', () => {
    const a = { plan: { query: 'q', steps: [{ kind: 'SQL', sql: 'SELECT 1', critical: true }] }, options: { sampleSize: 3, stepTimeoutMs: 100 } };
    const b = { options: { stepTimeoutMs: 100, sampleSize: 3 }, plan: { steps: [{ critical: true, sql: 'SELECT 1', kind: 'SQL' }], query: 'q' } };
    expect(canonicalJson(b)).toBe(canonicalJson(a));
    expect(requestHash(b)).toBe(requestHash(a));
    expect(requestHash({ ...a, options: { sampleSize: 4, stepTimeoutMs: 100 } })).not.toBe(requestHash(a));
    expect(requestHash({ ...a, plan: { ...a.plan, steps: [...a.plan.steps, ...a.plan.steps] } })).not.toBe(requestHash(a));
  });
});

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`idempotent submit on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let llm: ScriptedLlm;
    let target: AttackTarget;
    let demo: TestClient;

    const rows = <Row>(query: string) => serviceRows<Row>(target.server.app.database, query);
    const count = async (query: string) => Number((await rows<{ n: number | string }>(query))[0]!.n);
    const executionsOf = (correlationId: string) =>
      count(`SELECT count(*) AS n FROM executions WHERE correlation_id = '${correlationId}'`);
    const stepStarts = (executionId: string) =>
      count(`SELECT count(*) AS n FROM step_events WHERE execution_id = '${executionId}' AND type = 'STEP_STARTED'`);
    const keyRows = (key: string) =>
      rows<{ tenant_id: string; execution_id: string | null }>(
        `SELECT tenant_id, execution_id FROM idempotency_keys WHERE key = '${key}' ORDER BY tenant_id`,
      );
    const plannerCalls = () => llm.requests.filter(isPlanner).length;

    /** Follows the execution to its terminal update (the stream completes after it). */
    async function finished(client: TestClient, executionId: string): Promise<void> {
      const results = await client.subscribeWs(StepUpdatesSubscription, { executionId });
      expect(results.at(-1)?.data?.stepUpdates.type).toMatch(/^EXECUTION_(SUCCEEDED|FAILED)$/);
    }

    async function executePlan(client: TestClient, plan: PlanInput, options: Options): Promise<string> {
      const response = await client.request(ExecutePlanMutation, { plan, options });
      expect(response.errors).toBeUndefined();
      return response.data!.executePlan.id;
    }

    async function executeQuery(query: string, options: Options): Promise<string> {
      const response = await demo.request(ExecuteQueryMutation, { query, options });
      expect(response.errors).toBeUndefined();
      return response.data!.executeQuery.id;
    }

    beforeAll(async () => {
      llm = await startScriptedLlm();
      target = await startAttackTarget(backend, {
        OPENAI_BASE_URL: llm.baseUrl,
        STEPCAST_LLM_MAX_RETRIES: '0',
        // Fewer executions than the 20 racing submits below: were each to take a token, some would be refused.
        STEPCAST_TENANT_RATE_BURST: '19',
        STEPCAST_TENANT_RATE_PER_MINUTE: '1',
      });
      demo = target.demo;
    });
    afterAll(async () => {
      await target?.server.close();
      await llm?.close();
    });

    it('answers the same key twice with the same execution, stored once and run once', async () => {
      const options = { idempotencyKey: 'same-twice', correlationId: 'idem-twice' };
      const first = await executePlan(demo, twoSteps('twice'), options);
      await finished(demo, first);
      // The same request written differently: keys in another order, defaults spelled out.
      const again: PlanInput = {
        steps: twoSteps('twice').steps.map(({ sql, queryContext, kind }) => ({ sql, critical: true, kind, queryContext })),
        query: 'twice',
      };
      const response = await demo.request(ExecutePlanMutation, {
        plan: again,
        options: { sampleSize: 3, correlationId: 'idem-twice', idempotencyKey: 'same-twice' },
      });
      expect(response.errors).toBeUndefined();
      expect(response.data!.executePlan).toMatchObject({ id: first, status: 'SUCCEEDED' });
      // More replays than the tenant's burst of executions: a replay takes no token.
      for (let i = 0; i < 20; i++) expect(await executePlan(demo, twoSteps('twice'), options)).toBe(first);
      expect(await executionsOf('idem-twice')).toBe(1);
      expect(await stepStarts(first)).toBe(2);
      expect(await keyRows('same-twice')).toEqual([{ tenant_id: DEMO_TENANT_ID, execution_id: first }]);
    });

    it('stores exactly one execution for 20 concurrent submits with one key, and answers all 20 with it', async () => {
      const options = { idempotencyKey: 'racing', correlationId: 'idem-race' };
      const responses = await Promise.all(
        Array.from({ length: 20 }, () => demo.request(ExecutePlanMutation, { plan: twoSteps('race'), options })),
      );
      for (const response of responses) expect(response.errors).toBeUndefined();
      const ids = new Set(responses.map((response) => response.data!.executePlan.id));
      expect(ids.size).toBe(1);
      const [id] = ids;
      expect(await executionsOf('idem-race')).toBe(1);
      expect(await keyRows('racing')).toEqual([{ tenant_id: DEMO_TENANT_ID, execution_id: id }]);
      await finished(demo, id!);
      expect(await stepStarts(id!)).toBe(2);
    });

    it('answers IDEMPOTENCY_CONFLICT to the same key with another plan, other options or a query, storing nothing', async () => {
      const first = await executePlan(demo, twoSteps('conflict'), { idempotencyKey: 'conflicting' });
      const executionsBefore = await count(`SELECT count(*) AS n FROM executions`);
      const llmRequestsBefore = llm.requests.length;
      const otherPlan = await demo.request(ExecutePlanMutation, {
        plan: { query: 'conflict', steps: [{ kind: 'SQL', queryContext: 'one', sql: 'SELECT 1 AS one' }] },
        options: { idempotencyKey: 'conflicting' },
      });
      const otherOptions = await demo.request(ExecutePlanMutation, {
        plan: twoSteps('conflict'),
        options: { idempotencyKey: 'conflicting', sampleSize: 7 },
      });
      const query = await demo.request(ExecuteQueryMutation, { query: 'conflict', options: { idempotencyKey: 'conflicting' } });
      for (const response of [otherPlan, otherOptions, query]) {
        expect(response.data).toBeNull();
        expect(response.errors![0]!.extensions).toMatchObject({ code: 'IDEMPOTENCY_CONFLICT', retryable: false });
        expect(response.errors![0]!.message).toMatch(/different request/);
      }
      expect(await count(`SELECT count(*) AS n FROM executions`)).toBe(executionsBefore);
      expect(await keyRows('conflicting')).toEqual([{ tenant_id: DEMO_TENANT_ID, execution_id: first }]);
      expect(llm.requests.length).toBe(llmRequestsBefore);
    });

    it('keeps the keys of different tenants apart: the same key makes one execution for each', async () => {
      const plan: PlanInput = { query: 'tenants', steps: [{ kind: 'SQL', queryContext: 'one', sql: 'SELECT 1 AS one' }] };
      const options = { idempotencyKey: 'shared-key', correlationId: 'idem-tenants' };
      const ofDemo = await executePlan(demo, plan, options);
      const ofOther = await executePlan(target.other, plan, options);
      expect(ofOther).not.toBe(ofDemo);
      expect(await executePlan(target.other, plan, options)).toBe(ofOther);
      expect(await executionsOf('idem-tenants')).toBe(2);
      expect(await keyRows('shared-key')).toEqual(
        [
          { tenant_id: DEMO_TENANT_ID, execution_id: ofDemo },
          { tenant_id: OTHER_TENANT_ID, execution_id: ofOther },
        ].sort((a, b) => a.tenant_id.localeCompare(b.tenant_id)),
      );
    });

    it('answers BAD_USER_INPUT to a key of 0 or 201 characters, or one PostgreSQL cannot store, and stores nothing', async () => {
      const executionsBefore = await count(`SELECT count(*) AS n FROM executions`);
      const keysBefore = await count(`SELECT count(*) AS n FROM idempotency_keys`);
      for (const idempotencyKey of ['', 'k'.repeat(201), 'nul\u0000key']) {
        const planned = await demo.request(ExecutePlanMutation, { plan: twoSteps('bad key'), options: { idempotencyKey } });
        expect(planned.errors![0]!.extensions).toMatchObject({ code: 'BAD_USER_INPUT' });
        expect(planned.errors![0]!.message).toMatch(/options\.idempotencyKey/);
        const asked = await demo.request(ExecuteQueryMutation, { query: 'bad key', options: { idempotencyKey } });
        expect(asked.errors![0]!.extensions).toMatchObject({ code: 'BAD_USER_INPUT' });
      }
      expect(llm.requests.filter(isPlanner)).toHaveLength(0);
      expect(await count(`SELECT count(*) AS n FROM executions`)).toBe(executionsBefore);
      expect(await count(`SELECT count(*) AS n FROM idempotency_keys`)).toBe(keysBefore);
      const longest = await executePlan(demo, twoSteps('longest key'), { idempotencyKey: 'k'.repeat(200) });
      expect(await keyRows('k'.repeat(200))).toEqual([{ tenant_id: DEMO_TENANT_ID, execution_id: longest }]);
    });

    it('executeQuery with a key asks the planner once for two calls, one after the other', async () => {
      llm.script(
        { when: isPlanner, replies: [{ content: PLANNED }], repeat: true },
        { when: (request) => !isPlanner(request), replies: [{ content: { sql: 'SELECT count(*) AS n FROM users', explanation: '' } }], repeat: true },
      );
      const options = { idempotencyKey: 'query-twice', correlationId: 'idem-query-twice' };
      const first = await executeQuery('How many users are there?', options);
      await finished(demo, first);
      expect(await executeQuery('How many users are there?', options)).toBe(first);
      expect(plannerCalls()).toBe(1);
      expect(await executionsOf('idem-query-twice')).toBe(1);
      expect(await stepStarts(first)).toBe(2);
    });

    it('executeQuery: a second call while the first is planning waits for its execution and asks no model', async () => {
      let releasePlanner!: () => void;
      const plannerHeld = new Promise<void>((resolve) => (releasePlanner = resolve));
      llm.script(
        { when: isPlanner, replies: [async () => (await plannerHeld, { content: PLANNED })], repeat: true },
        { when: (request) => !isPlanner(request), replies: [{ content: { sql: 'SELECT 1 AS one', explanation: '' } }], repeat: true },
      );
      const options = { idempotencyKey: 'query-concurrent', correlationId: 'idem-query-concurrent' };
      const first = demo.request(ExecuteQueryMutation, { query: 'Count them, concurrently', options });
      await expect.poll(plannerCalls).toBe(1);
      const lockedBy = () => rows<{ xmax: string }>(`SELECT xmax::text AS xmax FROM idempotency_keys WHERE key = 'query-concurrent'`);
      const [reserved] = await lockedBy();
      const second = demo.request(ExecuteQueryMutation, { query: 'Count them, concurrently', options });
      // The second's INSERT … ON CONFLICT locks the reserved row (PostgreSQL locks it though it updates nothing),
      // which sets the row's xmax: from then on it has seen the reservation, while the planner is still held.
      await expect.poll(async () => (await lockedBy())[0]?.xmax, { timeout: 20_000 }).not.toBe(reserved!.xmax);
      releasePlanner();
      const [a, b] = await Promise.all([first, second]);
      expect(a.errors).toBeUndefined();
      expect(b.errors).toBeUndefined();
      expect(b.data!.executeQuery.id).toBe(a.data!.executeQuery.id);
      expect(plannerCalls()).toBe(1);
      expect(await executionsOf('idem-query-concurrent')).toBe(1);
      await finished(demo, a.data!.executeQuery.id);
    });

    it('executeQuery: when the first planner fails, a call waiting on it answers IDEMPOTENCY_KEY_IN_USE (retryable), and a retry plans anew', async () => {
      let releasePlanner!: () => void;
      const plannerHeld = new Promise<void>((resolve) => (releasePlanner = resolve));
      llm.script(
        { when: isPlanner, replies: [async () => (await plannerHeld, { status: 503 }), { content: PLANNED }] },
        { when: (request) => !isPlanner(request), replies: [{ content: { sql: 'SELECT 1 AS one', explanation: '' } }], repeat: true },
      );
      const options = { idempotencyKey: 'query-failing', correlationId: 'idem-query-failing' };
      const first = demo.request(ExecuteQueryMutation, { query: 'This planner fails once', options });
      await expect.poll(plannerCalls).toBe(1);
      const lockedBy = () => rows<{ xmax: string }>(`SELECT xmax::text AS xmax FROM idempotency_keys WHERE key = 'query-failing'`);
      const [reserved] = await lockedBy();
      const second = demo.request(ExecuteQueryMutation, { query: 'This planner fails once', options });
      await expect.poll(async () => (await lockedBy())[0]?.xmax, { timeout: 20_000 }).not.toBe(reserved!.xmax);
      releasePlanner();
      const [a, b] = await Promise.all([first, second]);
      expect(a.errors![0]!.extensions).toMatchObject({ code: 'AGENT_FAILED', retryable: true });
      expect(b.errors![0]!.extensions).toMatchObject({ code: 'IDEMPOTENCY_KEY_IN_USE', retryable: true, retryAfter: 1 });
      expect(plannerCalls()).toBe(1);
      expect(await executionsOf('idem-query-failing')).toBe(0);
      expect(await keyRows('query-failing')).toEqual([]);
      const retried = await executeQuery('This planner fails once', options);
      expect(plannerCalls()).toBe(2);
      expect(await keyRows('query-failing')).toEqual([{ tenant_id: DEMO_TENANT_ID, execution_id: retried }]);
      await finished(demo, retried);
    });

    it('a key left reserved by a stopped process is taken over once its planner could no longer be running', async () => {
      llm.script(
        { when: isPlanner, replies: [{ content: PLANNED }], repeat: true },
        { when: (request) => !isPlanner(request), replies: [{ content: { sql: 'SELECT 1 AS one', explanation: '' } }], repeat: true },
      );
      await rows(
        `INSERT INTO idempotency_keys (tenant_id, key, request_hash, execution_id, created_at, expires_at)
         VALUES ('${DEMO_TENANT_ID}', 'abandoned', 'left by a crash', NULL, now() - interval '1 hour', now() + interval '1 hour')`,
      );
      const id = await executeQuery('Take the abandoned key', { idempotencyKey: 'abandoned' });
      expect(plannerCalls()).toBe(1);
      expect(await keyRows('abandoned')).toEqual([{ tenant_id: DEMO_TENANT_ID, execution_id: id }]);
      await finished(demo, id);
    });

    it('makes a new execution for a key that has expired, and deletes expired keys as new ones are stored', async () => {
      const options = { idempotencyKey: 'expiring', correlationId: 'idem-expiry' };
      const first = await executePlan(demo, twoSteps('expiry'), options);
      await finished(demo, first);
      expect(await executePlan(demo, twoSteps('expiry'), options)).toBe(first);
      await rows(`UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'expiring'`);
      const second = await executePlan(demo, twoSteps('expiry'), options);
      expect(second).not.toBe(first);
      expect(await keyRows('expiring')).toEqual([{ tenant_id: DEMO_TENANT_ID, execution_id: second }]);
      expect(await executionsOf('idem-expiry')).toBe(2);
      await finished(demo, second);

      // An expired key is free for any request, and expired keys of other requests go as new keys are stored.
      await rows(`UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key IN ('expiring', 'same-twice')`);
      const otherPlan = await executePlan(demo, { query: 'expiry', steps: [{ kind: 'SQL', queryContext: 'one', sql: 'SELECT 1 AS one' }] }, {
        idempotencyKey: 'expiring',
      });
      expect(await keyRows('expiring')).toEqual([{ tenant_id: DEMO_TENANT_ID, execution_id: otherPlan }]);
      expect(await keyRows('same-twice')).toEqual([]);
      await finished(demo, otherPlan);
    });
  });
}
