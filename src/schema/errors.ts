import { GraphQLError } from 'graphql';
import { AgentError } from '../agents/llm-client.js';
import {
  ExecutionNotFoundError,
  IdempotencyConflictError,
  IdempotencyKeyInUseError,
  InvalidArgumentError,
  PlanValidationError,
  RateLimitedError,
} from '../executor/errors.js';

export function badUserInput(message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: 'BAD_USER_INPUT', http: { status: 400 } } });
}

export function unauthenticated(message: string): GraphQLError {
  return new GraphQLError(message, {
    extensions: { code: 'UNAUTHENTICATED', http: { status: 401, headers: { 'WWW-Authenticate': 'Bearer' } } },
  });
}

export function notFound(message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: 'NOT_FOUND' } });
}

/** The client closed its request before the answer (planQuery stops its planner then); nobody reads this. */
export function clientGone(): GraphQLError {
  return new GraphQLError('the client closed the request before the answer was ready', { extensions: { code: 'CLIENT_CLOSED_REQUEST' } });
}

/** HTTP 429 with Retry-After over HTTP (yoga reads extensions.http and leaves it out of the body). */
function rateLimited(error: RateLimitedError): GraphQLError {
  const retryAfter = error.retryAfterSeconds;
  return new GraphQLError(error.message, {
    extensions: { code: 'RATE_LIMITED', retryAfter, http: { status: 429, headers: { 'Retry-After': String(retryAfter) } } },
  });
}

/** HTTP 422 and 409, as the IETF Idempotency-Key draft answers a reused key and one whose request is still in progress. */
function idempotencyError(error: IdempotencyConflictError | IdempotencyKeyInUseError): GraphQLError {
  if (error instanceof IdempotencyConflictError) {
    return new GraphQLError(error.message, {
      extensions: { code: 'IDEMPOTENCY_CONFLICT', retryable: false, http: { status: 422 } },
    });
  }
  const retryAfter = error.retryAfterSeconds;
  return new GraphQLError(error.message, {
    extensions: {
      code: 'IDEMPOTENCY_KEY_IN_USE',
      retryable: true,
      retryAfter,
      http: { status: 409, headers: { 'Retry-After': String(retryAfter) } },
    },
  });
}

/**
 * Seconds a client waits before retrying while the database cannot be reached: a PostgreSQL restart or failover
 * usually takes a few seconds, and the service reconnects within about that (src/db/reconnect.ts), so 5 s brings
 * clients back soon after it without every client hammering a service that cannot answer yet.
 */
export const DATABASE_RETRY_AFTER_SECONDS = 5;

/** HTTP 503 with Retry-After: the request may be retried as it is once the database is back. */
export function serviceUnavailable(
  { retryAfter = DATABASE_RETRY_AFTER_SECONDS, located }: { retryAfter?: number; located?: GraphQLError } = {},
): GraphQLError {
  return new GraphQLError('The service cannot reach its database right now; retry later.', {
    nodes: located?.nodes,
    path: located?.path,
    extensions: {
      code: 'SERVICE_UNAVAILABLE',
      retryAfter,
      http: { status: 503, headers: { 'Retry-After': String(retryAfter) } },
    },
  });
}

/** Errors the executor raises on purpose become GraphQL errors with a code; anything else stays unexpected (masked). */
export function toGraphQLError(error: unknown): unknown {
  if (error instanceof PlanValidationError) return badUserInput(`invalid input: ${error.message}`);
  if (error instanceof InvalidArgumentError) return badUserInput(error.message);
  if (error instanceof ExecutionNotFoundError) return notFound(error.message);
  if (error instanceof RateLimitedError) return rateLimited(error);
  if (error instanceof IdempotencyConflictError || error instanceof IdempotencyKeyInUseError) return idempotencyError(error);
  if (error instanceof AgentError) {
    return new GraphQLError(error.message, { extensions: { code: error.code, retryable: error.retryable } });
  }
  return error;
}
