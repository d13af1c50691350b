// A lighter harness for the fan-out bench's subscribers (BENCH_FANOUT_HARNESS=raw): each subscriber is a bare `ws`
// socket speaking graphql-transport-ws itself, not a graphql-ws client. The same commands, reports and bookkeeping as
// bench/fanout-clients.ts (bench/fanout-harness.ts), so watchAcross reads either.
//
// Why: the subscribers of one process take turns. With graphql-ws's client, each message is parsed, validated and
// dispatched (and stamped in `next`) before the next socket's frame is read, so the last of 1,000 is stamped after
// 999 parses, which real subscribers (each on its own machine) would not wait for. Here a frame is stamped first
// thing in ws's 'message' listener and kept as it came; the JSON is parsed once the run has completed (or, before
// the subscriber is ready, at once, to see the update that makes it ready). Sequences are then checked by
// watchAcross as before: gaps, duplicates, errors and completion.
import WebSocket from 'ws';
import { now, openInBatches, recordUpdate, report, serveCommands, Subscribers, type ClientCommand, type ClientRecord } from './fanout-harness.js';

const PROTOCOL = 'graphql-transport-ws';
const NEXT = Buffer.from('"type":"next"');

type Update = { sequence: number; type: string; at?: string };
type Message = { type: string; id?: string; payload?: { data?: { stepUpdates?: Update } | null; errors?: unknown } | unknown };

let sockets: WebSocket[] = [];

/** Records a `next` message received at `time`; its update, or undefined (and an error kept) when it has none. */
function recordMessage(record: ClientRecord, message: Message, time: number): Update | undefined {
  const update = (message.payload as { data?: { stepUpdates?: Update } | null } | undefined)?.data?.stepUpdates;
  if (!update) {
    record.error ??= JSON.stringify((message.payload as { errors?: unknown } | undefined)?.errors ?? message.payload);
    return undefined;
  }
  recordUpdate(record, update, time);
  return update;
}

async function subscribeAll(command: Extract<ClientCommand, { type: 'subscribe' }>): Promise<void> {
  /** Frames not parsed yet, per subscriber, with the times they arrived. */
  const pending = Array.from({ length: command.count }, () => ({ frames: [] as Buffer[], times: [] as number[] }));
  const subscribers = new Subscribers(command.count, (records) => {
    // Parse what was kept, in arrival order per subscriber.
    records.forEach((record, i) => {
      const { frames, times } = pending[i]!;
      frames.forEach((frame, k) => recordMessage(record, JSON.parse(frame.toString('utf8')) as Message, times[k]!));
      pending[i] = { frames: [], times: [] };
    });
    report({ type: 'done', clients: records });
  });
  await openInBatches(command.count, (i) => {
    const socket = new WebSocket(command.wsUrl, PROTOCOL);
    sockets.push(socket);
    const kept = pending[i]!;
    return new Promise<void>((opened) => {
      const { record, isReady, markReady, end } = subscribers.track(i, opened);
      socket.on('message', (data: Buffer, isBinary: boolean) => {
        const time = now();
        // Once ready, a `next` is only kept: parsed after the run, so that no subscriber waits for another's parse.
        if (isReady() && !isBinary && data.includes(NEXT)) {
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
            const update = recordMessage(record, message, time);
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
        socket.send(JSON.stringify({ type: 'connection_init', ...(command.authorization ? { payload: { authorization: command.authorization } } : {}) }));
      });
      socket.on('error', (error) => end(error.message));
      // After its complete, a close ends nothing more (end counts once); before it, the close is the error.
      socket.on('close', (code, reason) => end(`closed ${code} ${reason.toString()} before complete`));
    });
  });
}

serveCommands(subscribeAll, () => {
  const closing = sockets;
  sockets = [];
  return Promise.all(
    closing.map(
      (socket) =>
        new Promise<void>((resolve) => {
          if (socket.readyState === WebSocket.CLOSED) return resolve();
          socket.once('close', () => resolve());
          socket.close(1000);
        }),
    ),
  );
});
