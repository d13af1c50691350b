import type { StepUpdate } from './step-update.js';

export type StepUpdateListener = (update: StepUpdate) => void;
/** Updates may have been lost on their way to a listener: the store holds every committed one. */
export type StepUpdateGapListener = () => void;

/** Fan-out of committed StepUpdates to live subscribers; the store, not the bus, is the source of truth. */
export interface StepUpdateBus {
  publish(update: StepUpdate): void;
  /**
   * `onGap` is called when updates published since `listener` was added may not reach it: a bus between processes
   * (src/cluster/redis-bus.ts) calls it once its subscription is in place (updates published before went past it), when
   * its connection comes back, and periodically while it is down. The in-process bus loses nothing and never calls it.
   */
  subscribe(executionId: string, listener: StepUpdateListener, onGap?: StepUpdateGapListener): () => void;
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
