// A lighter harness for the fan-out bench's subscribers (BENCH_FANOUT_HARNESS=raw): each subscriber is a bare `ws`
// socket speaking graphql-transport-ws itself, not a graphql-ws client. Same commands and reports as
// bench/fanout-clients.ts, so watchAcross reads either.
//
// Why: the subscribers of one process take turns. With graphql-ws's client, each message is parsed, validated and
// dispatched (and stamped in `next`) before the next socket's frame is read, so the last of 1,000 is stamped after
// 999 parses, which real subscribers (each on its own machine) would not wait for. Here a frame is stamped first
// thing in ws's 'message' listener and kept as it came; the JSON is parsed once the run has completed (or, before
// the subscriber is ready, at once, to see the update that makes it ready). Sequences are then checked by
// watchAcross as before: gaps, duplicates, errors and completion.
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import type { ClientCommand, ClientReport } from './fanout-clients.js';

const now = () => performance.timeOrigin + performance.now();
const send = (report: ClientReport) => process.send!(report);
const PROTOCOL = 'graphql-transport-ws';
const NEXT = Buffer.from('"type":"next"');

type Update = { sequence: number; type: string; at?: string };
type Message = { type: string; id?: string; payload?: { data?: { stepUpdates?: Update } | null; errors?: unknown } | unknown };

let sockets: WebSocket[] = [];

async function subscribeAll(command: Extract<ClientCommand, { type: 'subscribe' }>): Promise<void> {
  const received = Array.from({ length: command.count }, () => ({
    sequences: [] as number[],
    times: [] as number[],
    ats: [] as number[],
    error: undefined as string | undefined,
  }));
  /** Frames not parsed yet, per subscriber, with the times they arrived. */
  const pending = Array.from({ length: command.count }, () => ({ frames: [] as Buffer[], times: [] as number[] }));
  let ready = 0;
  let finished = 0;
  const record = (i: number, message: Message, time: number): Update | undefined => {
    const mine = received[i]!;
    const update = (message.payload as { data?: { stepUpdates?: Update } | null } | undefined)?.data?.stepUpdates;
    if (!update) {
      mine.error ??= JSON.stringify((message.payload as { errors?: unknown } | undefined)?.errors ?? message.payload);
      return undefined;
    }
    mine.sequences.push(update.sequence);
    mine.times.push(time);
    mine.ats.push(update.at ? Date.parse(update.at) : Number.NaN);
    return update;
  };
  const allDone = () => {
    // Parse what was kept, in arrival order per subscriber.
    for (let i = 0; i < command.count; i++) {
      const { frames, times } = pending[i]!;
      frames.forEach((frame, k) => record(i, JSON.parse(frame.toString('utf8')) as Message, times[k]!));
      pending[i] = { frames: [], times: [] };
    }
    send({ type: 'done', clients: received });
  };
  const batch = 50;
  for (let start = 0; start < command.count; start += batch) {
    const opened: Promise<void>[] = [];
    for (let i = start; i < Math.min(command.count, start + batch); i++) {
      const socket = new WebSocket(command.wsUrl, PROTOCOL);
      sockets.push(socket);
      const mine = received[i]!;
      const kept = pending[i]!;
      let isReady = false;
      let ended = false;
      opened.push(
        new Promise<void>((resolve) => {
          const markReady = () => {
            if (isReady) return;
            isReady = true;
            ready += 1;
            resolve();
            if (ready === command.count) send({ type: 'ready' });
          };
          const end = (error?: string) => {
            if (ended) return;
            ended = true;
            if (error) mine.error ??= error;
            markReady();
            finished += 1;
            if (finished === command.count) allDone();
          };
          socket.on('message', (data: Buffer, isBinary: boolean) => {
            const time = now();
            // Once ready, a `next` is only kept: parsed after the run, so that no subscriber waits for another's parse.
            if (isReady && !isBinary && data.includes(NEXT)) {
              kept.frames.push(data);
              kept.times.push(time);
              return;
            }
            let message: Message;
            try {
              message = JSON.parse(data.toString('utf8')) as Message;
            } catch (error) {
              end(`unparsable message: ${String(error)}`);
              socket.close(4400, 'unparsable message');
              return;
            }
            switch (message.type) {
              case 'connection_ack':
                socket.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: command.query, variables: { id: command.executionId } } }));
                return;
              case 'ping':
                socket.send(JSON.stringify({ type: 'pong' }));
                return;
              case 'pong':
                return;
              case 'next': {
                const update = record(i, message, time);
                if (update?.type === command.readyType) markReady();
                return;
              }
              case 'error':
                end(JSON.stringify(message.payload));
                return;
              case 'complete':
                end();
                return;
              default:
                end(`unexpected message: ${data.toString('utf8').slice(0, 200)}`);
            }
          });
          socket.on('open', () => {
            if (socket.protocol !== PROTOCOL) {
              end(`server chose subprotocol '${socket.protocol}'`);
              return;
            }
            socket.send(
              JSON.stringify({ type: 'connection_init', ...(command.authorization ? { payload: { authorization: command.authorization } } : {}) }),
            );
          });
          socket.on('error', (error) => end(error.message));
          socket.on('close', (code, reason) => end(ended ? undefined : `closed ${code} ${reason.toString()} before complete`));
        }),
      );
    }
    // Connect in batches: a thousand handshakes at once would measure the accept queue, not the fan-out.
    await Promise.all(opened);
  }
}

process.on('message', (command: ClientCommand) => {
  if (command.type === 'subscribe') {
    subscribeAll(command).catch((error: unknown) => send({ type: 'failed', error: String(error) }));
  } else if (command.type === 'close') {
    const closing = sockets;
    sockets = [];
    void Promise.all(
      closing.map(
        (socket) =>
          new Promise<void>((resolve) => {
            if (socket.readyState === WebSocket.CLOSED) return resolve();
            socket.once('close', () => resolve());
            socket.close(1000);
          }),
      ),
    ).then(() => send({ type: 'closed' }));
  }
});
