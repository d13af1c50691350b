import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WaitingUpdatesSubscription as WaitingUpdatesResult } from './generated/graphql.js';
import { backends } from './support/database.js';
import {
  ApproveStepMutation,
  CancelExecutionMutation,
  DurableExecutionQuery,
  ExecutePlanMutation,
  RejectStepMutation,
  WaitingUpdatesSubscription,
} from './support/operations.js';
import { sqlStep } from './support/plans.js';
import { startTestServer, type TestServer } from './support/server.js';

type Update = WaitingUpdatesResult['stepUpdates'];

/** Steps 1 and 3 read data; step 2 waits for a person first. */
function approvalPlan(approvalTimeoutMs?: number) {
  return {
    query: 'how many users, once somebody agrees',
    steps: [
      sqlStep('SELECT id, email FROM users ORDER BY id LIMIT 5'),
      sqlStep('SELECT count(*) AS n FROM step_1', { approval: true, approvalTimeoutMs }),
      sqlStep('SELECT n * 2 AS twice FROM step_2'),
    ],
  };
}

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`approval steps and cancel on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    beforeAll(async () => {
      server = await startTestServer(backend, { env: { STEPCAST_RECOVERY_INTERVAL_MS: '200', STEPCAST_DEMO_API: 'off' } });
    });
    afterAll(async () => {
      await server?.close();
    });

    /** Follows the execution over graphql-ws until `until` holds for an update (or the stream ends). */
    async function followUntil(executionId: string, until: (update: Update) => boolean, afterSequence = 0): Promise<Update[]> {
      const client = server.wsClient();
      const updates: Update[] = [];
      try {
        await new Promise<void>((resolve, reject) => {
          client.subscribe(
            { query: WaitingUpdatesSubscription.toString(), variables: { executionId, afterSequence } },
            {
              next: (value) => {
                const update = (value.data as WaitingUpdatesResult).stepUpdates;
                updates.push(update);
                if (until(update)) resolve();
              },
              error: (error) => reject(new Error(JSON.stringify(error))),
              complete: resolve,
            },
          );
        });
      } finally {
        await client.dispose();
      }
      return updates;
    }

    async function submit(plan: ReturnType<typeof approvalPlan>) {
      const response = await server.request(ExecutePlanMutation, { plan });
      expect(response.errors).toBeUndefined();
      return response.data!.executePlan.id;
    }

    async function execution(id: string) {
      const response = await server.request(DurableExecutionQuery, { id });
      expect(response.errors).toBeUndefined();
      return response.data!.execution!;
    }

    it('stops WAITING before an approval step with what the earlier steps found, and runs it once approved', async () => {
      const id = await submit(approvalPlan());
      const untilWaiting = await followUntil(id, (u) => u.type === 'STEP_WAITING');
      const waiting = untilWaiting.at(-1)!;
      expect(waiting).toMatchObject({ status: 'WAITING', step: { index: 2, status: 'WAITING' } });
      expect(waiting.findings).toHaveLength(1);
      expect(waiting.findings![0]).toMatchObject({ index: 1, recordCount: 5 });
      expect(waiting.findings![0]!.sample).toHaveLength(3);
      expect((await execution(id)).status).toBe('WAITING');

      const approved = await server.request(ApproveStepMutation, { executionId: id, index: 2, comment: 'the numbers look right' });
      expect(approved.errors).toBeUndefined();
      const rest = await followUntil(id, () => false, waiting.sequence);
      expect(rest.map((u) => u.type)).toEqual([
        'STEP_APPROVED',
        'STEP_STARTED',
        'STEP_SUCCEEDED',
        'STEP_STARTED',
        'STEP_SUCCEEDED',
        'EXECUTION_SUCCEEDED',
      ]);
      expect(rest.map((u) => u.sequence)).toEqual(rest.map((_, i) => waiting.sequence + 1 + i));
      const done = await execution(id);
      expect(done.status).toBe('SUCCEEDED');
      expect(done.steps[1]).toMatchObject({
        status: 'SUCCEEDED',
        approval: true,
        decision: 'APPROVED',
        decidedBy: 'anonymous',
        decisionComment: 'the numbers look right',
      });
      expect(Date.parse(done.steps[1]!.decidedAt!)).not.toBeNaN();
      // A decision on a step that no longer waits changes nothing.
      const late = await server.request(RejectStepMutation, { executionId: id, index: 2 });
      expect(late.errors).toMatchObject([{ extensions: { code: 'BAD_USER_INPUT' } }]);
      expect((await execution(id)).steps[1]!.decision).toBe('APPROVED');
    });

    it('fails a rejected step REJECTED, and the execution with it', async () => {
      const id = await submit(approvalPlan());
      await followUntil(id, (u) => u.type === 'STEP_WAITING');
      const rejected = await server.request(RejectStepMutation, { executionId: id, index: 2, comment: 'not today' });
      expect(rejected.errors).toBeUndefined();
      await followUntil(id, () => false);
      const done = await execution(id);
      expect(done.status).toBe('FAILED');
      expect(done.error).toMatchObject({ code: 'REJECTED' });
      expect(done.steps.map((s) => s.status)).toEqual(['SUCCEEDED', 'FAILED', 'SKIPPED']);
      expect(done.steps[1]).toMatchObject({ decision: 'REJECTED', decisionComment: 'not today', error: { code: 'REJECTED' } });
    });

    it('fails the step APPROVAL_TIMEOUT when nobody decides in time', async () => {
      const id = await submit(approvalPlan(1_000));
      const updates = await followUntil(id, () => false);
      expect(updates.map((u) => u.type).slice(-4)).toEqual(['STEP_WAITING', 'STEP_FAILED', 'STEP_SKIPPED', 'EXECUTION_FAILED']);
      const done = await execution(id);
      expect(done.error).toMatchObject({ code: 'APPROVAL_TIMEOUT' });
    });

    it('keeps waiting across a restart, and runs once approved after it', async () => {
      const id = await submit(approvalPlan());
      await followUntil(id, (u) => u.type === 'STEP_WAITING');
      await server.restart();
      expect((await execution(id)).status).toBe('WAITING');
      expect((await server.request(ApproveStepMutation, { executionId: id, index: 2 })).errors).toBeUndefined();
      await followUntil(id, () => false);
      expect((await execution(id)).status).toBe('SUCCEEDED');
    });

    it('cancels a waiting execution at once; a finished one is returned unchanged', async () => {
      const id = await submit(approvalPlan());
      await followUntil(id, (u) => u.type === 'STEP_WAITING');
      const cancelled = await server.request(CancelExecutionMutation, { id });
      expect(cancelled.errors).toBeUndefined();
      expect(cancelled.data!.cancelExecution).toMatchObject({ status: 'CANCELLED', error: { code: 'CANCELLED' } });
      expect(cancelled.data!.cancelExecution.cancelRequestedAt).not.toBeNull();
      const done = await execution(id);
      expect(done.steps.map((s) => s.status)).toEqual(['SUCCEEDED', 'CANCELLED', 'SKIPPED']);
      const updates = await followUntil(id, () => false);
      expect(updates.map((u) => u.type).slice(-3)).toEqual(['STEP_CANCELLED', 'STEP_SKIPPED', 'EXECUTION_CANCELLED']);
      expect(updates.map((u) => u.sequence)).toEqual(updates.map((_, i) => i + 1));

      const again = await server.request(CancelExecutionMutation, { id });
      expect(again.data!.cancelExecution.status).toBe('CANCELLED');
      expect((await execution(id)).lastSequence).toBe(done.lastSequence);
    });

    it('answers NOT_FOUND for an unknown execution, and BAD_USER_INPUT for a step that does not wait', async () => {
      const unknown = '00000000-0000-4000-8000-000000000000';
      for (const response of [
        await server.request(CancelExecutionMutation, { id: unknown }),
        await server.request(CancelExecutionMutation, { id: 'not-a-uuid' }),
        await server.request(ApproveStepMutation, { executionId: unknown, index: 1 }),
      ]) {
        expect(response.errors).toMatchObject([{ extensions: { code: 'NOT_FOUND' } }]);
      }
      const id = await submit(approvalPlan());
      await followUntil(id, (u) => u.type === 'STEP_WAITING');
      for (const index of [1, 3, 99]) {
        const response = await server.request(ApproveStepMutation, { executionId: id, index });
        expect(response.errors).toMatchObject([{ extensions: { code: 'BAD_USER_INPUT' } }]);
      }
      const tooLong = await server.request(ApproveStepMutation, { executionId: id, index: 2, comment: 'x'.repeat(2_001) });
      expect(tooLong.errors).toMatchObject([{ extensions: { code: 'BAD_USER_INPUT' } }]);
      const badTimeout = await server.request(ExecutePlanMutation, {
        plan: { query: 'q', steps: [sqlStep('SELECT 1', { approvalTimeoutMs: 5_000 })] },
      });
      expect(badTimeout.errors).toMatchObject([{ extensions: { code: 'BAD_USER_INPUT' } }]);
      expect((await execution(id)).status).toBe('WAITING');
      await server.request(CancelExecutionMutation, { id });
    });
  });
}
