import type { Logger } from '../logger.js';

export interface Dispatcher {
  enqueue(executionId: string): void;
  /** Stops taking work and waits up to graceMs for running executions; returns the ids still running. */
  stop(graceMs: number): Promise<string[]>;
}

/** Runs executions in this process, in arrival order, at most `concurrency` at a time. */
export function createInProcessDispatcher({
  concurrency,
  runExecution,
  logger,
}: {
  concurrency: number;
  runExecution: (executionId: string) => Promise<void>;
  logger: Logger;
}): Dispatcher {
  const waiting: string[] = [];
  const running = new Map<string, Promise<void>>();
  let stopped = false;

  const startNext = () => {
    while (!stopped && running.size < concurrency && waiting.length > 0) {
      const executionId = waiting.shift()!;
      const run = runExecution(executionId)
        .catch((error: unknown) => logger.error({ err: error, executionId }, 'execution crashed'))
        .finally(() => {
          running.delete(executionId);
          startNext();
        });
      running.set(executionId, run);
    }
  };

  return {
    enqueue(executionId) {
      if (stopped) return;
      waiting.push(executionId);
      startNext();
    },
    async stop(graceMs) {
      stopped = true;
      waiting.length = 0;
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
