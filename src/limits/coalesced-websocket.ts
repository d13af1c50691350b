import type { Socket } from 'node:net';
import { WebSocket } from 'ws';
import type { Logger } from '../logger.js';
import type { DirectResultSink, SharedPayload } from '../schema/shared-event-execution.js';

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

/** Corks the socket until the end of the current burst (see CoalescedWebSocket). */
function corkUntilFlush(socket: Socket): void {
  if (corked.has(socket)) return;
  socket.cork();
  corked.add(socket);
  if (!flushScheduled) {
    flushScheduled = true;
    queueMicrotask(flushCorked);
  }
}

/** What of ws's own state a frame written past its Sender depends on (ws 8: `_socket`, `_sender`, `_extensions`). */
interface WsInternals {
  _socket?: unknown;
  _extensions?: unknown;
  _sender?: { _state?: unknown; _queue?: unknown; _firstFragment?: unknown } | null;
}

/**
 * The TCP socket to write a frame to past ws's Sender, or undefined (and the frame goes through `send`) unless ws's
 * state is exactly as read here: its Sender idle (nothing it is compressing or a Blob it is reading waits in its
 * queue, for a frame written now would pass it), not inside a fragmented message, and no extension agreed (a
 * permessage-deflate socket's frames are compressed). Anything ws names otherwise in a later version reads as not
 * idle: the frame then goes through `send`, as before.
 */
function idleSocketOf(ws: WebSocket): Socket | undefined {
  const { _socket: socket, _sender: sender, _extensions: extensions } = ws as unknown as WsInternals;
  if (!socket || !sender || sender._state !== 0 || !Array.isArray(sender._queue) || sender._queue.length > 0) return undefined;
  if (sender._firstFragment !== true || typeof extensions !== 'object' || extensions === null) return undefined;
  for (const _ in extensions) return undefined;
  return socket as Socket;
}

const FIN_TEXT = 0x81;
const CLOSING_BRACE = 0x7d;

/**
 * Writes one text frame, `prefix` then `payload` then `}`, to the socket at once, as ws's Sender frames a message for
 * a client (unmasked, not fragmented): in one buffer, written once, in the burst's cork. The prefix is encoded into the
 * frame, not kept as a buffer: a small Buffer.from is a slice of Node's 8 KiB pool and would hold all of it.
 */
function writeTextFrame(socket: Socket, prefix: string, prefixBytes: number, payload: Buffer): void {
  const length = prefixBytes + payload.length + 1;
  const headerLength = length < 126 ? 2 : length < 0x10000 ? 4 : 10;
  const frame = Buffer.allocUnsafe(headerLength + length);
  frame[0] = FIN_TEXT;
  if (length < 126) frame[1] = length;
  else if (length < 0x10000) {
    frame[1] = 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 127;
    frame.writeUInt32BE(Math.floor(length / 0x1_0000_0000), 2);
    frame.writeUInt32BE(length >>> 0, 6);
  }
  frame.write(prefix, headerLength);
  payload.copy(frame, headerLength + prefixBytes);
  frame[frame.length - 1] = CLOSING_BRACE;
  corkUntilFlush(socket);
  socket.write(frame);
}

/** `text` in UTF-8, in memory of its own (not a slice of Node's pool, which would keep the whole 8 KiB alive). */
function unpooledUtf8(text: string): Buffer {
  const bytes = Buffer.allocUnsafeSlow(Buffer.byteLength(text));
  bytes.write(text);
  return bytes;
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
    corkUntilFlush(socket);
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
  /** `{"id":…,"type":"next","payload":`, made at the first result written directly (idle ones hold none). */
  private framePrefix: string | undefined = undefined;
  private framePrefixBytes = 0;

  constructor(
    readonly execute: unknown,
    readonly subscribe: unknown,
    private readonly socket: WebSocket,
    private readonly id: string,
  ) {}

  /**
   * The frame is built from the payload's bytes, encoded once for every subscriber it goes to, and this subscription's
   * prefix: a delivery is one buffer and one write, where a `send` encoded the whole text again for every socket and
   * wrote the frame's header and its text apart.
   */
  sendResultDirectly(payload: SharedPayload): boolean {
    const { socket } = this;
    if (socket.readyState !== socket.OPEN || socket.bufferedAmount >= SEND_HIGH_WATER_BYTES) return false;
    if (this.framePrefix === undefined) {
      this.framePrefix = `{"id":${JSON.stringify(this.id)},"type":"next","payload":`;
      this.framePrefixBytes = Buffer.byteLength(this.framePrefix);
    }
    const tcp = idleSocketOf(socket);
    if (tcp) writeTextFrame(tcp, this.framePrefix, this.framePrefixBytes, (payload.utf8 ??= unpooledUtf8(payload.json)));
    else socket.send(`${this.framePrefix}${payload.json}}`);
    return true;
  }
}
