// npm run bench: end-to-end figures through the real server (HTTP + graphql-ws) on PGlite, and on
// PostgreSQL when BENCH_DATABASE_URL is set. Sized for a 2-core machine; scale with BENCH_* variables.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { startStepcast, type StepcastApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 40);
const CONCURRENT = Number(process.env.BENCH_CONCURRENT ?? 20);
const SUBSCRIBERS = Number(process.env.BENCH_SUBSCRIBERS ?? 50);
const USERS = process.env.BENCH_USERS ?? '20000';

const EXECUTE = `mutation Run($plan: PlanInput!) { executePlan(plan: $plan) { id } }`;
const FOLLOW = `subscription Follow($id: ID!, $after: Int) { stepUpdates(executionId: $id, afterSequence: $after) { sequence type } }`;
const TWO_STEP_PLAN = {
  query: 'memberships of recently active users',
  steps: [
    { kind: 'SQL', queryContext: 'recent users', sql: "SELECT id FROM users WHERE last_login_at > timestamptz '2024-10-01' ORDER BY id LIMIT 500" },
    { kind: 'SQL', queryContext: 'their groups', sql: 'SELECT g.name, count(*) AS n FROM group_members m JOIN step_1 s ON s.id = m.user_id JOIN groups g ON g.id = m.group_id GROUP BY g.name ORDER BY n DESC' },
  ],
};

const SQL_THEN_API_PLAN = {
  query: 'groups of ten users, through the API',
  steps: [
    { kind: 'SQL', queryContext: 'ten users', sql: 'SELECT id FROM users ORDER BY id LIMIT 10' },
    {
      kind: 'API',
      queryContext: 'their groups',
      code: "const answers = await Promise.all(steps[0].records.map((u) => api.call('listUserGroups', { id: u.id }))); return answers.flatMap((a, i) => a.data.map((g) => ({ user_id: steps[0].records[i].id, group: g.name })));",
    },
  ],
};

async function submit(url: string, plan: unknown): Promise<string> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query: EXECUTE, variables: { plan } }),
  });
  const body = (await response.json()) as { data?: { executePlan: { id: string } }; errors?: unknown };
  if (!body.data) throw new Error(`executePlan failed: ${JSON.stringify(body.errors)}`);
  return body.data.executePlan.id;
}

function follow(wsUrl: string, id: string, after = 0): Promise<{ updates: number; last: string }> {
  const client = createClient({ url: wsUrl, webSocketImpl: WebSocket, retryAttempts: 0 });
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
  }).finally(() => client.dispose());
}

const load = () => `load ${loadavg().map((value) => value.toFixed(2)).join(' ')}`;

/** Peak resident memory of this process since the last reset (Linux /proc; 0 elsewhere). */
async function peakRss(): Promise<number> {
  const status = await readFile('/proc/self/status', 'utf8').catch(() => '');
  return Number(/^VmHWM:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) * 1024;
}
const resetPeakRss = () => writeFile('/proc/self/clear_refs', '5').catch(() => undefined);

/** Sends `{ __typename }` back to back until `until` settles: what another client sees meanwhile. */
async function probeUntil(url: string, until: Promise<unknown> | undefined, count = 0): Promise<number[]> {
  const samples: number[] = [];
  let done = false;
  void until?.finally(() => (done = true));
  while (until ? !done : samples.length < count) {
    const t0 = performance.now();
    const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"query":"{ __typename }"}' });
    if (response.status !== 200) throw new Error(`the probe got HTTP ${response.status}`);
    await response.arrayBuffer();
    samples.push(performance.now() - t0);
  }
  return samples;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function summarize(name: string, samplesMs: number[]): string {
  const sorted = [...samplesMs].sort((a, b) => a - b);
  return `${name.padEnd(44)} n=${String(sorted.length).padStart(4)}  p50=${percentile(sorted, 50).toFixed(1).padStart(7)} ms  p95=${percentile(sorted, 95).toFixed(1).padStart(7)} ms  max=${sorted.at(-1)!.toFixed(1).padStart(7)} ms`;
}

async function benchmark(label: string, env: Record<string, string>) {
  const dataDir = await mkdtemp(join(tmpdir(), 'stepcast-bench-'));
  const config = loadConfig({
    PORT: '0',
    DATA_DIR: dataDir,
    STEPCAST_DEMO_USERS: USERS,
    // The bench measures throughput, not quotas: its one tenant may run 4 at once (the fair-share
    // policy keeps a fifth slot for a tenant with nothing running).
    STEPCAST_MAX_CONCURRENT_EXECUTIONS: '5',
    STEPCAST_TENANT_MAX_CONCURRENT_EXECUTIONS: '4',
    STEPCAST_TENANT_RATE_BURST: '1000000',
    STEPCAST_TENANT_RATE_PER_MINUTE: '1000000',
    // Its subscribers are all one tenant's.
    STEPCAST_TENANT_MAX_SOCKETS: String(SUBSCRIBERS + 10),
    STEPCAST_TENANT_MAX_SUBSCRIPTIONS: String(SUBSCRIBERS + 10),
    ...env,
  });
  const startedAt = performance.now();
  const app: StepcastApp = await startStepcast(config, createLogger('warn'));
  const wsUrl = app.url.replace(/^http/, 'ws');
  console.log(`\n## ${label} (${USERS} demo users; first start ${(performance.now() - startedAt).toFixed(0)} ms)`);
  try {
    const latencies: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t0 = performance.now();
      const id = await submit(app.url, TWO_STEP_PLAN);
      const { last } = await follow(wsUrl, id);
      if (last !== 'EXECUTION_SUCCEEDED') throw new Error(`run ended with ${last}`);
      latencies.push(performance.now() - t0);
    }
    console.log(summarize('2-step plan, submit to terminal update', latencies));

    const apiLatencies: number[] = [];
    for (let i = 0; i < Math.ceil(RUNS / 2); i++) {
      const t0 = performance.now();
      const id = await submit(app.url, SQL_THEN_API_PLAN);
      const { last } = await follow(wsUrl, id);
      if (last !== 'EXECUTION_SUCCEEDED') throw new Error(`SQL+API run ended with ${last}`);
      apiLatencies.push(performance.now() - t0);
    }
    console.log(summarize('SQL step, then a program making 10 API calls', apiLatencies));

    const t0 = performance.now();
    const ids = await Promise.all(Array.from({ length: CONCURRENT }, () => submit(app.url, TWO_STEP_PLAN)));
    await Promise.all(ids.map((id) => follow(wsUrl, id)));
    const seconds = (performance.now() - t0) / 1000;
    console.log(`${`${CONCURRENT} concurrent 2-step plans`.padEnd(44)} ${(CONCURRENT / seconds).toFixed(1)} executions/s (${seconds.toFixed(2)} s)`);

    const steps = Array.from({ length: 50 }, (_, i) => ({ kind: 'SQL', queryContext: `step ${i + 1}`, sql: `SELECT ${i + 1} AS n` }));
    const longId = await submit(app.url, { query: 'long', steps });
    const fanOut = performance.now();
    const results = await Promise.all(Array.from({ length: SUBSCRIBERS }, () => follow(wsUrl, longId)));
    const fanOutMs = performance.now() - fanOut;
    const delivered = results.reduce((sum, r) => sum + r.updates, 0);
    console.log(`${`${SUBSCRIBERS} subscribers on a 50-step plan`.padEnd(44)} ${delivered} updates delivered in ${fanOutMs.toFixed(0)} ms`);

    const replays: number[] = [];
    for (let i = 0; i < 20; i++) {
      const r0 = performance.now();
      const { updates } = await follow(wsUrl, longId);
      if (updates !== 102) throw new Error(`replay delivered ${updates} updates, expected 102`);
      replays.push(performance.now() - r0);
    }
    console.log(summarize('replay of a finished 102-update execution', replays));

    // A hostile tenant (issue 8): another client's latency while the plans below run, against the same
    // probe on the idle server measured just before (the floor), with peak resident memory.
    const floor = [...(await probeUntil(app.url, undefined, 300))].sort((a, b) => a - b);
    console.log(`${'idle server, { __typename } (the floor)'.padEnd(44)} p50=${percentile(floor, 50).toFixed(1)} ms  p99=${percentile(floor, 99).toFixed(1)} ms  (${load()})`);
    const jsonbAgg = "SELECT jsonb_agg('{}'::jsonb) AS j FROM generate_series(1, 2500000)";
    const wide = "SELECT g AS id, repeat('x', 800) AS pad FROM generate_series(1, 10000) g";
    for (const [name, sql, critical] of [
      ['40 steps of jsonb_agg over 2.5M objects', jsonbAgg, true],
      ['40 steps of 10,000 rows of 800 bytes', wide, false],
    ] as const) {
      await resetPeakRss();
      const before = await peakRss();
      const hostileId = await submit(app.url, {
        query: name,
        steps: Array.from({ length: 40 }, (_, i) => ({ kind: 'SQL', queryContext: `step ${i + 1}`, sql, critical })),
      });
      const finished = follow(wsUrl, hostileId);
      const during = [...(await probeUntil(app.url, finished))].sort((a, b) => a - b);
      const { last } = await finished;
      const p99 = percentile(during, 99);
      console.log(
        `${`hostile: ${name}`.padEnd(44)} ${last}; others p50=${percentile(during, 50).toFixed(1)} ms p99=${p99.toFixed(1)} ms ` +
          `(${(p99 / percentile(floor, 99)).toFixed(1)}x the floor's p99), peak RSS ${(Math.max(before, await peakRss()) / 1_048_576).toFixed(0)} MiB (${load()})`,
      );
    }
  } finally {
    await app.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

await benchmark('PGlite (embedded, worker thread)', {});
if (process.env.BENCH_DATABASE_URL) {
  const { default: postgres } = await import('postgres');
  const admin = postgres(process.env.BENCH_DATABASE_URL, { max: 1, onnotice: () => undefined });
  const name = `stepcast_bench_${Date.now()}`;
  await admin.unsafe(`CREATE DATABASE ${name}`);
  const url = new URL(process.env.BENCH_DATABASE_URL);
  url.pathname = `/${name}`;
  try {
    await benchmark('PostgreSQL', { DATABASE_URL: url.toString(), DATABASE_POOL_SIZE: '10' });
  } finally {
    await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    // Tenant roles are server-wide; the ones this database made go with it.
    const { tenantRolePrefix } = await import('../src/db/tenant-roles.js');
    const roles = await admin<{ rolname: string }[]>`
      SELECT rolname FROM pg_roles WHERE starts_with(rolname, ${tenantRolePrefix(name)})`;
    for (const { rolname } of roles) await admin.unsafe(`DROP ROLE IF EXISTS "${rolname}"`);
    await admin.end();
  }
} else {
  console.log('\n(PostgreSQL skipped: set BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test to include it)');
}
