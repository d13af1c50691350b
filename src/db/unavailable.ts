/** The database cannot be reached right now (down, restarting, or the connection was cut): retry later. */
export class DatabaseUnavailableError extends Error {
  override name = 'DatabaseUnavailableError';
  constructor(message = 'the database cannot be reached', options?: ErrorOptions) {
    super(message, options);
  }
}

// SQLSTATE: the server is shutting down (57P01 admin_shutdown, 57P02 crash_shutdown) or starting (57P03 cannot_connect_now).
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03']);
// Node's socket errors when nobody answers, and postgres.js's own for a connection that closed, ended or never opened.
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'CONNECT_TIMEOUT',
]);

function codeOf(error: object): string | undefined {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Whether an error means the database could not be reached, rather than that a statement failed: SQLSTATE class 08
 * (connection exception), 57P01-57P03, socket errors, postgres.js CONNECTION_* and CONNECT_TIMEOUT. Looks through
 * the wrappers on the way (Drizzle's `cause`, GraphQL's `originalError`, AggregateError's `errors`).
 */
export function isDatabaseUnavailable(error: unknown, depth = 0): boolean {
  if (typeof error !== 'object' || error === null || depth > 8) return false;
  if (error instanceof DatabaseUnavailableError) return true;
  const code = codeOf(error);
  if (code && (code.startsWith('08') || code.startsWith('CONNECTION_') || UNAVAILABLE_SQLSTATES.has(code) || UNAVAILABLE_CODES.has(code))) {
    return true;
  }
  const { cause, originalError, errors } = error as { cause?: unknown; originalError?: unknown; errors?: unknown };
  if (isDatabaseUnavailable(cause, depth + 1) || isDatabaseUnavailable(originalError, depth + 1)) return true;
  return Array.isArray(errors) && errors.length > 0 && errors.every((inner) => isDatabaseUnavailable(inner, depth + 1));
}
