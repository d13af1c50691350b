import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Database } from '../db/client.js';
import { DEFAULT_PAGE_SIZE, demoOpenApiDocument, GROUP_TYPES, MAX_PAGE_SIZE, USER_STATUSES } from './openapi.js';

/** The demo tenant's HTTP API: read-only JSON over its directory dataset, for API steps to call. */
export interface DemoApi {
  url: string;
  close(): Promise<void>;
}

export interface DemoApiOptions {
  database: Database;
  /** The tenant's data schema, e.g. tenant_demo. */
  schema: string;
  /** Every request except GET /openapi.json must send `Authorization: Bearer <token>`. */
  token: string;
  host?: string;
  port?: number;
  /** Called with unexpected errors (answered as 500), e.g. to log them. */
  onError?: (error: unknown) => void;
}

const QUERY_TIMEOUT_MS = 5_000;
const MAX_INT4 = 2_147_483_647;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

interface RouteContext {
  pathParams: string[];
  query: URLSearchParams;
  run(sql: string, params: string[]): Promise<Record<string, unknown>[]>;
}

interface Route {
  pattern: RegExp;
  queryParams: readonly string[];
  handle(context: RouteContext): Promise<unknown>;
}

/** Postgres timestamps as ISO 8601 in UTC, the same on PGlite and postgres.js. */
const iso = (column: string) => `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
const USER_COLUMNS = `u.id, u.email, u.name, u.department, u.title, u.status, u.mfa_enabled, u.manager_id,
  ${iso('u.created_at')} AS created_at, ${iso('u.last_login_at')} AS last_login_at`;
const GROUP_COLUMNS = `g.id, g.name, g.type, g.description, ${iso('g.created_at')} AS created_at`;
const APPLICATION_COLUMNS = `a.id, a.name, a.vendor, a.category, a.sso_enabled, ${iso('a.created_at')} AS created_at`;

const ROUTES: Route[] = [
  { pattern: /^\/users$/, queryParams: ['limit', 'after', 'status', 'department'], handle: listUsers },
  { pattern: /^\/users\/([^/]+)$/, queryParams: [], handle: getUser },
  { pattern: /^\/users\/([^/]+)\/groups$/, queryParams: [], handle: listUserGroups },
  { pattern: /^\/users\/([^/]+)\/applications$/, queryParams: [], handle: listUserApplications },
  { pattern: /^\/groups$/, queryParams: ['limit', 'after', 'type'], handle: listGroups },
  { pattern: /^\/groups\/([^/]+)\/members$/, queryParams: ['limit', 'after'], handle: listGroupMembers },
  { pattern: /^\/applications$/, queryParams: [], handle: listApplications },
];

export async function startDemoApi(options: DemoApiOptions): Promise<DemoApi> {
  if (!options.token) throw new Error('the demo API needs a non-empty token');
  const expectedToken = digest(options.token);
  let url = '';
  const run: RouteContext['run'] = async (sql, params) =>
    (await options.database.runReadOnly({ sql, params, timeoutMs: QUERY_TIMEOUT_MS, searchPath: options.schema })).rows;

  const server = createServer((request, response) => {
    answer(request, response).catch((error: unknown) => {
      options.onError?.(error);
      if (!response.headersSent) sendJson(response, 500, { error: 'internal error' });
      else response.destroy();
    });
  });

  async function answer(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const requestUrl = new URL(request.url ?? '/', 'http://demo-api.invalid');
    if (requestUrl.pathname === '/openapi.json' && request.method === 'GET') {
      return sendJson(response, 200, demoOpenApiDocument(url));
    }
    if (!hasToken(request, expectedToken)) {
      return sendJson(response, 401, { error: 'missing or invalid bearer token' }, { 'www-authenticate': 'Bearer' });
    }
    const match = matchRoute(requestUrl.pathname);
    if (!match) return sendJson(response, 404, { error: `no such resource: ${requestUrl.pathname}` });
    if (request.method !== 'GET') return sendJson(response, 405, { error: 'only GET is allowed' }, { allow: 'GET' });
    try {
      checkQueryParams(requestUrl.searchParams, match.route.queryParams);
      const body = await match.route.handle({ pathParams: match.pathParams, query: requestUrl.searchParams, run });
      sendJson(response, 200, body);
    } catch (error) {
      if (!(error instanceof HttpError)) throw error;
      sendJson(response, error.status, { error: error.message });
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  url = serverUrl(server.address() as AddressInfo);
  return {
    url,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        // Keep-alive sockets would otherwise hold close() open until they time out.
        server.closeAllConnections();
      }),
  };
}

function serverUrl(address: AddressInfo): string {
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}`;
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

/** Compares digests in constant time, so response timing does not leak the token. */
function hasToken(request: IncomingMessage, expected: Buffer): boolean {
  const match = /^Bearer +(\S+)\s*$/i.exec(request.headers.authorization ?? '');
  return match?.[1] !== undefined && timingSafeEqual(digest(match[1]), expected);
}

function matchRoute(pathname: string): { route: Route; pathParams: string[] } | undefined {
  for (const route of ROUTES) {
    const match = route.pattern.exec(pathname);
    if (match) return { route, pathParams: match.slice(1) };
  }
  return undefined;
}

function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  response.end(text);
}

function checkQueryParams(query: URLSearchParams, allowed: readonly string[]): void {
  const seen = new Set<string>();
  for (const name of query.keys()) {
    if (!allowed.includes(name)) throw new HttpError(400, `unknown query parameter "${name}"`);
    if (seen.has(name)) throw new HttpError(400, `query parameter "${name}" is given more than once`);
    seen.add(name);
  }
}

function parseId(raw: string | undefined, name: string): number {
  const id = /^[1-9]\d{0,9}$/.test(raw ?? '') ? Number(raw) : NaN;
  if (!(id <= MAX_INT4)) throw new HttpError(400, `${name} must be a positive integer`);
  return id;
}

function parseLimit(query: URLSearchParams): number {
  const raw = query.get('limit');
  if (raw === null) return DEFAULT_PAGE_SIZE;
  const limit = /^\d{1,3}$/.test(raw) ? Number(raw) : NaN;
  if (!(limit >= 1 && limit <= MAX_PAGE_SIZE)) {
    throw new HttpError(400, `limit must be an integer from 1 to ${MAX_PAGE_SIZE}`);
  }
  return limit;
}

function encodeCursor(id: number): string {
  return Buffer.from(`id:${id}`).toString('base64url');
}

/** Accepts only cursors this API issued: the canonical encoding of a valid id. */
function parseCursor(query: URLSearchParams): number | null {
  const raw = query.get('after');
  if (raw === null) return null;
  const decoded = /^[A-Za-z0-9_-]{1,32}$/.test(raw) ? /^id:([1-9]\d{0,9})$/.exec(Buffer.from(raw, 'base64url').toString()) : null;
  const id = decoded ? Number(decoded[1]) : NaN;
  if (!(id <= MAX_INT4) || encodeCursor(id) !== raw) {
    throw new HttpError(400, 'after must be a nextCursor returned by this API');
  }
  return id;
}

function parseChoice<T extends string>(query: URLSearchParams, name: string, choices: readonly T[]): T | null {
  const raw = query.get(name);
  if (raw === null) return null;
  if (!(choices as readonly string[]).includes(raw)) throw new HttpError(400, `${name} must be one of ${choices.join(', ')}`);
  return raw as T;
}

function parseText(query: URLSearchParams, name: string): string | null {
  const raw = query.get(name);
  if (raw === null) return null;
  if (raw.length < 1 || raw.length > 100) throw new HttpError(400, `${name} must be 1 to 100 characters`);
  return raw;
}

/** Collects bind parameters and hands back their placeholders, so values never enter the SQL text. */
function bindings() {
  const values: string[] = [];
  return { values, bind: (value: string | number) => `$${values.push(String(value))}` };
}

interface PageQuery {
  select: string;
  from: string;
  idColumn: string;
  conditions: string[];
  bound: ReturnType<typeof bindings>;
}

/** Keyset pagination on the id: one row past the page tells whether another page follows. */
async function readPage(context: RouteContext, page: PageQuery) {
  const limit = parseLimit(context.query);
  const after = parseCursor(context.query);
  const { bound } = page;
  const conditions = [...page.conditions];
  if (after !== null) conditions.push(`${page.idColumn} > ${bound.bind(after)}::int`);
  const where = conditions.length > 0 ? `WHERE ${conditions.join(' AND ')}` : '';
  const rows = await context.run(
    `SELECT ${page.select} FROM ${page.from} ${where} ORDER BY ${page.idColumn} LIMIT ${bound.bind(limit + 1)}::int`,
    bound.values,
  );
  const data = rows.slice(0, limit);
  const last = data.at(-1);
  return { data, nextCursor: rows.length > limit && last ? encodeCursor(Number(last.id)) : null };
}

async function listUsers(context: RouteContext) {
  const status = parseChoice(context.query, 'status', USER_STATUSES);
  const department = parseText(context.query, 'department');
  const bound = bindings();
  const conditions: string[] = [];
  if (status !== null) conditions.push(`u.status = ${bound.bind(status)}`);
  if (department !== null) conditions.push(`u.department = ${bound.bind(department)}`);
  return readPage(context, { select: USER_COLUMNS, from: 'users u', idColumn: 'u.id', conditions, bound });
}

async function getUser(context: RouteContext) {
  const id = parseId(context.pathParams[0], 'id');
  const [user] = await context.run(`SELECT ${USER_COLUMNS} FROM users u WHERE u.id = $1::int`, [String(id)]);
  if (!user) throw new HttpError(404, `no user with id ${id}`);
  return user;
}

async function requireRow(context: RouteContext, table: 'users' | 'groups', id: number, noun: string): Promise<void> {
  const rows = await context.run(`SELECT 1 FROM ${table} WHERE id = $1::int`, [String(id)]);
  if (rows.length === 0) throw new HttpError(404, `no ${noun} with id ${id}`);
}

async function listUserGroups(context: RouteContext) {
  const id = parseId(context.pathParams[0], 'id');
  await requireRow(context, 'users', id, 'user');
  const data = await context.run(
    `SELECT ${GROUP_COLUMNS}, m.role, ${iso('m.added_at')} AS added_at
     FROM group_members m JOIN groups g ON g.id = m.group_id WHERE m.user_id = $1::int ORDER BY g.id`,
    [String(id)],
  );
  return { data };
}

async function listUserApplications(context: RouteContext) {
  const id = parseId(context.pathParams[0], 'id');
  await requireRow(context, 'users', id, 'user');
  const data = await context.run(
    `SELECT ${APPLICATION_COLUMNS}, ${iso('aa.assigned_at')} AS assigned_at, ${iso('aa.last_used_at')} AS last_used_at
     FROM app_assignments aa JOIN applications a ON a.id = aa.app_id WHERE aa.user_id = $1::int ORDER BY a.id`,
    [String(id)],
  );
  return { data };
}

async function listGroups(context: RouteContext) {
  const type = parseChoice(context.query, 'type', GROUP_TYPES);
  const bound = bindings();
  const conditions = type === null ? [] : [`g.type = ${bound.bind(type)}`];
  return readPage(context, { select: GROUP_COLUMNS, from: 'groups g', idColumn: 'g.id', conditions, bound });
}

async function listGroupMembers(context: RouteContext) {
  const id = parseId(context.pathParams[0], 'id');
  // Bad parameters answer 400 before the group lookup can answer 404.
  parseLimit(context.query);
  parseCursor(context.query);
  await requireRow(context, 'groups', id, 'group');
  const bound = bindings();
  return readPage(context, {
    select: `${USER_COLUMNS}, m.role, ${iso('m.added_at')} AS added_at`,
    from: 'group_members m JOIN users u ON u.id = m.user_id',
    idColumn: 'u.id',
    conditions: [`m.group_id = ${bound.bind(id)}::int`],
    bound,
  });
}

async function listApplications(context: RouteContext) {
  return { data: await context.run(`SELECT ${APPLICATION_COLUMNS} FROM applications a ORDER BY a.id`, []) };
}
