import { describe, expect, it } from 'vitest';
import { createInProcessDispatcher } from '../src/executor/dispatcher.js';
import { createLogger } from '../src/logger.js';

/**
 * The dispatcher over executions the test finishes by hand: which have started, in what order,
 * and which are running right now.
 */
function harness({ concurrency, perTenant }: { concurrency: number; perTenant: number }) {
  const started: string[] = [];
  const finishers = new Map<string, { resolve: () => void; reject: (error: Error) => void }>();
  const dispatcher = createInProcessDispatcher({
    concurrency,
    perTenantConcurrency: perTenant,
    logger: createLogger('silent'),
    runExecution: (executionId) =>
      new Promise<void>((resolve, reject) => {
        started.push(executionId);
        finishers.set(executionId, { resolve, reject });
      }),
  });
  /** Lets the dispatcher react to finished executions (their settling runs on the microtask queue). */
  const settle = () => new Promise((resolve) => setImmediate(resolve));
  return {
    dispatcher,
    started,
    running: () => [...finishers.keys()].sort(),
    /** Executions are named "<tenant><n>", e.g. a1 for tenant a. */
    enqueue: (...ids: string[]) => ids.forEach((id) => dispatcher.enqueue(id, id.replace(/\d+$/, ''))),
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

describe('in-process dispatcher', () => {
  it('lets other tenants start while one tenant is at its cap', async () => {
    const h = harness({ concurrency: 4, perTenant: 2 });
    h.enqueue('a1', 'a2', 'a3', 'a4', 'b1', 'c1');
    expect(h.running()).toEqual(['a1', 'a2', 'b1', 'c1']);
    await h.finish('b1');
    // A global slot is free, but tenant a is still at its cap: a3 keeps waiting.
    expect(h.running()).toEqual(['a1', 'a2', 'c1']);
    h.enqueue('b2');
    expect(h.running()).toEqual(['a1', 'a2', 'b2', 'c1']);
    await h.finish('a1');
    expect(h.running()).toEqual(['a2', 'a3', 'b2', 'c1']);
    expect(h.started).toEqual(['a1', 'a2', 'b1', 'c1', 'b2', 'a3']);
  });

  it("starts one tenant's executions in the order they arrived, never more than its cap at once", async () => {
    const h = harness({ concurrency: 8, perTenant: 1 });
    h.enqueue('a1', 'a2', 'a3', 'a4');
    for (const id of ['a1', 'a2', 'a3', 'a4']) {
      expect(h.running()).toEqual([id]);
      await h.finish(id);
    }
    expect(h.started).toEqual(['a1', 'a2', 'a3', 'a4']);
    expect(h.running()).toEqual([]);
  });

  it('holds the global cap across tenants and, when a slot frees, starts the oldest execution whose tenant may run', async () => {
    const h = harness({ concurrency: 2, perTenant: 2 });
    h.enqueue('a1', 'b1', 'c1', 'a2', 'b2');
    expect(h.running()).toEqual(['a1', 'b1']);
    await h.finish('a1');
    expect(h.running()).toEqual(['b1', 'c1']);
    await h.finish('c1');
    expect(h.running()).toEqual(['a2', 'b1']);
    await h.finish('b1');
    expect(h.running()).toEqual(['a2', 'b2']);
    expect(h.started).toEqual(['a1', 'b1', 'c1', 'a2', 'b2']);
  });

  it('skips past a tenant at its cap to the next oldest, then goes back to it when it has room', async () => {
    const h = harness({ concurrency: 2, perTenant: 1 });
    h.enqueue('a1', 'a2', 'b1', 'a3', 'b2', 'c1');
    expect(h.running()).toEqual(['a1', 'b1']);
    await h.finish('b1');
    // a2 is older than b2 but tenant a is at its cap; b2 is the oldest that may start.
    expect(h.running()).toEqual(['a1', 'b2']);
    await h.finish('a1');
    expect(h.running()).toEqual(['a2', 'b2']);
    await h.finish('b2');
    // a3 waits for a2; c1 goes ahead of it.
    expect(h.running()).toEqual(['a2', 'c1']);
    await h.finish('a2');
    expect(h.running()).toEqual(['a3', 'c1']);
    expect(h.started).toEqual(['a1', 'b1', 'b2', 'a2', 'c1', 'a3']);
  });

  it("frees the tenant's slot when an execution crashes", async () => {
    const h = harness({ concurrency: 4, perTenant: 1 });
    h.enqueue('a1', 'a2');
    await h.finish('a1', new Error('boom'));
    expect(h.running()).toEqual(['a2']);
  });

  it('on stop, drops waiting executions and reports the ones still running', async () => {
    const h = harness({ concurrency: 2, perTenant: 1 });
    h.enqueue('a1', 'a2', 'b1', 'c1');
    const unfinished = await h.dispatcher.stop(10);
    expect(unfinished.sort()).toEqual(['a1', 'b1']);
    await h.finish('a1');
    h.enqueue('d1');
    expect(h.started).toEqual(['a1', 'b1']);
  });
});
