import { getOperationAST, GraphQLError } from 'graphql';
import type { ConnectionInitMessage, ServerOptions } from 'graphql-ws';
import type { ServerOptions as WsServerOptions } from 'ws';
import type { WebSocketLimits } from '../config.js';

export const TOO_MANY_SUBSCRIPTIONS = 'TOO_MANY_SUBSCRIPTIONS';

/**
 * graphql-ws server options with config.websocket applied (pass the result to useServer, with
 * limits.keepAliveMs as its keep-alive):
 * - a socket that has not sent connection_init within initTimeoutMs is closed with 4408;
 * - a socket holds at most maxSubscriptions subscriptions at once; the next is answered with an error
 *   TOO_MANY_SUBSCRIPTIONS and the socket, and its other operations, go on. A subscription frees its slot
 *   when it completes, fails, or the client completes it. Queries and mutations over the socket are not counted.
 * options.onSubscribe must return the execution arguments (as server.ts's does): the operation type is read from them.
 * The frame size limit (maxPayload) belongs to the WebSocketServer, see webSocketServerOptions.
 */
export function withWebSocketLimits<P extends ConnectionInitMessage['payload'], E>(
  options: ServerOptions<P, E>,
  limits: WebSocketLimits,
): ServerOptions<P, E> {
  const { onSubscribe } = options;
  /** Per graphql-ws connection context: ids of the subscriptions that took a slot. */
  const slots = new WeakMap<object, Set<string>>();
  return {
    ...options,
    connectionInitWaitTimeout: limits.initTimeoutMs,
    onSubscribe: async (context, id, payload) => {
      const args = await onSubscribe?.(context, id, payload);
      if (!args || !('document' in args)) return args; // nothing to run, or its errors
      if (getOperationAST(args.document, args.operationName)?.operation !== 'subscription') return args;
      let held = slots.get(context);
      if (!held) slots.set(context, (held = new Set()));
      // graphql-ws drops an operation from context.subscriptions as it ends, or as soon as the client completes it.
      for (const heldId of held) if (!(heldId in context.subscriptions)) held.delete(heldId);
      // No await between this check and the add: concurrent subscribe messages cannot both take the last slot.
      if (held.size >= limits.maxSubscriptions) {
        return [
          new GraphQLError(
            `This connection already has ${limits.maxSubscriptions} active subscriptions, the limit; complete one before starting another.`,
            { extensions: { code: TOO_MANY_SUBSCRIPTIONS, limit: limits.maxSubscriptions } },
          ),
        ];
      }
      held.add(id);
      return args;
    },
  };
}

/**
 * ws options for the GraphQL WebSocketServer.
 * - maxPayload: ws stops reading a frame (or a message of several frames) once it passes the limit, without
 *   buffering it, and closes the socket with 1009 (Message Too Big).
 * - verifyClient: browsers apply no CORS to WebSockets, so a page of any site could open one to this server
 *   (with authentication off, acting as the demo tenant). An upgrade that carries an Origin (browsers always send
 *   one) is accepted only from this server's own host or from `allowedOrigins` (STEPCAST_CORS_ORIGINS); others get
 *   HTTP 403. Clients outside a browser send no Origin and are not affected.
 */
export function webSocketServerOptions(
  limits: WebSocketLimits,
  allowedOrigins: readonly string[],
): Pick<WsServerOptions, 'maxPayload' | 'verifyClient'> {
  const allowed = new Set(allowedOrigins);
  return {
    maxPayload: limits.maxPayloadBytes,
    verifyClient: ({ origin, req }, done) => {
      if (!origin || allowed.has(origin) || hostOf(origin) === req.headers.host) return done(true);
      done(false, 403, 'Forbidden: this origin may not open a WebSocket here (STEPCAST_CORS_ORIGINS)');
    },
  };
}

function hostOf(origin: string): string | undefined {
  try {
    return new URL(origin).host;
  } catch {
    return undefined;
  }
}
