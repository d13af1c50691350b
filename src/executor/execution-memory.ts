import { StepFailure } from './errors.js';

const MIB = 1_048_576;
const mib = (bytes: number) => `${(bytes / MIB).toFixed(1)} MiB`;

/** What a step holds against its execution's budget. */
export interface StepMemory {
  /** Bytes the execution may still take. */
  readonly remaining: number;
  /** Takes bytes for `what`, or fails the step with RESULT_TOO_LARGE when they do not fit. */
  take(bytes: number, what: string): void;
  /** Gives back bytes the step took for something it no longer holds (its inputs, once the statement ran). */
  give(bytes: number): void;
  /** Fails the step with RESULT_TOO_LARGE: `what` is larger than all the execution has left. */
  overflow(what: string): never;
}

/**
 * The memory one execution may hold at once (STEPCAST_EXECUTION_MAX_BYTES), counted as heap cost
 * (records.ts heapBytesOf): the records its steps keep for later steps, and what the running step
 * holds besides (its inputs and the records it is building).
 */
export class ExecutionMemory {
  private used = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly setting = 'STEPCAST_EXECUTION_MAX_BYTES',
  ) {}

  /** A step's account: run the step with it, then `discard` it if the step failed (its records are not kept). */
  forStep(index: number): StepAccount {
    return new StepAccount(this, index);
  }

  get remaining(): number {
    return Math.max(0, this.maxBytes - this.used);
  }

  /** Adds (or, negative, gives back) bytes; false when they do not fit. */
  adjust(bytes: number): boolean {
    if (bytes > 0 && this.used + bytes > this.maxBytes) return false;
    this.used += bytes;
    return true;
  }

  tooLarge(index: number, need: string, takenByStep: number): StepFailure {
    return new StepFailure(
      'RESULT_TOO_LARGE',
      `step ${index} needs ${need}, and the earlier steps keep ${mib(this.used - takenByStep)} for later steps: ` +
        `that is over this execution's memory limit of ${mib(this.maxBytes)} (${this.setting})`,
    );
  }
}

export class StepAccount implements StepMemory {
  private taken = 0;

  constructor(
    private readonly memory: ExecutionMemory,
    private readonly index: number,
  ) {}

  get remaining(): number {
    return this.memory.remaining;
  }

  /** What the step holds now: once it succeeded, its records. */
  get takenBytes(): number {
    return this.taken;
  }

  take(bytes: number, what: string): void {
    if (!this.memory.adjust(bytes)) {
      throw this.memory.tooLarge(this.index, `about ${mib(this.taken + bytes)} of memory for ${what}`, this.taken);
    }
    this.taken += bytes;
  }

  give(bytes: number): void {
    const given = Math.min(bytes, this.taken);
    this.memory.adjust(-given);
    this.taken -= given;
  }

  overflow(what: string): never {
    throw this.memory.tooLarge(this.index, `more than the ${mib(this.memory.remaining + this.taken)} left for ${what}`, this.taken);
  }

  /** The step failed: nothing it took is kept. */
  discard(): void {
    this.give(this.taken);
  }
}
