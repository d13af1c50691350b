export type SandboxErrorCode =
  | 'SANDBOX_TIMEOUT'
  | 'SANDBOX_MEMORY'
  | 'SANDBOX_ERROR'
  | 'SANDBOX_RESULT_TOO_LARGE'
  | 'SANDBOX_ABORTED'
  | 'API_REQUEST_LIMIT'
  | string;

/**
 * What the sandbox and its host impose on a program: its CPU time and memory, the size of its result, the number of
 * API calls, the calls it may not make, and the size of a response. Not counted: SANDBOX_ERROR (the program threw, or
 * its records could not be passed), API_CALL_FAILED (the tenant's API answered an error, or did not answer in time),
 * SANDBOX_ABORTED (a cancel): those are the program's or the tenant's failures, not refusals.
 */
export const SANDBOX_REFUSAL_CODES: ReadonlySet<string> = new Set([
  'SANDBOX_TIMEOUT',
  'SANDBOX_MEMORY',
  'SANDBOX_RESULT_TOO_LARGE',
  'API_REQUEST_LIMIT',
  'API_CALL_REFUSED',
  'API_RESPONSE_TOO_LARGE',
]);

/** A sandboxed program did not produce a result; `code` says why, `retryable` whether running it again may help. */
export class SandboxError extends Error {
  override name = 'SandboxError';
  readonly code: SandboxErrorCode;
  readonly retryable: boolean;

  constructor(code: SandboxErrorCode, message: string, options: { retryable?: boolean } = {}) {
    super(message);
    this.code = code;
    this.retryable = options.retryable ?? false;
  }
}
