import { AgentError, type AgentErrorCode } from '../agents/llm-client.js';
import { ApiCallError, type ApiCallErrorCode } from '../api/api-caller.js';
import type { StoredStepError } from '../db/tables.js';
import { SandboxError, type SandboxErrorCode } from '../sandbox/errors.js';

export type StepErrorCode =
  | 'SQL_REJECTED'
  | 'SQL_ERROR'
  | 'SQL_NOT_CONFIGURED'
  | 'RESULT_TOO_LARGE'
  | 'TEMP_FILE_LIMIT'
  | 'SQL_OUT_OF_MEMORY'
  | 'STEP_TIMEOUT'
  | 'API_NOT_CONFIGURED'
  | 'MODEL_RATE_LIMITED'
  | 'INTERRUPTED'
  | 'CANCELLED'
  | 'REJECTED'
  | 'APPROVAL_TIMEOUT'
  | 'INTERNAL'
  | AgentErrorCode
  | SandboxErrorCode
  | ApiCallErrorCode;

/** What a failed step had got to: the SQL or program it last tried, and how many tries it took. */
export interface StepArtefact {
  sql?: string;
  code?: string;
  attempts?: number;
  logs?: string[];
}

/** A step failed for a reason the client may see; `retryable` says whether running it again may help. */
export class StepFailure extends Error {
  override name = 'StepFailure';
  readonly code: StepErrorCode;
  readonly retryable: boolean;
  artefact: StepArtefact;

  constructor(
    code: StepErrorCode,
    message: string,
    options: { retryable?: boolean; cause?: unknown; artefact?: StepArtefact } = {},
  ) {
    super(message, { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.artefact = options.artefact ?? {};
  }
}

/**
 * Why a run stops without recording anything more: its lease was taken over, the process is shutting
 * down, or the database went away. The execution is continued from its last committed step by whoever
 * holds the lease next (this process, once the database is back, or another one).
 */
export class RunStoppedError extends Error {
  override name = 'RunStoppedError';
  constructor(
    readonly why: 'lease lost' | 'shutdown' | 'database unavailable',
    options?: { cause?: unknown },
  ) {
    super(`the run stopped: ${why}`, options);
  }
}

/**
 * The step was stopped because its execution was cancelled. The engine aborts the step's signal with one of
 * these as the reason; a handler stopped by it rejects with that same instance, never with what the abort
 * caused below it (a cancelled statement, a terminated sandbox), so the engine tells a cancel by type.
 */
export class StepCancelledError extends StepFailure {
  override name = 'StepCancelledError';
  constructor(message = 'the step was stopped because its execution was cancelled') {
    super('CANCELLED', message);
  }
}

/** The signal's reason when it was aborted for a cancel, otherwise undefined. */
export function cancelOf(signal: AbortSignal): StepCancelledError | undefined {
  return signal.aborted && signal.reason instanceof StepCancelledError ? signal.reason : undefined;
}

/** An abort for lack of time (AbortSignal.timeout rejects with a TimeoutError DOMException). */
export function isTimeoutAbort(reason: unknown): boolean {
  return reason instanceof Error && reason.name === 'TimeoutError';
}

/**
 * The failures of the layers below (agents, sandbox, API caller) already say what went wrong and
 * whether a retry may help; a step fails with their code as it is. Anything else passes through.
 */
export function asStepFailure(error: unknown): unknown {
  if (error instanceof AgentError || error instanceof SandboxError || error instanceof ApiCallError) {
    return new StepFailure(error.code, error.message, { retryable: error.retryable, cause: error });
  }
  return error;
}

/** A plan or option the client sent cannot be run as given; nothing was stored. */
export class PlanValidationError extends Error {
  override name = 'PlanValidationError';
  constructor(readonly problems: string[]) {
    super(problems.join('; '));
  }
}

/** An argument outside what the request can mean (afterSequence beyond the log, say); nothing was changed. */
export class InvalidArgumentError extends Error {
  override name = 'InvalidArgumentError';
}

/** The tenant has used up its executions or its model calls for now (token buckets); nothing was stored. */
export class RateLimitedError extends Error {
  override name = 'RateLimitedError';
  /** action: what the tenant may do again after the wait ("start another execution"). */
  constructor(
    readonly retryAfterSeconds: number,
    action: string,
  ) {
    super(`rate limit reached: this tenant may ${action} in ${retryAfterSeconds} s`);
  }
}

/** The tenant's idempotency key came with a different request (plan, query or options) before; nothing was stored. */
export class IdempotencyConflictError extends Error {
  override name = 'IdempotencyConflictError';
  constructor() {
    super(
      'this idempotency key was used with a different request (plan, query or options); use a new key for a new request',
    );
  }
}

/**
 * The request that first used the idempotency key has not stored its execution (its planner is still running, or
 * it failed); sending the same request again after retryAfterSeconds gets the execution, or makes it.
 */
export class IdempotencyKeyInUseError extends Error {
  override name = 'IdempotencyKeyInUseError';
  readonly retryAfterSeconds = 1;
}

export class ExecutionNotFoundError extends Error {
  override name = 'ExecutionNotFoundError';
  constructor(executionId: string) {
    super(`execution ${executionId} was not found`);
  }
}

export function toStoredStepError(error: unknown, correlationId: string): StoredStepError {
  if (error instanceof StepFailure) {
    return { code: error.code, message: error.message, retryable: error.retryable };
  }
  return {
    code: 'INTERNAL',
    message: `unexpected error; the server log has the details under correlation id ${correlationId}`,
    retryable: false,
  };
}
