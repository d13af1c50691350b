import type { Db } from '../db/client.js';
import type { Logger } from '../logger.js';
import { FairShareQueue } from './fair-share.js';

/** Runs in the transaction that stores a new execution, after its steps: a durable queue's job commits with it. */
export type EnqueueInTransaction = (tx: Db, executionId: string, tenantId: string) => Promise<void>;

export interface Dispatcher {
  /**
   * The execution needs a worker: it was just stored, or a decision made it runnable again. In one process it starts
   * when the fair-share policy (fair-share.ts) gives it a slot; an execution already queued or running here is not
   * queued twice. `withJob`: the execution was stored with its durable queue's job (enqueueInTransaction), which
   * needs no second.
   */
  enqueue(executionId: string, tenantId: string, options?: { withJob?: boolean }): void;
  /**
   * A cluster's sweep found executions of the tenant to take (queued, their lease lapsed, their approval timed out),
   * and how many of its executions run on any worker: the worker admits them into its free slots, if the tenant's cap
   * allows (other workers' sweeps find them too).
   */
  offer?(tenantId: string, work: { executions: number; running: number }): void;
  /** Enqueues a new execution in the transaction that stores it (a durable queue). */
  enqueueInTransaction?: EnqueueInTransaction;
  /** Asks whichever process runs the execution to stop its step (the cancel is stored already). */
  cancelElsewhere?(executionId: string): void;
  /** Stops taking work and waits up to graceMs for running executions; returns the ids still running. */
  stop(graceMs: number): Promise<string[]>;
}

/**
 * Runs executions in this process, at most `concurrency` at a time and at most `perTenantConcurrency`
 * of one tenant, sharing the slots fairly between tenants (chooseNextTenant); one tenant's
 * executions start in submission order.
 */
export function createInProcessDispatcher({
  concurrency,
  perTenantConcurrency,
  runExecution,
  logger,
}: {
  concurrency: number;
  perTenantConcurrency: number;
  runExecution: (executionId: string) => Promise<void>;
  logger: Logger;
}): Dispatcher {
  const queue = new FairShareQueue({ slots: concurrency, perTenantCap: perTenantConcurrency });
  const running = new Map<string, Promise<void>>();
  const queued = new Set<string>();
  /** Queued again while running (a decision came as the run let the execution go): started again once it ends. */
  const again = new Map<string, string>();
  let stopped = false;

  const start = (executionId: string, tenantId: string) => {
    queued.delete(executionId);
    const run = runExecution(executionId)
      .catch((error: unknown) => logger.error({ err: error, executionId, tenantId }, 'execution crashed'))
      .finally(() => {
        running.delete(executionId);
        queue.finished(tenantId);
        const requeue = again.get(executionId);
        again.delete(executionId);
        if (requeue !== undefined && !stopped) {
          queued.add(executionId);
          queue.add(executionId, requeue);
        }
        startNext();
      });
    running.set(executionId, run);
  };

  const startNext = () => {
    while (!stopped) {
      const next = queue.take();
      if (!next) return;
      start(next.executionId, next.tenantId);
    }
  };

  return {
    enqueue(executionId, tenantId) {
      if (stopped || queued.has(executionId)) return;
      if (running.has(executionId)) {
        again.set(executionId, tenantId);
        return;
      }
      queued.add(executionId);
      queue.add(executionId, tenantId);
      startNext();
    },
    async stop(graceMs) {
      stopped = true;
      queue.dropWaiting();
      queued.clear();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...running.values()]),
        new Promise((resolve) => (timer = setTimeout(resolve, graceMs))),
      ]);
      clearTimeout(timer);
      return [...running.keys()];
    },
  };
}
