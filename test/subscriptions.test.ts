import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends } from './support/database.js';
import { StepUpdatesSubscription } from './support/operations.js';
import { describeUpdates, runPlan, sqlStep, submitPlan, type StepUpdateEvent } from './support/plans.js';
import { startTestServer, type TestServer } from './support/server.js';

const TWO_STEPS = {
  query: 'q',
  steps: [sqlStep('SELECT id FROM users ORDER BY id LIMIT 3'), sqlStep('SELECT count(*) AS n FROM step_1')],
};

function sequencesOf(updates: readonly StepUpdateEvent[]): number[] {
  return updates.map((update) => update.sequence);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`stepUpdates on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    beforeAll(async () => {
      server = await startTestServer(backend);
    });
    afterAll(async () => {
      await server?.close();
    });

    it('streams the same updates over SSE as over graphql-ws, then completes', async () => {
      const id = await submitPlan(server, TWO_STEPS);
      const [overSse, overWs] = await Promise.all([
        server.subscribeSse(StepUpdatesSubscription, { executionId: id }),
        server.subscribeWs(StepUpdatesSubscription, { executionId: id }),
      ]);
      const sse = overSse.map((r) => r.data!.stepUpdates);
      const ws = overWs.map((r) => r.data!.stepUpdates);
      expect(describeUpdates(sse)).toEqual([
        'EXECUTION_STARTED',
        'STEP_STARTED:1',
        'STEP_SUCCEEDED:1',
        'STEP_STARTED:2',
        'STEP_SUCCEEDED:2',
        'EXECUTION_SUCCEEDED',
      ]);
      expect(sse).toEqual(ws);
      expect(sse.every((update) => update.executionId === id)).toBe(true);
    });

    it('replays a finished execution to a late subscriber and completes', async () => {
      const { id, updates } = await runPlan(server, TWO_STEPS);
      const late = await server.subscribeWs(StepUpdatesSubscription, { executionId: id });
      expect(late.map((r) => r.data!.stepUpdates)).toEqual(updates);
      const lateSse = await server.subscribeSse(StepUpdatesSubscription, { executionId: id });
      expect(lateSse.map((r) => r.data!.stepUpdates)).toEqual(updates);
    });

    it('resumes after afterSequence with nothing missed and nothing repeated', async () => {
      const { id, updates } = await runPlan(server, TWO_STEPS);
      const resumed = await server.subscribeWs(StepUpdatesSubscription, { executionId: id, afterSequence: 3 });
      expect(resumed.map((r) => r.data!.stepUpdates)).toEqual(updates.slice(3));
      const atEnd = await server.subscribeWs(StepUpdatesSubscription, { executionId: id, afterSequence: 6 });
      expect(atEnd).toEqual([]);
    });

    it('gives every subscriber, joining at any moment with any afterSequence, one contiguous run of updates', async () => {
      const steps = range(1, 30).map((n) => sqlStep(`SELECT ${n} AS n, count(*) AS users FROM users`));
      const id = await submitPlan(server, { query: 'many steps', steps });
      const lastSequence = 1 + steps.length * 2 + 1;
      const subscribers: Promise<{ after: number; sequences: number[] }>[] = [];
      const client = server.wsClient();
      await new Promise<void>((resolve, reject) => {
        let joined = 0;
        client.subscribe(
          { query: StepUpdatesSubscription.toString(), variables: { executionId: id } },
          {
            next: (value) => {
              const sequence = (value.data as { stepUpdates: StepUpdateEvent }).stepUpdates.sequence;
              if (sequence % 5 === 0 && joined < 10) {
                joined += 1;
                const after = sequence - (joined % 4);
                subscribers.push(
                  server
                    .subscribeWs(StepUpdatesSubscription, { executionId: id, afterSequence: after })
                    .then((results) => ({ after, sequences: sequencesOf(results.map((r) => r.data!.stepUpdates)) })),
                );
              }
            },
            error: reject,
            complete: resolve,
          },
        );
      });
      const results = await Promise.all(subscribers);
      expect(results.length).toBeGreaterThan(3);
      for (const { after, sequences } of results) {
        expect(sequences).toEqual(range(after + 1, lastSequence));
      }
    });

    it('answers an unknown execution id with NOT_FOUND over graphql-ws and SSE', async () => {
      const missing = '00000000-0000-4000-8000-000000000000';
      for (const executionId of [missing, 'not-a-uuid']) {
        const overWs = await server.subscribeWs(StepUpdatesSubscription, { executionId });
        expect(overWs[0]!.errors![0]!.extensions).toMatchObject({ code: 'NOT_FOUND' });
        const overSse = await server.subscribeSse(StepUpdatesSubscription, { executionId });
        expect(overSse[0]!.errors![0]!.extensions).toMatchObject({ code: 'NOT_FOUND' });
      }
    });

    it('rejects a negative afterSequence, or one beyond the last update, with BAD_USER_INPUT', async () => {
      const { id } = await runPlan(server, TWO_STEPS);
      for (const afterSequence of [-1, 7]) {
        const results = await server.subscribeWs(StepUpdatesSubscription, { executionId: id, afterSequence });
        expect(results[0]!.errors![0]!.extensions).toMatchObject({ code: 'BAD_USER_INPUT' });
      }
    });

    it('answers a syntax error on graphql-ws for that operation only; the socket and its other subscriptions go on', async () => {
      const id = await submitPlan(server, { query: 'q', steps: [sqlStep('SELECT count(*) AS n FROM users a, users b')] });
      const client = server.wsClient();
      const follow = new Promise<string[]>((resolve, reject) => {
        const types: string[] = [];
        client.subscribe(
          { query: StepUpdatesSubscription.toString(), variables: { executionId: id } },
          {
            next: (value) => types.push((value.data as { stepUpdates: StepUpdateEvent }).stepUpdates.type),
            error: reject,
            complete: () => resolve(types),
          },
        );
      });
      const broken = await new Promise<unknown>((resolve) => {
        client.subscribe({ query: 'subscription { stepUpdates(' }, { next: () => undefined, error: resolve, complete: () => resolve(null) });
      });
      expect(Array.isArray(broken) && (broken as { message: string }[])[0]!.message).toMatch(/Syntax Error/);
      expect((await follow).at(-1)).toBe('EXECUTION_SUCCEEDED');
    });

    it('lets go of a stream when its client disconnects mid-execution', async () => {
      const id = await submitPlan(server, {
        query: 'q',
        steps: [sqlStep('SELECT 1 AS one'), sqlStep('SELECT count(*) AS n FROM users a, users b, users c')],
      });
      const client = server.wsClient();
      await new Promise<void>((resolve) => {
        client.subscribe(
          { query: StepUpdatesSubscription.toString(), variables: { executionId: id } },
          { next: () => resolve(), error: () => resolve(), complete: () => resolve() },
        );
      });
      expect(server.app.executor.openStreamCount).toBe(1);
      await client.dispose();
      for (let i = 0; i < 100 && server.app.executor.openStreamCount > 0; i++) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(server.app.executor.openStreamCount).toBe(0);
    });
  });
}
