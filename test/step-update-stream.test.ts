import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_TENANT_ID } from '../src/db/demo-data.js';
import { loadConfig } from '../src/config.js';
import { validatePlan } from '../src/executor/plan.js';
import type { StepUpdate, StepUpdateType } from '../src/executor/step-update.js';
import { createInProcessStepUpdateBus, type StepUpdateBus } from '../src/executor/step-update-bus.js';
import { streamStepUpdates } from '../src/executor/step-update-stream.js';
import { ExecutionStore } from '../src/executor/store.js';
import { backends } from './support/database.js';
import { startTestServer, type TestServer } from './support/server.js';

/**
 * The replay/live merge under races that a real server only hits by chance: updates committed
 * and published while the replay reads, updates both replayed and delivered live, and live
 * updates that skip ahead of what the subscriber has seen.
 */
for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`replay and live merge on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    let store: ExecutionStore;
    beforeAll(async () => {
      server = await startTestServer(backend);
      store = new ExecutionStore(server.app.database.db);
    });
    afterAll(async () => {
      await server?.close();
    });

    async function createExecution(): Promise<string> {
      const plan = validatePlan(
        { query: 'q', steps: [{ kind: 'SQL', queryContext: 'c', sql: 'SELECT 1' }] },
        {},
        { sampleSize: 3, stepTimeoutMs: 1000, maxStepTimeoutMs: 60_000, limits: loadConfig({}).inputLimits },
      );
      return (await store.createExecution(DEMO_TENANT_ID, plan)).execution.id;
    }

    const record = (id: string, type: StepUpdateType) =>
      store.recordTransition(id, {
        type,
        execution: type === 'EXECUTION_SUCCEEDED' ? { status: 'SUCCEEDED', finishedAt: new Date() } : undefined,
      });

    async function collect(iterable: AsyncIterable<StepUpdate>): Promise<number[]> {
      const sequences: number[] = [];
      for await (const update of iterable) sequences.push(update.sequence);
      return sequences;
    }

    function storeThatRacesOnFirstRead(race: () => Promise<void>): ExecutionStore {
      let raced = false;
      return Object.assign(Object.create(store) as ExecutionStore, {
        loadEvents: async (executionId: string, after: number, upTo?: number) => {
          const events = await store.loadEvents(executionId, after, upTo);
          if (!raced) {
            raced = true;
            await race();
          }
          return events;
        },
      });
    }

    it('delivers updates committed while the replay reads, once each, in order', async () => {
      const id = await createExecution();
      const bus = createInProcessStepUpdateBus();
      const publish = async (type: StepUpdateType) => bus.publish(await record(id, type));
      await publish('EXECUTION_STARTED');
      await publish('STEP_STARTED');
      const racingStore = storeThatRacesOnFirstRead(async () => {
        await publish('STEP_SUCCEEDED');
        await publish('EXECUTION_SUCCEEDED');
      });
      const shutdown = new AbortController();
      const sequences = await collect(
        streamStepUpdates({ store: racingStore, bus, executionId: id, afterSequence: 0, shutdown: shutdown.signal }),
      );
      expect(sequences).toEqual([1, 2, 3, 4]);
    });

    it('drops a live update that the replay already delivered', async () => {
      const id = await createExecution();
      const bus = createInProcessStepUpdateBus();
      const early = await record(id, 'EXECUTION_STARTED');
      const racingStore = storeThatRacesOnFirstRead(async () => {
        bus.publish(early);
        bus.publish(await record(id, 'EXECUTION_SUCCEEDED'));
      });
      const sequences = await collect(
        streamStepUpdates({
          store: racingStore,
          bus,
          executionId: id,
          afterSequence: 0,
          shutdown: new AbortController().signal,
        }),
      );
      expect(sequences).toEqual([1, 2]);
    });

    it('fills a gap in the live updates from the store', async () => {
      const id = await createExecution();
      const bus: StepUpdateBus = createInProcessStepUpdateBus();
      const racingStore = storeThatRacesOnFirstRead(async () => {
        await record(id, 'EXECUTION_STARTED');
        await record(id, 'STEP_STARTED');
        bus.publish(await record(id, 'EXECUTION_SUCCEEDED'));
      });
      const sequences = await collect(
        streamStepUpdates({
          store: racingStore,
          bus,
          executionId: id,
          afterSequence: 0,
          shutdown: new AbortController().signal,
        }),
      );
      expect(sequences).toEqual([1, 2, 3]);
    });

    it('completes open streams when the server shuts down', async () => {
      const id = await createExecution();
      const bus = createInProcessStepUpdateBus();
      bus.publish(await record(id, 'EXECUTION_STARTED'));
      const shutdown = new AbortController();
      const iterator = streamStepUpdates({ store, bus, executionId: id, afterSequence: 0, shutdown: shutdown.signal })[
        Symbol.asyncIterator
      ]();
      expect((await iterator.next()).value?.sequence).toBe(1);
      const pending = iterator.next();
      shutdown.abort();
      expect(await pending).toMatchObject({ done: true });
    });
  });
}
