import type { Socket } from 'node:net';
import { WebSocket } from 'ws';
import type { Logger } from '../logger.js';
import type { DirectResultSink } from '../schema/shared-event-execution.js';

/**
 * Past this much waiting in a socket's buffers (ws's bufferedAmount: bytes, or characters of text not yet encoded), a
 * send waits for its frame to be written before it reports back (graphql-ws awaits each send, so one slow client
 * holds back only its own subscriptions), and results are no longer written directly; below it, a send reports back
 * at once. Node's own default high-water mark for a stream.
 */
export const SEND_HIGH_WATER_BYTES = 64 * 1024;

/** TCP sockets corked since the last flush, each once. */
const corked = new Set<Socket>();
let flushScheduled = false;

function flushCorked(): void {
  flushScheduled = false;
  for (const socket of corked) socket.uncork();
  corked.clear();
}

/**
 * The graphql-ws server's socket class (WebSocketServer's `WebSocket` option): what is sent to one socket in one burst
 * leaves in one write.
 *
 * One update reaches a thousand subscribers as a thousand socket writes, and a write (a system call that also runs
 * the loopback or network stack) costs more than everything else about a delivery. Updates come in bursts: a step's
 * end and the next step's start are published back to back, and a replica that falls behind gets several per socket
 * at once. So the first send corks the TCP socket and queues one microtask that uncorks every corked socket: what the
 * running code sends to a socket before that microtask runs (the whole of a bus publish, handed over to the
 * subscribers in its listeners) goes out in one writev.
 *
 * graphql-ws waits for each send's callback before it sends the subscription's next result. ws calls it once the
 * frame is written, which is after the flush: a subscription would get one frame per flush and nothing would
 * coalesce. So while the socket's buffered bytes are under SEND_HIGH_WATER_BYTES (64 KiB) the callback is called at once
 * (like a stream's write returning true under its high-water mark); past it, it waits for the write, which is the
 * back-pressure a slow client meets. A failed write still closes the socket, and graphql-ws sees that as the
 * close it already handles.
 *
 * A class, not a wrapper per socket: a thousand idle sockets hold no closures for it.
 */
export class CoalescedWebSocket extends WebSocket {
  override send(data: unknown, optionsOrCallback?: unknown, callback?: (error?: Error) => void): void {
    let options = (optionsOrCallback ?? {}) as object;
    if (typeof optionsOrCallback === 'function') {
      callback = optionsOrCallback as (error?: Error) => void;
      options = {};
    }
    const socket = (this as unknown as { _socket?: Socket })._socket;
    if (this.readyState !== WebSocket.OPEN || !socket) return super.send(data as string, options, callback);
    if (!corked.has(socket)) {
      socket.cork();
      corked.add(socket);
      if (!flushScheduled) {
        flushScheduled = true;
        queueMicrotask(flushCorked);
      }
    }
    if (!callback || this.bufferedAmount >= SEND_HIGH_WATER_BYTES) return super.send(data as string, options, callback);
    super.send(data as string, options);
    callback();
  }
}

/**
 * The WebSocketServer's socket class for one server: CoalescedWebSocket, and a client that breaks the WebSocket
 * protocol (a frame over maxPayload, bad framing or UTF-8) is logged at debug level. ws closes such a socket itself
 * (1009, 1002, 1007) and emits the error on it, which graphql-ws would print to the console as an "Internal error";
 * it is the client's fault. An override of the class, not a listener per socket: idle sockets hold nothing for it.
 */
export function graphqlWebSocketClass(logger: Logger): typeof CoalescedWebSocket {
  return class GraphqlWebSocket extends CoalescedWebSocket {
    override emit(event: string | symbol, ...args: unknown[]): boolean {
      const error = args[0] as (Error & { code?: unknown }) | undefined;
      if (event === 'error' && typeof error?.code === 'string' && error.code.startsWith('WS_ERR_')) {
        logger.debug({ err: error }, 'WebSocket client broke the protocol; ws closed the socket');
        return true;
      }
      return super.emit(event, ...args);
    }
  };
}

/**
 * The rootValue of one graphql-ws subscription: graphql-ws's execute and subscribe (server.ts calls them through it),
 * and its socket, for results written to it at once (src/schema/shared-event-execution.ts): the `next` message
 * graphql-ws would send (`{"id":…,"type":"next","payload":…}`, its stringifyMessage's key order), sent the same way.
 * Refused when the socket is not open or a slow client has a backlog: that result goes through graphql-ws, which
 * waits for the socket. One object per subscription, in place of the plain rootValue.
 */
export class GraphqlWsSubscriptionRoot implements DirectResultSink {
  constructor(
    readonly execute: unknown,
    readonly subscribe: unknown,
    private readonly socket: WebSocket,
    private readonly id: string,
  ) {}

  sendResultDirectly(payload: string): boolean {
    const { socket } = this;
    if (socket.readyState !== socket.OPEN || socket.bufferedAmount >= SEND_HIGH_WATER_BYTES) return false;
    socket.send(`{"id":${JSON.stringify(this.id)},"type":"next","payload":${payload}}`);
    return true;
  }
}
