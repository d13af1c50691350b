import { EventEmitter, once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ApiCallError, createApiCaller, internalAddressKind, type ApiCallerOptions, type ApiCallLimits } from '../src/api/api-caller.js';
import { catalogFromOpenApi, DEFAULT_CATALOG_CHARS, describeCatalog, type ApiOperation, type ApiParameter } from '../src/api/catalog.js';
import { loadConfig } from '../src/config.js';
import { DEMO_TENANT_SCHEMA } from '../src/db/demo-data.js';
import { startDemoApi, type DemoApi } from '../src/demo-api/demo-api-server.js';
import { backends } from './support/database.js';
import { startTestServer, type TestServer } from './support/server.js';

const TOKEN = 'api-caller-test-token';
const MiB = 1024 * 1024;
const LIMITS: ApiCallLimits = loadConfig({}).sandbox;
/** For callers whose requests no test cancels. */
const NEVER_CANCELLED = new AbortController().signal;

// ---- a hard guarantee that this file never connects anywhere but loopback ------------------

const isLoopbackHost = (host: string) =>
  host === 'localhost' || /\.localhost$/.test(host) || /^127\./.test(host) || host === '::1' || host === 'unix socket';

/** Host of a Socket#connect call, in the shapes node:net, node:http and postgres.js use. */
function connectHost(args: unknown[]): string {
  const first = Array.isArray(args[0]) ? (args[0] as unknown[])[0] : args[0];
  if (typeof first === 'number') return typeof args[1] === 'string' ? args[1] : 'localhost';
  if (typeof first === 'string') return 'unix socket';
  const options = (first ?? {}) as { host?: string; path?: string };
  return options.path ? 'unix socket' : (options.host ?? 'localhost');
}

/** Every host this file connected to, so a test can show the guard sees the connections. */
const connectedHosts: string[] = [];

beforeAll(() => {
  const connect = net.Socket.prototype.connect;
  vi.spyOn(net.Socket.prototype, 'connect').mockImplementation(function (this: net.Socket, ...args: unknown[]) {
    const host = connectHost(args);
    connectedHosts.push(host);
    if (!isLoopbackHost(host)) throw new Error(`test guard: refused to connect to ${host}`);
    return (connect as (...a: unknown[]) => net.Socket).apply(this, args);
  });
});
afterAll(() => {
  vi.restoreAllMocks();
});

// ---- helpers --------------------------------------------------------------------------------

async function callError(call: Promise<unknown>): Promise<ApiCallError> {
  const error = await call.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  if (!(error instanceof ApiCallError)) throw new Error(`expected an ApiCallError, got ${String(error)}`);
  return error;
}

const pathParam = (name: string): ApiParameter => ({ name, in: 'path', required: true, description: null, schema: { type: 'string' } });
const queryParam = (name: string, required = false): ApiParameter => ({ name, in: 'query', required, description: null, schema: { type: 'string' } });
const operation = (operationId: string, path: string, parameters: ApiParameter[] = [], extra: Partial<ApiOperation> = {}): ApiOperation => ({
  operationId,
  method: 'GET',
  path,
  summary: null,
  parameters,
  paginated: false,
  idempotent: (extra.method ?? 'GET') === 'GET',
  ...extra,
});

const STUB_OPERATIONS: ApiOperation[] = [
  operation('getUser', '/users/{id}', [pathParam('id')]),
  operation('searchUsers', '/users', [queryParam('tag'), queryParam('limit'), queryParam('q')]),
  operation('needsQuery', '/users', [queryParam('q', true)]),
  operation('withHeader', '/users', [{ name: 'x-tenant', in: 'header', required: false, description: null, schema: {} }]),
  operation('listPages', '/pages', [queryParam('after')], { paginated: true }),
  operation('listEndless', '/endless', [queryParam('after')], { paginated: true }),
  operation('notAPage', '/users', [queryParam('after')], { paginated: true }),
  operation('createUser', '/users', [], { method: 'POST' }),
  operation('replaceUser', '/users/{id}', [pathParam('id')], { method: 'PUT', idempotent: true }),
  operation('followRedirect', '/redirect'),
  operation('getBig', '/big'),
  operation('getBigDeclared', '/big-declared'),
  operation('getBroken', '/broken'),
  operation('getBusy', '/busy'),
  operation('getMissing', '/missing'),
  operation('getHtml', '/html'),
  operation('getSlow', '/slow'),
  operation('getUnanswered', '/unanswered'),
  operation('listPagesThenSilence', '/pages-then-silence', [queryParam('after')], { paginated: true }),
];

interface Recorded {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  /** Settles when the request's socket has closed. */
  closed: Promise<void>;
}

interface StubApi {
  url: string;
  requests: Recorded[];
  /** The first request to `url` (path and query), once it has arrived. */
  requestTo(url: string): Promise<Recorded>;
  close(): Promise<void>;
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify(body));
}

/** Streams `bytes` bytes in 64 KiB chunks, honouring backpressure, until done or the client hangs up. */
function sendBytes(response: ServerResponse, bytes: number, declareLength: boolean): void {
  response.writeHead(200, { 'content-type': 'application/json', ...(declareLength ? { 'content-length': String(bytes) } : {}) });
  response.on('error', () => undefined);
  const chunk = Buffer.alloc(64 * 1024, 0x20);
  let sent = 0;
  const pump = () => {
    while (sent < bytes && !response.destroyed) {
      const piece = chunk.subarray(0, Math.min(chunk.length, bytes - sent));
      sent += piece.length;
      if (!response.write(piece)) return void response.once('drain', pump);
    }
    response.end();
  };
  pump();
}

/** A loopback API under /v1 that records every request and answers by path. */
async function startStubApi(): Promise<StubApi> {
  const requests: Recorded[] = [];
  const arrivals = new EventEmitter();
  const server = createServer((request, response) => {
    const closed = new Promise<void>((resolve) => request.socket.once('close', () => resolve()));
    const recorded = { method: request.method ?? '', url: request.url ?? '', headers: request.headers, closed };
    requests.push(recorded);
    arrivals.emit('request', recorded);
    const url = new URL(request.url ?? '/', 'http://stub');
    const after = url.searchParams.get('after');
    switch (url.pathname) {
      case '/v1/pages': {
        const pages: Record<string, { data: number[]; nextCursor: string | null }> = {
          start: { data: [1, 2], nextCursor: 'p2' },
          p2: { data: [3, 4], nextCursor: 'p3' },
          p3: { data: [5], nextCursor: null },
        };
        return sendJson(response, 200, pages[after ?? 'start']);
      }
      case '/v1/endless':
        return sendJson(response, 200, { data: [Number(after ?? 0)], nextCursor: String(Number(after ?? 0) + 1) });
      case '/v1/redirect':
        response.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/' });
        return response.end();
      case '/v1/big':
        return sendBytes(response, 6 * MiB, false);
      case '/v1/big-declared':
        return sendBytes(response, 6 * MiB, true);
      case '/v1/broken':
        return sendJson(response, 500, { error: 'database on fire' });
      case '/v1/busy':
        return sendJson(response, 429, { message: 'slow down' });
      case '/v1/missing':
        return sendJson(response, 404, { error: 'no such thing' });
      case '/v1/html':
        response.writeHead(200, { 'content-type': 'text/html' });
        return response.end('<html>hello</html>');
      case '/v1/slow':
        response.writeHead(200, { 'content-type': 'application/json' });
        return void response.write('{"partial":');
      case '/v1/unanswered':
        return;
      case '/v1/pages-then-silence':
        if (after === null) return sendJson(response, 200, { data: [1], nextCursor: 'p2' });
        return;
      default:
        return sendJson(response, 200, { path: url.pathname, query: url.search, received: 'ok' });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const requestTo = async (url: string): Promise<Recorded> => {
    for (;;) {
      const found = requests.find((request) => request.url === url);
      if (found) return found;
      await once(arrivals, 'request');
    }
  };
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    requestTo,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

// ---- the catalog ----------------------------------------------------------------------------

describe('catalogFromOpenApi', () => {
  it('throws a clear error for anything that is not an OpenAPI 3 document', () => {
    for (const garbage of [null, 42, 'openapi', [], {}, { swagger: '2.0', paths: {} }, { openapi: '2.0', paths: {} }, { openapi: '3.0.0' }, { openapi: '3.1.0', paths: [] }]) {
      expect(() => catalogFromOpenApi(garbage)).toThrow(/not an OpenAPI 3 document/);
    }
  });

  it('skips operations without operationId and junk entries, resolves $refs, and fills in template parameters', () => {
    const catalog = catalogFromOpenApi({
      openapi: '3.1.0',
      paths: {
        '/things/{thingId}/parts/{partId}': {
          parameters: [{ $ref: '#/components/parameters/ThingId' }, { name: 'verbose', in: 'query', schema: { type: 'boolean' } }],
          get: {
            operationId: 'getPart',
            summary: '  Get   one\npart ',
            parameters: [
              { name: 'verbose', in: 'query', required: true, schema: { type: 'boolean' } },
              { name: 'session', in: 'cookie' },
              { name: 'x-trace', in: 'header', schema: { type: 'string' } },
              { $ref: '#/components/parameters/Missing' },
              'junk',
            ],
            responses: {
              '404': { description: 'none' },
              '200': {
                description: 'the part',
                content: {
                  'application/json': {
                    schema: { allOf: [{ $ref: '#/components/schemas/Part' }, { type: 'object', properties: { tags: { type: 'array', items: { type: 'string' } } } }] },
                  },
                },
              },
            },
          },
          delete: { summary: 'no operationId, skipped' },
          trace: { operationId: 'traceIsNotAMethodWeCall' },
        },
        '/search': { get: { operationId: 'search', parameters: [{ name: 'cursor', in: 'query', schema: { type: 'array', items: { type: 'string' } } }] } },
        notAPath: { get: { operationId: 'skipped' } },
        '/broken': 'junk',
      },
      components: { parameters: { ThingId: { name: 'thingId', in: 'path', description: 'The thing', schema: { $ref: '#/components/schemas/Id' } } }, schemas: { Id: { type: 'integer' }, Part: { type: 'object', properties: { id: { $ref: '#/components/schemas/Id' }, maker: { type: 'object', properties: { name: { type: 'string' } } } } } } },
    });
    expect(catalog.map((op) => op.operationId)).toEqual(['getPart', 'search']);
    const [getPart, search] = catalog;
    expect(getPart).toEqual({
      operationId: 'getPart',
      method: 'GET',
      path: '/things/{thingId}/parts/{partId}',
      summary: 'Get one part',
      parameters: [
        { name: 'partId', in: 'path', required: true, description: null, schema: { type: 'string' } },
        { name: 'thingId', in: 'path', required: true, description: 'The thing', schema: { type: 'integer' } },
        { name: 'verbose', in: 'query', required: true, description: null, schema: { type: 'boolean' } },
        { name: 'x-trace', in: 'header', required: false, description: null, schema: { type: 'string' } },
      ],
      paginated: false,
      returns: '{ id, maker: { name }, tags: [string] }',
      idempotent: true,
    });
    expect(search?.paginated).toBe(true);
    expect(search?.returns).toBeNull();
    expect(describeCatalog(catalog)).toBe(
      'getPart GET /things/{thingId}/parts/{partId} (partId: string, thingId: integer, verbose: boolean) — Get one part\n' +
        '  returns { id, maker: { name }, tags: [string] }\n' +
        '  not paginated: one call returns everything; do not pass paginate\n' +
        'search GET /search (cursor?: string[])\n' +
        '  paginated by cursor: one call returns one page; pass paginate: true to get every page as { data: [the items of all pages], pages, nextCursor }',
    );
  });

  it('counts GET, and operations marked x-idempotent: true, as safe to repeat', () => {
    const catalog = catalogFromOpenApi({
      openapi: '3.0.3',
      paths: {
        '/orders': { get: { operationId: 'listOrders' }, post: { operationId: 'createOrder' } },
        '/orders/{id}': { put: { operationId: 'replaceOrder', 'x-idempotent': true }, delete: { operationId: 'deleteOrder', 'x-idempotent': 'yes' } },
      },
    });
    expect(Object.fromEntries(catalog.map((op) => [op.operationId, op.idempotent]))).toEqual({
      listOrders: true,
      createOrder: false,
      replaceOrder: true,
      deleteOrder: false,
    });
  });

  it('names the cursor parameter that paginate: true follows, after before cursor, whatever their order', () => {
    const catalog = catalogFromOpenApi({
      openapi: '3.0.3',
      paths: { '/items': { get: { operationId: 'listItems', parameters: [{ name: 'cursor', in: 'query' }, { name: 'after', in: 'query' }] } } },
    });
    expect(describeCatalog(catalog)).toContain('\n  paginated by after: ');
  });

  it('describes a large catalog within its bound, naming the operations it leaves out', () => {
    const paths = Object.fromEntries(
      Array.from({ length: 300 }, (_, i) => [
        `/things${i}/{id}`,
        { get: { operationId: `getThing${i}`, summary: `Get thing ${i} with all of its many documented details`, parameters: [{ name: 'verbose', in: 'query', schema: { type: 'boolean' } }] } },
      ]),
    );
    const described = describeCatalog(catalogFromOpenApi({ openapi: '3.0.3', paths }));
    expect(described.length).toBeLessThanOrEqual(DEFAULT_CATALOG_CHARS);
    expect(described).toContain('getThing0 GET /things0/{id} (id: string, verbose?: boolean) — Get thing 0');
    const note = /\n\(The catalog is abridged to fit: (\d+) of 300 operations are described; the other (\d+) are not shown: getThing(\d+), .*…\.\)$/.exec(described);
    expect(note).not.toBeNull();
    expect(Number(note![1]) + Number(note![2])).toBe(300);
    expect(note![3]).toBe(note![1]);
  });

  it('leaves out only the operations too large for the bound, and lists no enum of long values', () => {
    const huge = Array.from({ length: 300 }, (_, i) => ({ name: `filter_on_a_rather_long_field_name_${i}`, in: 'query', schema: { type: 'string' } }));
    const longValues = Array.from({ length: 3 }, (_, i) => `${'a very long enum value '.repeat(5)}${i}`);
    const described = describeCatalog(
      catalogFromOpenApi({
        openapi: '3.0.3',
        paths: {
          '/search': { get: { operationId: 'search', parameters: huge } },
          '/things': { get: { operationId: 'listThings', parameters: [{ name: 'order', in: 'query', schema: { type: 'string', enum: longValues } }] } },
          '/other': { get: { operationId: 'listOther', parameters: [{ name: 'order', in: 'query', schema: { type: 'string', enum: ['asc', 'desc'] } }] } },
        },
      }),
    );
    expect(described.length).toBeLessThanOrEqual(DEFAULT_CATALOG_CHARS);
    expect(described.split('\n').filter((line) => !line.startsWith(' '))).toEqual([
      'listThings GET /things (order?: string)',
      'listOther GET /other (order?: "asc" | "desc")',
      '(The catalog is abridged to fit: 2 of 3 operations are described; the other 1 are not shown: search.)',
    ]);
  });

  it('refuses a document with a duplicate operationId, and survives circular references', () => {
    expect(() =>
      catalogFromOpenApi({ openapi: '3.0.0', paths: { '/a': { get: { operationId: 'x' } }, '/b': { get: { operationId: 'x' } } } }),
    ).toThrow(/duplicate operationId "x"/);
    const loop = { openapi: '3.0.0', paths: { '/a': { get: { operationId: 'a', parameters: [{ $ref: '#/components/parameters/A' }] } } }, components: { parameters: { A: { $ref: '#/components/parameters/A' } } } };
    expect(catalogFromOpenApi(loop)[0]?.parameters).toEqual([]);
  });
});

// ---- address classification -----------------------------------------------------------------

describe('internalAddressKind', () => {
  it('names every internal range, including IPv4 hidden in IPv6, and passes public addresses', () => {
    const expectations: [string, string | null][] = [
      ['10.0.0.5', 'private'],
      ['172.16.0.1', 'private'],
      ['172.31.255.255', 'private'],
      ['192.168.1.1', 'private'],
      ['127.0.0.1', 'loopback'],
      ['127.8.9.10', 'loopback'],
      ['169.254.169.254', 'cloud metadata'],
      ['169.254.1.1', 'link-local'],
      ['0.0.0.0', 'unspecified'],
      ['100.64.0.1', 'shared (carrier-grade NAT)'],
      ['::1', 'loopback'],
      ['::', 'unspecified'],
      ['fe80::1', 'link-local'],
      ['fe80::1%eth0', 'link-local'],
      ['fc00::1', 'private'],
      ['fd12:3456::1', 'private'],
      ['fd00:ec2::254', 'cloud metadata'],
      ['::ffff:127.0.0.1', 'loopback'],
      ['::ffff:a9fe:a9fe', 'cloud metadata'],
      ['64:ff9b::10.0.0.1', 'private'],
      ['2002:7f00:1::', 'loopback'],
      ['not-an-ip', 'invalid'],
      ['8.8.8.8', null],
      ['172.32.0.1', null],
      ['93.184.216.34', null],
      ['2606:4700:4700::1111', null],
      ['::ffff:8.8.8.8', null],
    ];
    for (const [address, kind] of expectations) expect({ address, kind: internalAddressKind(address) }).toEqual({ address, kind });
  });
});

// ---- refusals before anything is sent --------------------------------------------------------

describe('api.call refuses before sending', () => {
  let stub: StubApi;
  beforeAll(async () => {
    stub = await startStubApi();
  });
  afterAll(async () => {
    await stub?.close();
  });

  function stubCaller(overrides: Partial<ApiCallerOptions> = {}) {
    const sent = { count: 0 };
    const call = createApiCaller({
      baseUrl: `${stub.url}/v1`,
      operations: STUB_OPERATIONS,
      credentials: { authorization: `Bearer ${TOKEN}` },
      limits: LIMITS,
      signal: NEVER_CANCELLED,
      onRequest: () => (sent.count += 1),
      ...overrides,
    });
    return { call, sent };
  }

  async function expectRefused(call: Promise<unknown>, reason: RegExp) {
    const before = stub.requests.length;
    const error = await callError(call);
    expect(error).toMatchObject({ name: 'ApiCallError', code: 'API_CALL_REFUSED', retryable: false });
    expect(error.message).toMatch(reason);
    expect(stub.requests.length).toBe(before);
  }

  it('refuses unknown operations, disallowed methods, unknown or header params, and bad values', async () => {
    const { call, sent } = stubCaller();
    await expectRefused(call('deleteEverything', {}), /unknown operation "deleteEverything"/);
    await expectRefused(call('createUser', {}), /createUser is a POST operation, and API steps may only use GET/);
    await expectRefused(call('searchUsers', { role: 'admin' }), /searchUsers has no parameter "role"; it takes tag, limit, q/);
    await expectRefused(call('searchUsers', { authorization: 'Bearer stolen' }), /has no parameter "authorization"/);
    await expectRefused(call('withHeader', { 'x-tenant': 'other' }), /"x-tenant" is a header, and only the host sets headers/);
    await expectRefused(call('searchUsers', { q: { $ne: 1 } }), /"q" must be a string, a finite number or a boolean/);
    await expectRefused(call('searchUsers', { limit: Number.NaN }), /"limit" must be/);
    await expectRefused(call('needsQuery', {}), /missing query parameter "q"/);
    await expectRefused(call('getUser', {}), /missing path parameter "id"/);
    await expectRefused(call('getUser', { id: true }), /path parameter "id" must be a string or a number/);
    for (const id of ['', '.', '..']) await expectRefused(call('getUser', { id }), /cannot be empty, "\." or "\.\."/);
    await expectRefused(call('getUser', { id: '\ud800' }), /not valid Unicode/);
    await expectRefused(call('searchUsers', { paginate: true }), /not paginated/);
    await expectRefused(call('listPages', { paginate: 'yes' }), /paginate must be true or false/);
    await expectRefused(call('getUser', [] as unknown as Record<string, unknown>), /params must be an object/);
    expect(sent.count).toBe(0);
  });

  it('allows another method only when the host allows it', async () => {
    const { call, sent } = stubCaller({ allowedMethods: ['GET', 'POST'] });
    await call('createUser', {});
    expect(stub.requests.at(-1)).toMatchObject({ method: 'POST', url: '/v1/users' });
    expect(sent.count).toBe(1);
  });

  it('records a call that is not safe to repeat before it is sent, and only such a call', async () => {
    const order: string[] = [];
    const { call } = stubCaller({
      allowedMethods: ['GET', 'POST', 'PUT'],
      onRequest: () => order.push('sent'),
      beforeUnsafeCall: async () => {
        order.push('recorded');
      },
    });
    await call('getUser', { id: 1 });
    await call('replaceUser', { id: 1 });
    expect(order).toEqual(['sent', 'sent']);
    await call('createUser', {});
    expect(order).toEqual(['sent', 'sent', 'recorded', 'sent']);
    // A record that fails (the lease was lost, say) sends nothing.
    const before = stub.requests.length;
    const { call: failing } = stubCaller({
      allowedMethods: ['POST'],
      beforeUnsafeCall: async () => {
        throw new Error('the lease is gone');
      },
    });
    await expect(failing('createUser', {})).rejects.toThrow('the lease is gone');
    expect(stub.requests.length).toBe(before);
  });

  it('refuses a public hostname that resolves to an internal address, without connecting', async () => {
    const internal = ['10.0.0.5', '127.0.0.1', '169.254.169.254', '::1', '192.168.0.10', 'fd00::1', 'fe80::1', '::ffff:127.0.0.1', '0.0.0.0'];
    for (const address of internal) {
      const lookup = vi.fn(async () => [address]);
      const { call, sent } = stubCaller({ baseUrl: 'https://api.example.com/v2', lookup });
      const error = await callError(call('getUser', { id: 1 }));
      expect(error.code).toBe('API_CALL_REFUSED');
      expect(error.message).toContain(`api.example.com resolves to ${address}, a ${internalAddressKind(address)} address`);
      expect(lookup).toHaveBeenCalledWith('api.example.com');
      expect(sent.count).toBe(0);
    }
  });

  it('refuses when any one of the resolved addresses is internal', async () => {
    const lookup = vi.fn(async () => ['93.184.216.34', '10.0.0.5']);
    const { call, sent } = stubCaller({ baseUrl: 'https://api.example.com', lookup });
    expect((await callError(call('getUser', { id: 1 }))).message).toMatch(/resolves to 10\.0\.0\.5, a private address/);
    expect(sent.count).toBe(0);
  });

  it('lets localhost names reach loopback only, and never cloud metadata, even as the base URL', async () => {
    const lookup = vi.fn(async () => ['10.0.0.5']);
    const local = stubCaller({ baseUrl: 'http://localhost:9', lookup });
    await expectRefused(local.call('getUser', { id: 1 }), /localhost resolves to 10\.0\.0\.5, a private address/);
    const metadata = stubCaller({ baseUrl: 'http://169.254.169.254' });
    await expectRefused(metadata.call('getUser', { id: 1 }), /169\.254\.169\.254 is a cloud metadata address/);
    expect(local.sent.count + metadata.sent.count).toBe(0);
  });

  it('fails, retryably, when the name does not resolve', async () => {
    const lookup = vi.fn(async () => {
      throw Object.assign(new Error('getaddrinfo ENOTFOUND api.example.com'), { code: 'ENOTFOUND' });
    });
    const { call, sent } = stubCaller({ baseUrl: 'https://api.example.com', lookup });
    const error = await callError(call('getUser', { id: 1 }));
    expect(error).toMatchObject({ code: 'API_CALL_FAILED', retryable: true });
    expect(error.message).toMatch(/could not resolve api\.example\.com: .*ENOTFOUND/);
    expect(sent.count).toBe(0);
  });

  it('rejects bad configuration when the caller is created', () => {
    const base = { operations: STUB_OPERATIONS, credentials: {}, limits: LIMITS, signal: NEVER_CANCELLED };
    expect(() => createApiCaller({ ...base, baseUrl: 'ftp://example.com' })).toThrow(/http/);
    expect(() => createApiCaller({ ...base, baseUrl: 'https://user:pw@example.com' })).toThrow(/credentials/);
    expect(() => createApiCaller({ ...base, baseUrl: 'not a url' })).toThrow(/not a URL/);
    expect(() => createApiCaller({ ...base, baseUrl: stub.url, credentials: { host: 'evil.example' } })).toThrow(/host/);
    expect(() => createApiCaller({ ...base, baseUrl: stub.url, credentials: { 'x-key': 'a\r\nx-injected: 1' } })).toThrow(/line break/);
  });
});

// ---- against a local stub API -----------------------------------------------------------------

describe('api.call against a local API', () => {
  let stub: StubApi;
  beforeAll(async () => {
    stub = await startStubApi();
  });
  afterAll(async () => {
    await stub?.close();
  });

  function stubCaller(overrides: Partial<ApiCallerOptions> = {}) {
    const sent = { count: 0 };
    const call = createApiCaller({
      baseUrl: `${stub.url}/v1/`,
      operations: STUB_OPERATIONS,
      credentials: { authorization: `Bearer ${TOKEN}`, 'X-Api-Key': 'key-123' },
      limits: LIMITS,
      signal: NEVER_CANCELLED,
      onRequest: () => (sent.count += 1),
      ...overrides,
    });
    return { call, sent };
  }

  it('encodes path values so they cannot leave their segment, and repeats array query keys', async () => {
    const { call } = stubCaller();
    expect(await call('getUser', { id: '../openapi.json' })).toEqual({ path: '/v1/users/..%2Fopenapi.json', query: '', received: 'ok' });
    await call('getUser', { id: 'a/b?c=1#d e' });
    expect(stub.requests.at(-1)?.url).toBe('/v1/users/a%2Fb%3Fc%3D1%23d%20e');
    await call('getUser', { id: 42 });
    expect(stub.requests.at(-1)?.url).toBe('/v1/users/42');
    await call('searchUsers', { tag: ['a', 'b&c'], limit: 3, q: null });
    expect(stub.requests.at(-1)?.url).toBe('/v1/users?tag=a&tag=b%26c&limit=3');
  });

  it('sends the credentials as headers, and they never appear in the returned value', async () => {
    const { call } = stubCaller();
    const value = await call('getUser', { id: 7 });
    expect(stub.requests.at(-1)?.headers).toMatchObject({ authorization: `Bearer ${TOKEN}`, 'x-api-key': 'key-123', accept: 'application/json' });
    expect(JSON.stringify(value)).not.toContain(TOKEN);
    expect(JSON.stringify(value)).not.toContain('key-123');
  });

  it('follows nextCursor with paginate: true, and stops at maxPages with a cursor to resume from', async () => {
    const { call, sent } = stubCaller();
    expect(await call('listPages', { paginate: true })).toEqual({ data: [1, 2, 3, 4, 5], pages: 3, nextCursor: null });
    expect(stub.requests.slice(-3).map((r) => r.url)).toEqual(['/v1/pages', '/v1/pages?after=p2', '/v1/pages?after=p3']);
    expect(sent.count).toBe(3);

    const capped = stubCaller({ limits: { ...LIMITS, maxPages: 4 } });
    expect(await capped.call('listEndless', { paginate: true, after: '10' })).toEqual({ data: [10, 11, 12, 13], pages: 4, nextCursor: '14' });
    expect(capped.sent.count).toBe(4);

    const error = await callError(call('notAPage', { paginate: true }));
    expect(error).toMatchObject({ code: 'API_CALL_FAILED' });
    expect(error.message).toMatch(/cannot be paginated/);
  });

  it('does not follow a redirect', async () => {
    const { call, sent } = stubCaller();
    const before = stub.requests.length;
    const error = await callError(call('followRedirect', {}));
    expect(error).toMatchObject({ code: 'API_CALL_FAILED', status: 302, retryable: false });
    expect(error.message).toMatch(/redirects are not followed/);
    expect(stub.requests.length).toBe(before + 1);
    expect(sent.count).toBe(1);
  });

  it('stops reading a response beyond maxResponseBytes, with or without a content-length', async () => {
    const { call } = stubCaller({ limits: { ...LIMITS, maxResponseBytes: MiB } });
    for (const operationId of ['getBig', 'getBigDeclared']) {
      const error = await callError(call(operationId, {}));
      expect(error).toMatchObject({ code: 'API_RESPONSE_TOO_LARGE', retryable: false });
      expect(error.message).toBe(`the response is larger than ${MiB} bytes`);
    }
  });

  it('caps the pages of a paginated call together at maxResponseBytes', async () => {
    const { call } = stubCaller({ limits: { ...LIMITS, maxResponseBytes: 60, maxPages: 50 } });
    const error = await callError(call('listEndless', { paginate: true }));
    expect(error).toMatchObject({ code: 'API_RESPONSE_TOO_LARGE' });
    expect(error.message).toBe('the pages together are larger than 60 bytes');
  });

  it('fails on error statuses, retryable for 429 and 5xx, with the API message', async () => {
    const { call } = stubCaller();
    expect(await callError(call('getBroken', {}))).toMatchObject({
      code: 'API_CALL_FAILED', status: 500, retryable: true, message: 'the API answered 500: database on fire',
    });
    expect(await callError(call('getBusy', {}))).toMatchObject({ code: 'API_CALL_FAILED', status: 429, retryable: true, message: 'the API answered 429: slow down' });
    expect(await callError(call('getMissing', {}))).toMatchObject({ code: 'API_CALL_FAILED', status: 404, retryable: false });
  });

  it('fails on a body that is not JSON, and on a response that does not finish in time', async () => {
    const { call } = stubCaller({ limits: { ...LIMITS, requestTimeoutMs: 300 } });
    expect(await callError(call('getHtml', {}))).toMatchObject({ code: 'API_CALL_FAILED', message: 'the API answered with a body that is not JSON' });
    expect(await callError(call('getSlow', {}))).toMatchObject({ code: 'API_CALL_FAILED', retryable: true, message: 'no complete response within 300 ms' });
  });

  it('fails, retryably, when nothing listens', async () => {
    const closed = await startStubApi();
    await closed.close();
    const error = await callError(createApiCaller({ baseUrl: closed.url, operations: STUB_OPERATIONS, credentials: {}, limits: LIMITS, signal: NEVER_CANCELLED })('getUser', { id: 1 }));
    expect(error).toMatchObject({ code: 'API_CALL_FAILED', retryable: true });
    expect(error.message).toMatch(/ECONNREFUSED/);
  });

  it('connects to the address it checked, keeping the Host header, and checks again on every request', async () => {
    const port = new URL(stub.url).port;
    const answers = [['127.0.0.1'], ['10.0.0.5']];
    const lookup = vi.fn(async () => answers.shift() ?? []);
    const { call, sent } = stubCaller({ baseUrl: `http://tenant.localhost:${port}/v1`, lookup });
    expect(await call('getUser', { id: 1 })).toMatchObject({ path: '/v1/users/1' });
    expect(stub.requests.at(-1)?.headers.host).toBe(`tenant.localhost:${port}`);
    expect(connectedHosts).toContain('tenant.localhost');
    const rebound = await callError(call('getUser', { id: 2 }));
    expect(rebound).toMatchObject({ code: 'API_CALL_REFUSED' });
    expect(rebound.message).toMatch(/tenant\.localhost resolves to 10\.0\.0\.5/);
    expect(lookup).toHaveBeenCalledTimes(2);
    expect(sent.count).toBe(1);
  });

  it('lets an error thrown by onRequest through unchanged, before sending', async () => {
    const limit = new Error('request limit reached');
    const before = stub.requests.length;
    const { call } = stubCaller({
      onRequest: () => {
        throw limit;
      },
    });
    await expect(call('getUser', { id: 1 })).rejects.toBe(limit);
    expect(stub.requests.length).toBe(before);
  });
});

// ---- cancelled by the caller's signal -------------------------------------------------------------

describe("api.call ends when the caller's signal aborts", () => {
  let stub: StubApi;
  beforeAll(async () => {
    stub = await startStubApi();
  });
  afterAll(async () => {
    await stub?.close();
  });

  // A request timeout far beyond the test's own, so only the signal can end these requests in time.
  const NO_TIMEOUT_IN_SIGHT: ApiCallLimits = { ...LIMITS, requestTimeoutMs: 600_000 };

  function cancellableCaller(overrides: Partial<ApiCallerOptions> = {}) {
    const cancel = new AbortController();
    const sent = { count: 0 };
    const call = createApiCaller({
      baseUrl: `${stub.url}/v1`,
      operations: STUB_OPERATIONS,
      credentials: {},
      limits: NO_TIMEOUT_IN_SIGHT,
      signal: cancel.signal,
      onRequest: () => (sent.count += 1),
      ...overrides,
    });
    return { call, cancel, sent };
  }

  const cancelled = { code: 'API_CALL_FAILED', retryable: false, message: 'the request was cancelled before the API answered' };

  it('closes a request waiting for its answer, or for the rest of its body, as soon as the signal aborts', async () => {
    for (const operationId of ['getUnanswered', 'getSlow']) {
      const { call, cancel } = cancellableCaller();
      const failure = callError(call(operationId, {}));
      const request = await stub.requestTo(operationId === 'getSlow' ? '/v1/slow' : '/v1/unanswered');
      cancel.abort();
      expect(await failure).toMatchObject(cancelled);
      await request.closed;
    }
  });

  it('ends a paginated call at the page in flight, and asks for no further page', async () => {
    const { call, cancel, sent } = cancellableCaller();
    const failure = callError(call('listPagesThenSilence', { paginate: true }));
    const secondPage = await stub.requestTo('/v1/pages-then-silence?after=p2');
    cancel.abort();
    expect(await failure).toMatchObject(cancelled);
    await secondPage.closed;
    expect(sent.count).toBe(2);
    expect(stub.requests.filter((request) => request.url.startsWith('/v1/pages-then-silence'))).toHaveLength(2);
  });

  it('ends a DNS lookup that has not answered', async () => {
    let lookupStarted: () => void = () => undefined;
    const started = new Promise<void>((resolve) => (lookupStarted = resolve));
    const lookup = vi.fn(() => {
      lookupStarted();
      return new Promise<string[]>(() => undefined);
    });
    const { call, cancel, sent } = cancellableCaller({ baseUrl: 'https://api.example.com', lookup });
    const failure = callError(call('getUser', { id: 1 }));
    await started;
    cancel.abort();
    expect(await failure).toMatchObject(cancelled);
    expect(sent.count).toBe(0);
  });

  it('fails a call made after the signal aborted without looking up or sending anything', async () => {
    const lookup = vi.fn(async () => ['127.0.0.1']);
    const { call, cancel, sent } = cancellableCaller({ baseUrl: `http://tenant.localhost:${new URL(stub.url).port}/v1`, lookup });
    cancel.abort();
    const before = stub.requests.length;
    expect(await callError(call('getUser', { id: 1 }))).toMatchObject(cancelled);
    expect(lookup).not.toHaveBeenCalled();
    expect(sent.count).toBe(0);
    expect(stub.requests.length).toBe(before);
  });
});

// ---- through the real demo API ----------------------------------------------------------------

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`api.call through the demo API on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    let api: DemoApi;
    let operations: ApiOperation[];
    beforeAll(async () => {
      server = await startTestServer(backend);
      api = await startDemoApi({ database: server.app.database, schema: DEMO_TENANT_SCHEMA, token: TOKEN });
      operations = catalogFromOpenApi(await (await fetch(`${api.url}/openapi.json`)).json());
    });
    afterAll(async () => {
      await api?.close();
      await server?.close();
    });

    function demoCaller(overrides: Partial<ApiCallerOptions> = {}) {
      const sent = { count: 0 };
      const call = createApiCaller({
        baseUrl: api.url,
        operations,
        credentials: { authorization: `Bearer ${TOKEN}` },
        limits: LIMITS,
        signal: NEVER_CANCELLED,
        onRequest: () => (sent.count += 1),
        ...overrides,
      });
      return { call, sent };
    }

    async function count(sql: string): Promise<number> {
      const { rows } = await server.app.database.runReadOnly({ sql, params: [], timeoutMs: 5_000, searchPath: DEMO_TENANT_SCHEMA });
      return Number(rows[0]?.n);
    }

    it('calls operations with path and query parameters', async () => {
      const { call, sent } = demoCaller();
      expect(await call('getUser', { id: 12 })).toMatchObject({ id: 12, manager_id: 11 });
      expect(await call('getUser', { id: '12' })).toMatchObject({ id: 12 });
      const page = (await call('listUsers', { limit: 4, status: 'suspended' })) as { data: { status: string }[]; nextCursor: string };
      expect(page.data).toHaveLength(4);
      expect(page.data.every((user) => user.status === 'suspended')).toBe(true);
      const next = (await call('listUsers', { limit: 4, status: 'suspended', after: page.nextCursor })) as { data: { id: number }[] };
      expect(next.data[0]?.id).toBeGreaterThan(Math.max(...page.data.map((user) => (user as unknown as { id: number }).id)));
      const groups = (await call('listUserGroups', { id: 21 })) as { data: { role: string }[] };
      expect(groups.data.length).toBe(await count('SELECT count(*)::int AS n FROM group_members WHERE user_id = 21'));
      expect(sent.count).toBe(5);
    });

    it('concatenates every page with paginate: true', async () => {
      const { call, sent } = demoCaller();
      const users = (await call('listUsers', { limit: 60, paginate: true })) as { data: { id: number }[]; pages: number; nextCursor: null };
      const total = await count('SELECT count(*)::int AS n FROM users');
      expect(users.data).toHaveLength(total);
      expect(new Set(users.data.map((user) => user.id)).size).toBe(total);
      expect(users).toMatchObject({ pages: Math.ceil(total / 60), nextCursor: null });
      expect(sent.count).toBe(users.pages);

      const members = (await call('listGroupMembers', { id: 3, limit: 10, paginate: true })) as { data: unknown[] };
      expect(members.data).toHaveLength(await count('SELECT count(*)::int AS n FROM group_members WHERE group_id = 3'));
    });

    it("turns the API's 400, 401 and 404 into API_CALL_FAILED with the status", async () => {
      const { call } = demoCaller();
      expect(await callError(call('listUsers', { limit: 500 }))).toMatchObject({ code: 'API_CALL_FAILED', status: 400, retryable: false });
      expect(await callError(call('getUser', { id: 999_999 }))).toMatchObject({ status: 404, message: 'the API answered 404: no user with id 999999' });
      const traversal = await callError(call('getUser', { id: '../openapi.json' }));
      expect(traversal).toMatchObject({ status: 400, message: 'the API answered 400: id must be a positive integer' });
      const anonymous = demoCaller({ credentials: {} });
      expect(await callError(anonymous.call('listApplications', {}))).toMatchObject({ status: 401 });
    });

    it('never returns the credentials', async () => {
      const { call } = demoCaller();
      for (const [operationId, params] of [['listApplications', {}], ['getUser', { id: 1 }], ['listUsers', { limit: 100, paginate: true }]] as const) {
        expect(JSON.stringify(await call(operationId, params))).not.toContain(TOKEN);
      }
    });
  });
}
