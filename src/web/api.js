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

/** Throws AuthRequired on 401, so that any page can ask for the key and try again. */
export function checkAuthentication(response, body) {
  if (response.status !== 401) return;
  const message = body?.errors?.[0]?.message ?? 'authentication required';
  throw new AuthRequired(message, storedKey() !== undefined);
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
    throw new Error(`the server answered ${response.status} without a GraphQL response`);
  }
  checkAuthentication(response, body);
  if (body.errors?.length) throw new GraphQLRequestError(body.errors);
  return body.data;
}
