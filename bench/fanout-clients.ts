// The fan-out bench's subscribers, in a process of their own (bench/fanout.ts forks it), so that their CPU and
// memory are not the server's. Commands arrive over IPC; each client is one graphql-ws socket with one subscription.
import { performance } from 'node:perf_hooks';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';

export type ClientCommand =
  | {
      type: 'subscribe';
      wsUrl: string;
      executionId: string;
      count: number;
      query: string;
      readyType: string;
      /** Sent as connectionParams when the server wants an API key. */
      authorization?: string;
    }
  | { type: 'close' };

export type ClientReport =
  | { type: 'ready' }
  /**
   * Per client: the sequences received and when (performance.timeOrigin + performance.now(), ms), each update's `at`
   * (ms since the epoch, when the query selects it), and its error.
   */
  | { type: 'done'; clients: { sequences: number[]; times: number[]; ats: number[]; error?: string }[] }
  | { type: 'closed' }
  | { type: 'failed'; error: string };

const now = () => performance.timeOrigin + performance.now();
const send = (report: ClientReport) => process.send!(report);

let clients: Client[] = [];

async function subscribeAll(command: Extract<ClientCommand, { type: 'subscribe' }>): Promise<void> {
  const received = Array.from({ length: command.count }, () => ({
    sequences: [] as number[],
    times: [] as number[],
    ats: [] as number[],
    error: undefined as string | undefined,
  }));
  let ready = 0;
  let finished = 0;
  const batch = 50;
  for (let start = 0; start < command.count; start += batch) {
    const opened: Promise<void>[] = [];
    for (let i = start; i < Math.min(command.count, start + batch); i++) {
      const client = createClient({
        url: command.wsUrl,
        webSocketImpl: WebSocket,
        retryAttempts: 0,
        lazy: false,
        ...(command.authorization ? { connectionParams: { authorization: command.authorization } } : {}),
      });
      clients.push(client);
      const mine = received[i]!;
      let isReady = false;
      opened.push(
        new Promise<void>((resolve) => {
          const markReady = () => {
            if (isReady) return;
            isReady = true;
            ready += 1;
            resolve();
            if (ready === command.count) send({ type: 'ready' });
          };
          const end = (error?: unknown) => {
            if (error) mine.error = error instanceof Error ? error.message : JSON.stringify(error);
            markReady();
            finished += 1;
            if (finished === command.count) send({ type: 'done', clients: received });
          };
          client.subscribe(
            { query: command.query, variables: { id: command.executionId } },
            {
              next: (value) => {
                const time = now();
                const update = (value.data as { stepUpdates?: { sequence: number; type: string; at?: string } } | null)?.stepUpdates;
                if (!update) {
                  mine.error ??= JSON.stringify(value.errors);
                  return;
                }
                mine.sequences.push(update.sequence);
                mine.times.push(time);
                mine.ats.push(update.at ? Date.parse(update.at) : Number.NaN);
                if (update.type === command.readyType) markReady();
              },
              error: end,
              complete: () => end(),
            },
          );
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
    const closing = clients;
    clients = [];
    void Promise.all(closing.map((client) => client.dispose())).then(() => send({ type: 'closed' }));
  }
});
