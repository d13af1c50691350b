import { setImmediate as nextTurn } from 'node:timers/promises';
import type { RetentionConfig } from '../config.js';
import type { Logger } from '../logger.js';

/** What retention deletes through: one batch per call (DrizzleExecutionStore.deleteFinishedExecutions). */
export interface FinishedExecutionDeleter {
  deleteFinishedExecutions(olderThanMs: number, limit: number): Promise<number>;
}

export interface SweepResult {
  deleted: number;
  /** Statements run: each deletes at most batchSize executions, in a transaction of its own. */
  batches: number;
}

const DAY_MS = 86_400_000;

/**
 * Deletes finished executions (SUCCEEDED, FAILED, CANCELLED) older than STEPCAST_RETENTION_DAYS, with their steps,
 * events and idempotency keys: once at start(), then intervalMs after each sweep ends, so that sweeps of one
 * process never overlap. A sweep deletes batch after batch until one comes back short. Each batch is one short
 * statement that skips rows others hold, so runs and other processes' sweeps are never waited on, and between
 * batches it lets other work go first (PGlite runs one statement at a time, in the order they were asked).
 */
export class RetentionSweeper {
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;
  private started = false;
  private stopped = false;
  private failing = false;

  constructor(
    private readonly store: FinishedExecutionDeleter,
    private readonly settings: RetentionConfig,
    private readonly logger: Logger,
  ) {}

  /** Sweeps now and then every intervalMs, until stop(). Calling it again does nothing. */
  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    this.schedule(0);
  }

  /** Deletes every execution past retention now, batch by batch; stops between batches once stop() was called. */
  async sweep(): Promise<SweepResult> {
    const { maxAgeMs, batchSize } = this.settings;
    const result: SweepResult = { deleted: 0, batches: 0 };
    while (!this.stopped) {
      const deleted = await this.store.deleteFinishedExecutions(maxAgeMs, batchSize);
      result.batches++;
      result.deleted += deleted;
      if (deleted < batchSize) break;
      await nextTurn();
    }
    return result;
  }

  /** No sweep starts after this; one under way ends after its current batch, which this waits for. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.sweeping;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.sweeping = this.sweepAndLog().finally(() => {
        this.sweeping = undefined;
        this.schedule(this.settings.intervalMs);
      });
    }, delayMs);
    this.timer.unref();
  }

  private async sweepAndLog(): Promise<void> {
    try {
      const { deleted, batches } = await this.sweep();
      if (this.failing) this.logger.info('the store answers again; deleting executions past retention');
      this.failing = false;
      if (deleted > 0) {
        this.logger.info(
          { deleted, batches, retentionDays: this.settings.maxAgeMs / DAY_MS },
          'deleted finished executions past retention, with their steps and events',
        );
      }
    } catch (error) {
      // Logged once per outage: the next sweep tries again.
      if (!this.failing) this.logger.warn({ err: error }, 'cannot delete executions past retention; trying again at the next sweep');
      this.failing = true;
    }
  }
}
