// npm run bench: one table of figures, each beside its floor measured in the same run, on PGlite and, when
// BENCH_DATABASE_URL is set, on PostgreSQL (a fresh database the bench creates and drops). Sized for a 2-core
// machine; scale with BENCH_* variables. Progress goes to stderr, the table to stdout at the end.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { startStepcast, type StepcastApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { benchLimits, follow, percentile, submit, withBenchDatabase } from './client.js';
import { benchFanOut } from './fanout.js';
import { benchHistory } from './history.js';
import { benchSteps, type StepsTarget } from './steps.js';
import { benchWorkers } from './workers.js';
import { currentLoad, formatTable, type BenchRow } from './table.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 40);
const CONCURRENT = Number(process.env.BENCH_CONCURRENT ?? 20);
const SUBSCRIBERS = Number(process.env.BENCH_SUBSCRIBERS ?? 50);
const USERS = process.env.BENCH_USERS ?? '20000';

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

const progress = (backend: string, text: string) => console.error(`[${backend}] ${text} (load ${currentLoad().toFixed(2)})`);

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

/** A latency row: p50 as the figure, p95 and max beside it. */
function latencyRow(backend: string, name: string, samplesMs: number[]): BenchRow {
  const sorted = [...samplesMs].sort((a, b) => a - b);
  return {
    name: `${name}: p50 (n=${sorted.length})`,
    backend,
    value: percentile(sorted, 50),
    unit: 'ms',
    note: `p95 ${percentile(sorted, 95).toFixed(1)} ms, max ${sorted.at(-1)!.toFixed(1)} ms`,
    load: currentLoad(),
  };
}

/** Plans end to end through the real server (HTTP + graphql-ws), and what a hostile tenant costs another client. */
async function endToEnd(backend: string, env: Record<string, string>): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const dataDir = await mkdtemp(join(tmpdir(), 'stepcast-bench-'));
  const config = loadConfig({
    PORT: '0',
    DATA_DIR: dataDir,
    STEPCAST_DEMO_USERS: USERS,
    ...benchLimits(SUBSCRIBERS),
    DATABASE_POOL_SIZE: '10',
    ...env,
  });
  const startedAt = performance.now();
  const app: StepcastApp = await startStepcast(config, createLogger('warn'));
  const wsUrl = app.url.replace(/^http/, 'ws');
  progress(backend, `end-to-end server started in ${(performance.now() - startedAt).toFixed(0)} ms (${USERS} demo users)`);
  try {
    const latencies: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t0 = performance.now();
      const id = await submit(app.url, TWO_STEP_PLAN);
      const { last } = await follow(wsUrl, id);
      if (last !== 'EXECUTION_SUCCEEDED') throw new Error(`run ended with ${last}`);
      latencies.push(performance.now() - t0);
    }
    rows.push(latencyRow(backend, '2-step plan, submit to terminal update', latencies));

    const apiLatencies: number[] = [];
    for (let i = 0; i < Math.ceil(RUNS / 2); i++) {
      const t0 = performance.now();
      const id = await submit(app.url, SQL_THEN_API_PLAN);
      const { last } = await follow(wsUrl, id);
      if (last !== 'EXECUTION_SUCCEEDED') throw new Error(`SQL+API run ended with ${last}`);
      apiLatencies.push(performance.now() - t0);
    }
    rows.push(latencyRow(backend, 'SQL step, then a program making 10 API calls', apiLatencies));
    progress(backend, 'plan latencies measured');

    const t0 = performance.now();
    const ids = await Promise.all(Array.from({ length: CONCURRENT }, () => submit(app.url, TWO_STEP_PLAN)));
    await Promise.all(ids.map((id) => follow(wsUrl, id)));
    const seconds = (performance.now() - t0) / 1000;
    rows.push({
      name: `${CONCURRENT} concurrent 2-step plans`,
      backend,
      value: CONCURRENT / seconds,
      unit: 'executions/s',
      note: `all done in ${seconds.toFixed(2)} s; 4 at once (the tenant's cap here)`,
      load: currentLoad(),
    });

    const steps = Array.from({ length: 50 }, (_, i) => ({ kind: 'SQL', queryContext: `step ${i + 1}`, sql: `SELECT ${i + 1} AS n` }));
    const longId = await submit(app.url, { query: 'long', steps });
    const fanOut = performance.now();
    const results = await Promise.all(Array.from({ length: SUBSCRIBERS }, () => follow(wsUrl, longId)));
    const fanOutMs = performance.now() - fanOut;
    const delivered = results.reduce((sum, r) => sum + r.updates, 0);
    rows.push({
      name: `${SUBSCRIBERS} subscribers on a 50-step plan, to its end`,
      backend,
      value: fanOutMs,
      unit: 'ms',
      note: `${delivered} updates delivered`,
      load: currentLoad(),
    });

    const replays: number[] = [];
    for (let i = 0; i < 20; i++) {
      const r0 = performance.now();
      const { updates } = await follow(wsUrl, longId);
      if (updates !== 102) throw new Error(`replay delivered ${updates} updates, expected 102`);
      replays.push(performance.now() - r0);
    }
    rows.push(latencyRow(backend, 'replay of a finished 102-update execution', replays));
    progress(backend, 'fan-out and replay measured');

    // A hostile tenant (issue 8): another client's latency while the plans below run, against the same
    // probe on the idle server measured just before (the floor), with peak resident memory.
    const idle = [...(await probeUntil(app.url, undefined, 300))].sort((a, b) => a - b);
    const idleP99 = percentile(idle, 99);
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
      rows.push({
        name: `hostile: ${name}; another client's { __typename } p99`,
        backend,
        value: p99,
        unit: 'ms',
        floor: idleP99,
        bar: 'p99 < 1 s',
        meets: p99 < 1000,
        note:
          `${last}; p50 ${percentile(during, 50).toFixed(1)} ms (idle ${percentile(idle, 50).toFixed(1)} ms); ` +
          `peak RSS ${(Math.max(before, await peakRss()) / 1_048_576).toFixed(0)} MiB (the bench's process)`,
        load: currentLoad(),
      });
      progress(backend, `hostile: ${name} measured`);
    }
  } finally {
    await app.close();
    await rm(dataDir, { recursive: true, force: true });
  }
  return rows;
}

/** The parts of the bench, in the table's order; BENCH_ONLY=workers,history (say) runs only those. */
const PARTS = ['steps', 'fanout', 'e2e', 'history', 'workers'] as const;
type Part = (typeof PARTS)[number];
const only = process.env.BENCH_ONLY?.split(',').map((part) => part.trim());
const unknownParts = only?.filter((part) => !(PARTS as readonly string[]).includes(part)) ?? [];
if (unknownParts.length > 0) throw new Error(`BENCH_ONLY: unknown part ${unknownParts.join(', ')}; the parts are ${PARTS.join(', ')}`);
const runs = (part: Part) => only === undefined || only.includes(part);

/** Every measurement of one backend, in the table's order. */
async function benchBackend(target: StepsTarget): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  if (runs('steps')) {
    progress(target.backend, 'steps against the 2-commit floor');
    rows.push(...(await benchSteps(target)));
  }
  if (runs('fanout')) {
    progress(target.backend, 'fan-out to 1,000 subscribers, memory per idle subscription');
    rows.push(...(await benchFanOut(target)));
  }
  if (runs('e2e')) rows.push(...(await endToEnd(target.backend, target.env)));
  return rows;
}

/** A row that says a part was not run, and why. */
const skipped = (backend: string, name: string, why: string): BenchRow => ({ backend, name, value: Number.NaN, unit: '', note: why });

const rows: BenchRow[] = [];
try {
  // On PGlite each server has a data directory of its own; the steps need no more than the default demo dataset.
  if (runs('steps') || runs('fanout') || runs('e2e')) rows.push(...(await benchBackend({ backend: 'PGlite', env: {} })));

  const databaseUrl = process.env.BENCH_DATABASE_URL;
  const redisUrl = process.env.BENCH_REDIS_URL;
  if (databaseUrl) {
    if (runs('steps') || runs('fanout') || runs('e2e')) {
      await withBenchDatabase(databaseUrl, 'stepcast_bench', async (benchUrl) => {
        rows.push(
          ...(await benchBackend({
            backend: 'PostgreSQL',
            // Both servers share the bench's database, so both ask for the same demo dataset (the first seeds it).
            env: { DATABASE_URL: benchUrl, STEPCAST_DEMO_USERS: USERS },
            floorUrl: benchUrl,
          })),
        );
      });
    }
    // History at 1,000,000 stored executions (a database of its own, 7 to 15 minutes of seeding here);
    // BENCH_HISTORY_EXECUTIONS=0 leaves it out.
    if (runs('history') && Number(process.env.BENCH_HISTORY_EXECUTIONS ?? 1) > 0) {
      progress('PostgreSQL', 'history at BENCH_HISTORY_EXECUTIONS (1,000,000) stored executions');
      rows.push(...(await benchHistory(databaseUrl)));
    }
    // Issue 11: worker processes on one PostgreSQL and one Redis (a database of their own).
    if (runs('workers')) {
      if (redisUrl) {
        progress('PostgreSQL + Redis', `steps/s of 1, 2 and 4 worker processes (BENCH_REDIS_URL ${new URL(redisUrl).host})`);
        await withBenchDatabase(databaseUrl, 'stepcast_bench_workers', async (benchUrl) => {
          await benchWorkers(benchUrl, redisUrl, rows);
        });
      } else {
        const why = 'skipped: set BENCH_REDIS_URL=redis://127.0.0.1:6379 to include it';
        console.error(`(worker processes ${why})`);
        rows.push(skipped('PostgreSQL + Redis', 'worker processes: steps/s of 1, 2 and 4', why));
      }
    }
  } else {
    console.error('(PostgreSQL skipped: set BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test to include it)');
    if (runs('workers')) {
      rows.push(
        skipped('PostgreSQL + Redis', 'worker processes: steps/s of 1, 2 and 4', 'skipped: needs BENCH_DATABASE_URL and BENCH_REDIS_URL'),
      );
    }
  }
} finally {
  // Whatever was measured, even when a later part failed.
  console.log(formatTable(rows));
}
