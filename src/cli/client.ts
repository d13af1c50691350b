import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { ConnectionError, ServerError, UsageError } from './exit-codes.js';
import type { TypedDocumentString } from './generated/graphql.js';

export interface Connection {
  /** The GraphQL endpoint over HTTP, e.g. http://localhost:4000/graphql. */
  httpUrl: string;
  wsUrl: string;
  key: string | undefined;
}

interface GraphQLErrorShape {
  message: string;
  extensions?: { code?: unknown };
}

/** `--url` as given (a server or its /graphql endpoint) to the endpoint's HTTP and WebSocket URLs. */
export function connectionTo(url: string, key: string | undefined): Connection {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`--url ${url} is not a URL (for example http://localhost:4000)`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new UsageError(`--url ${url} must start with http:// or https://`);
  }
  if (parsed.pathname === '/' || parsed.pathname === '') parsed.pathname = '/graphql';
  const httpUrl = parsed.toString();
  return { httpUrl, wsUrl: httpUrl.replace(/^http/, 'ws'), key: key || undefined };
}

function serverErrorOf(errors: readonly GraphQLErrorShape[]): ServerError {
  const [first] = errors;
  const code = typeof first?.extensions?.code === 'string' ? first.extensions.code : undefined;
  return new ServerError(first?.message ?? 'the server answered with an error', code);
}

/** Why a request never got an answer, in one line: the innermost cause is the useful part (ECONNREFUSED ...). */
function reasonOf(error: unknown): string {
  let current: unknown = error;
  while (current instanceof Error && current.cause instanceof Error) current = current.cause;
  if (current instanceof AggregateError && current.errors[0] instanceof Error) current = current.errors[0];
  return current instanceof Error ? current.message : String(current);
}

/** One query or mutation over HTTP; its data, or a ServerError / ConnectionError. */
export async function request<TResult, TVariables>(
  connection: Connection,
  document: TypedDocumentString<TResult, TVariables>,
  variables: TVariables,
): Promise<TResult> {
  let response: Response;
  try {
    response = await fetch(connection.httpUrl, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/graphql-response+json, application/json',
        ...(connection.key ? { authorization: `Bearer ${connection.key}` } : {}),
      },
      body: JSON.stringify({ query: document.toString(), variables }),
      signal: AbortSignal.timeout(60_000),
    });
  } catch (error) {
    throw new ConnectionError(`cannot reach stepcast at ${connection.httpUrl}: ${reasonOf(error)}`, { cause: error });
  }
  let body: { data?: TResult | null; errors?: GraphQLErrorShape[] };
  try {
    body = (await response.json()) as typeof body;
  } catch (error) {
    throw new ConnectionError(
      `${connection.httpUrl} answered HTTP ${response.status} without a GraphQL response; is it a stepcast server?`,
      { cause: error },
    );
  }
  if (body.errors?.length) throw serverErrorOf(body.errors);
  if (!body.data) throw new ServerError(`the server answered HTTP ${response.status} without data`, undefined);
  return body.data;
}

export interface FollowOptions<TUpdate extends { sequence: number }> {
  document: TypedDocumentString<{ stepUpdates: TUpdate }, { executionId: string; afterSequence?: number | null }>;
  executionId: string;
  afterSequence: number;
  /** Whether the update is the execution's last: a stream that completes before it has been cut short (a server shutting down). */
  isFinal(update: TUpdate): boolean;
  onUpdate(update: TUpdate): void;
  /** Called when the connection was lost and is tried again after `delayMs`. */
  onReconnecting?(attempt: number, delayMs: number, reason: string): void;
  /** Consecutive failed attempts before giving up; 12 is about 40 s of backoff. */
  maxAttempts?: number;
}

const RECONNECT_BASE_MS = 250;
const RECONNECT_MAX_MS = 5_000;
/** A ping every 10 s; a connection that has not answered one within 5 s is dead though never closed. */
const KEEP_ALIVE_MS = 10_000;
const PONG_TIMEOUT_MS = 5_000;

/** Close codes a new connection cannot mend: the server refused the credential or the request. */
const FATAL_CLOSE_CODES = new Set([4400, 4401, 4403, 4406, 4409, 4429]);

/**
 * Follows an execution's updates until its last one. A lost connection is opened again with
 * `afterSequence` set to the last update received, so nothing is missed and nothing repeats.
 * Resolves with the sequence of the last update.
 */
export async function followUpdates<TUpdate extends { sequence: number }>(
  connection: Connection,
  { document, executionId, afterSequence, isFinal, onUpdate, onReconnecting, maxAttempts = 12 }: FollowOptions<TUpdate>,
): Promise<number> {
  let last = afterSequence;
  let ended = false;
  let failures = 0;
  for (;;) {
    let pongTimer: ReturnType<typeof setTimeout> | undefined;
    const client = createClient({
      url: connection.wsUrl,
      webSocketImpl: WebSocket,
      lazy: true,
      // Reconnection is ours: a new subscription must carry the new afterSequence.
      retryAttempts: 0,
      keepAlive: KEEP_ALIVE_MS,
      connectionParams: connection.key ? { authorization: `Bearer ${connection.key}` } : undefined,
      on: {
        // terminate() reports a 4499 close to the subscription, which then reconnects.
        ping: (received) => {
          if (!received) pongTimer = setTimeout(() => client.terminate(), PONG_TIMEOUT_MS);
        },
        pong: (received) => {
          if (received) clearTimeout(pongTimer);
        },
      },
    });
    try {
      await new Promise<void>((resolve, reject) => {
        client.subscribe<{ stepUpdates: TUpdate }>(
          { query: document.toString(), variables: { executionId, afterSequence: last } },
          {
            next: (result) => {
              if (result.errors?.length) return reject(serverErrorOf(result.errors));
              const update = result.data?.stepUpdates;
              if (!update || update.sequence <= last) return;
              last = update.sequence;
              ended = isFinal(update);
              // Only progress forgives earlier failures: a server that accepts and then drops every subscription still ends the retries.
              failures = 0;
              onUpdate(update);
            },
            error: reject,
            complete: () => (ended ? resolve() : reject(new StreamEndedEarly())),
          },
        );
      });
      return last;
    } catch (error) {
      if (Array.isArray(error)) throw serverErrorOf(error as GraphQLErrorShape[]);
      if (error instanceof ServerError) throw error;
      const closeCode = isCloseEvent(error) ? error.code : undefined;
      const reason = closeCode !== undefined ? closeReason(error as CloseEventLike) : reasonOf(error);
      if (closeCode === 4403 || closeCode === 4401) throw new ServerError(`the server refused the connection: ${reason}`, 'UNAUTHENTICATED');
      if (closeCode !== undefined && FATAL_CLOSE_CODES.has(closeCode)) throw new ServerError(`the server closed the connection: ${reason}`, undefined);
      failures += 1;
      if (failures >= maxAttempts) {
        throw new ConnectionError(`lost the connection to stepcast at ${connection.wsUrl} and could not regain it: ${reason}`, { cause: error });
      }
      const delayMs = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** (failures - 1));
      onReconnecting?.(failures, delayMs, reason);
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    } finally {
      clearTimeout(pongTimer);
      await client.dispose();
    }
  }
}

/** The server completed the subscription before the execution's last update, as a server does when it shuts down. */
class StreamEndedEarly extends Error {
  override name = 'StreamEndedEarly';
  constructor() {
    super('the server ended the stream before the execution ended');
  }
}

interface CloseEventLike {
  code: number;
  reason?: string;
}

function isCloseEvent(value: unknown): value is CloseEventLike {
  return typeof value === 'object' && value !== null && 'code' in value && typeof (value as CloseEventLike).code === 'number';
}

function closeReason(event: CloseEventLike): string {
  return event.reason ? `${event.reason} (close code ${event.code})` : `closed with code ${event.code}`;
}
