// What the kernel alone charges for a fan-out: one write of a frame-sized buffer to each of N loopback TCP sockets,
// read by N sockets in a child process, with no WebSocket, GraphQL or stepcast code on either side. A step watched by
// N subscribers costs at least one such write per socket (a step's end and the next step's start leave in one write:
// src/limits/coalesced-websocket.ts), on the thread that writes them and on this machine's cores.
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { createConnection, createServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';

type ToReader = { type: 'report' } | { type: 'close' };
type FromReader = { type: 'ready' } | { type: 'report'; cpuUs: number; bytes: number };

export interface SocketWriteCost {
  /** CPU of this process (the writer) per round of one write to every socket, µs. */
  writerUs: number;
  /** CPU of the reading process per round, µs. */
  readerUs: number;
  /** Wall time per round, µs. */
  wallUs: number;
}

const cpuUs = () => {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
};

/** Writes `frameBytes` to each of `sockets` loopback sockets, `rounds` times after a warm-up, and measures both sides. */
export async function measureSocketWrites(sockets: number, frameBytes: number, rounds = 200): Promise<SocketWriteCost> {
  const accepted: Socket[] = [];
  const server = createServer((socket) => {
    socket.setNoDelay(true);
    accepted.push(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  const reader = fork(fileURLToPath(import.meta.url), ['reader', String(port), String(sockets)], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const nextMessage = () => once(reader, 'message').then(([message]) => message as FromReader);
  const report = async () => {
    const answer = nextMessage();
    reader.send({ type: 'report' } satisfies ToReader);
    return (await answer) as Extract<FromReader, { type: 'report' }>;
  };
  try {
    await nextMessage(); // ready: every socket connected
    while (accepted.length < sockets) await new Promise((resolve) => setTimeout(resolve, 5));
    const frame = Buffer.alloc(frameBytes, 'x');
    const writeRounds = async (count: number, expectedBytes: number) => {
      for (let round = 0; round < count; round++) {
        for (const socket of accepted) socket.write(frame);
        // Each round's writes leave before the next round's, as bursts of updates do.
        await new Promise((resolve) => setImmediate(resolve));
      }
      while ((await report()).bytes < expectedBytes) await new Promise((resolve) => setTimeout(resolve, 2));
    };
    const warmUp = 20;
    await writeRounds(warmUp, warmUp * sockets * frameBytes);
    const readerBefore = await report();
    const writerBefore = cpuUs();
    const startedAt = performance.now();
    await writeRounds(rounds, (warmUp + rounds) * sockets * frameBytes);
    const wallUs = ((performance.now() - startedAt) * 1000) / rounds;
    const writerUs = (cpuUs() - writerBefore) / rounds;
    const readerAfter = await report();
    return { writerUs, readerUs: (readerAfter.cpuUs - readerBefore.cpuUs) / rounds, wallUs };
  } finally {
    reader.kill();
    for (const socket of accepted) socket.destroy();
    server.close();
  }
}

/** The reading side, in a child process: connects, counts what arrives, and reports its CPU when asked. */
async function read(port: number, sockets: number): Promise<void> {
  let bytes = 0;
  const connections: Socket[] = [];
  for (let i = 0; i < sockets; i++) {
    const socket = createConnection({ port, host: '127.0.0.1' });
    socket.on('data', (chunk: Buffer) => (bytes += chunk.length));
    connections.push(socket);
    await once(socket, 'connect');
  }
  process.on('message', (message: ToReader) => {
    if (message.type === 'close') process.exit(0);
    process.send!({ type: 'report', cpuUs: cpuUs(), bytes } satisfies FromReader);
  });
  process.send!({ type: 'ready' } satisfies FromReader);
}

if (process.argv[2] === 'reader') void read(Number(process.argv[3]), Number(process.argv[4]));
