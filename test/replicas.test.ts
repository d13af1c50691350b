import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postgresUrl } from './support/database.js';
import { StepUpdatesSubscription } from './support/operations.js';
import { describeUpdates, fetchExecution, sqlStep, submitPlan } from './support/plans.js';
import { startTestServer, type TestServer } from './support/server.js';

/** Two stepcast processes on one PostgreSQL database: each execution is run by exactly one of them. */
describe.skipIf(!postgresUrl)(`replicas on postgres${postgresUrl ? '' : ' (skipped: TEST_DATABASE_URL is not set)'}`, () => {
  let first: TestServer;
  let second: TestServer | undefined;
  beforeAll(async () => {
    first = await startTestServer('postgres', { env: { STEPCAST_DEMO_API: 'off' } });
  });
  afterAll(async () => {
    await second?.close();
    await first?.close();
  });

  it("a replica that starts while another runs an execution leaves it alone; it finishes once, in order", async () => {
    const id = await submitPlan(first, {
      query: 'slow',
      steps: [sqlStep('SELECT 1 AS one'), sqlStep('SELECT count(*) AS n FROM users a, users b, users c'), sqlStep('SELECT 3 AS three')],
    });
    const client = first.wsClient();
    const updates: string[] = [];
    let stepTwoStarted!: () => void;
    const started = new Promise<void>((resolve) => (stepTwoStarted = resolve));
    const finished = new Promise<void>((resolve, reject) => {
      client.subscribe(
        { query: StepUpdatesSubscription.toString(), variables: { executionId: id } },
        {
          next: (value) => {
            const update = (value.data as { stepUpdates: { type: string; step: { index: number } | null } }).stepUpdates;
            updates.push(update.step ? `${update.type}:${update.step.index}` : update.type);
            if (update.type === 'STEP_STARTED' && update.step?.index === 2) stepTwoStarted();
          },
          error: reject,
          complete: resolve,
        },
      );
    });
    await started;
    second = await startTestServer('postgres', { joinDatabaseOf: first, env: { STEPCAST_DEMO_API: 'off' } });
    await finished;
    expect(updates).toEqual([
      'EXECUTION_STARTED',
      'STEP_STARTED:1',
      'STEP_SUCCEEDED:1',
      'STEP_STARTED:2',
      'STEP_SUCCEEDED:2',
      'STEP_STARTED:3',
      'STEP_SUCCEEDED:3',
      'EXECUTION_SUCCEEDED',
    ]);
    const execution = await fetchExecution(second, id);
    expect(execution.status).toBe('SUCCEEDED');
    expect(execution.successfulSteps).toBe(3);
    expect(execution.failedSteps).toBe(0);
    expect(execution.error).toBeNull();
    const replay = await second.subscribeWs(StepUpdatesSubscription, { executionId: id });
    expect(describeUpdates(replay.map((r) => r.data!.stepUpdates))).toEqual(updates);
  });

  it('runs each submitted execution exactly once when both replicas are live', async () => {
    // Live updates come from the replica running the execution (the bus is in-process), so follow it there.
    const accepted = await Promise.all(
      Array.from({ length: 6 }, async (_, i) => {
        const replica = i % 2 === 0 ? first : second!;
        return { replica, id: await submitPlan(replica, { query: 'q', steps: [sqlStep(`SELECT ${i} AS i`)] }) };
      }),
    );
    for (const { replica, id } of accepted) {
      const results = await replica.subscribeWs(StepUpdatesSubscription, { executionId: id });
      expect(describeUpdates(results.map((r) => r.data!.stepUpdates))).toEqual([
        'EXECUTION_STARTED',
        'STEP_STARTED:1',
        'STEP_SUCCEEDED:1',
        'EXECUTION_SUCCEEDED',
      ]);
    }
  });
});
