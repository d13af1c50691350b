import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends } from './support/database.js';
import { CancelExecutionMutation, DurableExecutionQuery, ExecutePlanMutation, StepUpdatesSubscription } from './support/operations.js';
import { describeUpdates, sqlStep, type StepUpdateEvent } from './support/plans.js';
import { startTestServer, type TestServer } from './support/server.js';

// Runs until something stops it, and passes the SQL guard.
const ENDLESS_SQL = 'WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) AS n FROM r';

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`cancelExecution on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    let admin: postgres.Sql | undefined;
    beforeAll(async () => {
      server = await startTestServer(backend);
      if (server.databaseUrl) admin = postgres(server.databaseUrl, { max: 1, onnotice: () => undefined });
    });
    afterAll(async () => {
      await admin?.end();
      await server?.close();
    });

    /** Submits the plan, waits until its second step runs, cancels it; the updates and how long the cancel took. */
    async function cancelWhileStepTwoRuns(secondStep: Record<string, unknown>) {
      const submitted = await server.request(ExecutePlanMutation, {
        plan: { query: 'a plan to stop', steps: [sqlStep('SELECT 1 AS one'), secondStep as never, sqlStep('SELECT 2 AS two')] },
        options: { stepTimeoutMs: 60_000 },
      });
      expect(submitted.errors).toBeUndefined();
      const id = submitted.data!.executePlan.id;
      const updates: StepUpdateEvent[] = [];
      const client = server.wsClient();
      let startedTwo!: () => void;
      const stepTwoStarted = new Promise<void>((resolve) => (startedTwo = resolve));
      const ended = new Promise<void>((resolve, reject) => {
        client.subscribe(
          { query: StepUpdatesSubscription.toString(), variables: { executionId: id } },
          {
            next: (value) => {
              const update = (value.data as { stepUpdates: StepUpdateEvent }).stepUpdates;
              updates.push(update);
              if (update.type === 'STEP_STARTED' && update.step?.index === 2) startedTwo();
            },
            error: (error) => reject(new Error(JSON.stringify(error))),
            complete: resolve,
          },
        );
      });
      try {
        await stepTwoStarted;
        // cancelExecution waits up to 2 s for the run it stopped: an answer of CANCELLED is an end within 2 s.
        const cancelled = await server.request(CancelExecutionMutation, { id });
        await ended;
        return { id, updates, cancelled };
      } finally {
        await client.dispose();
      }
    }

    it('stops a long SQL statement on the server: the step is CANCELLED, the rest SKIPPED, within 2 s', async () => {
      let backendsBefore = 0;
      if (admin) backendsBefore = (await admin`SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%RECURSIVE r(n)%' AND state = 'active' AND pid <> pg_backend_pid()`)[0]!.n;
      const { id, updates, cancelled } = await cancelWhileStepTwoRuns(sqlStep(ENDLESS_SQL));
      expect(cancelled.errors).toBeUndefined();
      expect(cancelled.data!.cancelExecution).toMatchObject({ status: 'CANCELLED', error: { code: 'CANCELLED' } });
      expect(describeUpdates(updates).slice(-3)).toEqual(['STEP_CANCELLED:2', 'STEP_SKIPPED:3', 'EXECUTION_CANCELLED']);
      expect(updates.map((u) => u.sequence)).toEqual(updates.map((_, i) => i + 1));
      if (admin) {
        // The statement was cancelled in PostgreSQL, not only abandoned by the client.
        const running = await admin`SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%RECURSIVE r(n)%' AND state = 'active' AND pid <> pg_backend_pid()`;
        expect(running[0]!.n).toBe(backendsBefore);
      }
      const { data } = await server.request(DurableExecutionQuery, { id });
      expect(data!.execution!.steps.map((s) => s.status)).toEqual(['SUCCEEDED', 'CANCELLED', 'SKIPPED']);
      // The database answers at once afterwards.
      expect((await server.request(DurableExecutionQuery, { id })).errors).toBeUndefined();
    });

    it('interrupts a sandboxed program that loops forever', async () => {
      const { cancelled, updates } = await cancelWhileStepTwoRuns({
        kind: 'API',
        queryContext: 'spin',
        code: 'while (true) {}',
      });
      expect(cancelled.data!.cancelExecution.status).toBe('CANCELLED');
      expect(describeUpdates(updates).slice(-3)).toEqual(['STEP_CANCELLED:2', 'STEP_SKIPPED:3', 'EXECUTION_CANCELLED']);
    });

    it('answers NOT_FOUND for an execution that is not there', async () => {
      const response = await server.request(CancelExecutionMutation, { id: '7b0e8c4e-6f0d-4c2a-9a51-8d6f5a1f0c33' });
      expect(response.errors).toMatchObject([{ extensions: { code: 'NOT_FOUND' } }]);
    });
  });
}
