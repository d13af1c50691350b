import type { Logger } from '../logger.js';

export interface Dispatcher {
  /** Queues an execution of the tenant; it starts when both the global and the tenant's cap allow. */
  enqueue(executionId: string, tenantId: string): void;
  /** Stops taking work and waits up to graceMs for running executions; returns the ids still running. */
  stop(graceMs: number): Promise<string[]>;
}

interface Waiting {
  executionId: string;
  /** Arrival number: across tenants, the oldest startable execution goes first. */
  arrival: number;
}

/**
 * Runs executions in this process, at most `concurrency` at a time and at most `perTenantConcurrency`
 * of one tenant. A tenant at its cap waits (FIFO) while other tenants' executions start; otherwise
 * executions start in arrival order.
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
  /** One FIFO per tenant with executions waiting; a tenant leaves the map when its queue empties. */
  const waiting = new Map<string, Waiting[]>();
  const running = new Map<string, Promise<void>>();
  const runningPerTenant = new Map<string, number>();
  let arrivals = 0;
  let stopped = false;

  /** The tenant whose oldest waiting execution arrived first among tenants below their cap. */
  const nextTenant = (): string | undefined => {
    let best: { tenantId: string; arrival: number } | undefined;
    for (const [tenantId, queue] of waiting) {
      if ((runningPerTenant.get(tenantId) ?? 0) >= perTenantConcurrency) continue;
      const arrival = queue[0]!.arrival;
      if (!best || arrival < best.arrival) best = { tenantId, arrival };
    }
    return best?.tenantId;
  };

  const start = (tenantId: string) => {
    const queue = waiting.get(tenantId)!;
    const { executionId } = queue.shift()!;
    if (queue.length === 0) waiting.delete(tenantId);
    runningPerTenant.set(tenantId, (runningPerTenant.get(tenantId) ?? 0) + 1);
    const run = runExecution(executionId)
      .catch((error: unknown) => logger.error({ err: error, executionId, tenantId }, 'execution crashed'))
      .finally(() => {
        running.delete(executionId);
        const left = runningPerTenant.get(tenantId)! - 1;
        if (left === 0) runningPerTenant.delete(tenantId);
        else runningPerTenant.set(tenantId, left);
        startNext();
      });
    running.set(executionId, run);
  };

  const startNext = () => {
    while (!stopped && running.size < concurrency) {
      const tenantId = nextTenant();
      if (tenantId === undefined) return;
      start(tenantId);
    }
  };

  return {
    enqueue(executionId, tenantId) {
      if (stopped) return;
      const queue = waiting.get(tenantId);
      const entry = { executionId, arrival: arrivals++ };
      if (queue) queue.push(entry);
      else waiting.set(tenantId, [entry]);
      startNext();
    },
    async stop(graceMs) {
      stopped = true;
      waiting.clear();
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
