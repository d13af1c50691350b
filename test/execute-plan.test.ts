import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { executions, stepEvents, stepResults } from '../src/db/tables.js';
import { backends } from './support/database.js';
import { ExecutePlanMutation, ExecuteQueryMutation, PlanQueryQuery } from './support/operations.js';
import { describeUpdates, runPlan, sqlStep } from './support/plans.js';
import { startTestServer, type TestServer } from './support/server.js';

const ACTIVE_USERS = "SELECT id, email FROM users WHERE status = 'active' ORDER BY id LIMIT 5";

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`executePlan on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    beforeAll(async () => {
      // More executions than the default burst (10), in a few seconds.
      server = await startTestServer(backend, { env: { STEPCAST_TENANT_RATE_BURST: '100' } });
    });
    afterAll(async () => {
      await server?.close();
    });

    it('returns the execution at once, QUEUED or RUNNING, with the client correlation id', async () => {
      const response = await server.request(ExecutePlanMutation, {
        plan: { query: 'how many users?', steps: [sqlStep('SELECT count(*) AS n FROM users')] },
        options: { correlationId: 'client-trace-42' },
      });
      expect(response.errors).toBeUndefined();
      const execution = response.data!.executePlan;
      expect(['QUEUED', 'RUNNING']).toContain(execution.status);
      expect(execution.correlationId).toBe('client-trace-42');
      expect(execution.totalSteps).toBe(1);
    });

    it('puts the correlation id and tenant on every stored row and event of the run', async () => {
      const { id, updates } = await runPlan(
        server,
        { query: 'q', steps: [sqlStep('SELECT 1 AS one'), sqlStep('SELECT 2 AS two')] },
        { correlationId: 'trace-every-row' },
      );
      const { db } = server.app.database;
      const tagsOf = (rows: { correlationId: string; tenantId: string }[]) =>
        rows.map((row) => [row.correlationId, row.tenantId]);
      const executionRows = await db.select().from(executions).where(eq(executions.id, id));
      const stepRows = await db.select().from(stepResults).where(eq(stepResults.executionId, id));
      const eventRows = await db.select().from(stepEvents).where(eq(stepEvents.executionId, id));
      expect(stepRows).toHaveLength(2);
      expect(eventRows).toHaveLength(updates.length);
      for (const rows of [executionRows, stepRows, eventRows]) {
        expect(new Set(tagsOf(rows).map(String))).toEqual(new Set(['trace-every-row,demo']));
      }
    });

    it('generates a correlation id when the client sends none', async () => {
      const { execution } = await runPlan(server, { query: 'q', steps: [sqlStep('SELECT 1 AS one')] });
      expect(execution.correlationId).toMatch(/^[0-9a-f-]{36}$/);
    });

    it('runs steps in order, and step 2 reads the records of step 1 as step_1', async () => {
      const { updates, execution } = await runPlan(server, {
        query: 'How many group memberships do the first five active users have?',
        steps: [
          sqlStep(ACTIVE_USERS, { entity: 'users' }),
          sqlStep('SELECT count(*) AS memberships FROM group_members m JOIN step_1 s ON s.id = m.user_id', {
            entity: 'group_members',
          }),
        ],
      });
      expect(describeUpdates(updates)).toEqual([
        'EXECUTION_STARTED',
        'STEP_STARTED:1',
        'STEP_SUCCEEDED:1',
        'STEP_STARTED:2',
        'STEP_SUCCEEDED:2',
        'EXECUTION_SUCCEEDED',
      ]);
      expect(updates.map((u) => u.sequence)).toEqual([1, 2, 3, 4, 5, 6]);
      expect(updates.map((u) => u.status)).toEqual(['RUNNING', 'RUNNING', 'RUNNING', 'RUNNING', 'RUNNING', 'SUCCEEDED']);

      const direct = await runPlan(server, {
        query: 'the same, in one statement',
        steps: [
          sqlStep(
            `SELECT count(*) AS memberships FROM group_members WHERE user_id IN (${ACTIVE_USERS.replace('id, email', 'id')})`,
          ),
        ],
      });
      const expected = direct.execution.finalResult as { memberships: number }[];
      expect(expected[0]!.memberships).toBeGreaterThan(0);
      expect(execution.status).toBe('SUCCEEDED');
      expect(execution.finalResult).toEqual(expected);
      expect(execution.successfulSteps).toBe(2);
      expect(execution.failedSteps).toBe(0);
      expect(execution.lastSequence).toBe(6);
      const [first, second] = execution.steps;
      expect(first!.recordCount).toBe(5);
      expect(first!.columns).toEqual([
        { name: 'id', type: 'integer' },
        { name: 'email', type: 'text' },
      ]);
      expect(new Date(second!.startedAt!).getTime()).toBeGreaterThanOrEqual(new Date(first!.finishedAt!).getTime());
    });

    it('passes each step a sample of the first sampleSize records (default 3)', async () => {
      const plan = { query: 'q', steps: [sqlStep('SELECT id, name FROM users ORDER BY id LIMIT 10')] };
      const byDefault = await runPlan(server, plan);
      const two = await runPlan(server, plan, { sampleSize: 2 });
      const none = await runPlan(server, plan, { sampleSize: 0 });
      const records = byDefault.execution.steps[0]!.result as { id: number }[];
      expect(records.map((r) => r.id)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      expect(byDefault.execution.steps[0]!.sample).toEqual(records.slice(0, 3));
      expect(two.execution.steps[0]!.sample).toEqual(records.slice(0, 2));
      expect(none.execution.steps[0]!.sample).toEqual([]);
      const succeeded = two.updates.find((u) => u.type === 'STEP_SUCCEEDED');
      expect(succeeded!.step!.sample).toEqual(records.slice(0, 2));
    });

    it('stops at a failed critical step: the rest are SKIPPED and the execution FAILED', async () => {
      const { updates, execution } = await runPlan(server, {
        query: 'q',
        steps: [sqlStep('SELECT 1 AS one'), sqlStep('SELECT 1 / 0 AS boom'), sqlStep('SELECT 3 AS three')],
      });
      expect(describeUpdates(updates)).toEqual([
        'EXECUTION_STARTED',
        'STEP_STARTED:1',
        'STEP_SUCCEEDED:1',
        'STEP_STARTED:2',
        'STEP_FAILED:2',
        'STEP_SKIPPED:3',
        'EXECUTION_FAILED',
      ]);
      expect(execution.status).toBe('FAILED');
      expect(execution.steps.map((s) => s.status)).toEqual(['SUCCEEDED', 'FAILED', 'SKIPPED']);
      expect(execution.steps[1]!.error).toMatchObject({ code: 'SQL_ERROR', retryable: false });
      expect(execution.steps[1]!.error!.message).toContain('division by zero');
      expect(execution.error).toEqual(execution.steps[1]!.error);
      expect(execution.finalResult).toEqual([{ one: 1 }]);
      expect(execution.successfulSteps).toBe(1);
      expect(execution.failedSteps).toBe(1);
    });

    it('goes on past a failed non-critical step, and finalResult is the last step that succeeded', async () => {
      const { execution } = await runPlan(server, {
        query: 'q',
        steps: [
          sqlStep('SELECT 1 AS one'),
          sqlStep('SELECT 1 / 0 AS boom', { critical: false }),
          sqlStep('SELECT 3 AS three'),
          sqlStep('SELECT * FROM no_such_table', { critical: false }),
        ],
      });
      expect(execution.status).toBe('SUCCEEDED');
      expect(execution.steps.map((s) => s.status)).toEqual(['SUCCEEDED', 'FAILED', 'SUCCEEDED', 'FAILED']);
      expect(execution.finalResult).toEqual([{ three: 3 }]);
      expect(execution.successfulSteps).toBe(2);
      expect(execution.failedSteps).toBe(2);
      expect(execution.error).toBeNull();
    });

    it('fails a SQL step without sql, and an API step without code, with AGENT_NOT_CONFIGURED', async () => {
      const { execution } = await runPlan(server, {
        query: 'q',
        steps: [
          { kind: 'SQL', queryContext: 'find the admins', critical: false },
          { kind: 'API', queryContext: 'fetch the admins from the API', critical: false },
        ],
      });
      expect(execution.steps[0]!.error).toMatchObject({ code: 'AGENT_NOT_CONFIGURED', retryable: false });
      expect(execution.steps[0]!.error!.message).toMatch(/no sql.*OPENAI_API_KEY.*OPENAI_BASE_URL/);
      expect(execution.steps[1]!.error).toMatchObject({ code: 'AGENT_NOT_CONFIGURED', retryable: false });
      expect(execution.steps[1]!.error!.message).toMatch(/no code.*OPENAI_API_KEY/);
    });

    it('answers planQuery and executeQuery with AGENT_NOT_CONFIGURED when no model is set', async () => {
      const planned = await server.request(PlanQueryQuery, { query: 'which users are suspended?' });
      expect(planned.errors![0]!.extensions).toMatchObject({ code: 'AGENT_NOT_CONFIGURED' });
      expect(planned.errors![0]!.message).toMatch(/OPENAI_API_KEY.*OPENAI_BASE_URL/);
      const executed = await server.request(ExecuteQueryMutation, { query: 'which users are suspended?' });
      expect(executed.errors![0]!.extensions).toMatchObject({ code: 'AGENT_NOT_CONFIGURED' });
    });

    it('stores the plan as submitted, with critical defaulting to true', async () => {
      const { execution } = await runPlan(server, {
        query: 'stored plan',
        steps: [sqlStep('SELECT 1 AS one'), sqlStep('SELECT 2 AS two', { critical: false })],
      });
      expect(execution.plan.query).toBe('stored plan');
      expect(execution.plan.steps.map((s) => [s.kind, s.critical, s.sql])).toEqual([
        ['SQL', true, 'SELECT 1 AS one'],
        ['SQL', false, 'SELECT 2 AS two'],
      ]);
    });
  });
}
