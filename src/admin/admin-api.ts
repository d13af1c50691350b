import type { IncomingMessage } from 'node:http';
import type { Plugin } from 'graphql-yoga';
import { z } from 'zod';
import { looksLikeApiKey } from '../auth/api-keys.js';
import { isDatabaseUnavailable } from '../db/unavailable.js';
import type { Logger } from '../logger.js';
import { adminTokenMatches } from './admin-token.js';
import { AdminError, type AdminOperations } from './tenants.js';

export const ADMIN_API_PATH = '/admin';
/** An OpenAPI document is the largest thing an admin sends; the request is authenticated before it is read. */
const MAX_BODY_BYTES = 16 * 1_048_576;
/** The first refused request of a window is logged in full, the rest as one count at its end. */
const REFUSAL_WINDOW_MS = 60_000;

export interface AdminApiOptions {
  /** The admin token (STEPCAST_ADMIN_TOKEN or the data directory's token file). */
  token: string;
  /** This server's instance id (src/admin/server-record.ts), answered at GET /admin/instance without a token. */
  instanceId?: string;
  operations: AdminOperations;
  logger: Logger;
  /** Called once a key is revoked, to close at once what relies on it (open WebSockets and streams). */
  onKeyRevoked?: (keyId: string) => void;
}

/** PostgreSQL cannot store a NUL character in text or jsonb: refused here as bad input, not failed on there. */
const NO_NUL = 'must not contain a NUL character (\\u0000)';
const text = () => z.string().refine((value) => !value.includes('\0'), NO_NUL);
/** Whether a JSON value has a NUL character in any of its strings or keys. */
function hasNul(value: unknown): boolean {
  if (typeof value === 'string') return value.includes('\0');
  if (Array.isArray(value)) return value.some(hasNul);
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).some(([key, item]) => key.includes('\0') || hasNul(item));
  }
  return false;
}

const createTenantBody = z.strictObject({
  name: text(),
  id: text().optional(),
  apiBaseUrl: text().optional(),
  openapi: z
    .unknown()
    .refine((value) => !hasNul(value), NO_NUL)
    .optional(),
  credentials: z.record(text(), text()).optional(),
  allowedMethods: z.array(text()).optional(),
});
const createKeyBody = z.strictObject({ name: text().min(1).max(200).optional() });

/** Tenant ids and key ids: letters, digits, "_" and "-" (what tenants.ts and api-keys.ts make). */
const ID = /^[A-Za-z0-9_-]{1,128}$/;

/** An answer of the admin API: `{ error: { code, message } }` when refused. */
class AdminApiRefusal extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const STATUS_OF_KIND = { invalid: [400, 'BAD_REQUEST'], 'not-found': [404, 'NOT_FOUND'], conflict: [409, 'CONFLICT'] } as const;

/** Counts refused requests; logs the first of each minute at once and how many more followed at its end. */
class RefusalLog {
  private more = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly logger: Logger) {}

  record(reason: string, remoteAddress: string | undefined): void {
    if (this.timer) {
      this.more++;
      return;
    }
    this.logger.warn({ reason, remoteAddress }, 'admin API request refused');
    this.startWindow();
  }

  private startWindow(): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.more === 0) return;
      this.logger.warn({ refused: this.more, windowMs: REFUSAL_WINDOW_MS }, 'admin API requests refused in the last minute');
      this.more = 0;
      this.startWindow();
    }, REFUSAL_WINDOW_MS);
    this.timer.unref();
  }
}

/**
 * Past the limit nothing more is kept, but up to as much again is read and dropped: closing a connection with unread
 * data resets it, and the client would lose the 413 it is sent. A client that sends more than that loses it.
 */
async function discardRest(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
  let discarded = 0;
  while (discarded <= MAX_BODY_BYTES) {
    const { done, value } = await reader.read();
    if (done) return;
    discarded += value.byteLength;
  }
  await reader.cancel().catch(() => undefined);
}

function decodePathSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new AdminApiRefusal(400, 'BAD_REQUEST', `the path segment "${segment.slice(0, 130)}" is not valid percent-encoding`);
  }
}

function bearer(authorization: string | null): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
  return match?.[1];
}

async function jsonBody<T>(request: Request, schema: z.ZodType<T>): Promise<T> {
  const mediaType = (request.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  if (mediaType !== 'application/json') throw new AdminApiRefusal(415, 'UNSUPPORTED_MEDIA_TYPE', 'send the body as application/json');
  const tooLarge = () =>
    new AdminApiRefusal(413, 'PAYLOAD_TOO_LARGE', `the body is larger than ${MAX_BODY_BYTES} bytes`, { connection: 'close' });
  if (Number(request.headers.get('content-length') ?? 0) > MAX_BODY_BYTES) throw tooLarge();
  // Counted as it arrives: a chunked body (no Content-Length) or one longer than it said stops at the limit.
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (request.body) {
    const reader = request.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > MAX_BODY_BYTES) {
        chunks.length = 0;
        await discardRest(reader);
        throw tooLarge();
      }
      chunks.push(value);
    }
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new AdminApiRefusal(400, 'BAD_REQUEST', 'the body is not JSON');
  }
  const result = schema.safeParse(parsed);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `${issue.path.join('.') || 'body'}: ${issue.message}`);
    throw new AdminApiRefusal(400, 'BAD_REQUEST', problems.join('; '));
  }
  return result.data;
}

/**
 * The admin API, JSON over HTTP under /admin/ on the GraphQL port: what `npm run admin` does, for a server that runs.
 *   GET  /admin/tenants                  POST /admin/tenants
 *   GET  /admin/tenants/<id>/keys        POST /admin/tenants/<id>/keys
 *   POST /admin/keys/<id>/revoke
 *   GET  /admin/instance                 this server's instance id (src/admin/server-record.ts), without a token
 * Every other request needs `Authorization: Bearer <admin token>`; a tenant's API key is refused (403), as is anything else (401).
 */
export function useAdminApi({ token, instanceId, operations, logger, onKeyRevoked = () => undefined }: AdminApiOptions): Plugin {
  const refusals = new RefusalLog(logger);

  const route = async (request: Request, path: string[]): Promise<{ status: number; body: unknown }> => {
    const [collection, id, sub, extra] = path;
    if (id !== undefined && !ID.test(id)) {
      throw new AdminApiRefusal(400, 'BAD_REQUEST', `"${JSON.stringify(id).slice(1, -1).slice(0, 130)}" is not an id: letters, digits, "_" and "-" only`);
    }
    const method = request.method;
    const allow = (methods: string) => {
      if (!methods.split(', ').includes(method)) {
        throw new AdminApiRefusal(405, 'METHOD_NOT_ALLOWED', `use ${methods}`, { allow: methods });
      }
    };
    if (collection === 'tenants' && id === undefined) {
      allow('GET, POST');
      if (method === 'GET') return { status: 200, body: await operations.listTenants() };
      return { status: 201, body: await operations.createTenant(await jsonBody(request, createTenantBody)) };
    }
    if (collection === 'tenants' && id && sub === 'keys' && extra === undefined) {
      allow('GET, POST');
      if (method === 'GET') return { status: 200, body: await operations.listApiKeys(id) };
      const { name } = await jsonBody(request, createKeyBody);
      return { status: 201, body: await operations.createApiKey(id, name) };
    }
    if (collection === 'keys' && id && sub === 'revoke' && extra === undefined) {
      allow('POST');
      const revoked = await operations.revokeApiKey(id);
      onKeyRevoked(revoked.id);
      return { status: 200, body: revoked };
    }
    throw new AdminApiRefusal(404, 'NOT_FOUND', `no admin route ${method} /${[ADMIN_API_PATH.slice(1), ...path].join('/')}`);
  };

  const answer = async (request: Request, url: URL, remoteAddress: string | undefined) => {
    try {
      // Not a secret (a random id for each start, also in DATA_DIR): how the CLI knows the server it found recorded
      // is the one listening at that URL, before it sends the admin token there.
      if (url.pathname === `${ADMIN_API_PATH}/instance` && request.method === 'GET' && instanceId) {
        return { status: 200, body: { instanceId }, headers: {} };
      }
      const credential = bearer(request.headers.get('authorization'));
      if (!credential || !adminTokenMatches(credential, token)) {
        const reason = !credential ? 'no admin token' : looksLikeApiKey(credential) ? 'a tenant API key' : 'a wrong admin token';
        refusals.record(reason, remoteAddress);
        if (credential && looksLikeApiKey(credential)) {
          throw new AdminApiRefusal(403, 'FORBIDDEN', "a tenant's API key cannot use the admin API: send the admin token");
        }
        throw new AdminApiRefusal(
          401,
          'UNAUTHENTICATED',
          credential ? 'the admin token is wrong' : 'the admin API needs Authorization: Bearer <admin token>',
          { 'www-authenticate': 'Bearer realm="stepcast-admin"' },
        );
      }
      const path = url.pathname.slice(ADMIN_API_PATH.length).split('/').filter((part) => part.length > 0).map(decodePathSegment);
      const { status, body } = await route(request, path);
      return { status, body, headers: {} };
    } catch (error) {
      if (error instanceof AdminApiRefusal) {
        return { status: error.status, body: { error: { code: error.code, message: error.message } }, headers: error.headers };
      }
      if (error instanceof AdminError) {
        const [status, code] = STATUS_OF_KIND[error.kind];
        return { status, body: { error: { code, message: error.message } }, headers: {} };
      }
      if (isDatabaseUnavailable(error)) {
        return {
          status: 503,
          body: { error: { code: 'SERVICE_UNAVAILABLE', message: 'the database cannot be reached; try again' } },
          headers: { 'retry-after': '5' },
        };
      }
      logger.error({ err: error }, 'admin API request failed');
      return { status: 500, body: { error: { code: 'INTERNAL', message: 'the request failed; the server log has the details' } }, headers: {} };
    }
  };

  return {
    onRequest({ request, url, endResponse, fetchAPI, serverContext }) {
      if (url.pathname !== ADMIN_API_PATH && !url.pathname.startsWith(`${ADMIN_API_PATH}/`)) return;
      const remoteAddress = (serverContext as { req?: IncomingMessage }).req?.socket?.remoteAddress;
      return answer(request, url, remoteAddress).then(({ status, body, headers }) =>
        endResponse(
          new fetchAPI.Response(JSON.stringify(body), {
            status,
            headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers },
          }),
        ),
      );
    },
  };
}
