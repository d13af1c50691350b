import { describe, expect, it } from 'vitest';
import { createInProcessDispatcher } from '../src/executor/dispatcher.js';
import { chooseNextTenant, type TenantLoad } from '../src/executor/fair-share.js';
import { createLogger } from '../src/logger.js';

/** Executions are named "<tenant><n>", e.g. a1 for tenant a. */
const tenantOf = (executionId: string) => executionId.replace(/\d+$/, '');

interface Start {
  executionId: string;
  /** Executions running, of every tenant and of this one, just before it started. */
  runningBefore: number;
  tenantRunningBefore: number;
  /** Running counts of the other tenants that had executions waiting at that moment. */
  othersWaiting: { tenantId: string; running: number }[];
}

/**
 * The dispatcher over executions the test finishes by hand: which have started, in what order,
 * and which are running or waiting right now.
 */
function harness({ slots, perTenant }: { slots: number; perTenant: number }) {
  const starts: Start[] = [];
  const waiting: string[] = [];
  const finishers = new Map<string, { resolve: () => void; reject: (error: Error) => void }>();
  const runningOf = (tenantId: string) => [...finishers.keys()].filter((id) => tenantOf(id) === tenantId).length;
  const dispatcher = createInProcessDispatcher({
    concurrency: slots,
    perTenantConcurrency: perTenant,
    logger: createLogger('silent'),
    runExecution: (executionId) =>
      new Promise<void>((resolve, reject) => {
        waiting.splice(waiting.indexOf(executionId), 1);
        const tenantId = tenantOf(executionId);
        const others = [...new Set(waiting.map(tenantOf))].filter((other) => other !== tenantId);
        starts.push({
          executionId,
          runningBefore: finishers.size,
          tenantRunningBefore: runningOf(tenantId),
          othersWaiting: others.map((other) => ({ tenantId: other, running: runningOf(other) })),
        });
        finishers.set(executionId, { resolve, reject });
      }),
  });
  /** Lets the dispatcher react to finished executions (their settling runs on the microtask queue). */
  const settle = () => new Promise((resolve) => setImmediate(resolve));
  return {
    dispatcher,
    started: () => starts.map((start) => start.executionId),
    starts,
    running: () => [...finishers.keys()].sort(),
    waiting: () => [...waiting],
    runningOf,
    enqueue: (...ids: string[]) =>
      ids.forEach((id) => {
        waiting.push(id);
        dispatcher.enqueue(id, tenantOf(id));
      }),
    async finish(id: string, error?: Error) {
      const finisher = finishers.get(id);
      if (!finisher) throw new Error(`${id} is not running`);
      finishers.delete(id);
      if (error) finisher.reject(error);
      else finisher.resolve();
      await settle();
    },
  };
}

describe('fair-share policy (chooseNextTenant)', () => {
  const load = (tenantId: string, running: number, waiting: number, lastStartedAt?: number): TenantLoad => ({
    tenantId,
    running,
    waiting,
    lastStartedAt,
  });

  it('starts nothing when every slot is taken, or when nobody waits', () => {
    expect(chooseNextTenant({ slots: 2, perTenantCap: 2, tenants: [load('a', 1, 3, 0), load('b', 1, 0, 1), load('c', 0, 1)] })).toBeUndefined();
    expect(chooseNextTenant({ slots: 4, perTenantCap: 2, tenants: [load('a', 1, 0, 0)] })).toBeUndefined();
    expect(chooseNextTenant({ slots: 4, perTenantCap: 2, tenants: [] })).toBeUndefined();
  });

  it('keeps the last free slot for a tenant with nothing running', () => {
    const busy = [load('a', 2, 5, 1), load('b', 1, 5, 2)];
    expect(chooseNextTenant({ slots: 4, perTenantCap: 4, tenants: busy })).toBeUndefined();
    expect(chooseNextTenant({ slots: 4, perTenantCap: 4, tenants: [...busy, load('c', 0, 1)] })).toBe('c');
    // With two slots free, a busy tenant may take one.
    expect(chooseNextTenant({ slots: 5, perTenantCap: 4, tenants: busy })).toBe('b');
  });

  it('never goes past the per-tenant cap, even with slots free', () => {
    expect(chooseNextTenant({ slots: 8, perTenantCap: 2, tenants: [load('a', 2, 5, 0)] })).toBeUndefined();
    expect(chooseNextTenant({ slots: 8, perTenantCap: 2, tenants: [load('a', 2, 5, 0), load('b', 1, 1, 1)] })).toBe('b');
  });

  it('gives the slot to the waiting tenant running fewest, whatever the order of arrival', () => {
    const tenants = [load('a', 3, 9, 5), load('b', 2, 1, 6), load('c', 1, 1, 7), load('d', 3, 1, 0)];
    expect(chooseNextTenant({ slots: 12, perTenantCap: 4, tenants })).toBe('c');
  });

  it('among tenants running as many, picks the one that started least recently; one that has not started first', () => {
    expect(chooseNextTenant({ slots: 8, perTenantCap: 4, tenants: [load('a', 1, 1, 9), load('b', 1, 1, 4), load('c', 1, 1, 7)] })).toBe('b');
    expect(chooseNextTenant({ slots: 8, perTenantCap: 4, tenants: [load('a', 0, 1, 3), load('b', 0, 1), load('c', 0, 1)] })).toBe('b');
  });

  it('with one slot, runs one execution at a time, in turns', () => {
    expect(chooseNextTenant({ slots: 1, perTenantCap: 2, tenants: [load('a', 1, 2, 0), load('b', 0, 1)] })).toBeUndefined();
    expect(chooseNextTenant({ slots: 1, perTenantCap: 2, tenants: [load('a', 0, 2, 0)] })).toBe('a');
    expect(chooseNextTenant({ slots: 1, perTenantCap: 2, tenants: [load('a', 0, 2, 2), load('b', 0, 1, 1)] })).toBe('b');
  });
});

describe('in-process dispatcher', () => {
  it('starts a third tenant at once while two busy tenants wait for more slots', async () => {
    const h = harness({ slots: 4, perTenant: 2 });
    h.enqueue('a1', 'a2', 'a3', 'b1', 'b2', 'b3');
    // Tenant a takes its two; b takes one; the last slot is kept for a tenant with nothing running.
    expect(h.running()).toEqual(['a1', 'a2', 'b1']);
    h.enqueue('c1');
    expect(h.running()).toEqual(['a1', 'a2', 'b1', 'c1']);
    await h.finish('c1');
    expect(h.running()).toEqual(['a1', 'a2', 'b1']);
    expect(h.waiting()).toEqual(['a3', 'b2', 'b3']);
  });

  it("hands a busy tenant's freed slot to the tenant that waits with nothing running", async () => {
    const h = harness({ slots: 4, perTenant: 2 });
    h.enqueue('a1', 'a2', 'a3', 'b1', 'b2', 'c1', 'd1');
    expect(h.running()).toEqual(['a1', 'a2', 'b1', 'c1']);
    // a3 arrived first and a is below its cap, but d runs nothing.
    await h.finish('a1');
    expect(h.running()).toEqual(['a2', 'b1', 'c1', 'd1']);
    // Only busy tenants wait: the freed slot stays free for the next newcomer.
    await h.finish('c1');
    expect(h.running()).toEqual(['a2', 'b1', 'd1']);
    // Two slots free: a and b both run one; a started least recently, so a goes first, and the last slot stays free.
    await h.finish('d1');
    expect(h.running()).toEqual(['a2', 'a3', 'b1']);
    await h.finish('b1');
    expect(h.running()).toEqual(['a2', 'a3', 'b2']);
    expect(h.started()).toEqual(['a1', 'a2', 'b1', 'c1', 'd1', 'a3', 'b2']);
  });

  it("starts one tenant's executions in submission order, never more than its cap at once", async () => {
    const h = harness({ slots: 8, perTenant: 1 });
    h.enqueue('a1', 'a2', 'a3', 'a4', 'b1');
    expect(h.running()).toEqual(['a1', 'b1']);
    for (const id of ['a1', 'a2', 'a3', 'a4']) {
      expect(h.running().filter((running) => tenantOf(running) === 'a')).toEqual([id]);
      await h.finish(id);
    }
    expect(h.started()).toEqual(['a1', 'b1', 'a2', 'a3', 'a4']);
    expect(h.running()).toEqual(['b1']);
  });

  it('with one slot, runs the waiting tenants in turn rather than in order of arrival', async () => {
    const h = harness({ slots: 1, perTenant: 2 });
    h.enqueue('a1', 'a2', 'a3', 'b1', 'b2', 'c1');
    for (const id of ['a1', 'b1', 'c1', 'a2', 'b2', 'a3']) {
      expect(h.running()).toEqual([id]);
      await h.finish(id);
    }
    expect(h.running()).toEqual([]);
    // A lone tenant is never held back: the one slot is free whenever it has nothing running.
    h.enqueue('a4', 'a5');
    expect(h.running()).toEqual(['a4']);
    await h.finish('a4');
    expect(h.running()).toEqual(['a5']);
  });

  it('with two slots, a lone tenant runs one at a time and a newcomer still starts at once', async () => {
    const h = harness({ slots: 2, perTenant: 2 });
    h.enqueue('a1', 'a2', 'a3');
    expect(h.running()).toEqual(['a1']);
    h.enqueue('b1');
    expect(h.running()).toEqual(['a1', 'b1']);
    await h.finish('b1');
    expect(h.running()).toEqual(['a1']);
    await h.finish('a1');
    expect(h.running()).toEqual(['a2']);
  });

  it('shares the slots between busy tenants by running count, the remainder in turn', async () => {
    const h = harness({ slots: 6, perTenant: 6 });
    h.enqueue('a1', 'b1', 'c1', 'd1', 'a2', 'b2', 'c2', 'd2', 'a3', 'b3', 'c3', 'd3');
    // One each, then a second for the tenant that started first; the sixth slot stays free for a newcomer.
    expect(h.running()).toEqual(['a1', 'a2', 'b1', 'c1', 'd1']);
    await h.finish('a1');
    expect(h.running()).toEqual(['a2', 'b1', 'b2', 'c1', 'd1']);
    await h.finish('a2');
    expect(h.running()).toEqual(['a3', 'b1', 'b2', 'c1', 'd1']);
    await h.finish('b1');
    expect(h.running()).toEqual(['a3', 'b2', 'c1', 'c2', 'd1']);
  });

  it('lets a busy tenant use the slots that tenants running what they asked for leave free', async () => {
    const h = harness({ slots: 8, perTenant: 8 });
    h.enqueue('b1', 'a1', 'a2', 'a3', 'a4', 'a5', 'a6', 'a7', 'a8');
    expect(h.running()).toEqual(['a1', 'a2', 'a3', 'a4', 'a5', 'a6', 'b1']);
    h.enqueue('c1');
    expect(h.runningOf('c')).toBe(1);
    // Full now: a finished execution of a frees the slot that a newcomer may have, and no more.
    await h.finish('a1');
    expect(h.running()).toHaveLength(7);
    h.enqueue('d1');
    expect(h.runningOf('d')).toBe(1);
  });

  it("frees the tenant's slot when an execution crashes", async () => {
    const h = harness({ slots: 4, perTenant: 1 });
    h.enqueue('a1', 'a2');
    await h.finish('a1', new Error('boom'));
    expect(h.running()).toEqual(['a2']);
  });

  it('on stop, drops waiting executions, waits for running ones up to the grace and reports those still running', async () => {
    const h = harness({ slots: 2, perTenant: 1 });
    h.enqueue('a1', 'a2', 'b1', 'c1');
    expect(h.running()).toEqual(['a1', 'b1']);
    const stopped = h.dispatcher.stop(60_000);
    await h.finish('a1');
    await h.finish('b1');
    expect(await stopped).toEqual([]);
    h.enqueue('d1');
    expect(h.started()).toEqual(['a1', 'b1']);

    const late = harness({ slots: 2, perTenant: 1 });
    late.enqueue('a1', 'a2', 'b1');
    expect((await late.dispatcher.stop(10)).sort()).toEqual(['a1', 'b1']);
    await late.finish('a1');
    expect(late.started()).toEqual(['a1', 'b1']);
  });

  it('never leaves a slot idle that a waiting tenant may take, nor breaks a cap, the reserve, the fair order or FIFO', async () => {
    // A fixed-seed generator: any failure replays exactly.
    let seed = 20240817;
    const random = (n: number) => {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      return (seed >>> 16) % n;
    };
    for (const [slots, perTenant] of [[1, 1], [1, 3], [2, 1], [2, 2], [3, 2], [4, 2], [5, 3], [6, 6]] as const) {
      const h = harness({ slots, perTenant });
      const submitted = new Map<string, string[]>();
      for (let op = 0; op < 400; op++) {
        const running = h.running();
        if (running.length > 0 && random(2) === 0) {
          await h.finish(running[random(running.length)]!);
        } else {
          const tenantId = 'abcde'[random(5)]!;
          const ids = submitted.get(tenantId) ?? [];
          ids.push(`${tenantId}${ids.length + 1}`);
          submitted.set(tenantId, ids);
          h.enqueue(ids.at(-1)!);
        }
        const where = `slots ${slots}, cap ${perTenant}, operation ${op}`;
        const free = slots - h.running().length;
        const waitingTenants = [...new Set(h.waiting().map(tenantOf))];
        expect(free, where).toBeGreaterThanOrEqual(0);
        for (const tenantId of waitingTenants) {
          if (free >= 1) expect(h.runningOf(tenantId), `${where}: ${tenantId} waits with nothing running and a slot free`).toBeGreaterThan(0);
          if (free >= 2) expect(h.runningOf(tenantId), `${where}: ${tenantId} waits below its cap with two slots free`).toBe(perTenant);
        }
      }
      for (const start of h.starts) {
        const where = `slots ${slots}, cap ${perTenant}, start of ${start.executionId}`;
        expect(start.tenantRunningBefore, where).toBeLessThan(perTenant);
        expect(start.runningBefore, where).toBeLessThan(start.tenantRunningBefore > 0 ? slots - 1 : slots);
        for (const other of start.othersWaiting.filter(({ running }) => running < perTenant)) {
          expect(other.running, `${where}: ${other.tenantId} waits running fewer`).toBeGreaterThanOrEqual(start.tenantRunningBefore);
        }
      }
      for (const [tenantId, ids] of submitted) {
        const startedOfTenant = h.started().filter((id) => tenantOf(id) === tenantId);
        expect(startedOfTenant, `FIFO of ${tenantId}`).toEqual(ids.slice(0, startedOfTenant.length));
      }
      expect(h.starts.length, 'the generator exercised the dispatcher').toBeGreaterThan(100);
    }
  });
});
