import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { AgentError, LlmClient } from '../src/agents/llm-client.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { modelServers, outputModeOf, schemaNameOf, startScriptedLlm, type ScriptedLlm, type ScriptedReply } from './fixtures/scripted-llm.js';
import { backends } from './support/database.js';
import { ExecuteQueryMutation, ExecutionsQuery, PlanQueryQuery, StepUpdatesSubscription } from './support/operations.js';
import { fetchExecution, runPlan } from './support/plans.js';
import { startTestServer, type TestServer } from './support/server.js';
import { scaledTimeout, settlesWithin } from './support/timing.js';

/**
 * The model's time has limits of its own (STEPCAST_AGENT_TIMEOUT_MS per agent call, STEPCAST_PLANNER_TIMEOUT_MS for
 * planning); a step's stepTimeoutMs limits only its statement or program. A request that ran out of time is
 * abandoned (its connection closed) and never retried.
 */

/** How long a hung request's connection may take to close once the client gave up on it. */
const CLOSE_MS = 2_000;
const ENDLESS_SQL = 'WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) AS n FROM r';
const SqlAnswer = z.strictObject({ sql: z.string().min(1), explanation: z.string() });

/** A model that takes `ms` to write its answer. */
const slowly = (ms: number, reply: ScriptedReply) => () => new Promise<ScriptedReply>((resolve) => setTimeout(() => resolve(reply), ms));

describe('the time limit of one agent call', () => {
  let llm: ScriptedLlm;
  beforeAll(async () => {
    llm = await startScriptedLlm();
  });
  afterAll(async () => {
    await llm?.close();
  });

  const clientWith = (env: Record<string, string>) =>
    new LlmClient(loadConfig({ OPENAI_BASE_URL: llm.baseUrl, STEPCAST_LLM_MAX_RETRIES: '3', ...env }).llm, createLogger('silent'));
  const ask = (client: LlmClient, agent: 'sql' | 'planner' = 'sql') =>
    client.completeStructured({ agent, schemaName: 'sql_step', schema: SqlAnswer, messages: [{ role: 'user', content: 'count the users' }] });
  const failureOf = async (promise: Promise<unknown>) => {
    const error = await promise.then(
      () => undefined,
      (rejection: unknown) => rejection,
    );
    expect(error).toBeInstanceOf(AgentError);
    return error as AgentError;
  };

  it('fails AGENT_TIMEOUT (retryable) when the model does not answer in time, closes the request, and never retries it', async () => {
    llm.script({ when: () => true, replies: [{ hang: true }], repeat: true });
    const started = Date.now();
    const error = await failureOf(ask(clientWith({ STEPCAST_AGENT_TIMEOUT_MS: '1000' })));
    expect(Date.now() - started).toBeGreaterThanOrEqual(990);
    expect(error).toMatchObject({ code: 'AGENT_TIMEOUT', retryable: true });
    expect(error.message).toMatch(/did not answer within 1000 ms \(STEPCAST_AGENT_TIMEOUT_MS\)/);
    expect(await settlesWithin(llm.hanging[0]!.closed, CLOSE_MS)).toBe(true);
    expect(llm.requests).toHaveLength(1);
  });

  it('covers the whole call: a corrective round past the limit fails AGENT_TIMEOUT, keeping the first round’s tokens', async () => {
    llm.script({ when: () => true, replies: [{ content: 'not json' }, { hang: true }] });
    const error = await failureOf(ask(clientWith({ STEPCAST_AGENT_TIMEOUT_MS: '1000' })));
    expect(error).toMatchObject({ code: 'AGENT_TIMEOUT', usage: { totalTokens: 120 } });
    expect(await settlesWithin(llm.hanging[0]!.closed, CLOSE_MS)).toBe(true);
    expect(llm.requests).toHaveLength(2);
  });

  it('does not wait out a Retry-After that would pass the limit', async () => {
    llm.script({ when: () => true, replies: [{ status: 429, headers: { 'retry-after': '30' } }], repeat: true });
    const started = Date.now();
    const error = await failureOf(ask(clientWith({ STEPCAST_AGENT_TIMEOUT_MS: '5000' })));
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(error).toMatchObject({ code: 'AGENT_FAILED', retryable: true });
    expect(error.message).toMatch(/HTTP 429, and waiting 30000 ms to ask again would pass the sql agent's time limit/);
    expect(llm.requests).toHaveLength(1);
  });

  it('gives the planner STEPCAST_PLANNER_TIMEOUT_MS, and keeps STEPCAST_LLM_TIMEOUT_MS as the old name of STEPCAST_AGENT_TIMEOUT_MS', async () => {
    expect(loadConfig({}).llm).toMatchObject({ agentTimeoutMs: 60_000, plannerTimeoutMs: 120_000, deprecatedTimeoutSetting: false });
    expect(loadConfig({ STEPCAST_LLM_TIMEOUT_MS: '1500' }).llm).toMatchObject({ agentTimeoutMs: 1_500, deprecatedTimeoutSetting: true });
    expect(loadConfig({ STEPCAST_LLM_TIMEOUT_MS: '1500', STEPCAST_AGENT_TIMEOUT_MS: '2500' }).llm).toMatchObject({
      agentTimeoutMs: 2_500,
      deprecatedTimeoutSetting: false,
    });
    // Both wait out their limit at once.
    llm.script({ when: () => true, replies: [{ hang: true }], repeat: true });
    const [planner, aliased] = await Promise.all([
      failureOf(ask(clientWith({ STEPCAST_PLANNER_TIMEOUT_MS: '1000' }), 'planner')),
      failureOf(ask(clientWith({ STEPCAST_LLM_TIMEOUT_MS: '1000' }))),
    ]);
    expect(planner).toMatchObject({ code: 'AGENT_TIMEOUT', retryable: true });
    expect(planner.message).toMatch(/within 1000 ms \(STEPCAST_PLANNER_TIMEOUT_MS\)/);
    expect(aliased).toMatchObject({ code: 'AGENT_TIMEOUT', retryable: true });
    expect(aliased.message).toMatch(/within 1000 ms \(STEPCAST_AGENT_TIMEOUT_MS\)/);
  });
});

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`model time in steps and planning on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    // Generous on a loaded machine, yet short enough to wait out when a request hangs: the agent's limit must
    // hold a 1.5 s model with room to spare; the planner's only two answers from the scripted server.
    const agentTimeoutMs = Math.min(scaledTimeout(3_000), 4_000);
    const plannerTimeoutMs = Math.min(scaledTimeout(1_000), 2_000);
    let llm: ScriptedLlm;
    let server: TestServer;
    beforeAll(async () => {
      llm = await startScriptedLlm();
      server = await startTestServer(backend, {
        env: {
          OPENAI_BASE_URL: llm.baseUrl,
          STEPCAST_LLM_MAX_RETRIES: '3',
          STEPCAST_AGENT_TIMEOUT_MS: String(agentTimeoutMs),
          STEPCAST_PLANNER_TIMEOUT_MS: String(plannerTimeoutMs),
          STEPCAST_TENANT_RATE_BURST: '1000',
          STEPCAST_TENANT_MODEL_CALLS_BURST: '1000',
        },
      });
    });
    afterAll(async () => {
      await server?.close();
      await llm?.close();
    });
    afterEach(() => {
      llm.behaveAs(modelServers.openai);
    });

    it('runs a step whose model takes longer than stepTimeoutMs, its statement within it', async () => {
      llm.script({ when: () => true, replies: [slowly(1_500, { content: { sql: 'SELECT 41 + 1 AS answer', explanation: '' } })] });
      const { execution } = await runPlan(server, { query: 'q', steps: [{ kind: 'SQL', queryContext: 'the answer' }] }, { stepTimeoutMs: 1_000 });
      expect(execution.steps[0]!.error).toBeNull();
      expect(execution.status).toBe('SUCCEEDED');
      expect(execution.finalResult).toEqual([{ answer: 42 }]);
      expect(llm.requests).toHaveLength(1);
    });

    it('still holds the statement to stepTimeoutMs after a slow model (STEP_TIMEOUT)', async () => {
      llm.script({ when: () => true, replies: [slowly(1_500, { content: { sql: ENDLESS_SQL, explanation: '' } })] });
      const { execution } = await runPlan(server, { query: 'q', steps: [{ kind: 'SQL', queryContext: 'forever' }] }, { stepTimeoutMs: 1_000 });
      expect(execution.steps[0]!.error).toMatchObject({ code: 'STEP_TIMEOUT', message: expect.stringMatching(/longer than 1000 ms/) });
      expect(execution.steps[0]!.sql).toBe(ENDLESS_SQL);
    });

    // The waits for a limit run side by side: each is the limit's length, and the suite waits out two, not four.
    it('fails a SQL step and an API step AGENT_TIMEOUT (retryable) when their agent runs out of STEPCAST_AGENT_TIMEOUT_MS; each request is closed, not retried', async () => {
      llm.script({ when: () => true, replies: [{ hang: true }], repeat: true });
      const [sql, api] = await Promise.all([
        runPlan(server, { query: 'q', steps: [{ kind: 'SQL', queryContext: 'never written' }] }, { stepTimeoutMs: 60_000 }),
        runPlan(server, { query: 'q', steps: [{ kind: 'API', queryContext: 'list the users' }] }, { stepTimeoutMs: 60_000 }),
      ]);
      for (const { execution } of [sql, api]) {
        const step = execution.steps[0]!;
        expect(step.status).toBe('FAILED');
        expect(step.error).toMatchObject({ code: 'AGENT_TIMEOUT', retryable: true });
        expect(step.error!.message).toContain(`within ${agentTimeoutMs} ms (STEPCAST_AGENT_TIMEOUT_MS)`);
        expect(step.attempts).toBe(1);
      }
      // One request each, by the schema it asked for.
      expect(llm.requests.map((request) => schemaNameOf(request)).sort()).toEqual(['api_step', 'sql_step']);
      expect(llm.hanging).toHaveLength(2);
      for (const hung of llm.hanging) expect(await settlesWithin(hung.closed, CLOSE_MS)).toBe(true);
    });

    it('answers planQuery and executeQuery AGENT_TIMEOUT (retryable) past STEPCAST_PLANNER_TIMEOUT_MS, storing nothing', async () => {
      llm.script({ when: () => true, replies: [{ hang: true }], repeat: true });
      const before = (await server.request(ExecutionsQuery, { first: 100 })).data!.executions.edges.length;
      const responses = await Promise.all([server.request(PlanQueryQuery, { query: 'q' }), server.request(ExecuteQueryMutation, { query: 'q' })]);
      for (const response of responses) {
        expect(response.errors![0]!.extensions).toMatchObject({ code: 'AGENT_TIMEOUT', retryable: true });
        expect(response.errors![0]!.message).toContain(`within ${plannerTimeoutMs} ms (STEPCAST_PLANNER_TIMEOUT_MS)`);
      }
      expect(llm.requests).toHaveLength(2);
      for (const hung of llm.hanging) expect(await settlesWithin(hung.closed, CLOSE_MS)).toBe(true);
      expect((await server.request(ExecutionsQuery, { first: 100 })).data!.executions.edges.length).toBe(before);
    });

    // Last: the service remembers, for an hour, what this server refused.
    it("plans and runs on a server that refuses a JSON schema: the planner falls back to JSON mode, and the SQL agent on the same model asks in it at once", async () => {
      llm.behaveAs(modelServers.llamaCppBeforeJsonSchema);
      llm.script({
        when: () => true,
        replies: [
          { content: { reasoning: 'one count', steps: [{ kind: 'SQL', queryContext: 'the users', entity: 'users', reasoning: null, critical: true }] } },
          { content: { sql: 'SELECT count(*) AS users FROM users', explanation: '' } },
        ],
      });
      const response = await server.request(ExecuteQueryMutation, { query: 'How many users are there?' });
      expect(response.errors).toBeUndefined();
      const { id } = response.data!.executeQuery;
      await server.subscribeWs(StepUpdatesSubscription, { executionId: id });
      const execution = await fetchExecution(server, id);
      expect(execution.status).toBe('SUCCEEDED');
      expect(execution.finalResult).toEqual([{ users: 200 }]);
      expect(llm.requests.map(outputModeOf)).toEqual(['json_schema', 'json_object', 'json_object']);
      expect(execution.usage!.totalTokens).toBe(240);
    });
  });
}
