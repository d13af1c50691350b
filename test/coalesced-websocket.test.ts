import { once } from 'node:events';
import type { AddressInfo, Socket } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { CoalescedWebSocket, GraphqlWsSubscriptionRoot } from '../src/limits/coalesced-websocket.js';

/** A ws server whose sockets are CoalescedWebSocket (as the graphql-ws server's are), and a client connected to it. */
async function connectedPair(perMessageDeflate = false) {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1', WebSocket: CoalescedWebSocket, perMessageDeflate });
  await once(server, 'listening');
  const accepted = once(server, 'connection') as Promise<[CoalescedWebSocket]>;
  const client = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`, { perMessageDeflate });
  const received: string[] = [];
  client.on('message', (data, isBinary) => received.push(isBinary ? `binary:${data.toString('hex')}` : data.toString()));
  await once(client, 'open');
  const [socket] = await accepted;
  return { server, client, socket, received };
}

const pairs: Awaited<ReturnType<typeof connectedPair>>[] = [];
afterEach(async () => {
  for (const { server, client } of pairs.splice(0)) {
    client.terminate();
    await new Promise((resolve) => server.close(resolve));
  }
});

/** Waits for the condition, for 10 s at most: a frame the client cannot parse never arrives, and the test fails. */
async function until(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('the condition did not hold within 10 s');
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

describe('a result written to the socket directly', () => {
  // Under 126 bytes a frame's length is in its second byte; up to 65,535 in two more; past that in eight more.
  const payloads = [
    '{"data":{"n":1}}',
    `{"data":{"text":${JSON.stringify('é€😀'.repeat(40))}}}`,
    `{"data":{"text":${JSON.stringify('x'.repeat(70_000))}}}`,
    `{"data":{"text":${JSON.stringify('ü'.repeat(40_000))}}}`,
  ];

  it.each([
    ['with no extension: built from the encoded bytes', false],
    ['with permessage-deflate agreed: sent through ws as text', true],
  ])('arrives as the text frame graphql-ws would send, at every length and in UTF-8, %s', async (_, deflate) => {
    const pair = await connectedPair(deflate);
    pairs.push(pair);
    const root = new GraphqlWsSubscriptionRoot(undefined, undefined, pair.socket, 'sub-ü-1');
    const expected = payloads.map((json) => `{"id":"sub-ü-1","type":"next","payload":${json}}`);
    const sends = vi.spyOn(pair.socket, 'send');
    // Interleaved with frames ws sends itself: the order on the wire is the order they were sent in. One at a time:
    // past 64 KiB waiting in the socket, a result is refused (the slow client's back-pressure, tested below).
    for (const [i, json] of payloads.entries()) {
      expect(root.sendResultDirectly({ json })).toBe(true);
      pair.socket.send('{"type":"ping"}');
      await until(() => pair.received.length === (i + 1) * 2);
    }
    expect(pair.received).toEqual(expected.flatMap((frame) => [frame, '{"type":"ping"}']));
    // Small ones in one burst, as a step's end and the next step's start go: one write, in order.
    for (const n of [1, 2, 3]) {
      expect(root.sendResultDirectly({ json: `{"data":{"n":${n}}}` })).toBe(true);
      pair.socket.send(`{"type":"pong","n":${n}}`);
    }
    await until(() => pair.received.length === payloads.length * 2 + 6);
    expect(pair.received.slice(-6)).toEqual(
      [1, 2, 3].flatMap((n) => [`{"id":"sub-ü-1","type":"next","payload":{"data":{"n":${n}}}}`, `{"type":"pong","n":${n}}`]),
    );
    // Past ws only where no extension was agreed: a deflate socket's results go through its send, as the test's own frames do.
    const ownFrames = payloads.length + 3;
    expect(sends).toHaveBeenCalledTimes(deflate ? 2 * ownFrames : ownFrames);
  });

  it('is refused while 64 KiB wait in the socket, and taken again once they are written', async () => {
    const pair = await connectedPair();
    pairs.push(pair);
    const root = new GraphqlWsSubscriptionRoot(undefined, undefined, pair.socket, 'big');
    const big = `{"data":{"text":${JSON.stringify('x'.repeat(70_000))}}}`;
    expect(root.sendResultDirectly({ json: big })).toBe(true);
    expect(root.sendResultDirectly({ json: '{"data":{}}' })).toBe(false);
    await until(() => pair.received.length === 1 && pair.socket.bufferedAmount === 0);
    expect(root.sendResultDirectly({ json: '{"data":{}}' })).toBe(true);
    await until(() => pair.received.length === 2);
    expect(pair.received).toEqual([`{"id":"big","type":"next","payload":${big}}`, '{"id":"big","type":"next","payload":{"data":{}}}']);
  });

  it('encodes a shared payload once for every subscription it goes to', async () => {
    const pair = await connectedPair();
    pairs.push(pair);
    const payload: { json: string; utf8?: Buffer } = { json: '{"data":{"n":2}}' };
    const roots = ['a', 'b', 'c'].map((id) => new GraphqlWsSubscriptionRoot(undefined, undefined, pair.socket, id));
    expect(roots[0]!.sendResultDirectly(payload)).toBe(true);
    const encoded = payload.utf8;
    expect(encoded?.toString()).toBe(payload.json);
    for (const root of roots.slice(1)) expect(root.sendResultDirectly(payload)).toBe(true);
    expect(payload.utf8).toBe(encoded);
    await until(() => pair.received.length === 3);
    expect(pair.received).toEqual(['a', 'b', 'c'].map((id) => `{"id":"${id}","type":"next","payload":{"data":{"n":2}}}`));
  });

  it("writes the very bytes ws's own framing gives, in one write, at every length boundary", async () => {
    const pair = await connectedPair();
    pairs.push(pair);
    const id = 'é';
    const root = new GraphqlWsSubscriptionRoot(undefined, undefined, pair.socket, id);
    const tcp = (pair.socket as unknown as { _socket: Socket })._socket;
    const written = vi.spyOn(tcp, 'write');
    try {
      const prefix = `{"id":"${id}","type":"next","payload":`;
      // Whole messages of 124 to 127 and 65,534 to 65,537 bytes, with a 2-byte character last before the brace.
      for (const total of [124, 125, 126, 127, 65_534, 65_535, 65_536, 65_537]) {
        const filler = total - Buffer.byteLength(prefix) - Buffer.byteLength('{"t":"ü"}') - 1;
        const json = `{"t":"${'x'.repeat(filler)}ü"}`;
        const message = `${prefix}${json}}`;
        expect(Buffer.byteLength(message)).toBe(total);
        written.mockClear();
        expect(root.sendResultDirectly({ json })).toBe(true);
        // One write of the whole frame, not a send that falls back to ws (which writes a header and a text apart).
        expect(written).toHaveBeenCalledTimes(1);
        const direct = written.mock.calls[0]![0] as Buffer;
        await until(() => pair.received.at(-1) === message && pair.socket.bufferedAmount === 0);
        // The same message sent by ws itself, as it writes it.
        written.mockClear();
        pair.socket.send(message);
        const byWs = Buffer.concat(written.mock.calls.map(([chunk]) => (typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer))));
        expect(Buffer.compare(direct, byWs)).toBe(0);
        await until(() => pair.received.length >= 2 && pair.received.at(-2) === message && pair.received.at(-1) === message);
      }
    } finally {
      written.mockRestore();
    }
  });

  it('keeps no more memory per subscription than its frame prefix, and a kept payload no more than its own bytes', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const pair = await connectedPair();
    pairs.push(pair);
    const roots = Array.from({ length: 60 }, (_, i) => new GraphqlWsSubscriptionRoot(undefined, undefined, pair.socket, `subscription-${i}`));
    const drained = () => until(() => pair.socket.bufferedAmount === 0);
    for (const root of roots) root.sendResultDirectly({ json: '{}' });
    await drained();
    gc();
    gc();
    const before = process.memoryUsage().arrayBuffers;
    // 50 results of about 520 bytes, each to every subscription, kept as a stream's buffered update would keep them.
    const kept: { json: string; utf8?: Buffer }[] = [];
    for (let n = 0; n < 50; n++) {
      const payload = { json: `{"data":{"text":${JSON.stringify(String(n).padEnd(500, 'x'))}}}` };
      kept.push(payload);
      for (const root of roots) expect(root.sendResultDirectly(payload)).toBe(true);
      await drained();
    }
    gc();
    gc();
    // A slice of Node's 8 KiB buffer pool would hold all 8 KiB: per kept payload, or per subscription.
    const grown = process.memoryUsage().arrayBuffers - before;
    expect(grown / kept.length).toBeLessThan(2 * kept[0]!.utf8!.length);
    expect(kept.every((payload) => payload.utf8!.buffer.byteLength === payload.utf8!.length)).toBe(true);
  });

  it('is refused once the socket is closing, so the result goes through graphql-ws', async () => {
    const pair = await connectedPair();
    pairs.push(pair);
    const root = new GraphqlWsSubscriptionRoot(undefined, undefined, pair.socket, 'x');
    pair.socket.close(1000);
    expect(root.sendResultDirectly({ json: '{"data":{}}' })).toBe(false);
  });
});
