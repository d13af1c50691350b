// What the bench's clients do through the real server: submit a plan over HTTP, follow it over graphql-ws.
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';

const EXECUTE = `mutation Run($plan: PlanInput!) { executePlan(plan: $plan) { id } }`;
const FOLLOW = `subscription Follow($id: ID!, $after: Int) { stepUpdates(executionId: $id, afterSequence: $after) { sequence type } }`;

export async function submit(url: string, plan: unknown): Promise<string> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query: EXECUTE, variables: { plan } }),
  });
  const body = (await response.json()) as { data?: { executePlan: { id: string } }; errors?: unknown };
  if (!body.data) throw new Error(`executePlan failed: ${JSON.stringify(body.errors)}`);
  return body.data.executePlan.id;
}

export const wsClient = (wsUrl: string): Client => createClient({ url: wsUrl, webSocketImpl: WebSocket, retryAttempts: 0 });

/**
 * Follows an execution's updates to its end. Given a URL it opens a socket of its own (and closes it);
 * given a client it subscribes on that client's socket.
 */
export function follow(target: string | Client, id: string, after = 0): Promise<{ updates: number; last: string }> {
  const client = typeof target === 'string' ? wsClient(target) : target;
  let updates = 0;
  let last = '';
  return new Promise<{ updates: number; last: string }>((resolve, reject) => {
    client.subscribe(
      { query: FOLLOW, variables: { id, after } },
      {
        next: (value) => {
          updates += 1;
          last = (value.data as { stepUpdates: { type: string } }).stepUpdates.type;
        },
        error: reject,
        complete: () => resolve({ updates, last }),
      },
    );
  }).finally(() => {
    if (typeof target === 'string') void client.dispose();
  });
}

export function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export const median = (values: readonly number[]): number => percentile([...values].sort((a, b) => a - b), 50);

/**
 * The settings every bench server shares: it measures throughput, not quotas. Its one tenant may run 4 at once
 * (the fair-share policy keeps a fifth slot for a tenant with nothing running), and holds `subscribers` sockets.
 */
export function benchLimits(subscribers: number): Record<string, string> {
  return {
    STEPCAST_MAX_CONCURRENT_EXECUTIONS: '5',
    STEPCAST_TENANT_MAX_CONCURRENT_EXECUTIONS: '4',
    STEPCAST_TENANT_RATE_BURST: '1000000',
    STEPCAST_TENANT_RATE_PER_MINUTE: '1000000',
    STEPCAST_TENANT_MAX_SOCKETS: String(subscribers + 10),
    STEPCAST_TENANT_MAX_SUBSCRIPTIONS: String(subscribers + 10),
  };
}

/**
 * Runs `work` on a fresh PostgreSQL database made next to `baseUrl`'s, then drops it with the tenant roles it made
 * (roles are server-wide), whatever `work` did.
 */
export async function withBenchDatabase<T>(baseUrl: string, prefix: string, work: (databaseUrl: string) => Promise<T>): Promise<T> {
  const { default: postgres } = await import('postgres');
  const { tenantRolePrefix } = await import('../src/db/tenant-roles.js');
  const admin = postgres(baseUrl, { max: 1, onnotice: () => undefined });
  const name = `${prefix}_${Date.now()}`;
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
    const url = new URL(baseUrl);
    url.pathname = `/${name}`;
    return await work(url.toString());
  } finally {
    await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    const roles = await admin<{ rolname: string }[]>`
      SELECT rolname FROM pg_roles WHERE starts_with(rolname, ${tenantRolePrefix(name)})`;
    for (const { rolname } of roles) await admin.unsafe(`DROP ROLE IF EXISTS "${rolname}"`);
    await admin.end();
  }
}
