import { GRAPHQL_ENDPOINT, GraphQLRequestError, checkAuthentication } from './api.js';
import { authorizationHeaders } from './auth.js';

/**
 * One GraphQL subscription over SSE, read with fetch (EventSource cannot send an Authorization header).
 * Calls onNext(data) per result; resolves when the server completes the stream, rejects when the connection
 * drops (the caller resumes with afterSequence) or the server answers with errors.
 */
export async function subscribeOverSse(query, variables, { onNext, signal }) {
  const response = await fetch(GRAPHQL_ENDPOINT, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...authorizationHeaders() },
    body: JSON.stringify({ query, variables }),
    signal,
  });
  if (!response.ok || !(response.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
    let body;
    try {
      body = await response.json();
    } catch {
      throw new Error(`the server answered ${response.status} to the subscription`);
    }
    checkAuthentication(response, body);
    throw body?.errors?.length ? new GraphQLRequestError(body.errors) : new Error(`the server answered ${response.status} to the subscription`);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error('the stream ended before the server completed it');
      buffer += value.replace(/\r\n/g, '\n');
      let boundary;
      while ((boundary = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, boundary);
        buffer = buffer.slice(boundary + 2);
        const event = /^event:\s*(.*)$/m.exec(block)?.[1];
        const data = block
          .split('\n')
          .filter((line) => line.startsWith('data:'))
          .map((line) => line.slice(5).trimStart())
          .join('\n');
        if (event === 'complete') return;
        if (event !== 'next' || !data) continue;
        const result = JSON.parse(data);
        if (result.errors?.length) throw new GraphQLRequestError(result.errors);
        onNext(result.data);
      }
    }
  } finally {
    reader.cancel().catch(() => undefined);
  }
}
