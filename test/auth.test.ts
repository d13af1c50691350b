import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createTenant, revokeApiKey } from '../src/admin/tenants.js';
import { SecretBox } from '../src/auth/secrets.js';
import { ConfigError, loadConfig } from '../src/config.js';
import { DEMO_TENANT_ID } from '../src/db/demo-data.js';
import { backends } from './support/database.js';
import { startServiceProcess } from './support/process.js';
import { ExecutePlanMutation, ExecutionsQuery, StepUpdatesSubscription } from './support/operations.js';
import { sqlStep, storeQueuedExecution, submitPlan } from './support/plans.js';
import { startTestServer, readSseEvents, type TestServer } from './support/server.js';

const JWT_SECRET = randomBytes(32).toString('base64url');
const AUTH_ENV = {
  STEPCAST_AUTH: 'on',
  STEPCAST_DEMO: 'on',
  STEPCAST_JWT_SECRET: JWT_SECRET,
  STEPCAST_AUTH_RECHECK_MS: '100',
};

const bearer = (token: string) => `Bearer ${token}`;

async function hs256(claims: Record<string, unknown>, { secret = JWT_SECRET, expiresIn = '5m' } = {}): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuedAt()
    .setExpirationTime(expiresIn)
    .sign(new TextEncoder().encode(secret));
}

/** POSTs an operation and returns the HTTP status with the body. */
async function post(server: TestServer, body: unknown, authorization?: string) {
  const response = await fetch(server.url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/graphql-response+json',
      ...(authorization === undefined ? {} : { authorization }),
    },
    body: JSON.stringify(body),
  });
  return {
    status: response.status,
    wwwAuthenticate: response.headers.get('www-authenticate'),
    body: (await response.json()) as { data?: unknown; errors?: { message: string; extensions?: { code?: string } }[] },
  };
}

/** Opens a raw graphql-ws socket, sends connection_init with these params, and reports how it ended. */
async function connectWs(server: TestServer, payload: Record<string, unknown> | undefined) {
  const socket = new WebSocket(server.wsUrl, 'graphql-transport-ws');
  const messages: { type: string }[] = [];
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  socket.on('message', (data) => messages.push(JSON.parse(String(data)) as { type: string }));
  await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
  socket.send(JSON.stringify({ type: 'connection_init', payload }));
  return { socket, messages, closed };
}

const executionsQuery = { query: ExecutionsQuery.toString(), variables: { first: 100 } };

describe('configuration', () => {
  it('refuses to start in production with authentication off or without an encryption key', () => {
    const key = randomBytes(32).toString('base64');
    expect(() => loadConfig({ NODE_ENV: 'production', STEPCAST_AUTH: 'off', STEPCAST_ENCRYPTION_KEY: key })).toThrow(
      ConfigError,
    );
    expect(() => loadConfig({ NODE_ENV: 'production' })).toThrow(/STEPCAST_ENCRYPTION_KEY/);
    const production = loadConfig({ NODE_ENV: 'production', STEPCAST_ENCRYPTION_KEY: key });
    expect(production.auth.enabled).toBe(true);
    expect(production.graphql).toMatchObject({ introspection: false, graphiql: false });
    expect(production.demo.enabled).toBe(false);
    expect(loadConfig({ NODE_ENV: 'development' }).auth.enabled).toBe(false);
    expect(() => loadConfig({ STEPCAST_ENCRYPTION_KEY: 'c2hvcnQ=' })).toThrow(/32 bytes/);
  });
});

describe('npm start in production', () => {
  it('refuses to start with authentication off, and says why', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'stepcast-production-'));
    try {
      await expect(
        startServiceProcess({
          NODE_ENV: 'production',
          STEPCAST_AUTH: 'off',
          STEPCAST_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
          DATA_DIR: dataDir,
        }),
      ).rejects.toThrow(/exited with 1 before listening.*STEPCAST_AUTH=off is refused when NODE_ENV=production/s);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`authentication on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    let demoKey: string;
    let otherKey: string;

    beforeAll(async () => {
      server = await startTestServer(backend, { env: { ...AUTH_ENV, STEPCAST_RECOVERY_INTERVAL_MS: '0' } });
      const { database } = server.app;
      await createTenant(database, new SecretBox(randomBytes(32)), { name: 'Other', id: 'other' });
      demoKey = (await createApiKey(database, DEMO_TENANT_ID, 'tests')).token;
      otherKey = (await createApiKey(database, 'other')).token;
    });
    afterAll(async () => {
      await server?.close();
    });

    it('answers 401 UNAUTHENTICATED without a credential, with a malformed, unknown or wrong key, and stores nothing', async () => {
      const plan = { query: ExecutePlanMutation.toString(), variables: { plan: { query: 'q', steps: [sqlStep('SELECT 1')] } } };
      const wrongSecret = `${demoKey.slice(0, -4)}AAAA`;
      const unknownKey = `sc_aaaaaaaaaaaa_${randomBytes(32).toString('base64url')}`;
      for (const authorization of [undefined, '', 'Bearer', 'Basic dXNlcjpwYXNz', 'Bearer sc_short', bearer(unknownKey), bearer(wrongSecret), bearer('not.a.jwt')]) {
        const answer = await post(server, plan, authorization);
        expect(answer.status, String(authorization)).toBe(401);
        expect(answer.wwwAuthenticate).toBe('Bearer');
        expect(answer.body.errors?.map((e) => e.extensions?.code)).toEqual(['UNAUTHENTICATED']);
        expect(answer.body.data ?? null).toBeNull();
      }
      const history = await post(server, executionsQuery, bearer(demoKey));
      expect(history.status).toBe(200);
      expect(history.body.data).toEqual({ executions: { edges: [], pageInfo: { hasNextPage: false, endCursor: null } } });
    });

    it('acts as the tenant of the key, whatever the request says', async () => {
      const id = await submitPlan(server.as(bearer(otherKey)), { query: 'mine', steps: [sqlStep('SELECT 1 AS one')] });
      const own = await server.as(bearer(otherKey)).request(ExecutionsQuery, { first: 100 });
      expect(own.data?.executions.edges.map((edge) => edge.node.id)).toContain(id);
      const demo = await server.as(bearer(demoKey)).request(ExecutionsQuery, { first: 100 });
      expect(demo.data?.executions.edges.map((edge) => edge.node.id)).not.toContain(id);
    });

    it('refuses a WebSocket whose connection_init has no valid credential, before any subscription', async () => {
      for (const payload of [undefined, {}, { authorization: 'Bearer nope' }, { authorization: 42 }]) {
        const { messages, closed } = await connectWs(server, payload);
        const { code, reason } = await closed;
        expect(code, JSON.stringify(payload)).toBe(4403);
        expect(reason).toMatch(/^Forbidden/);
        expect(messages).toEqual([]);
      }
      // A subscribe sent before the server acknowledged the connection never runs either.
      const eager = await connectWs(server, { authorization: 'Bearer nope' });
      eager.socket.send(
        JSON.stringify({
          id: '1',
          type: 'subscribe',
          payload: { query: StepUpdatesSubscription.toString(), variables: { executionId: '00000000-0000-4000-8000-000000000000' } },
        }),
      );
      expect([4401, 4403]).toContain((await eager.closed).code);
      expect(eager.messages).toEqual([]);
      const { socket, messages } = await connectWs(server, { authorization: bearer(demoKey) });
      await expect.poll(() => messages.map((m) => m.type)).toContain('connection_ack');
      socket.close();
    });

    it('stops a revoked key at once over HTTP, closes its open WebSockets and ends its SSE streams', async () => {
      const { database } = server.app;
      const key = await createApiKey(database, DEMO_TENANT_ID, 'to revoke');
      const as = server.as(bearer(key.token));
      // A quiet socket (no subscription) is closed by the sweep, not by an update.
      const { socket, closed } = await connectWs(server, { authorization: bearer(key.token) });
      const id = await submitPlan(as, { query: 'q', steps: [sqlStep('SELECT 1 AS one')] });
      const sse = await fetch(server.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: bearer(key.token) },
        body: JSON.stringify({
          query: StepUpdatesSubscription.toString(),
          variables: { executionId: id },
        }),
      });
      expect(sse.status).toBe(200);
      const events = await readSseEvents(sse);
      expect(events.length).toBeGreaterThan(0);

      await revokeApiKey(database, key.id);
      const after = await post(server, executionsQuery, bearer(key.token));
      expect(after.status).toBe(401);
      expect(after.body.errors?.[0]?.message).toMatch(/revoked/);
      const { code } = await closed;
      expect(code).toBe(4403);
      expect(socket.readyState).toBe(WebSocket.CLOSED);
    });

    it('ends an SSE subscription that is waiting for updates once its key is revoked', async () => {
      const { database } = server.app;
      const key = await createApiKey(database, DEMO_TENANT_ID, 'sse');
      // Stored straight into the history: an execution nobody runs stays QUEUED, so its stream waits.
      const { id } = await storeQueuedExecution(server.app.database);
      const response = await fetch(server.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: bearer(key.token) },
        body: JSON.stringify({ query: StepUpdatesSubscription.toString(), variables: { executionId: id, afterSequence: 0 } }),
      });
      const reading = readSseEvents(response);
      await expect.poll(() => server.app.executor.openStreamCount).toBeGreaterThan(0);
      await revokeApiKey(database, key.id);
      const events = await reading;
      expect(events.at(-1)?.errors?.map((e) => e.extensions?.code)).toEqual(['UNAUTHENTICATED']);
    });

    it('accepts an HS256 JWT naming a tenant in its claim, and refuses expired, forged, tenantless and unknown-tenant tokens', async () => {
      const valid = await hs256({ stepcast_tenant: 'other', sub: 'user-1' });
      const id = await submitPlan(server.as(bearer(valid)), { query: 'jwt', steps: [sqlStep('SELECT 2 AS two')] });
      const listed = await server.as(bearer(await hs256({ stepcast_tenant: 'other' }))).request(ExecutionsQuery, { first: 100 });
      expect(listed.data?.executions.edges.map((edge) => edge.node.id)).toContain(id);

      const cases: [string, string, RegExp][] = [
        ['expired', await hs256({ stepcast_tenant: 'other' }, { expiresIn: '-1m' }), /expired/],
        ['forged', await hs256({ stepcast_tenant: 'other' }, { secret: 'x'.repeat(40) }), /not valid/],
        ['no tenant claim', await hs256({ sub: 'user-1' }), /stepcast_tenant/],
        ['unknown tenant', await hs256({ stepcast_tenant: 'nobody' }), /no known tenant/],
        ['no expiry', await new SignJWT({ stepcast_tenant: 'other' }).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode(JWT_SECRET)), /exp/],
        ['alg none', `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from('{"stepcast_tenant":"other","exp":9999999999}').toString('base64url')}.`, /not valid/],
      ];
      for (const [name, token, message] of cases) {
        const answer = await post(server, executionsQuery, bearer(token));
        expect(answer.status, name).toBe(401);
        expect(answer.body.errors?.[0]?.extensions?.code, name).toBe('UNAUTHENTICATED');
        expect(answer.body.errors?.[0]?.message, name).toMatch(message);
      }
    });

    it('closes a WebSocket authenticated by a JWT when the token expires', async () => {
      const token = await hs256({ stepcast_tenant: DEMO_TENANT_ID }, { expiresIn: '2s' });
      const { messages, closed } = await connectWs(server, { authorization: bearer(token) });
      await expect.poll(() => messages.map((m) => m.type)).toContain('connection_ack');
      expect((await closed).code).toBe(4403);
    });
  });
}

describe('authentication with a JWKS URL', () => {
  let jwks: Server;
  let server: TestServer;
  let privateKey: CryptoKey;

  beforeAll(async () => {
    const pair = await generateKeyPair('ES256');
    privateKey = pair.privateKey;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
    jwks = createServer((_request, response) => {
      response.setHeader('content-type', 'application/json');
      response.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    const { port } = jwks.address() as AddressInfo;
    server = await startTestServer('pglite', {
      env: {
        STEPCAST_AUTH: 'on',
        STEPCAST_DEMO: 'on',
        STEPCAST_JWT_JWKS_URL: `http://127.0.0.1:${port}/.well-known/jwks.json`,
        STEPCAST_JWT_ISSUER: 'https://issuer.test',
        STEPCAST_JWT_AUDIENCE: 'stepcast',
      },
    });
  });
  afterAll(async () => {
    await server?.close();
    await new Promise((resolve) => jwks?.close(resolve));
  });

  const sign = (key: CryptoKey, claims: Record<string, unknown>, issuer = 'https://issuer.test') =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer(issuer)
      .setAudience('stepcast')
      .setExpirationTime('5m')
      .sign(key);

  it('accepts a token signed by a key of the set, and refuses another key, issuer or a symmetric token', async () => {
    const ok = await post(server, executionsQuery, bearer(await sign(privateKey, { stepcast_tenant: DEMO_TENANT_ID })));
    expect(ok.status).toBe(200);
    expect(ok.body.errors).toBeUndefined();

    const stranger = (await generateKeyPair('ES256')).privateKey;
    for (const token of [
      await sign(stranger, { stepcast_tenant: DEMO_TENANT_ID }),
      await sign(privateKey, { stepcast_tenant: DEMO_TENANT_ID }, 'https://evil.test'),
      await hs256({ stepcast_tenant: DEMO_TENANT_ID }),
    ]) {
      const answer = await post(server, executionsQuery, bearer(token));
      expect(answer.status).toBe(401);
      expect(answer.body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    }
  });
});
