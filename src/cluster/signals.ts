/**
 * Hints between the processes of a cluster. Like the bus, they are not the source of truth: a signal may be lost
 * (Redis away), and what it points to is in the database (cancel_requested_at, the queue's jobs).
 */
export interface ClusterSignals {
  /** Tells the process that runs the execution to stop it now. Never throws. */
  publishCancel(executionId: string): void;
  onCancel(listener: (executionId: string) => void): () => void;
  /** "Work is queued, look now": idle workers look at once instead of at their next poll. Never throws. */
  publishWork(): void;
  onWork(listener: () => void): () => void;
}
