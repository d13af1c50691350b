/** The host side of `api.call(operationId, params)`: checks everything first, then sends the request (or one per page). */
import type { LookupAddress, LookupOptions } from 'node:dns';
import { lookup as dnsLookup } from 'node:dns/promises';
import { request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { inSpan } from '../observability/spans.js';
import { JsonText, NOT_JSON_MESSAGE } from '../sandbox/json-text.js';
import { cursorParameterOf, type ApiOperation, type ApiParameter } from './catalog.js';

export type ApiCallErrorCode = 'API_CALL_REFUSED' | 'API_CALL_FAILED' | 'API_RESPONSE_TOO_LARGE';

export class ApiCallError extends Error {
  override name = 'ApiCallError';
  readonly retryable: boolean;
  readonly status?: number;

  constructor(
    readonly code: ApiCallErrorCode,
    message: string,
    details: { retryable?: boolean; status?: number } = {},
  ) {
    super(message);
    this.retryable = details.retryable ?? false;
    if (details.status !== undefined) this.status = details.status;
  }
}

/** The bounds of the requests a caller makes; the service supplies them from its configuration (config.sandbox). */
export interface ApiCallLimits {
  /** Enforced while reading; with `paginate: true` it caps all pages together. */
  maxResponseBytes: number;
  /** One request, its DNS lookup included. */
  requestTimeoutMs: number;
  /** Pages one `paginate: true` call follows. */
  maxPages: number;
}

export interface ApiCallerOptions {
  /** The tenant's API base URL, e.g. http://127.0.0.1:40123 or https://api.example.com/v2. */
  baseUrl: string;
  operations: ApiOperation[];
  /** Headers the host adds to every request (e.g. { authorization: 'Bearer …' }); never shown to the program. */
  credentials: Record<string, string>;
  allowedMethods?: readonly string[];
  limits: ApiCallLimits;
  /** Aborting ends every request of this caller at once (DNS lookups and pages included), and fails later calls. */
  signal: AbortSignal;
  lookup?: (hostname: string) => Promise<string[]>;
  /** Called once per HTTP request, just before it is sent. */
  onRequest?: () => void;
  /**
   * Awaited before the first request of an operation that is not safe to repeat (not idempotent): the step
   * records that it made one, so that a run resumed after a crash does not send it again.
   */
  beforeUnsafeCall?: () => Promise<void>;
  /**
   * Hand a single call's body on as JsonText instead of parsing it here: the sandbox parses it on its own
   * thread, so that a response never takes this heap's room.
   * Paginated calls are parsed, to join their pages.
   */
  keepBodiesAsText?: boolean;
}

export type ApiCaller = (operationId: string, params: Record<string, unknown>) => Promise<unknown>;

export interface PaginatedResult {
  data: unknown[];
  pages: number;
  /** null when every page was read; otherwise maxPages stopped the walk, and this resumes it as `after`. */
  nextCursor: string | null;
}

const DEFAULT_ALLOWED_METHODS = ['GET'] as const;
const ERROR_BODY_BYTES = 4096;
const PAGINATE_PARAM = 'paginate';
const HOST_ONLY_HEADERS = new Set(['host', 'content-length', 'transfer-encoding', 'connection']);

// ---- addresses ------------------------------------------------------------------------------

type AddressKind = string;

/** Ranges an API step must not reach; the first match names the refusal, so specific ranges come first. */
const BLOCKED_RANGES: [AddressKind, string, number, 'ipv4' | 'ipv6'][] = [
  ['cloud metadata', '169.254.169.254', 32, 'ipv4'],
  ['cloud metadata', '100.100.100.200', 32, 'ipv4'],
  ['cloud metadata', 'fd00:ec2::254', 128, 'ipv6'],
  ['cloud metadata', '168.63.129.16', 32, 'ipv4'],
  ['unspecified', '0.0.0.0', 8, 'ipv4'],
  ['private', '10.0.0.0', 8, 'ipv4'],
  ['shared (carrier-grade NAT)', '100.64.0.0', 10, 'ipv4'],
  ['loopback', '127.0.0.0', 8, 'ipv4'],
  ['link-local', '169.254.0.0', 16, 'ipv4'],
  ['private', '172.16.0.0', 12, 'ipv4'],
  ['reserved', '192.0.0.0', 24, 'ipv4'],
  ['private', '192.168.0.0', 16, 'ipv4'],
  ['reserved', '198.18.0.0', 15, 'ipv4'],
  ['multicast', '224.0.0.0', 4, 'ipv4'],
  ['reserved', '240.0.0.0', 4, 'ipv4'],
  ['unspecified', '::', 128, 'ipv6'],
  ['loopback', '::1', 128, 'ipv6'],
  ['reserved', '::', 96, 'ipv6'],
  ['reserved', '2001::', 32, 'ipv6'],
  ['translated (local-use NAT64)', '64:ff9b:1::', 48, 'ipv6'],
  ['translated (SIIT)', '::ffff:0:0', 96, 'ipv6'],
  ['discard-only', '100::', 64, 'ipv6'],
  ['private', 'fc00::', 7, 'ipv6'],
  ['link-local', 'fe80::', 10, 'ipv6'],
  ['site-local', 'fec0::', 10, 'ipv6'],
  ['multicast', 'ff00::', 8, 'ipv6'],
];

const BLOCK_LISTS = BLOCKED_RANGES.map(([kind, network, prefix, family]) => {
  const list = new BlockList();
  list.addSubnet(network, prefix, family);
  return { kind, list, family };
});

/** The kind of internal address this is, or null for a public one. */
export function internalAddressKind(address: string): AddressKind | null {
  const bare = address.split('%')[0] ?? address; // drop an IPv6 zone id (fe80::1%eth0)
  const family = isIP(bare);
  if (family === 0) return 'invalid';
  const embedded = family === 6 ? embeddedIpv4(ipv6Hextets(bare)) : null;
  if (embedded !== null) return internalAddressKind(embedded);
  const type = family === 4 ? 'ipv4' : 'ipv6';
  return BLOCK_LISTS.find((entry) => entry.family === type && entry.list.check(bare, type))?.kind ?? null;
}

function ipv6Hextets(address: string): number[] {
  let text = address.toLowerCase();
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const headParts = head ? head.split(':') : [];
  const tailParts = tail ? tail.split(':') : [];
  const zeros: string[] = tail === undefined ? [] : Array<string>(8 - headParts.length - tailParts.length).fill('0');
  return [...headParts, ...zeros, ...tailParts].map((part) => parseInt(part, 16));
}

/** IPv4-mapped (::ffff:a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses reach an IPv4 address. */
function embeddedIpv4(h: number[]): string | null {
  const v4 = (high = 0, low = 0) => [high >> 8, high & 255, low >> 8, low & 255].join('.');
  const zeroUpTo = (end: number) => h.slice(0, end).every((part) => part === 0);
  if (zeroUpTo(5) && h[5] === 0xffff) return v4(h[6], h[7]);
  if (h[0] === 0x64 && h[1] === 0xff9b && h.slice(2, 6).every((part) => part === 0)) return v4(h[6], h[7]);
  if (h[0] === 0x2002) return v4(h[1], h[2]);
  return null;
}

// ---- base URL and host policy ---------------------------------------------------------------

interface BaseUrl {
  origin: string;
  /** The base path without a trailing slash ('' for the root). */
  pathPrefix: string;
  /** Without IPv6 brackets. */
  hostname: string;
  protocol: 'http:' | 'https:';
}

function parseBaseUrl(raw: string): BaseUrl {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`baseUrl is not a URL: ${raw}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('baseUrl must be http:// or https://');
  if (url.username || url.password) throw new Error('baseUrl must not carry credentials; pass them as credentials');
  if (url.search || url.hash) throw new Error('baseUrl must not have a query or fragment');
  return {
    origin: url.origin,
    pathPrefix: url.pathname.replace(/\/+$/, ''),
    hostname: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    protocol: url.protocol,
  };
}

const isLocalhostName = (hostname: string) => /^(.+\.)?localhost\.?$/i.test(hostname);

/**
 * Which internal addresses the tenant's own host may use. A public hostname may use none. A base URL
 * that is itself an internal IP may use exactly that IP, and localhost names may use loopback only.
 * Cloud metadata is never allowed.
 */
function internalAddressAllowed(base: BaseUrl, address: string, kind: AddressKind): boolean {
  if (kind === 'cloud metadata' || kind === 'invalid') return false;
  if (isIP(base.hostname) !== 0) return address === base.hostname;
  return isLocalhostName(base.hostname) && kind === 'loopback';
}

// ---- building the request -------------------------------------------------------------------

const refuse = (message: string) => new ApiCallError('API_CALL_REFUSED', message);

function findOperation(operations: Map<string, ApiOperation>, operationId: unknown, allowed: readonly string[]): ApiOperation {
  const operation = typeof operationId === 'string' ? operations.get(operationId) : undefined;
  if (!operation) throw refuse(`unknown operation ${JSON.stringify(operationId)}; call one of the catalog's operationIds`);
  if (!allowed.includes(operation.method)) {
    throw refuse(`${operation.operationId} is a ${operation.method} operation, and API steps may only use ${allowed.join(', ')}`);
  }
  return operation;
}

function readParams(raw: unknown): Record<string, unknown> {
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw refuse('params must be an object');
  return raw as Record<string, unknown>;
}

function readPaginate(operation: ApiOperation, params: Record<string, unknown>): boolean {
  const paginate = params[PAGINATE_PARAM];
  if (paginate === undefined || paginate === false) return false;
  if (paginate !== true) throw refuse('paginate must be true or false');
  if (!operation.paginated) throw refuse(`${operation.operationId} is not paginated, so paginate: true does not apply`);
  return true;
}

/** Only declared path and query parameters; header parameters belong to the host. */
function checkParamNames(operation: ApiOperation, params: Record<string, unknown>): void {
  const usable = operation.parameters.filter((p) => p.in !== 'header');
  for (const name of Object.keys(params)) {
    if (name === PAGINATE_PARAM || usable.some((p) => p.name === name)) continue;
    if (operation.parameters.some((p) => p.name === name)) throw refuse(`"${name}" is a header, and only the host sets headers`);
    const names = usable.map((p) => p.name).join(', ') || 'no parameters';
    throw refuse(`${operation.operationId} has no parameter "${name}"; it takes ${names}`);
  }
}

function scalarText(name: string, value: unknown): string {
  if (typeof value === 'string') return value;
  if ((typeof value === 'number' && Number.isFinite(value)) || typeof value === 'boolean') return String(value);
  throw refuse(`parameter "${name}" must be a string, a finite number or a boolean`);
}

/** encodeURIComponent keeps `/`, `?` and `#` inside the segment; `.` and `..` would still be dot segments. */
function encodePathValue(name: string, value: unknown): string {
  if (value === undefined || value === null) throw refuse(`missing path parameter "${name}"`);
  if (typeof value === 'boolean') throw refuse(`path parameter "${name}" must be a string or a number`);
  const text = scalarText(name, value);
  if (text === '' || text === '.' || text === '..') throw refuse(`path parameter "${name}" cannot be empty, "." or ".."`);
  try {
    return encodeURIComponent(text);
  } catch {
    throw refuse(`path parameter "${name}" is not valid Unicode`);
  }
}

function buildQuery(parameters: ApiParameter[], params: Record<string, unknown>): URLSearchParams {
  const query = new URLSearchParams();
  for (const parameter of parameters.filter((p) => p.in === 'query')) {
    const value = params[parameter.name];
    if (value === undefined || value === null) {
      if (parameter.required) throw refuse(`missing query parameter "${parameter.name}"`);
      continue;
    }
    for (const item of Array.isArray(value) ? value : [value]) query.append(parameter.name, scalarText(parameter.name, item));
  }
  return query;
}

/** The request URL, refused unless it is exactly the base URL's origin and path prefix plus the operation's path. */
function buildUrl(base: BaseUrl, operation: ApiOperation, params: Record<string, unknown>): URL {
  const path = operation.path.replace(/\{([^}]+)\}/g, (_whole, name: string) => encodePathValue(name, params[name]));
  const expectedPath = `${base.pathPrefix}${path}`;
  const url = new URL(`${base.origin}${expectedPath}`);
  const query = buildQuery(operation.parameters, params).toString();
  if (query) url.search = query;
  if (url.origin !== base.origin || url.pathname !== expectedPath || !url.pathname.startsWith(`${base.pathPrefix}/`)) {
    throw refuse(`${operation.operationId} would leave the API base URL`);
  }
  return url;
}

// ---- sending --------------------------------------------------------------------------------

interface CallerSettings {
  base: BaseUrl;
  headers: OutgoingHttpHeaders;
  timeoutMs: number;
  /** The caller's own signal: once aborted, no request of this caller goes on. */
  cancelled: AbortSignal;
  lookup: (hostname: string) => Promise<string[]>;
  onRequest: () => void;
}

async function defaultLookup(hostname: string): Promise<string[]> {
  return (await dnsLookup(hostname, { all: true, verbatim: true })).map((entry) => entry.address);
}

/** The addresses to connect to, every one of them checked; a literal IP host needs no lookup. */
async function resolveAllowedAddresses(settings: CallerSettings, signal: AbortSignal): Promise<string[]> {
  const { base } = settings;
  const literal = isIP(base.hostname) !== 0;
  const addresses = literal ? [base.hostname] : await lookupUntil(settings, signal);
  if (addresses.length === 0) throw new ApiCallError('API_CALL_FAILED', `${base.hostname} resolved to no address`, { retryable: true });
  for (const address of addresses) {
    const kind = internalAddressKind(address);
    if (kind !== null && !internalAddressAllowed(base, address, kind)) {
      const where = literal ? `${address} is` : `${base.hostname} resolves to ${address},`;
      throw refuse(`${where} a ${kind} address, which API steps may not reach`);
    }
  }
  return addresses;
}

async function lookupUntil(settings: CallerSettings, signal: AbortSignal): Promise<string[]> {
  const { hostname } = settings.base;
  try {
    return await untilAborted(settings.lookup(hostname), signal, `no answer within ${settings.timeoutMs} ms`);
  } catch (error) {
    if (settings.cancelled.aborted) throw cancelledError();
    throw new ApiCallError('API_CALL_FAILED', `could not resolve ${hostname}: ${messageOf(error)}`, { retryable: true });
  }
}

const cancelledError = () => new ApiCallError('API_CALL_FAILED', 'the request was cancelled before the API answered');

function untilAborted<T>(promise: Promise<T>, signal: AbortSignal, reason: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new Error(reason));
    if (signal.aborted) onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** Hands the socket the addresses already checked, so a second DNS answer cannot swap in another (rebinding). */
function pinnedLookup(addresses: string[]): LookupFunction {
  return (_hostname: string, options: LookupOptions, callback) => {
    const all: LookupAddress[] = addresses.map((address) => ({ address, family: isIP(address) }));
    const wanted = all.filter((entry) => !options.family || entry.family === options.family);
    const entries = wanted.length > 0 ? wanted : all;
    if (options.all) callback(null, entries);
    else callback(null, entries[0]?.address ?? '', entries[0]?.family);
  };
}

interface RawResponse {
  status: number;
  body: Buffer;
}

interface Exchange {
  method: ApiOperation['method'];
  url: URL;
  addresses: string[];
  maxBytes: number;
  signal: AbortSignal;
}

function openResponse(exchange: Exchange, settings: CallerSettings): Promise<IncomingMessage> {
  const send = settings.base.protocol === 'https:' ? httpsRequest : httpRequest;
  const { method, url, addresses, signal } = exchange;
  return new Promise((resolve, reject) => {
    // agent: false gives every request its own socket, so no pooled connection outlives the step.
    const request = send(url, { method, headers: settings.headers, lookup: pinnedLookup(addresses), agent: false, signal }, resolve);
    request.on('error', reject);
    request.end();
  });
}

async function readBody(response: IncomingMessage, maxBytes: number, overflow: 'fail' | 'truncate'): Promise<Buffer> {
  const declared = Number(response.headers['content-length']);
  if (overflow === 'fail' && declared > maxBytes) throw tooLarge(maxBytes);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) {
      response.destroy();
      if (overflow === 'fail') throw tooLarge(maxBytes);
      chunks.push(chunk.subarray(0, chunk.length - (size - maxBytes)));
      break;
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

const tooLarge = (maxBytes: number) =>
  new ApiCallError('API_RESPONSE_TOO_LARGE', `the response is larger than ${maxBytes} bytes`);

/** One HTTP request under one deadline, which covers the DNS lookup too, and under the caller's signal. */
async function sendRequest(request: Omit<Exchange, 'addresses' | 'signal'>, settings: CallerSettings): Promise<RawResponse> {
  if (settings.cancelled.aborted) throw cancelledError();
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), settings.timeoutMs);
  const signal = AbortSignal.any([settings.cancelled, deadline.signal]);
  try {
    const addresses = await resolveAllowedAddresses(settings, signal);
    if (settings.cancelled.aborted) throw cancelledError();
    settings.onRequest(); // outside the error mapping: a limit the sandbox throws from here reaches it unchanged
    return await exchangeOnce({ ...request, addresses, signal }, settings);
  } finally {
    clearTimeout(timer);
  }
}

async function exchangeOnce(exchange: Exchange, settings: CallerSettings): Promise<RawResponse> {
  let response: IncomingMessage | undefined;
  try {
    response = await openResponse(exchange, settings);
    const status = response.statusCode ?? 0;
    if (status >= 200 && status < 300) return { status, body: await readBody(response, exchange.maxBytes, 'fail') };
    if (status >= 300 && status < 400) {
      throw new ApiCallError('API_CALL_FAILED', `the API answered ${status} (a redirect), and redirects are not followed`, { status });
    }
    const detail = errorDetail(await readBody(response, ERROR_BODY_BYTES, 'truncate'));
    const retryable = status === 429 || status >= 500;
    throw new ApiCallError('API_CALL_FAILED', `the API answered ${status}${detail}`, { status, retryable });
  } catch (error) {
    if (error instanceof ApiCallError) throw error;
    if (settings.cancelled.aborted) throw cancelledError();
    if (exchange.signal.aborted) {
      throw new ApiCallError('API_CALL_FAILED', `no complete response within ${settings.timeoutMs} ms`, { retryable: true });
    }
    throw new ApiCallError('API_CALL_FAILED', `the request failed: ${messageOf(error)}`, { retryable: true });
  } finally {
    response?.destroy(); // a body left unread (refused, too large, redirect) must not hold its socket open
  }
}

/** The API's own error message, if it sent one, so the program (or the model) can fix the call. */
function errorDetail(body: Buffer): string {
  const text = body.toString('utf8');
  let message: unknown = text;
  try {
    const parsed = JSON.parse(text) as unknown;
    const object = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : {};
    message = object.error ?? object.message ?? text;
  } catch {
    // not JSON: the text itself is the detail
  }
  const clean = (typeof message === 'string' ? message : JSON.stringify(message)).replace(/\s+/g, ' ').trim().slice(0, 300);
  return clean ? `: ${clean}` : '';
}

/** The body's text, without a byte order mark; an empty body is null. */
function bodyText(body: Buffer): string {
  const text = body.toString('utf8').replace(/^\uFEFF/, '');
  return text.trim() === '' ? 'null' : text;
}

function parseJson(body: Buffer): unknown {
  const text = bodyText(body);
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new ApiCallError('API_CALL_FAILED', NOT_JSON_MESSAGE);
  }
}

function messageOf(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  const message = error instanceof Error ? error.message : String(error);
  return typeof code === 'string' && !message.includes(code) ? `${code} ${message}` : message;
}

// ---- the caller -----------------------------------------------------------------------------

function checkCredentials(credentials: Record<string, string>): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(credentials)) {
    const lower = name.toLowerCase();
    if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(lower) || HOST_ONLY_HEADERS.has(lower)) {
      throw new Error(`credentials cannot set the header "${name}"`);
    }
    if (/[\r\n\0]/.test(value)) throw new Error(`the credential header "${name}" has a line break or NUL`);
    headers[lower] = value;
  }
  return headers;
}

function readPage(value: unknown, operationId: string): { data: unknown[]; nextCursor: string | null } {
  const page = typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {};
  const { data, nextCursor } = page;
  if (!Array.isArray(data) || !(nextCursor === undefined || nextCursor === null || typeof nextCursor === 'string')) {
    throw new ApiCallError('API_CALL_FAILED', `${operationId} did not answer a page ({ data: [...], nextCursor }), so it cannot be paginated`);
  }
  return { data, nextCursor: nextCursor || null };
}

export function createApiCaller(options: ApiCallerOptions): ApiCaller {
  const settings: CallerSettings = {
    base: parseBaseUrl(options.baseUrl),
    headers: { accept: 'application/json', 'accept-encoding': 'identity', ...checkCredentials(options.credentials) },
    timeoutMs: options.limits.requestTimeoutMs,
    cancelled: options.signal,
    lookup: options.lookup ?? defaultLookup,
    onRequest: options.onRequest ?? (() => undefined),
  };
  const operations = new Map(options.operations.map((operation) => [operation.operationId, operation]));
  const allowedMethods = (options.allowedMethods ?? DEFAULT_ALLOWED_METHODS).map((method) => method.toUpperCase());
  const { maxResponseBytes, maxPages } = options.limits;

  async function callOnce(operation: ApiOperation, params: Record<string, unknown>, maxBytes: number, asText = false) {
    const url = buildUrl(settings.base, operation, params);
    if (!operation.idempotent) await options.beforeUnsafeCall?.();
    const attributes = () => ({ 'http.request.method': operation.method, 'stepcast.api.operation_id': operation.operationId });
    const raw = await inSpan('stepcast.api_call', { client: true, attributes }, async (span) => {
      const response = await sendRequest({ method: operation.method, url, maxBytes }, settings);
      span.setAttribute('http.response.status_code', response.status);
      return response;
    });
    return { value: asText ? new JsonText(bodyText(raw.body)) : parseJson(raw.body), bytes: raw.body.length };
  }

  /** Follows nextCursor as the cursor parameter; maxResponseBytes caps the pages together. */
  async function callAllPages(operation: ApiOperation, params: Record<string, unknown>): Promise<PaginatedResult> {
    const cursorName = cursorParameterOf(operation);
    const data: unknown[] = [];
    let pageParams = params;
    let budget = maxResponseBytes;
    for (let pages = 1; ; pages += 1) {
      const page = await callOnce(operation, pageParams, budget).catch((error: unknown) => {
        if (!(error instanceof ApiCallError) || error.code !== 'API_RESPONSE_TOO_LARGE' || pages === 1) throw error;
        throw new ApiCallError('API_RESPONSE_TOO_LARGE', `the pages together are larger than ${maxResponseBytes} bytes`);
      });
      budget -= page.bytes;
      const { data: items, nextCursor } = readPage(page.value, operation.operationId);
      for (const item of items) data.push(item);
      if (nextCursor === null || pages >= maxPages || cursorName === undefined) return { data, pages, nextCursor };
      pageParams = { ...params, [cursorName]: nextCursor };
    }
  }

  return async (operationId, rawParams) => {
    const operation = findOperation(operations, operationId, allowedMethods);
    const params = readParams(rawParams);
    checkParamNames(operation, params);
    if (readPaginate(operation, params)) return callAllPages(operation, params);
    return (await callOnce(operation, params, maxResponseBytes, options.keepBodiesAsText)).value;
  };
}
