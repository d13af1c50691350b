import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createAuthenticator } from '../src/auth/authenticator.js';
import { ConfigError, loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { createGraphQLServer, type GraphQLServer } from '../src/server.js';
import { storedCounts } from './support/attacks.js';
import { ExecutePlanMutation, ExecutionsQuery, StepUpdatesSubscription } from './support/operations.js';
import { runPlan, sqlStep } from './support/plans.js';
import { readSseEvents, startTestServer, type GraphQLResponse, type TestServer } from './support/server.js';

// CSRF prevention and CORS sit in front of the schema, so PGlite alone is enough here; the attack suite
// (test/attacks-graphql.test.ts) checks form and multipart bodies on both backends with authentication on.
// This server runs as in development: authentication off, so a request from any page acts as the demo tenant.

const LISTED = 'https://app.example.com';
const ALSO_LISTED = 'http://localhost:5173';
const UNLISTED = 'https://evil.example';

const PLAN = { query: 'which users?', steps: [sqlStep('SELECT id FROM users ORDER BY id LIMIT 2')] };
const executePlanJson = JSON.stringify({ query: ExecutePlanMutation.toString(), variables: { plan: PLAN } });
const BOUNDARY = 'stepcast-test-boundary';

interface Answer {
  status: number;
  headers: Headers;
  body: GraphQLResponse<Record<string, unknown>> | undefined;
}

async function send(url: string, init: RequestInit = {}): Promise<Answer> {
  const response = await fetch(url, init);
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text ? (JSON.parse(text) as Answer['body']) : undefined };
}

const codesOf = (answer: Answer) => (answer.body?.errors ?? []).map((error) => error.extensions?.code);

/** Every CORS response header of an answer. */
const corsHeaders = (headers: Headers) =>
  Object.fromEntries([...headers].filter(([name]) => name.startsWith('access-control-')));

describe('CSRF prevention and CORS over HTTP and WebSocket, with authentication off (development)', () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer('pglite', { env: { STEPCAST_CORS_ORIGINS: `${LISTED},${ALSO_LISTED}` } });
  });
  afterAll(async () => {
    await server?.close();
  });

  const bodies: { name: string; contentType: string | undefined; body: () => string }[] = [
    {
      name: 'a form-encoded body (an HTML form)',
      contentType: 'application/x-www-form-urlencoded',
      body: () => new URLSearchParams({ query: ExecutePlanMutation.toString(), variables: JSON.stringify({ plan: PLAN }) }).toString(),
    },
    {
      name: 'a multipart body (an HTML form with enctype="multipart/form-data")',
      contentType: `multipart/form-data; boundary=${BOUNDARY}`,
      body: () =>
        `--${BOUNDARY}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n${executePlanJson}\r\n` +
        `--${BOUNDARY}\r\nContent-Disposition: form-data; name="map"\r\n\r\n{}\r\n--${BOUNDARY}--\r\n`,
    },
    { name: 'a text/plain body', contentType: 'text/plain', body: () => executePlanJson },
    { name: 'a body with no Content-Type', contentType: undefined, body: () => executePlanJson },
  ];
  for (const { name, contentType, body } of bodies) {
    it(`refuses executePlan as ${name} with HTTP 415 UNSUPPORTED_MEDIA_TYPE, and stores nothing`, async () => {
      const before = await storedCounts(server.app.database);
      const answer = await send(server.url, {
        method: 'POST',
        headers: { accept: 'application/graphql-response+json', origin: UNLISTED, ...(contentType ? { 'content-type': contentType } : {}) },
        body: new TextEncoder().encode(body()),
      });
      expect(answer.status).toBe(415);
      expect(codesOf(answer)).toEqual(['UNSUPPORTED_MEDIA_TYPE']);
      expect(answer.body?.errors?.[0]?.message).toMatch(/application\/json/);
      expect(answer.body?.data ?? null).toBeNull();
      expect(await storedCounts(server.app.database)).toEqual(before);
    });
  }

  it('runs operations sent as application/json (with a charset) and as application/graphql', async () => {
    const before = await storedCounts(server.app.database);
    const json = await send(server.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json; charset=utf-8', accept: 'application/graphql-response+json' },
      body: executePlanJson,
    });
    expect(json.body?.errors).toBeUndefined();
    expect((await storedCounts(server.app.database)).executions).toBe(before.executions + 1);
    const graphqlBody = await send(server.url, {
      method: 'POST',
      headers: { 'content-type': 'application/graphql', accept: 'application/graphql-response+json' },
      body: '{ executions(first: 1) { pageInfo { hasNextPage } } }',
    });
    expect(graphqlBody.status).toBe(200);
    expect(graphqlBody.body).toEqual({ data: { executions: { pageInfo: { hasNextPage: expect.any(Boolean) } } } });
  });

  it('runs a query over GET only with an Authorization or x-graphql-yoga-csrf header (a link or an <img> sends neither)', async () => {
    const url = `${server.url}?query=${encodeURIComponent('{ executions(first: 1) { pageInfo { hasNextPage } } }')}`;
    const plain = await send(url, { headers: { accept: 'application/graphql-response+json' } });
    expect(plain.status).toBe(403);
    expect(codesOf(plain)).toEqual(['CSRF_HEADER_REQUIRED']);
    expect(plain.body?.data ?? null).toBeNull();
    const headers: Record<string, string>[] = [{ 'x-graphql-yoga-csrf': '1' }, { authorization: 'Bearer anything: authentication is off' }];
    for (const header of headers) {
      const answer = await send(url, { headers: { accept: 'application/graphql-response+json', ...header } });
      expect(answer.status, JSON.stringify(header)).toBe(200);
      expect(answer.body).toEqual({ data: { executions: { pageInfo: { hasNextPage: expect.any(Boolean) } } } });
    }
  });

  it('still refuses a mutation over GET, header or not, and stores nothing', async () => {
    const before = await storedCounts(server.app.database);
    const mutation = 'mutation { executePlan(plan: { query: "q", steps: [{ kind: SQL, queryContext: "c", sql: "SELECT 1" }] }) { id } }';
    const answer = await send(`${server.url}?query=${encodeURIComponent(mutation)}`, {
      headers: { accept: 'application/graphql-response+json', 'x-graphql-yoga-csrf': '1' },
    });
    expect(answer.status).toBe(405);
    expect(await storedCounts(server.app.database)).toEqual(before);
  });

  it('keeps GraphiQL, /health, /ready and subscriptions over SSE (POST) working', async () => {
    const graphiql = await fetch(server.url, { headers: { accept: 'text/html' } });
    expect(graphiql.status).toBe(200);
    expect(await graphiql.text()).toMatch(/graphiql/i);
    const origin = new URL(server.url).origin;
    expect((await fetch(`${origin}/health`)).status).toBe(200);
    expect((await fetch(`${origin}/ready`)).status).toBe(200);

    const { id, updates } = await runPlan(server, PLAN);
    const response = await fetch(server.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ query: StepUpdatesSubscription.toString(), variables: { executionId: id } }),
    });
    expect(response.status).toBe(200);
    const events = await readSseEvents<{ stepUpdates: { sequence: number } }>(response);
    expect(events.map((event) => event.data?.stepUpdates.sequence)).toEqual(updates.map((update) => update.sequence));
  });

  it('answers the preflight of a listed origin with that origin, GET and POST, authorization and content-type, and no credentials', async () => {
    for (const origin of [LISTED, ALSO_LISTED]) {
      const preflight = await fetch(server.url, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
      });
      expect(preflight.status).toBe(204);
      const headers = corsHeaders(preflight.headers);
      expect(headers).toMatchObject({ 'access-control-allow-origin': origin, 'access-control-allow-methods': 'GET, POST' });
      expect(headers['access-control-allow-headers']?.split(', ')).toEqual(expect.arrayContaining(['authorization', 'content-type']));
      expect(headers).not.toHaveProperty('access-control-allow-credentials');
      expect(preflight.headers.get('vary')).toMatch(/Origin/i);

      const post = await send(server.url, {
        method: 'POST',
        headers: { origin, 'content-type': 'application/json', accept: 'application/graphql-response+json' },
        body: JSON.stringify({ query: ExecutionsQuery.toString(), variables: { first: 1 } }),
      });
      expect(post.body?.errors).toBeUndefined();
      expect(corsHeaders(post.headers)).toMatchObject({ 'access-control-allow-origin': origin });
      expect(corsHeaders(post.headers)).not.toHaveProperty('access-control-allow-credentials');
    }
  });

  it('gives an unlisted origin no CORS header at all, on the preflight and on the answer', async () => {
    for (const origin of [UNLISTED, 'null', `${LISTED}.evil.example`, LISTED.replace('https', 'http')]) {
      const preflight = await fetch(server.url, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
      });
      expect(corsHeaders(preflight.headers), origin).toEqual({});
      const post = await fetch(server.url, {
        method: 'POST',
        headers: { origin, 'content-type': 'application/json', accept: 'application/graphql-response+json' },
        body: JSON.stringify({ query: '{ __typename }' }),
      });
      expect(corsHeaders(post.headers), origin).toEqual({});
    }
  });

  /** How a WebSocket upgrade sent with this Origin ends: 'open', or the HTTP status it was refused with. */
  const upgradeFrom = (origin: string | undefined) =>
    new Promise<number | 'open'>((resolve, reject) => {
      const socket = new WebSocket(server.wsUrl, 'graphql-transport-ws', origin ? { origin } : {});
      socket.once('open', () => {
        socket.close();
        resolve('open');
      });
      socket.once('unexpected-response', (_request, response) => {
        resolve(response.statusCode ?? 0);
        socket.terminate();
      });
      socket.once('error', (error) => reject(error));
    });

  it("refuses a WebSocket from another site's page with HTTP 403; its own pages, listed origins and non-browser clients connect", async () => {
    expect(await upgradeFrom(UNLISTED)).toBe(403);
    expect(await upgradeFrom('null')).toBe(403);
    expect(await upgradeFrom(LISTED)).toBe('open');
    expect(await upgradeFrom(new URL(server.url).origin)).toBe('open');
    expect(await upgradeFrom(undefined)).toBe('open');
  });
});

describe('STEPCAST_CORS_ORIGINS', () => {
  it('lists no origin by default, in development and in production', () => {
    expect(loadConfig({}).http.corsOrigins).toEqual([]);
    expect(loadConfig({ NODE_ENV: 'production', STEPCAST_ENCRYPTION_KEY: 'a'.repeat(64) }).http.corsOrigins).toEqual([]);
    expect(loadConfig({ STEPCAST_CORS_ORIGINS: ` ${LISTED}, ${ALSO_LISTED} ` }).http.corsOrigins).toEqual([LISTED, ALSO_LISTED]);
  });

  it('refuses an entry that is not an exact origin, naming the variable', () => {
    for (const value of ['*', 'app.example.com', `${LISTED}/`, `${LISTED}/path`, 'ftp://files.example.com', 'https://App.example.com']) {
      expect(() => loadConfig({ STEPCAST_CORS_ORIGINS: value }), value).toThrow(ConfigError);
      expect(() => loadConfig({ STEPCAST_CORS_ORIGINS: value }), value).toThrow(/STEPCAST_CORS_ORIGINS/);
    }
  });

  describe('unset', () => {
    let server: GraphQLServer;
    let url: string;
    beforeAll(async () => {
      // The real server without a database: { __typename } and preflights reach no executor.
      const logger = createLogger('silent');
      server = createGraphQLServer({
        executor: undefined as never,
        logger,
        authenticator: createAuthenticator({
          database: undefined as never,
          config: { enabled: false, jwt: undefined, recheckMs: 1_000 },
          anonymousTenantId: 'demo',
          logger,
        }),
        credentialRecheckMs: 1_000,
        limits: loadConfig({}),
        corsOrigins: loadConfig({}).http.corsOrigins,
      });
      const address: AddressInfo = await server.listen(0, '127.0.0.1');
      url = `http://127.0.0.1:${address.port}${server.yoga.graphqlEndpoint}`;
    });
    afterAll(async () => {
      await server?.close();
    });

    it('gives no origin a CORS header (before, every Origin was reflected with allow-credentials: true)', async () => {
      const preflight = await fetch(url, {
        method: 'OPTIONS',
        headers: { origin: LISTED, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
      });
      expect(corsHeaders(preflight.headers)).toEqual({});
      const post = await fetch(url, {
        method: 'POST',
        headers: { origin: LISTED, 'content-type': 'application/json' },
        body: JSON.stringify({ query: '{ __typename }' }),
      });
      expect(await post.json()).toEqual({ data: { __typename: 'Query' } });
      expect(corsHeaders(post.headers)).toEqual({});
    });
  });
});
