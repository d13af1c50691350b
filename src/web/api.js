import { AuthRequired, authorizationHeaders, storedKey } from './auth.js';

export const GRAPHQL_ENDPOINT = '/graphql';

/** A GraphQL error answer (NOT_FOUND, BAD_USER_INPUT, …), with the first error's code. */
export class GraphQLRequestError extends Error {
  constructor(errors) {
    super(errors.map((error) => error.message).join('; '));
    this.name = 'GraphQLRequestError';
    this.code = errors[0]?.extensions?.code;
    this.errors = errors;
  }
}

/**
 * The server cannot answer now but will (503 while its database is away, 429 over the tenant's subscription limit,
 * 502/504 from a proxy while it restarts): wait `retryAfterMs` (its Retry-After when it sent one) and ask again.
 */
export class ServiceUnavailable extends Error {
  constructor(message, retryAfterMs) {
    super(message);
    this.name = 'ServiceUnavailable';
    this.retryAfterMs = retryAfterMs;
  }
}

const TRANSIENT_STATUSES = new Set([429, 502, 503, 504]);
const TRANSIENT_CODES = new Set(['SERVICE_UNAVAILABLE', 'TOO_MANY_TENANT_SUBSCRIPTIONS', 'RATE_LIMITED']);

/** Retry-After (seconds, or an HTTP date) in milliseconds; undefined when absent or unreadable. */
function retryAfterHeader(response) {
  const value = response?.headers?.get('retry-after');
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/**
 * Throws what an answer's errors mean to a page: AuthRequired (401, or UNAUTHENTICATED inside a stream), so that
 * it asks for the key again; ServiceUnavailable for a server that will answer later; else GraphQLRequestError.
 * `response` is undefined for errors inside an SSE stream.
 */
export function throwAnswerError(response, errors) {
  const code = errors?.[0]?.extensions?.code;
  if (response?.status === 401 || code === 'UNAUTHENTICATED') {
    throw new AuthRequired(errors?.[0]?.message ?? 'authentication required', storedKey() !== undefined);
  }
  if ((response && TRANSIENT_STATUSES.has(response.status)) || TRANSIENT_CODES.has(code)) {
    const retryAfter = errors?.[0]?.extensions?.retryAfter;
    const retryAfterMs = retryAfterHeader(response) ?? (typeof retryAfter === 'number' && retryAfter >= 0 ? retryAfter * 1000 : undefined);
    const message = errors?.[0]?.message ?? `the server answered ${response?.status}`;
    throw new ServiceUnavailable(message, retryAfterMs);
  }
  if (errors?.length) throw new GraphQLRequestError(errors);
}

/** POST as application/json: the only body the server's CSRF prevention lets run an operation. */
export async function graphql(query, variables = {}) {
  const response = await fetch(GRAPHQL_ENDPOINT, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json, application/json', ...authorizationHeaders() },
    body: JSON.stringify({ query, variables }),
  });
  let body;
  try {
    body = await response.json();
  } catch {
    throwAnswerError(response, undefined);
    throw new Error(`the server answered ${response.status} without a GraphQL response`);
  }
  throwAnswerError(response, body?.errors?.length ? body.errors : undefined);
  return body.data;
}
