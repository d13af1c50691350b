import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ExecutionQuery } from './support/operations.js';
import { submitPlan } from './support/plans.js';
import { createTestDatabase, postgresUrl, type TestDatabase } from './support/database.js';
import { startTestServer, type TestServer } from './support/server.js';

async function probe(origin: string, path: '/health' | '/ready'): Promise<{ status: number; body: string }> {
  const response = await fetch(new URL(path, origin));
  return { status: response.status, body: (await response.text()).trim() };
}

async function until(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A TCP proxy to a database that can be cut (every connection dropped, none accepted) and mended. */
async function startCuttableProxy(target: URL): Promise<{ port: number; cut(): void; mend(): void; close(): Promise<void> }> {
  let open = true;
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
  };
  const server: Server = createServer((client) => {
    track(client);
    if (!open) return client.destroy();
    const upstream = connect(Number(target.port || 5432), target.hostname);
    track(upstream);
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    cut: () => {
      open = false;
      for (const socket of sockets) socket.destroy();
    },
    mend: () => {
      open = true;
    },
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** A port nothing listens on (taken, then given back). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('/health and /ready', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  afterAll(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('answers 200 to both once the service is ready', async () => {
    const server = await startTestServer('pglite');
    cleanups.push(() => server.close());
    const origin = new URL(server.url).origin;
    expect(await probe(origin, '/health')).toEqual({ status: 200, body: '' });
    expect(await probe(origin, '/ready')).toEqual({ status: 200, body: 'ready' });
  });

  it('answers /health 200 and /ready 503 with the reason while the database cannot be reached at start', async () => {
    const server = await startTestServer('pglite', { env: { DATABASE_URL: `postgres://postgres@127.0.0.1:${await closedPort()}/nowhere` } });
    cleanups.push(() => server.close());
    const origin = new URL(server.url).origin;
    expect((await probe(origin, '/health')).status).toBe(200);
    const ready = await probe(origin, '/ready');
    expect(ready.status).toBe(503);
    expect(ready.body).toMatch(/^starting: the database has not been reached/);
  });

  it('answers /ready 503 while draining, while the run in flight has its grace period', async () => {
    const server = await startTestServer('pglite', { env: { STEPCAST_METRICS_PORT: '0', STEPCAST_SHUTDOWN_GRACE_MS: '3000' } });
    const shutdown: { closing?: Promise<void> } = {};
    cleanups.push(async () => {
      await shutdown.closing;
      await server.close();
    });
    const probes = `http://127.0.0.1:${server.app.metricsPort}`;
    expect(await probe(probes, '/ready')).toEqual({ status: 200, body: 'ready' });
    const id = await submitPlan(server, {
      query: 'waits',
      steps: [{ kind: 'API', queryContext: 'never ends', code: 'await new Promise(() => {}); return 1;' }],
    }, { stepTimeoutMs: 20_000 });
    await until(async () => (await server.request(ExecutionQuery, { id })).data?.execution?.steps[0]?.status === 'RUNNING', 'the step runs');
    shutdown.closing = server.app.close();
    const draining = await probe(probes, '/ready');
    expect(draining).toEqual({ status: 503, body: 'draining: the service is shutting down' });
    expect((await probe(probes, '/health')).status).toBe(200);
    await shutdown.closing;
  });

  it.skipIf(!postgresUrl)('answers /ready 503 when PostgreSQL stops answering, and 200 once it is back (skipped without TEST_DATABASE_URL)', async () => {
    const database: TestDatabase = await createTestDatabase();
    cleanups.push(() => database.drop());
    const target = new URL(database.url);
    const proxy = await startCuttableProxy(target);
    cleanups.push(() => proxy.close());
    const viaProxy = new URL(database.url);
    viaProxy.host = `127.0.0.1:${proxy.port}`;
    const server: TestServer = await startTestServer('pglite', { env: { DATABASE_URL: viaProxy.toString() } });
    cleanups.push(() => server.close());
    const origin = new URL(server.url).origin;
    expect(await probe(origin, '/ready')).toEqual({ status: 200, body: 'ready' });
    proxy.cut();
    const down = await probe(origin, '/ready');
    expect(down.status).toBe(503);
    expect(down.body).toMatch(/^the database did not answer within 2000 ms/);
    expect((await probe(origin, '/health')).status).toBe(200);
    proxy.mend();
    await until(async () => (await probe(origin, '/ready')).status === 200, 'the service is ready again');
  });
});
