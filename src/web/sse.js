import { GRAPHQL_ENDPOINT, throwAnswerError } from './api.js';
import { authorizationHeaders } from './auth.js';

/**
 * One GraphQL subscription over SSE, read with fetch (EventSource cannot send an Authorization header).
 * Calls onNext(data) per result; resolves when the server completes the stream, rejects when the connection
 * drops (the caller resumes with afterSequence) or the server answers with errors: ServiceUnavailable for those the
 * caller should wait out and resume after too (503, 429, 502, 504, SERVICE_UNAVAILABLE in the stream), AuthRequired
 * for 401 or UNAUTHENTICATED, GraphQLRequestError for the rest.
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
      body = undefined;
    }
    throwAnswerError(response, body?.errors?.length ? body.errors : undefined);
    throw new Error(`the server answered ${response.status} to the subscription`);
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
        if (result.errors?.length) throwAnswerError(undefined, result.errors);
        onNext(result.data);
      }
    }
  } finally {
    reader.cancel().catch(() => undefined);
  }
}
