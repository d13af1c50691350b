import { beforeEach, describe, expect, it } from 'vitest';
import { MemoryExecutionStore } from '../src/executor/memory-store.js';
import { isTerminalUpdate, type StepUpdate, type StepUpdateType } from '../src/executor/step-update.js';
import { createInProcessStepUpdateBus, type StepUpdateBus } from '../src/executor/step-update-bus.js';
import { isStreamDenied, liveUpdateTaker, streamStepUpdates, type StreamAccess, type StreamDenied } from '../src/executor/step-update-stream.js';
import type { ExecutionStore } from '../src/executor/store.js';
import { validatedSqlPlan } from './support/plans.js';

const DEMO_TENANT_ID = 'demo';

/**
 * The replay/live merge under races that a real server only hits by chance: updates committed
 * and published while the replay reads, updates both replayed and delivered live, and live
 * updates that skip ahead of what the subscriber has seen.
 */
{
  describe('replay and live merge (on the in-memory store)', () => {
    let store: MemoryExecutionStore;
    beforeEach(() => {
      store = new MemoryExecutionStore();
    });

    const createExecution = async () => {
      return (await store.createExecution(DEMO_TENANT_ID, validatedSqlPlan())).execution.id;
    };

    const record = async (id: string, type: StepUpdateType) =>
      (
        await store.recordTransition(id, {
          type,
          execution: type === 'EXECUTION_SUCCEEDED' ? { status: 'SUCCEEDED', finishedAt: new Date() } : undefined,
        })
      ).update;

    async function collect(iterable: AsyncIterable<StepUpdate | StreamDenied>): Promise<(number | string)[]> {
      const sequences: (number | string)[] = [];
      for await (const item of iterable) sequences.push(isStreamDenied(item) ? `denied:${item.denied}` : item.sequence);
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
        streamStepUpdates({ store: racingStore, bus, executionId: id, access: { tenantId: DEMO_TENANT_ID }, afterSequence: 0, shutdown: shutdown.signal }),
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
          access: { tenantId: DEMO_TENANT_ID },
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
          access: { tenantId: DEMO_TENANT_ID },
          afterSequence: 0,
          shutdown: new AbortController().signal,
        }),
      );
      expect(sequences).toEqual([1, 2, 3]);
    });

    it('reads the store when the bus says it lost updates: completes after a terminal update whose message never came', async () => {
      const id = await createExecution();
      const inner = createInProcessStepUpdateBus();
      const gapListeners = new Set<() => void>();
      // A bus between processes that loses the terminal update's message, and says when it may have lost one.
      const lossy: StepUpdateBus = {
        publish: (update) => {
          if (!isTerminalUpdate(update.type)) inner.publish(update);
        },
        subscribe: (executionId, listener, onGap) => {
          const unsubscribe = inner.subscribe(executionId, listener);
          if (onGap) gapListeners.add(onGap);
          return () => {
            if (onGap) gapListeners.delete(onGap);
            unsubscribe();
          };
        },
      };
      const gap = () => {
        for (const onGap of gapListeners) onGap();
      };
      const iterator = streamStepUpdates({
        store,
        bus: lossy,
        executionId: id,
        access: { tenantId: DEMO_TENANT_ID },
        afterSequence: 0,
        shutdown: new AbortController().signal,
      })[Symbol.asyncIterator]();
      lossy.publish(await record(id, 'EXECUTION_STARTED'));
      expect((await iterator.next()).value).toMatchObject({ sequence: 1 });

      // A gap with nothing new in the store: nothing is handed out twice, and the stream goes on listening.
      const second = iterator.next();
      gap();
      lossy.publish(await record(id, 'STEP_STARTED'));
      expect((await second).value).toMatchObject({ sequence: 2 });

      const third = iterator.next();
      lossy.publish(await record(id, 'EXECUTION_SUCCEEDED'));
      gap();
      expect((await third).value).toMatchObject({ sequence: 3, type: 'EXECUTION_SUCCEEDED' });
      expect(await iterator.next()).toMatchObject({ done: true });
      expect(gapListeners.size).toBe(0);
    });

    it('ends the stream of an execution deleted after the caller read it finished: its events are gone too', async () => {
      const bus = createInProcessStepUpdateBus();
      // Read finished at sequence 4 by the caller (stepUpdates), then deleted by retention before the first pull.
      const sequences = await collect(
        streamStepUpdates({
          store,
          bus,
          executionId: '00000000-0000-4000-8000-000000000000',
          access: { tenantId: DEMO_TENANT_ID },
          afterSequence: 2,
          shutdown: new AbortController().signal,
          readBefore: { status: 'SUCCEEDED', lastSequence: 4 },
        }),
      );
      expect(sequences).toEqual([]);
    });

    it('streams an execution read unfinished before the stream opened to its end, from the store and the bus', async () => {
      const id = await createExecution();
      const bus = createInProcessStepUpdateBus();
      const readBefore = { status: 'QUEUED', lastSequence: 0 };
      // Committed after the caller's read, before the stream listens: the replay reads it.
      await record(id, 'EXECUTION_STARTED');
      const stream = streamStepUpdates({
        store,
        bus,
        executionId: id,
        access: { tenantId: DEMO_TENANT_ID },
        afterSequence: 0,
        shutdown: new AbortController().signal,
        readBefore,
      });
      const first = await stream.next();
      bus.publish(await record(id, 'EXECUTION_SUCCEEDED'));
      const rest = await collect(stream);
      expect([(first.value as StepUpdate).sequence, ...rest]).toEqual([1, 2]);
    });

    it('completes open streams when the server shuts down', async () => {
      const id = await createExecution();
      const bus = createInProcessStepUpdateBus();
      bus.publish(await record(id, 'EXECUTION_STARTED'));
      const shutdown = new AbortController();
      const iterator = streamStepUpdates({ store, bus, executionId: id, access: { tenantId: DEMO_TENANT_ID }, afterSequence: 0, shutdown: shutdown.signal })[
        Symbol.asyncIterator
      ]();
      expect((await iterator.next()).value?.sequence).toBe(1);
      const pending = iterator.next();
      shutdown.abort();
      expect(await pending).toMatchObject({ done: true });
    });

    it('checks every update against the subscriber: a row of another tenant ends the stream', async () => {
      const id = await createExecution();
      const bus = createInProcessStepUpdateBus();
      const started = await record(id, 'EXECUTION_STARTED');
      const stream = streamStepUpdates({
        store,
        bus,
        executionId: id,
        access: { tenantId: DEMO_TENANT_ID },
        afterSequence: 1,
        shutdown: new AbortController().signal,
      });
      const collected = collect(stream);
      bus.publish({ ...started, sequence: 2, type: 'STEP_STARTED', tenantId: 'someone-else' });
      expect(await collected).toEqual(['denied:tenant']);
    });

    it('ends the stream at the next update once the credential no longer stands', async () => {
      const id = await createExecution();
      const bus = createInProcessStepUpdateBus();
      let authorized = true;
      bus.publish(await record(id, 'EXECUTION_STARTED'));
      const stream = streamStepUpdates({
        store,
        bus,
        executionId: id,
        access: { tenantId: DEMO_TENANT_ID, stillAuthorized: () => authorized },
        afterSequence: 0,
        shutdown: new AbortController().signal,
      });
      const iterator = stream[Symbol.asyncIterator]();
      expect((await iterator.next()).value).toMatchObject({ sequence: 1 });
      authorized = false;
      bus.publish(await record(id, 'STEP_STARTED'));
      expect((await iterator.next()).value).toEqual({ denied: 'credential' });
      expect(await iterator.next()).toMatchObject({ done: true });
    });

    it('ends a quiet stream as soon as its credential is revoked', async () => {
      const id = await createExecution();
      const revoked = new AbortController();
      const iterator = streamStepUpdates({
        store,
        bus: createInProcessStepUpdateBus(),
        executionId: id,
        access: { tenantId: DEMO_TENANT_ID, revoked: revoked.signal },
        afterSequence: 0,
        shutdown: new AbortController().signal,
      })[Symbol.asyncIterator]();
      const next = iterator.next();
      revoked.abort();
      expect((await next).value).toEqual({ denied: 'credential' });
      expect(await iterator.next()).toMatchObject({ done: true });
    });

    describe('handing live updates over to a consumer that delivers them itself', () => {
      /** A turn of the event loop: a next() called before it has read what it reads and waits for the bus. */
      const turn = () => new Promise((resolve) => setImmediate(resolve));

      async function handingOver(take: (update: StepUpdate) => boolean, access: StreamAccess = { tenantId: DEMO_TENANT_ID }) {
        const id = await createExecution();
        const bus = createInProcessStepUpdateBus();
        const publish = async (type: StepUpdateType) => bus.publish(await record(id, type));
        await publish('EXECUTION_STARTED');
        const stream = streamStepUpdates({ store, bus, executionId: id, access, afterSequence: 0, shutdown: new AbortController().signal });
        stream[liveUpdateTaker] = take;
        const iterator = stream[Symbol.asyncIterator]();
        // The stored update goes through next(): nothing waited for it.
        expect((await iterator.next()).value).toMatchObject({ sequence: 1 });
        return { id, bus, publish, iterator };
      }

      it('hands over each live update while next() waits, in order, and next() answers done after a terminal one', async () => {
        const taken: number[] = [];
        const { publish, iterator } = await handingOver((update) => taken.push(update.sequence) > 0);
        const waiting = iterator.next();
        let settled = false;
        void waiting.then(() => (settled = true));
        await turn();
        await publish('STEP_STARTED');
        await publish('STEP_SUCCEEDED');
        await turn();
        expect(taken).toEqual([2, 3]);
        expect(settled).toBe(false);
        await publish('EXECUTION_SUCCEEDED');
        expect(taken).toEqual([2, 3, 4]);
        expect(await waiting).toMatchObject({ done: true });
      });

      it('sends what the consumer declines, and every update behind it, through next() in order', async () => {
        const offered: number[] = [];
        const { publish, iterator } = await handingOver((update) => {
          offered.push(update.sequence);
          return update.sequence !== 2;
        });
        const waiting = iterator.next();
        await turn();
        await publish('STEP_STARTED'); // declined
        await publish('STEP_SUCCEEDED'); // behind it: not offered
        expect((await waiting).value).toMatchObject({ sequence: 2 });
        expect((await iterator.next()).value).toMatchObject({ sequence: 3 });
        const last = iterator.next();
        await turn();
        await publish('EXECUTION_SUCCEEDED');
        expect(await last).toMatchObject({ done: true });
        expect(offered).toEqual([2, 4]);
      });

      it('sends an update whose taker throws through next(), as if it was declined', async () => {
        const { publish, iterator } = await handingOver(() => {
          throw new Error('the taker failed');
        });
        const waiting = iterator.next();
        await turn();
        await publish('STEP_STARTED');
        expect((await waiting).value).toMatchObject({ sequence: 2 });
      });

      it('offers nothing while the consumer is busy with an earlier update: those wait for next()', async () => {
        const offered: number[] = [];
        const { publish, iterator } = await handingOver((update) => offered.push(update.sequence) > 0);
        await publish('STEP_STARTED');
        expect(offered).toEqual([]);
        expect((await iterator.next()).value).toMatchObject({ sequence: 2 });
      });

      it("offers nothing next() would refuse: another tenant's row ends the stream through next()", async () => {
        const offered: number[] = [];
        const { id, bus, iterator } = await handingOver((update) => offered.push(update.sequence) > 0);
        const waiting = iterator.next();
        await turn();
        const [started] = await store.loadEvents(id, 0);
        bus.publish({ ...started!, sequence: 2, type: 'STEP_STARTED', tenantId: 'someone-else' });
        expect((await waiting).value).toEqual({ denied: 'tenant' });
        expect(offered).toEqual([]);
      });

      it('offers nothing once the credential no longer stands', async () => {
        let authorized = true;
        const offered: number[] = [];
        const { publish, iterator } = await handingOver((update) => offered.push(update.sequence) > 0, {
          tenantId: DEMO_TENANT_ID,
          stillAuthorized: () => authorized,
        });
        const waiting = iterator.next();
        await turn();
        authorized = false;
        await publish('STEP_STARTED');
        expect((await waiting).value).toEqual({ denied: 'credential' });
        expect(offered).toEqual([]);
      });
    });
  });
}
