import { ADMIN_API_PATH } from './admin-api.js';
import { AdminError, type AdminOperations } from './tenants.js';

/** Where a server's admin API is, from the URL it printed (its GraphQL URL) or any URL of the same origin. */
export function adminApiBase(serverUrl: string): URL {
  try {
    return new URL(`${ADMIN_API_PATH}/`, serverUrl);
  } catch {
    throw new AdminError(`"${serverUrl}" is not a URL: give the one the server printed, e.g. http://127.0.0.1:4000/graphql`);
  }
}

/**
 * The instance id the server at that URL answers (GET /admin/instance); undefined when something else answers.
 * Throws what fetch throws when nothing answers (its cause has the socket's code: ECONNREFUSED) or not in time.
 */
export async function serverInstance(serverUrl: string): Promise<string | undefined> {
  const response = await fetch(new URL('instance', adminApiBase(serverUrl)), { signal: AbortSignal.timeout(5_000) });
  const body = (await response.json().catch(() => undefined)) as { instanceId?: unknown } | undefined;
  return response.ok && typeof body?.instanceId === 'string' ? body.instanceId : undefined;
}

/** The admin operations through a running server's admin API (src/admin/admin-api.ts). */
export function httpAdmin(serverUrl: string, token: string): AdminOperations {
  const base = adminApiBase(serverUrl);
  const call = async <T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> => {
    const url = new URL(path, base);
    let response: Response;
    try {
      response = await fetch(url, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      // undici's "fetch failed" keeps the socket's error (or several, one per address tried) as its cause.
      const cause = (error as { cause?: { code?: string; message?: string; errors?: { code?: string }[] } }).cause;
      const reason = cause?.code ?? cause?.errors?.[0]?.code ?? cause?.message ?? (error as Error).message;
      throw new AdminError(
        `cannot reach the server at ${base.origin} (${reason}): is it running? Without --url or STEPCAST_URL, the CLI works on the database directly`,
      );
    }
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new AdminError(`the server at ${base.origin} answered ${response.status} without JSON: is it stepcast with its admin API?`);
    }
    if (response.ok) return parsed as T;
    const message = (parsed as { error?: { message?: string } }).error?.message ?? `HTTP ${response.status}`;
    if (response.status === 401) {
      throw new AdminError(`${message}: STEPCAST_ADMIN_TOKEN must be the server's (or leave it unset to use the token file in DATA_DIR)`);
    }
    throw new AdminError(message, response.status === 404 ? 'not-found' : response.status === 409 ? 'conflict' : 'invalid');
  };
  const segment = encodeURIComponent;
  return {
    createTenant: (input) => call('POST', 'tenants', input),
    listTenants: () => call('GET', 'tenants'),
    createApiKey: (tenantId, name) => call('POST', `tenants/${segment(tenantId)}/keys`, name === undefined ? {} : { name }),
    listApiKeys: (tenantId) => call('GET', `tenants/${segment(tenantId)}/keys`),
    revokeApiKey: (keyId) => call('POST', `keys/${segment(keyId)}/revoke`),
  };
}
