export type SandboxErrorCode =
  | 'SANDBOX_TIMEOUT'
  | 'SANDBOX_MEMORY'
  | 'SANDBOX_ERROR'
  | 'SANDBOX_RESULT_TOO_LARGE'
  | 'SANDBOX_ABORTED'
  | 'API_REQUEST_LIMIT'
  | string;

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
