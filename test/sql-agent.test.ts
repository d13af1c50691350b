import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { promptOf, startScriptedLlm, type RecordedRequest, type ScriptedLlm } from './fixtures/scripted-llm.js';
import { backends } from './support/database.js';
import { runPlan, sqlStep } from './support/plans.js';
import { startTestServer, type TestServer } from './support/server.js';

const agentStep = (queryContext: string, extra = {}) => ({ kind: 'SQL' as const, queryContext, ...extra });
const isSqlAgent = (marker: string) => (request: RecordedRequest) => promptOf(request).includes(marker);

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`SQL agent on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let llm: ScriptedLlm;
    let server: TestServer;
    beforeAll(async () => {
      llm = await startScriptedLlm();
      server = await startTestServer(backend, {
        env: {
          OPENAI_BASE_URL: llm.baseUrl,
          OPENAI_API_KEY: 'test-key',
          STEPCAST_SQL_MODEL: 'sql-model-under-test',
          STEPCAST_LLM_MAX_RETRIES: '3',
          STEPCAST_MAX_SQL_CHARS: '30000',
          // More executions and agent calls than the default bursts, in a few seconds; quotas have their own tests.
          STEPCAST_TENANT_RATE_BURST: '1000',
          STEPCAST_TENANT_MODEL_CALLS_BURST: '1000',
        },
      });
    });
    afterAll(async () => {
      await server?.close();
      await llm?.close();
    });

    it('writes SQL from a prompt that holds the question, the tables and the earlier samples', async () => {
      llm.script({
        when: isSqlAgent('count their memberships'),
        replies: [{ content: { sql: 'SELECT count(*) AS memberships FROM group_members m JOIN step_1 s ON s.id = m.user_id', explanation: 'joins step 1' } }],
      });
      const { execution, updates } = await runPlan(server, {
        query: 'How many memberships do the first three users have?',
        steps: [sqlStep('SELECT id, email FROM users ORDER BY id LIMIT 3'), agentStep('count their memberships', { entity: 'group_members' })],
      });
      expect(execution.status).toBe('SUCCEEDED');
      expect(llm.requests).toHaveLength(1);
      const [request] = llm.requests;
      const prompt = promptOf(request!);
      expect(request!.body.model).toBe('sql-model-under-test');
      expect(request!.body.response_format).toMatchObject({ type: 'json_schema', json_schema: { name: 'sql_step' } });
      expect(request!.headers.authorization).toBe('Bearer test-key');
      expect(prompt).toContain('How many memberships do the first three users have?');
      expect(prompt).toMatch(/users \(~200 rows\): id integer not null, email text not null/);
      expect(prompt).toContain('group_members.user_id -> users.id');
      expect(prompt).toContain('step_1 (step 1, SQL): run: SELECT id, email');
      expect(prompt).toContain(JSON.stringify((execution.steps[0]!.sample as unknown[])));
      expect(prompt).toContain('columns: id integer, email text');
      const step = execution.steps[1]!;
      expect(step.sql).toContain('JOIN step_1');
      expect(step.attempts).toBe(1);
      expect(step.usage).toEqual({ promptTokens: 100, completionTokens: 20, totalTokens: 120 });
      expect(execution.usage).toEqual({ promptTokens: 100, completionTokens: 20, totalTokens: 120 });
      const succeeded = updates.find((u) => u.type === 'STEP_SUCCEEDED' && u.step?.index === 2);
      expect(succeeded!.step!.usage).toEqual(step.usage);
    });

    it('gives the agent one repair round with the error, and keeps the SQL that finally ran', async () => {
      llm.script({
        when: isSqlAgent('active users'),
        replies: [
          { content: { sql: 'SELECT pg_sleep(1)', explanation: 'wait' } },
          { content: { sql: "SELECT count(*) AS n FROM users WHERE status = 'active'", explanation: 'fixed' } },
        ],
      });
      const { execution } = await runPlan(server, { query: 'q', steps: [agentStep('active users')] });
      expect(execution.status).toBe('SUCCEEDED');
      const step = execution.steps[0]!;
      expect(step.attempts).toBe(2);
      expect(step.sql).toBe("SELECT count(*) AS n FROM users WHERE status = 'active'");
      expect(llm.requests).toHaveLength(2);
      const repairPrompt = promptOf(llm.requests[1]!);
      expect(repairPrompt).toContain('SELECT pg_sleep(1)');
      expect(repairPrompt).toMatch(/pg_sleep is not allowed/);
      expect(step.usage!.totalTokens).toBe(240);
    });

    it('holds agent-written SQL to STEPCAST_MAX_SQL_CHARS, the limit client-written SQL has', async () => {
      const sqlOfLength = (length: number) => `SELECT length('${'x'.repeat(length - 22)}') AS n`;
      llm.script({
        when: isSqlAgent('a very long statement'),
        replies: [
          { content: { sql: sqlOfLength(30_001), explanation: 'too long' } },
          { content: { sql: sqlOfLength(25_020), explanation: 'long, within the limit' } },
        ],
      });
      const { execution } = await runPlan(server, { query: 'q', steps: [agentStep('a very long statement')] });
      expect(execution.status).toBe('SUCCEEDED');
      const step = execution.steps[0]!;
      expect(step.attempts).toBe(2);
      expect(step.sql).toHaveLength(25_020);
      expect(execution.finalResult).toEqual([{ n: 24_998 }]);
      expect(promptOf(llm.requests[1]!)).toContain('the query is 30001 characters long; the limit is 30000');
    });

    it('repairs a statement the database rejected, and fails with the last SQL when repairs run out', async () => {
      llm.script({
        when: isSqlAgent('broken twice'),
        replies: [
          { content: { sql: 'SELECT missing_column FROM users', explanation: '' } },
          { content: { sql: 'SELECT still_missing FROM users', explanation: '' } },
        ],
      });
      const { execution } = await runPlan(server, { query: 'q', steps: [agentStep('broken twice')] });
      const step = execution.steps[0]!;
      expect(step.status).toBe('FAILED');
      expect(step.error).toMatchObject({ code: 'SQL_ERROR' });
      expect(step.error!.message).toContain('still_missing');
      expect(step.sql).toBe('SELECT still_missing FROM users');
      expect(step.attempts).toBe(2);
      expect(promptOf(llm.requests[1]!)).toContain('missing_column');
    });

    it('retries a 429 after the Retry-After it was given, then succeeds', async () => {
      llm.script({
        when: isSqlAgent('rate limited'),
        replies: [
          { status: 429, headers: { 'retry-after-ms': '20' } },
          { content: { sql: 'SELECT 1 AS one', explanation: '' } },
        ],
      });
      const { execution } = await runPlan(server, { query: 'q', steps: [agentStep('rate limited')] });
      expect(execution.status).toBe('SUCCEEDED');
      expect(llm.requests).toHaveLength(2);
    });

    it('gives up after three retries of a 5xx, with a retryable AGENT_FAILED', async () => {
      llm.script({ when: isSqlAgent('server down'), replies: [{ status: 500, headers: { 'retry-after-ms': '5' } }], repeat: true });
      const { execution } = await runPlan(server, { query: 'q', steps: [agentStep('server down')] });
      expect(execution.steps[0]!.error).toMatchObject({ code: 'AGENT_FAILED', retryable: true });
      expect(execution.steps[0]!.error!.message).toMatch(/HTTP 500.*4 attempts/);
      expect(llm.requests).toHaveLength(4);
    });

    it('never retries another 4xx, and says it is not retryable', async () => {
      llm.script({ when: isSqlAgent('bad request'), replies: [{ status: 400 }], repeat: true });
      const { execution } = await runPlan(server, { query: 'q', steps: [agentStep('bad request')] });
      expect(execution.steps[0]!.error).toMatchObject({ code: 'AGENT_FAILED', retryable: false });
      expect(llm.requests).toHaveLength(1);
    });

    it('tells the model what was wrong with malformed output and accepts the corrected answer', async () => {
      llm.script({
        when: isSqlAgent('malformed once'),
        replies: [{ content: 'SELECT 1 -- not json' }, { content: { sql: 'SELECT 2 AS two', explanation: 'json now' } }],
      });
      const { execution } = await runPlan(server, { query: 'q', steps: [agentStep('malformed once')] });
      expect(execution.finalResult).toEqual([{ two: 2 }]);
      const retry = llm.requests[1]!.body.messages;
      expect(retry.at(-2)).toMatchObject({ role: 'assistant', content: 'SELECT 1 -- not json' });
      expect(retry.at(-1)!.content).toMatch(/did not fit the required JSON schema/);
      expect(execution.steps[0]!.usage!.totalTokens).toBe(240);
    });

    it('fails with AGENT_OUTPUT_INVALID when the answer does not fit the schema twice', async () => {
      llm.script({ when: isSqlAgent('malformed twice'), replies: [{ content: { query: 'SELECT 1' } }], repeat: true });
      const { execution } = await runPlan(server, { query: 'q', steps: [agentStep('malformed twice')] });
      expect(execution.steps[0]!.error).toMatchObject({ code: 'AGENT_OUTPUT_INVALID', retryable: false });
      expect(execution.steps[0]!.error!.message).toContain('sql');
      expect(llm.requests).toHaveLength(2);
    });

    it('still counts the tokens of a first round when the corrective round fails', async () => {
      llm.script({
        when: isSqlAgent('spent then failed'),
        replies: [
          { content: 'not json', usage: { prompt_tokens: 1000, completion_tokens: 500 } },
          { status: 503, headers: { 'retry-after-ms': '5' } },
        ],
        repeat: true,
      });
      const { execution } = await runPlan(server, { query: 'q', steps: [agentStep('spent then failed')] });
      expect(execution.steps[0]!.error).toMatchObject({ code: 'AGENT_FAILED', retryable: true });
      expect(execution.steps[0]!.usage).toEqual({ promptTokens: 1000, completionTokens: 500, totalTokens: 1500 });
      expect(execution.usage!.totalTokens).toBe(1500);
    });

    it('sums token usage over the steps of an execution', async () => {
      llm.script(
        { when: isSqlAgent('first agent step'), replies: [{ content: { sql: 'SELECT 1 AS one', explanation: '' }, usage: { prompt_tokens: 50, completion_tokens: 5 } }] },
        { when: isSqlAgent('second agent step'), replies: [{ content: { sql: 'SELECT 2 AS two', explanation: '' }, usage: { prompt_tokens: 70, completion_tokens: 9 } }] },
      );
      const { execution } = await runPlan(server, {
        query: 'q',
        steps: [agentStep('first agent step'), sqlStep('SELECT 3 AS three'), agentStep('second agent step')],
      });
      expect(execution.steps.map((s) => s.usage?.totalTokens ?? null)).toEqual([55, null, 79]);
      expect(execution.usage).toEqual({ promptTokens: 120, completionTokens: 14, totalTokens: 134 });
    });
  });
}
