import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createRedisBus, stepUpdatesChannel, type RedisBus } from '../src/cluster/redis-bus.js';
import { MemoryExecutionStore } from '../src/executor/memory-store.js';
import type { StepUpdate, StepUpdateType } from '../src/executor/step-update.js';
import { isStreamDenied, streamStepUpdates, type StreamDenied } from '../src/executor/step-update-stream.js';
import { validatedSqlPlan } from './support/plans.js';
import { redisServerSkipReason, redisSkipReason, redisUrl, startRedisServer } from './support/redis.js';

const TENANT_ID = 'demo';
const WAIT = { timeout: 15_000, interval: 20 };

/** A logger whose lines the test reads. */
function capturingLogger() {
  const lines: { level: number; msg: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line) as { level: number; msg: string }) });
  return { logger, lines };
}

/** A third connection, that looks at what Redis holds; it reconnects quietly while a test's own Redis is away. */
const observerOf = (url: string) => new Redis(url, { lazyConnect: true }).on('error', () => undefined);

/** An update as the engine publishes it: `at` a Date with milliseconds, the step's dates ISO text. */
function updateOf(executionId: string, sequence: number, type: StepUpdateType = 'STEP_PROGRESS'): StepUpdate {
  return {
    executionId,
    tenantId: TENANT_ID,
    sequence,
    type,
    at: new Date(Date.UTC(2025, 0, 2, 3, 4, 5, sequence % 1000)),
    status: 'RUNNING',
    step:
      type === 'STEP_PROGRESS'
        ? ({ index: 1, status: 'RUNNING', startedAt: '2025-01-02T03:04:05.123Z', finishedAt: null, sample: [{ at: '2025-01-02' }] } as unknown as StepUpdate['step'])
        : null,
    message: type === 'STEP_PROGRESS' ? `progress ${sequence}` : null,
  };
}

describe.skipIf(redisSkipReason !== null)(`the Redis bus between processes${redisSkipReason ? ` (${redisSkipReason})` : ''}`, () => {
  let channelPrefix: string;
  let buses: RedisBus[];
  let observer: Redis;

  beforeEach(() => {
    // Its own channels per test: other tests (and other runs) on the same Redis hear nothing of it.
    channelPrefix = `stepcast-test:${randomUUID()}:`;
    buses = [];
    observer = observerOf(redisUrl!);
  });
  afterEach(async () => {
    await Promise.all(buses.map((bus) => bus.close()));
    observer.disconnect();
  });

  /** One bus, as one process would have. */
  async function openBus(url = redisUrl!, options: { gapPollMs?: number; quietGapMs?: number } = {}) {
    const { logger, lines } = capturingLogger();
    const bus = await createRedisBus({ url, logger, channelPrefix, ...options });
    buses.push(bus);
    return Object.assign(bus, { lines });
  }

  /** How many connections Redis has subscribed to the channel of the execution's updates (PUBSUB NUMSUB). */
  async function subscribers(executionId: string, connection = observer): Promise<number> {
    const [, count] = (await connection.pubsub('NUMSUB', stepUpdatesChannel(channelPrefix, executionId))) as [string, number];
    return count;
  }

  it("delivers each process's updates to the other's subscribers and to its own, in order, with their Dates", async () => {
    const [a, b] = [await openBus(), await openBus()];
    // One execution run by a, one by b (updates from one publisher arrive in its order; the stream orders the rest).
    const [ranByA, ranByB] = [randomUUID(), randomUUID()];
    const heard = new Map<string, StepUpdate[]>();
    for (const [name, bus] of Object.entries({ a, b }))
      for (const executionId of [ranByA, ranByB]) {
        const updates: StepUpdate[] = [];
        heard.set(`${name}:${executionId}`, updates);
        bus.updates.subscribe(executionId, (update) => updates.push(update));
      }
    await vi.waitFor(async () => expect([await subscribers(ranByA), await subscribers(ranByB)]).toEqual([2, 2]), WAIT);

    const updatesOf = (executionId: string) =>
      Array.from({ length: 200 }, (_, i) => updateOf(executionId, i + 1, i === 199 ? 'EXECUTION_SUCCEEDED' : 'STEP_PROGRESS'));
    const sent = { [ranByA]: updatesOf(ranByA), [ranByB]: updatesOf(ranByB) };
    for (let i = 0; i < 200; i++) {
      a.updates.publish(sent[ranByA]![i]!);
      b.updates.publish(sent[ranByB]![i]!);
    }

    await vi.waitFor(() => expect([...heard.values()].map((updates) => updates.length)).toEqual([200, 200, 200, 200]), WAIT);
    for (const [key, updates] of heard) {
      const expected = sent[key.slice(2)]!;
      expect(updates).toEqual(expected);
      expect(updates.every((update, i) => update.at instanceof Date && update.at.getTime() === expected[i]!.at.getTime())).toBe(true);
      // Only `at` is revived: the step's dates and the records stay text, as the store gives them.
      expect(typeof updates[0]!.step?.startedAt).toBe('string');
      expect(updates[0]!.step?.sample).toEqual([{ at: '2025-01-02' }]);
    }
  });

  it('holds one Redis subscription per execution and process, and leaves it with the last local listener', async () => {
    const [a, b] = [await openBus(), await openBus()];
    const executionId = randomUUID();
    const heard = { a1: [] as number[], a2: [] as number[], b1: [] as number[] };
    const leaveA1 = a.updates.subscribe(executionId, (update) => heard.a1.push(update.sequence));
    const leaveA2 = a.updates.subscribe(executionId, (update) => heard.a2.push(update.sequence));
    const leaveB1 = b.updates.subscribe(executionId, (update) => heard.b1.push(update.sequence));
    await vi.waitFor(async () => expect(await subscribers(executionId)).toBe(2), WAIT);

    // One of a's two listeners leaves (twice: the second call does nothing): a stays subscribed.
    leaveA1();
    leaveA1();
    b.updates.publish(updateOf(executionId, 1));
    await vi.waitFor(() => expect([heard.a2, heard.b1]).toEqual([[1], [1]]), WAIT);
    expect(heard.a1).toEqual([]);
    expect(await subscribers(executionId)).toBe(2);

    leaveA2();
    await vi.waitFor(async () => expect(await subscribers(executionId)).toBe(1), WAIT);
    leaveB1();
    await vi.waitFor(async () => expect(await subscribers(executionId)).toBe(0), WAIT);

    // Listening again subscribes again.
    const again: number[] = [];
    a.updates.subscribe(executionId, (update) => again.push(update.sequence));
    await vi.waitFor(async () => expect(await subscribers(executionId)).toBe(1), WAIT);
    b.updates.publish(updateOf(executionId, 2));
    await vi.waitFor(() => expect(again).toEqual([2]), WAIT);
    expect([heard.a2, heard.b1]).toEqual([[1], [1]]);
  });

  it('tells a subscriber of a gap once its subscription is in place, so that it reads what went past before', async () => {
    const bus = await openBus(redisUrl!, { gapPollMs: 60_000 });
    const executionId = randomUUID();
    let gaps = 0;
    bus.updates.subscribe(executionId, () => undefined, () => gaps++);
    await vi.waitFor(() => expect(gaps).toBe(1), WAIT);
    expect(await subscribers(executionId)).toBe(1);
    // A second listener finds the subscription in place: nothing went past it, and nobody is told of a gap.
    let laterGaps = 0;
    const heard: number[] = [];
    bus.updates.subscribe(executionId, (update) => heard.push(update.sequence), () => laterGaps++);
    bus.updates.publish(updateOf(executionId, 1));
    await vi.waitFor(() => expect(heard).toEqual([1]), WAIT);
    expect([gaps, laterGaps]).toEqual([1, 0]);
  });

  it('tells the subscribers of a quiet execution of a gap, so that an update whose publisher died after its commit is still read', async () => {
    const bus = await openBus(redisUrl!, { gapPollMs: 60_000, quietGapMs: 300 });
    const quiet = randomUUID();
    const busy = randomUUID();
    const gaps = { quiet: 0, busy: 0 };
    bus.updates.subscribe(quiet, () => undefined, () => gaps.quiet++);
    bus.updates.subscribe(busy, () => undefined, () => gaps.busy++);
    // Each is told once as its subscription is in place; then only the quiet one, again and again.
    await vi.waitFor(() => expect(gaps.busy).toBe(1), WAIT);
    let sequence = 0;
    const publishing = setInterval(() => bus.updates.publish(updateOf(busy, ++sequence)), 50);
    try {
      await vi.waitFor(() => expect(gaps.quiet).toBeGreaterThanOrEqual(3), WAIT);
    } finally {
      clearInterval(publishing);
    }
    expect(gaps.busy).toBe(1);
  });

  it('carries cancel and work signals between processes', async () => {
    const [a, b] = [await openBus(), await openBus()];
    const cancelled = { a: [] as string[], b: [] as string[] };
    let work = 0;
    a.signals.onCancel((executionId) => cancelled.a.push(executionId));
    const stopB = b.signals.onCancel((executionId) => cancelled.b.push(executionId));
    b.signals.onWork(() => work++);
    const [first, second] = [randomUUID(), randomUUID()];
    a.signals.publishCancel(first);
    a.signals.publishWork();
    await vi.waitFor(() => expect([cancelled.a, cancelled.b, work]).toEqual([[first], [first], 1]), WAIT);
    stopB();
    b.signals.publishCancel(second);
    await vi.waitFor(() => expect(cancelled.a).toEqual([first, second]), WAIT);
    expect(cancelled.b).toEqual([first]);
  });

  describe.skipIf(redisServerSkipReason !== null)(`when Redis goes away${redisServerSkipReason ? ` (${redisServerSkipReason})` : ''}`, () => {
    const createExecution = async (store: MemoryExecutionStore) => {
      return (await store.createExecution(TENANT_ID, validatedSqlPlan())).execution.id;
    };

    it('serves on: publishing does not throw, streams complete from the store, and live delivery resumes when it is back', async () => {
      const redis = await startRedisServer();
      const ownObserver = observerOf(redis.url);
      try {
        // `polling` tells its subscribers of a gap every 100 ms while Redis is away; `quiet` would only after a minute,
        // so that each of its gaps comes from the subscription being in place (at the start, and after the reconnect).
        const polling = await openBus(redis.url, { gapPollMs: 100 });
        const quiet = await openBus(redis.url, { gapPollMs: 60_000 });
        const store = new MemoryExecutionStore();
        const executionId = await createExecution(store);
        const record = async (type: StepUpdateType) =>
          (
            await store.recordTransition(executionId, {
              type,
              execution: type === 'EXECUTION_SUCCEEDED' ? { status: 'SUCCEEDED', finishedAt: new Date() } : undefined,
            })
          ).update;

        const gaps = { polling: 0, quiet: 0 };
        const heard: number[] = [];
        polling.updates.subscribe(executionId, () => undefined, () => gaps.polling++);
        quiet.updates.subscribe(executionId, (update) => heard.push(update.sequence), () => gaps.quiet++);
        const streamed: (number | string)[] = [];
        const stream = (async () => {
          const updates = streamStepUpdates({
            store,
            bus: polling.updates,
            executionId,
            afterSequence: 0,
            shutdown: new AbortController().signal,
            access: { tenantId: TENANT_ID },
          });
          for await (const item of updates as AsyncIterable<StepUpdate | StreamDenied>) streamed.push(isStreamDenied(item) ? item.denied : item.sequence);
        })();
        await vi.waitFor(async () => expect(await subscribers(executionId, ownObserver)).toBe(2), WAIT);
        await vi.waitFor(() => expect(gaps.quiet).toBe(1), WAIT);
        polling.updates.publish(await record('EXECUTION_STARTED'));
        await vi.waitFor(() => expect([heard, streamed]).toEqual([[1], [1]]), WAIT);

        await redis.stop();
        await vi.waitFor(() => expect([polling.healthy, quiet.healthy]).toEqual([false, false]), WAIT);
        const gapsWhenDown = gaps.polling;
        await vi.waitFor(() => expect(gaps.polling).toBeGreaterThanOrEqual(gapsWhenDown + 2), WAIT);
        // Committed while Redis is away: publishing fails inside the bus, not in the caller, and the stream finds
        // the terminal update in the store at its next gap.
        expect(() => polling.updates.publish(updateOf(executionId, 99))).not.toThrow();
        expect(() => polling.signals.publishCancel(executionId)).not.toThrow();
        expect(() => polling.signals.publishWork()).not.toThrow();
        polling.updates.publish(await record('STEP_STARTED'));
        polling.updates.publish(await record('EXECUTION_SUCCEEDED'));
        await stream;
        expect(streamed).toEqual([1, 2, 3]);
        expect(gaps.quiet).toBe(1);
        expect(heard).toEqual([1]);

        await redis.start();
        await vi.waitFor(() => expect([polling.healthy, quiet.healthy]).toEqual([true, true]), WAIT);
        // Subscribed again on the new server, and told of the gap that the outage made.
        await vi.waitFor(async () => expect(await subscribers(executionId, ownObserver)).toBe(2), WAIT);
        // (A second gap may come with the notice of the updates `polling` could not publish.)
        await vi.waitFor(() => expect(gaps.quiet).toBeGreaterThanOrEqual(2), WAIT);
        polling.updates.publish(updateOf(executionId, 4));
        await vi.waitFor(() => expect(heard).toEqual([1, 4]), WAIT);

        // The outage is said once as it starts and once as it ends, however many reconnect attempts it took.
        for (const bus of [polling, quiet]) {
          expect(bus.lines.filter((line) => line.msg.startsWith('Redis cannot be reached')).map((line) => line.level)).toEqual([40]);
          expect(bus.lines.filter((line) => line.msg.startsWith('Redis is reachable again')).map((line) => line.level)).toEqual([30]);
        }
      } finally {
        ownObserver.disconnect();
        await redis.stop();
      }
    });

    it('tells the subscribers of an execution whose update could not be published, once the publisher is back', async () => {
      const redis = await startRedisServer();
      const ownObserver = observerOf(redis.url);
      try {
        // Neither tells of gaps by polling within the test: a gap after the first comes from the notice.
        const runner = await openBus(redis.url, { gapPollMs: 60_000 });
        const watcher = await openBus(redis.url, { gapPollMs: 60_000 });
        const [lost, other] = [randomUUID(), randomUUID()];
        const gaps = { lost: 0, other: 0 };
        watcher.updates.subscribe(lost, () => undefined, () => gaps.lost++);
        watcher.updates.subscribe(other, () => undefined, () => gaps.other++);
        await vi.waitFor(() => expect(gaps).toEqual({ lost: 1, other: 1 }), WAIT);

        // Only the publishers' connections drop (as an idle timeout or a proxy would): the watcher hears nothing lost.
        const clients = (await ownObserver.client('LIST')) as string;
        for (const id of clients.matchAll(/^id=(\d+) .*name=stepcast-publisher /gm)) await ownObserver.client('KILL', 'ID', id[1]!);
        // At once, before the first reconnect (100 ms later): the publish fails, on a closed or a dead socket.
        runner.updates.publish(updateOf(lost, 1));
        await vi.waitFor(() => expect(runner.lines.map((line) => line.msg)).toContain('could not publish to Redis; subscribers read the store instead'), WAIT);
        await vi.waitFor(() => expect(runner.healthy).toBe(true), WAIT);
        await vi.waitFor(() => expect(gaps.lost).toBe(2), WAIT);
        expect(gaps.other).toBe(1);
      } finally {
        ownObserver.disconnect();
        await redis.stop();
      }
    });

    it('starts while Redis is down, and connects once it is up', async () => {
      const redis = await startRedisServer();
      const ownObserver = observerOf(redis.url);
      try {
        await redis.stop();
        const bus = await openBus(redis.url, { gapPollMs: 100 });
        expect(bus.healthy).toBe(false);
        expect(bus.lines.filter((line) => line.msg.startsWith('Redis cannot be reached'))).toHaveLength(1);
        const executionId = randomUUID();
        let gaps = 0;
        const heard: number[] = [];
        bus.updates.subscribe(executionId, (update) => heard.push(update.sequence), () => gaps++);
        await vi.waitFor(() => expect(gaps).toBeGreaterThanOrEqual(2), WAIT);
        expect(() => bus.updates.publish(updateOf(executionId, 1))).not.toThrow();

        await redis.start();
        await vi.waitFor(() => expect(bus.healthy).toBe(true), WAIT);
        await vi.waitFor(async () => expect(await subscribers(executionId, ownObserver)).toBe(1), WAIT);
        bus.updates.publish(updateOf(executionId, 2));
        await vi.waitFor(() => expect(heard).toEqual([2]), WAIT);
      } finally {
        ownObserver.disconnect();
        await redis.stop();
      }
    });
  });
});
