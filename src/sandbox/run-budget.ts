import { performance } from 'node:perf_hooks';
import { SandboxError } from './errors.js';

export function cpuTimeoutError(cpuTimeMs: number): SandboxError {
  return new SandboxError('SANDBOX_TIMEOUT', `the program exceeded its CPU time limit of ${cpuTimeMs} ms`);
}

/** Running out of wall clock while API calls are in flight may go better another time; anything else would not. */
export function wallClockTimeoutError(wallClockMs: number, waitingOnHost: boolean): SandboxError {
  return new SandboxError(
    'SANDBOX_TIMEOUT',
    `the program exceeded its wall clock limit of ${wallClockMs} ms (time spent waiting on API calls included)`,
    { retryable: waitingOnHost },
  );
}

/** A run its caller aborted; aborted for lack of time (AbortSignal.timeout's TimeoutError), it ran out of wall clock. */
export function abortedRunError(signal: AbortSignal, wallClockMs: number, started: boolean, waitingOnHost = false): SandboxError {
  const reason: unknown = signal.reason;
  if (reason instanceof Error && reason.name === 'TimeoutError') return wallClockTimeoutError(wallClockMs, waitingOnHost);
  return new SandboxError('SANDBOX_ABORTED', `the run was aborted before the program ${started ? 'finished' : 'started'}`);
}

/** The time a run may take: CPU time spent inside QuickJS, and wall-clock time in total. */
export class RunBudget {
  private cpuUsed = 0;
  private guestSince: number | undefined;
  private readonly startedAt = performance.now();

  constructor(private readonly limits: { cpuTimeMs: number; wallClockMs: number }) {}

  cpuUsedMs(): number {
    return this.cpuUsed + (this.guestSince === undefined ? 0 : performance.now() - this.guestSince);
  }

  /** Runs `work` (which executes guest code) and counts its duration as CPU time. */
  measureGuest<T>(work: () => T): T {
    if (this.guestSince !== undefined) return work();
    this.guestSince = performance.now();
    try {
      return work();
    } finally {
      this.cpuUsed += performance.now() - this.guestSince;
      this.guestSince = undefined;
    }
  }

  /** The error that ends the run if a limit is spent, otherwise undefined. */
  exceeded(waitingOnHost: boolean): SandboxError | undefined {
    if (this.cpuUsedMs() > this.limits.cpuTimeMs) return cpuTimeoutError(this.limits.cpuTimeMs);
    if (performance.now() - this.startedAt > this.limits.wallClockMs) return wallClockTimeoutError(this.limits.wallClockMs, waitingOnHost);
    return undefined;
  }

  msUntilWallClockLimit(): number {
    return Math.max(0, this.startedAt + this.limits.wallClockMs - performance.now());
  }
}
