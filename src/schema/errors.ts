import { GraphQLError } from 'graphql';
import { AgentError } from '../agents/llm-client.js';
import { ExecutionNotFoundError, InvalidArgumentError, PlanValidationError } from '../executor/errors.js';

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

/** Errors the executor raises on purpose become GraphQL errors with a code; anything else stays unexpected (masked). */
export function toGraphQLError(error: unknown): unknown {
  if (error instanceof PlanValidationError) return badUserInput(`invalid input: ${error.message}`);
  if (error instanceof InvalidArgumentError) return badUserInput(error.message);
  if (error instanceof ExecutionNotFoundError) return notFound(error.message);
  if (error instanceof AgentError) {
    return new GraphQLError(error.message, { extensions: { code: error.code, retryable: error.retryable } });
  }
  return error;
}
