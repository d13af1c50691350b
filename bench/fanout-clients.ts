// The fan-out bench's subscribers, in a process of their own (bench/fanout.ts forks it), so that their CPU and
// memory are not the server's. Commands arrive over IPC (bench/fanout-harness.ts); each client is one graphql-ws
// socket with one subscription.
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { now, openInBatches, recordUpdate, report, serveCommands, Subscribers, type ClientCommand } from './fanout-harness.js';

let clients: Client[] = [];

async function subscribeAll(command: Extract<ClientCommand, { type: 'subscribe' }>): Promise<void> {
  const subscribers = new Subscribers(command.count, (records) => report({ type: 'done', clients: records }));
  await openInBatches(command.count, (i) => {
    const client = createClient({
      url: command.wsUrl,
      webSocketImpl: WebSocket,
      retryAttempts: 0,
      lazy: false,
      ...(command.authorization ? { connectionParams: { authorization: command.authorization } } : {}),
    });
    clients.push(client);
    return new Promise<void>((opened) => {
      const { record, markReady, end } = subscribers.track(i, opened);
      client.subscribe(
        { query: command.query, variables: { id: command.executionId } },
        {
          next: (value) => {
            const time = now();
            const update = (value.data as { stepUpdates?: { sequence: number; type: string; at?: string } } | null)?.stepUpdates;
            if (!update) {
              record.error ??= JSON.stringify(value.errors);
              return;
            }
            recordUpdate(record, update, time);
            if (update.type === command.readyType) markReady();
          },
          error: (error: unknown) => end(error instanceof Error ? error.message : JSON.stringify(error)),
          complete: () => end(),
        },
      );
    });
  });
}

serveCommands(subscribeAll, () => {
  const closing = clients;
  clients = [];
  return Promise.all(closing.map((client) => client.dispose()));
});
