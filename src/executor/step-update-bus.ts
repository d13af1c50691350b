import type { StepUpdate } from './step-update.js';

export type StepUpdateListener = (update: StepUpdate) => void;

/** Fan-out of committed StepUpdates to live subscribers; the store, not the bus, is the source of truth. */
export interface StepUpdateBus {
  publish(update: StepUpdate): void;
  subscribe(executionId: string, listener: StepUpdateListener): () => void;
}

export function createInProcessStepUpdateBus(): StepUpdateBus {
  const listeners = new Map<string, Set<StepUpdateListener>>();
  return {
    publish(update) {
      for (const listener of listeners.get(update.executionId) ?? []) listener(update);
    },
    subscribe(executionId, listener) {
      let forExecution = listeners.get(executionId);
      if (!forExecution) {
        forExecution = new Set();
        listeners.set(executionId, forExecution);
      }
      forExecution.add(listener);
      return () => {
        forExecution.delete(listener);
        if (forExecution.size === 0) listeners.delete(executionId);
      };
    },
  };
}
