// Issue 11's figures: steps/s of 1, 2 and 4 worker processes (STEPCAST_ROLE=worker, started as `npm start` starts
// them) on one PostgreSQL database and one Redis, fed by one API process (STEPCAST_ROLE=api) over HTTP with the plans
// of 8 tenants, then of one. Beside each figure, the CPU each part took over the run (Linux's /proc) and what the
// database's backends waited on (pg_stat_activity): what a step costs, and what bounds the figure on this machine.
// The floor of each figure is the raw postgres.js loop of bench/steps.ts at as many clients as the workers have slots.
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { createApiKey, createTenant } from '../src/admin/tenants.js';
import { loadSecretBox } from '../src/auth/secrets.js';
import { loadConfig } from '../src/config.js';
import { openDatabase } from '../src/db/client.js';
import { stepUpdatesChannel } from '../src/cluster/redis-bus.js';
import { benchLimits, percentile } from './client.js';
import type { ClientCommand, ClientReport } from './fanout-harness.js';
import { chainPlan, rawLoopStepsPerSecond } from './steps.js';
import { currentLoad, machineTicks, type BenchRow } from './table.js';

/** Executions each worker runs at once (STEPCAST_MAX_CONCURRENT_EXECUTIONS). */
const SLOTS = Number(process.env.BENCH_WORKER_SLOTS ?? 8);
/** Measured plans per worker count (10 steps each), all submitted at once. */
const PLANS = Number(process.env.BENCH_WORKER_PLANS ?? 150);
/** Plans of each rep of the raw loop (it runs 3 reps, each about 10x as fast as stepcast's steps). */
const FLOOR_PLANS = 100;
const WORKER_COUNTS = (process.env.BENCH_WORKER_COUNTS ?? '1,2,4').split(',').map(Number);
/** After the last count, the same workers with every plan from one tenant (BENCH_WORKER_ONE_TENANT=0 leaves it out). */
const ONE_TENANT_ROW = process.env.BENCH_WORKER_ONE_TENANT !== '0';
/** Tenants submitting (round robin), each with an API key: a tenant's admissions take turns across the cluster. */
const TENANTS = Number(process.env.BENCH_WORKER_TENANTS ?? 8);
/** Concurrent HTTP clients submitting the plans to the API process. */
const SUBMITTERS = 8;
const STEPS_PER_PLAN = 10;
const BACKEND = 'PostgreSQL + Redis';
const FINISHED_TIMEOUT_MS = 120_000;

const projectRoot = fileURLToPath(new URL('../', import.meta.url));
const progress = (text: string) => console.error(`[${BACKEND}] ${text} (load ${currentLoad().toFixed(2)})`);

// ---------------------------------------------------------------------------------------------------------------
// CPU from /proc: clock ticks of processes, and of the whole machine.

const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();
const CORES = cpus().length;

/** utime, stime, cutime, cstime of a process, in ticks (zeros when it is gone). */
async function ticksOf(pid: number): Promise<{ user: number; system: number; own: number; children: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // The command name may hold spaces and parentheses: the fields that follow start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After the name, field 3 (state) is fields[0]: utime is field 14, stime 15, cutime 16, cstime 17.
  const at = (field: number) => Number(fields[field - 3] ?? 0) || 0;
  return { user: at(14), system: at(15), own: at(14) + at(15), children: at(16) + at(17) };
}

interface CpuSample {
  at: number;
  /** Every `postgres` process of the machine, with the children they reaped (backends that ended meanwhile). */
  postgres: number;
  /** The backends serving `database` (their process title names it). */
  database: number;
  redis: number;
  /** Per pid of ours (the API process and the workers). */
  pids: Map<number, number>;
  bench: number;
  /** /proc/stat: ticks of all cores, and those not idle. */
  machineTotal: number;
  machineBusy: number;
}

async function sampleCpu(database: string, pids: readonly number[]): Promise<CpuSample> {
  const at = performance.now();
  let postgresTicks = 0;
  let databaseTicks = 0;
  let redisTicks = 0;
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const comm = (await readFile(`/proc/${entry}/comm`, 'utf8').catch(() => '')).trim();
    if (comm === 'postgres') {
      const { own, children } = await ticksOf(Number(entry));
      postgresTicks += own + children;
      const title = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
      if (title.split(/[\s\0]+/).includes(database)) databaseTicks += own;
    } else if (comm === 'redis-server') {
      redisTicks += (await ticksOf(Number(entry))).own;
    }
  }
  const ours = new Map<number, number>();
  for (const pid of pids) ours.set(pid, (await ticksOf(pid)).own);
  const machine = await machineTicks();
  if (!machine) throw new Error('the worker bench reads /proc (Linux)');
  const usage = process.cpuUsage();
  return {
    at,
    postgres: postgresTicks,
    database: databaseTicks,
    redis: redisTicks,
    pids: ours,
    bench: ((usage.user + usage.system) / 1e6) * CLOCK_TICKS,
    machineTotal: machine.total,
    machineBusy: machine.busy,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The processes of the cluster.

interface ClusterProcess {
  child: ChildProcess;
  pid: number;
  url: string;
  exited: Promise<unknown>;
}

/**
 * Starts `node --import tsx src/main.ts` with `env` and waits for its `readyMessage` log line. Its logs (LOG_LEVEL=info,
 * as deployed) are read until then and drained unread after, so that the bench spends nothing on them.
 */
async function startProcess(env: Record<string, string>, readyMessage: string): Promise<ClusterProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: projectRoot,
    env: { PATH: process.env.PATH ?? '', PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = once(child, 'exit');
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4_000)));
  let pending = '';
  let ready = false;
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      if (ready) return;
      pending += chunk.toString();
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const line of lines) {
        if (!line.includes(readyMessage)) continue;
        ready = true;
        resolve(String((JSON.parse(line) as { url?: string }).url ?? ''));
        return;
      }
    });
    void exited.then(([code]) => reject(new Error(`a bench process exited with ${String(code)} before it was ready: ${stderr}`)));
  });
  return { child, pid: child.pid!, url, exited };
}

async function stopProcess(process: ClusterProcess): Promise<void> {
  if (process.child.exitCode !== null || process.child.signalCode !== null) return;
  process.child.kill('SIGTERM');
  const timer = setTimeout(() => process.child.kill('SIGKILL'), 10_000);
  await process.exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------------------------------------
// The measurement.

const EXECUTE = `mutation Run($plan: PlanInput!) { executePlan(plan: $plan) { id } }`;

/** Submits `count` chain plans through the API process, SUBMITTERS at a time, with the tenants' keys in turn; their ids. */
async function submitPlans(apiUrl: string, keys: readonly string[], count: number): Promise<string[]> {
  const ids: string[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(SUBMITTERS, count) }, async () => {
      while (next < count) {
        const key = keys[next++ % keys.length]!;
        const response = await fetch(apiUrl, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
          body: JSON.stringify({ query: EXECUTE, variables: { plan: chainPlan() } }),
        });
        const body = (await response.json()) as { data?: { executePlan: { id: string } }; errors?: unknown };
        if (!body.data) throw new Error(`executePlan failed: ${JSON.stringify(body.errors)}`);
        ids.push(body.data.executePlan.id);
      }
    }),
  );
  return ids;
}

type Sql = import('postgres').Sql;

/** Polls the executions table until every one of `ids` has finished; fails unless all succeeded. */
async function waitFinished(sql: Sql, ids: readonly string[]): Promise<void> {
  const deadline = performance.now() + FINISHED_TIMEOUT_MS;
  for (;;) {
    const [row] = await sql<{ finished: number; succeeded: number }[]>`
      SELECT count(*) FILTER (WHERE status IN ('SUCCEEDED', 'FAILED', 'CANCELLED'))::int AS finished,
             count(*) FILTER (WHERE status = 'SUCCEEDED')::int AS succeeded
      FROM executions WHERE id IN ${sql([...ids])}`;
    if (row!.finished === ids.length) {
      if (row!.succeeded !== ids.length) {
        const [failed] = await sql<{ status: string; error: unknown }[]>`
          SELECT status, error FROM executions WHERE id IN ${sql([...ids])} AND status <> 'SUCCEEDED' LIMIT 1`;
        throw new Error(`${ids.length - row!.succeeded} bench executions did not succeed; one ended ${failed?.status}: ${JSON.stringify(failed?.error)}`);
      }
      return;
    }
    if (performance.now() > deadline) throw new Error(`${ids.length - row!.finished} bench executions unfinished after ${FINISHED_TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** What the database's backends were doing while active, sampled from pg_stat_activity. */
interface WaitProfile {
  /** Backends of the database active at a sample, on average. */
  meanActive: number;
  /** Wait events ('CPU': none, running or ready to run) by their share of active samples, largest first. */
  shares: [string, number][];
}

/** The bench's own connections, left out of the samples. */
const BENCH_APPLICATION = 'stepcast-bench';
const WAIT_SAMPLE_MS = 25;

/** Samples the database's active backends every WAIT_SAMPLE_MS until stopped (its one query costs little). */
function sampleWaits(sql: Sql, database: string): { stop(): void; result: Promise<WaitProfile> } {
  let stopped = false;
  const result = (async () => {
    const counts = new Map<string, number>();
    let samples = 0;
    let active = 0;
    while (!stopped) {
      const rows = await sql<{ wait: string; n: number }[]>`
        SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') AS wait, count(*)::int AS n
        FROM pg_stat_activity
        WHERE datname = ${database} AND state = 'active' AND application_name <> ${BENCH_APPLICATION}
        GROUP BY 1`;
      samples++;
      for (const { wait, n } of rows) {
        counts.set(wait, (counts.get(wait) ?? 0) + n);
        active += n;
      }
      await new Promise((resolve) => setTimeout(resolve, WAIT_SAMPLE_MS));
    }
    const shares = [...counts].map(([wait, n]): [string, number] => [wait, active === 0 ? 0 : n / active]).sort((a, b) => b[1] - a[1]);
    return { meanActive: samples === 0 ? 0 : active / samples, shares };
  })();
  return { stop: () => (stopped = true), result };
}

interface Run {
  workers: number;
  tenants: number;
  stepsPerSecond: number;
  wallSeconds: number;
  steps: number;
  /** CPU seconds over the run. */
  postgres: number;
  database: number;
  workersCpu: number;
  api: number;
  redis: number;
  bench: number;
  /** Share of the machine's cores that were busy (from /proc/stat). */
  machineBusy: number;
  waits: WaitProfile;
  load: number;
}

async function measure(sql: Sql, database: string, api: ClusterProcess, workers: readonly ClusterProcess[], keys: readonly string[]): Promise<Run> {
  const pids = [api.pid, ...workers.map((w) => w.pid)];
  // Warm-up, not counted: the new workers' JIT, their pools and prepared statements.
  await waitFinished(sql, await submitPlans(api.url, keys, 2 * SLOTS * workers.length));
  const before = await sampleCpu(database, pids);
  const t0 = performance.now();
  const waits = sampleWaits(sql, database);
  let ids: string[];
  try {
    ids = await submitPlans(api.url, keys, PLANS);
    await waitFinished(sql, ids);
  } finally {
    waits.stop();
  }
  const wallSeconds = (performance.now() - t0) / 1000;
  const after = await sampleCpu(database, pids);
  const seconds = (ticks: number) => ticks / CLOCK_TICKS;
  const ofPid = (pid: number) => seconds(after.pids.get(pid)! - before.pids.get(pid)!);
  const steps = PLANS * STEPS_PER_PLAN;
  return {
    workers: workers.length,
    tenants: keys.length,
    stepsPerSecond: steps / wallSeconds,
    wallSeconds,
    steps,
    postgres: seconds(after.postgres - before.postgres),
    database: seconds(after.database - before.database),
    workersCpu: workers.reduce((sum, w) => sum + ofPid(w.pid), 0),
    api: ofPid(api.pid),
    redis: seconds(after.redis - before.redis),
    bench: seconds(after.bench - before.bench),
    machineBusy: (after.machineBusy - before.machineBusy) / (after.machineTotal - before.machineTotal),
    waits: await waits.result,
    load: currentLoad(),
  };
}

/** '5.2 on average (Lock:advisory 48%, CPU 20%, LWLock:WALWrite 10%)': the three largest shares of active samples. */
const waitsOf = (run: Run) =>
  `${run.waits.meanActive.toFixed(1)} on average (${run.waits.shares
    .slice(0, 3)
    .map(([wait, share]) => `${wait} ${(100 * share).toFixed(0)}%`)
    .join(', ')})`;

const summary = (run: Run) =>
  `${run.stepsPerSecond.toFixed(0)} steps/s in ${run.wallSeconds.toFixed(1)} s; PostgreSQL ${percent(run.postgres, run)}, ` +
  `workers ${percent(run.workersCpu, run)}, API ${percent(run.api, run)}, machine busy ${(100 * run.machineBusy).toFixed(0)}% ` +
  `(${elsewhere(run)} elsewhere); ` +
  `backends active ${waitsOf(run)}`;

/** TENANTS tenants (bench_1 …) with an API key each, made as `npm run admin` makes them; their keys. */
async function createTenants(env: Record<string, string>): Promise<string[]> {
  const config = loadConfig(env);
  const database = await openDatabase(config.database, { tenantStatements: 1 });
  try {
    // The processes' key file (DATA_DIR), which the API process wrote at its start.
    const { box } = await loadSecretBox(config.encryptionKey, config.dataDir);
    const keys: string[] = [];
    for (let i = 1; i <= TENANTS; i++) {
      const tenant = await createTenant(database, box, { name: `Bench ${i}`, id: `bench_${i}` });
      keys.push((await createApiKey(database, tenant.id)).token);
    }
    return keys;
  } finally {
    await database.close();
  }
}

/** The machine's busy share that none of the measured processes took: others on the machine, the kernel's own work. */
const elsewhere = (run: Run) => {
  const measured = run.postgres + run.workersCpu + run.api + run.redis + run.bench;
  return `${Math.max(0, 100 * run.machineBusy - (100 * measured) / (run.wallSeconds * CORES)).toFixed(0)}%`;
};

const percent = (cpuSeconds: number, run: Run) => `${((100 * cpuSeconds) / (run.wallSeconds * CORES)).toFixed(0)}%`;
const msPerStep = (cpuSeconds: number, run: Run) => `${((1000 * cpuSeconds) / run.steps).toFixed(2)} ms/step`;

interface Floor {
  concurrency: number;
  stepsPerSecond: number;
  /** CPU of all postgres processes per raw step (2 commits). */
  postgresMsPerStep: number;
}

function rowOf(run: Run, floor: Floor, first: Run | undefined): BenchRow {
  const vsFirst = first && first !== run ? `${(run.stepsPerSecond / first.stepsPerSecond).toFixed(2)}x the ${first.workers}-worker figure; ` : '';
  const from = run.tenants === 1 ? 'ONE tenant' : `${run.tenants} tenants`;
  return {
    name: `${run.workers} worker process${run.workers === 1 ? '' : 'es'} × ${SLOTS} slots, 1 API process: steps/s (${PLANS} plans × ${STEPS_PER_PLAN} SQL steps, from ${from})`,
    backend: BACKEND,
    value: run.stepsPerSecond,
    unit: 'steps/s',
    floor: floor.stepsPerSecond,
    note:
      `${vsFirst}${run.wallSeconds.toFixed(1)} s; share of ${CORES} cores over the run: ` +
      `PostgreSQL ${percent(run.postgres, run)} (${msPerStep(run.postgres, run)}; this database's backends ${percent(run.database, run)}), ` +
      `workers ${percent(run.workersCpu, run)} (${msPerStep(run.workersCpu, run)}), API ${percent(run.api, run)}, ` +
      `Redis ${percent(run.redis, run)}, bench client ${percent(run.bench, run)}, machine busy ${(100 * run.machineBusy).toFixed(0)}% ` +
      `(the rest: ${elsewhere(run)}, other processes and the kernel); ` +
      `this database's backends active ${waitsOf(run)}; ` +
      `floor: raw loop (2 commits a step) at ${floor.concurrency} clients, PostgreSQL ${floor.postgresMsPerStep.toFixed(2)} ms/step`,
    load: run.load,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Live updates across processes: a worker runs, subscribers watch on the API replica, Redis between them.

const FANOUT_SUBSCRIBERS = Number(process.env.BENCH_FANOUT_SUBSCRIBERS ?? 1_000);
const FANOUT_STEPS = 20;
/** The subscribers' harness: graphql-ws clients (bench/fanout-clients.ts) or raw ws sockets (fanout-clients-raw.ts). */
const FANOUT_HARNESS = process.env.BENCH_FANOUT_HARNESS === 'raw' ? 'raw' : 'graphql-ws';
/** Child processes the subscribers are shared out among. */
const FANOUT_PROCESSES = Math.max(1, Number(process.env.BENCH_FANOUT_PROCESSES ?? 1));
/** Rows a busy step counts: about 50 ms of a backend's time here. */
const BUSY_ROWS = 500_000;
/** The gap between approvals when the bench paces the steps. */
const PACE_MS = 50;

/**
 * How the cross-process fan-out's steps follow each other:
 * - approvals: trivial steps, each waiting for an approval that the bench gives PACE_MS after the one before: updates
 *   at a set rate (about 60 a second) with the worker and PostgreSQL idle in between, as when steps wait on another
 *   system, and about the rate one process sustains while 1,000 watch it (the in-process fan-out row);
 * - busy: each step counts a generated series, about 50 ms of a PostgreSQL backend's CPU: the database competes with
 *   the API replica and the clients for this machine's 2 cores;
 * - none: trivial steps, their updates as fast as a worker commits them (hundreds a second).
 */
type Pace = 'approvals' | 'busy' | 'none';

const PACE_LABELS: Record<Pace, string> = {
  approvals: `steps ${PACE_MS} ms apart (approvals)`,
  busy: 'steps of ~50 ms of database CPU',
  none: 'trivial steps, unpaced',
};
const FOLLOW_AT = `subscription Follow($id: ID!) { stepUpdates(executionId: $id) { sequence type at } }`;

async function graphqlAs(url: string, key: string, query: string, variables: Record<string, unknown>): Promise<Record<string, unknown>> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await response.json()) as { data?: Record<string, unknown>; errors?: unknown };
  if (!body.data) throw new Error(`${query.slice(0, 30)} failed: ${JSON.stringify(body.errors)}`);
  return body.data;
}

/**
 * `subscribers` graphql-ws clients (a child process: bench/fanout-clients.ts) follow one execution on the API process
 * while a worker process runs it. Latency of each live update to each client, on one machine's clock:
 * - `latencies`: from its publish, as in the in-process row (which starts at the bus's publish, after the commit): the
 *   bench listens on the execution's Redis channel itself and stamps each update as Redis hands it out, which is when
 *   the API replica gets it too;
 * - `fromAt`: from its `at`, stamped by the worker as it builds the transition, before the commit's round trip.
 * The plan waits for approval first, so every client has replayed the stored updates before the run goes on.
 */
async function watchAcross(
  api: ClusterProcess,
  key: string,
  subscribers: number,
  pace: Pace,
  redis: { url: string; prefix: string },
): Promise<{ latencies: number[]; fromAt: number[]; broken: number; clients: number; usPerStep: number }> {
  const plan = {
    query: 'cross-process fan-out',
    steps: Array.from({ length: FANOUT_STEPS }, (_, i) => ({
      kind: 'SQL',
      queryContext: `step ${i + 1}`,
      sql: i === 0 ? 'SELECT 1 AS n' : pace === 'busy' ? `SELECT count(*) AS n FROM generate_series(1, ${BUSY_ROWS})` : `SELECT n + 1 AS n FROM step_${i}`,
      ...(i === 0 || pace === 'approvals' ? { approval: true } : {}),
    })),
  };
  const { executePlan } = (await graphqlAs(api.url, key, EXECUTE, { plan })) as { executePlan: { id: string } };
  const id = executePlan.id;
  for (;;) {
    const { execution } = (await graphqlAs(api.url, key, 'query S($id: ID!) { execution(id: $id) { status } }', { id })) as {
      execution: { status: string };
    };
    if (execution.status === 'WAITING') break;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  // The subscribers' harness (BENCH_FANOUT_HARNESS: graphql-ws clients, or raw ws sockets) over
  // BENCH_FANOUT_PROCESSES child processes, the subscribers shared out among them.
  const harness = FANOUT_HARNESS === 'raw' ? './fanout-clients-raw.ts' : './fanout-clients.ts';
  const shares = Array.from({ length: Math.min(FANOUT_PROCESSES, subscribers) }, (_, p, all = Math.min(FANOUT_PROCESSES, subscribers)) =>
    Math.floor(subscribers / all) + (p < subscribers % all ? 1 : 0),
  );
  const children = shares.map(() =>
    fork(fileURLToPath(new URL(harness, import.meta.url)), [], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }),
  );
  try {
    const nextOf = <T extends ClientReport['type']>(child: ChildProcess, type: T) =>
      new Promise<Extract<ClientReport, { type: T }>>((resolve, reject) =>
        child.on('message', (report: ClientReport) => {
          if (report.type === 'failed') reject(new Error(report.error));
          else if (report.type === type) resolve(report as Extract<ClientReport, { type: T }>);
        }),
      );
    const ready = Promise.all(children.map((child) => nextOf(child, 'ready')));
    const done = Promise.all(children.map((child) => nextOf(child, 'done'))).then((reports) => ({
      clients: reports.flatMap((report) => report.clients),
    }));
    children.forEach((child, p) => {
      const command: ClientCommand = {
        type: 'subscribe',
        wsUrl: api.url.replace(/^http/, 'ws'),
        executionId: id,
        count: shares[p]!,
        query: FOLLOW_AT,
        readyType: 'STEP_WAITING',
        authorization: `Bearer ${key}`,
      };
      child.send(command);
    });
    await ready;
    const published = new Map<number, number>();
    const { Redis } = await import('ioredis');
    const listener = new Redis(redis.url, { lazyConnect: true });
    listener.on('message', (_channel: string, message: string) => {
      published.set((JSON.parse(message) as { sequence: number }).sequence, performance.timeOrigin + performance.now());
    });
    await listener.connect();
    await listener.subscribe(stepUpdatesChannel(redis.prefix, id));
    const splitPids = [api.pid, ...children.map((child) => child.pid!)];
    const splitBefore = await Promise.all(splitPids.map(ticksOf));
    const cpuBefore = await sampleCpu('', splitPids);
    const approvedAt = Date.now();
    const approvedStamp = performance.timeOrigin + performance.now();
    await approve(api, key, id, 1);
    if (pace === 'approvals') {
      for (let index = 2; index <= FANOUT_STEPS; index++) {
        await new Promise((resolve) => setTimeout(resolve, approvedAt + (index - 1) * PACE_MS - Date.now()));
        await approve(api, key, id, index);
      }
    }
    const report = await done;
    // The worker's pace: from the approval to the last update's publish, per step.
    const usPerStep = ((Math.max(...published.values()) - approvedStamp) * 1000) / FANOUT_STEPS;
    const cpuAfter = await sampleCpu('', splitPids);
    const splitAfter = await Promise.all(splitPids.map(ticksOf));
    listener.disconnect();
    const latencies: number[] = [];
    const fromAt: number[] = [];
    let broken = 0;
    const last = Math.max(...report.clients.map((c) => Math.max(...c.sequences)));
    for (const client of report.clients) {
      if (client.error || client.sequences.length !== last || !client.sequences.every((sequence, i) => sequence === i + 1)) broken += 1;
      client.sequences.forEach((sequence, i) => {
        const at = client.ats[i]!;
        if (at < approvedAt) return;
        fromAt.push(client.times[i]! - at);
        const publishedAt = published.get(sequence);
        if (publishedAt === undefined) throw new Error(`update ${sequence} reached a client but was never seen on its Redis channel`);
        latencies.push(client.times[i]! - publishedAt);
      });
    }
    // Per update: its first and last receipt among the subscribers, from its publish (the spread between them is
    // the server's writes and the subscribers' reads taking turns).
    const firstLast = new Map<number, [number, number]>();
    for (const client of report.clients) {
      client.sequences.forEach((sequence, i) => {
        if (client.ats[i]! < approvedAt) return;
        const latency = client.times[i]! - published.get(sequence)!;
        const seen = firstLast.get(sequence);
        if (!seen) firstLast.set(sequence, [latency, latency]);
        else firstLast.set(sequence, [Math.min(seen[0], latency), Math.max(seen[1], latency)]);
      });
    }
    const firsts = [...firstLast.values()].map(([first]) => first);
    const spreads = [...firstLast.values()].map(([first, last]) => last - first);
    if (subscribers > 1) {
      const ms = (ticks: number) => (1000 * ticks) / CLOCK_TICKS;
      const delta = (pid: number) => cpuAfter.pids.get(pid)! - cpuBefore.pids.get(pid)!;
      const apiTicks = delta(api.pid);
      const clientTicks = children.reduce((sum, child) => sum + delta(child.pid!), 0);
      const wall = cpuAfter.at - cpuBefore.at;
      const busy = cpuAfter.machineBusy - cpuBefore.machineBusy;
      const total = cpuAfter.machineTotal - cpuBefore.machineTotal;
      progress(
        `  cpu over ${wall.toFixed(0)} ms, ${firstLast.size} updates: API ${ms(apiTicks).toFixed(0)} ms (${(ms(apiTicks) / firstLast.size).toFixed(2)} ms/update), ` +
          `subscribers ${ms(clientTicks).toFixed(0)} ms (${(ms(clientTicks) / firstLast.size).toFixed(2)} ms/update), ` +
          `postgres ${ms(cpuAfter.postgres - cpuBefore.postgres).toFixed(0)} ms, redis ${ms(cpuAfter.redis - cpuBefore.redis).toFixed(0)} ms, ` +
          `bench ${ms(cpuAfter.bench - cpuBefore.bench).toFixed(0)} ms; machine busy ${((100 * busy) / total).toFixed(0)}% of ${CORES} cores`,
      );
      const userSystem = (from: number, to: number) => {
        let user = 0;
        let system = 0;
        for (let k = from; k < to; k++) {
          user += splitAfter[k]!.user - splitBefore[k]!.user;
          system += splitAfter[k]!.system - splitBefore[k]!.system;
        }
        return `user ${ms(user).toFixed(0)} ms + system ${ms(system).toFixed(0)} ms`;
      };
      progress(`  API ${userSystem(0, 1)}; subscribers ${userSystem(1, splitPids.length)}`);
      progress(
        `  per update (${firstLast.size}): first receipt p50 ${percentileOf(firsts, 50).toFixed(1)} max ${Math.max(...firsts).toFixed(1)} ms; ` +
          `last-first spread p50 ${percentileOf(spreads, 50).toFixed(1)} max ${Math.max(...spreads).toFixed(1)} ms`,
      );
    }
    return { latencies, fromAt, broken, clients: report.clients.length, usPerStep };
  } finally {
    for (const child of children) child.kill();
  }
}

/** Approves step `index`, once it waits (a trivial step before it may still be finishing). */
async function approve(api: ClusterProcess, key: string, id: string, index: number): Promise<void> {
  for (;;) {
    try {
      await graphqlAs(api.url, key, 'mutation A($id: ID!, $index: Int!) { approveStep(executionId: $id, index: $index) { id } }', { id, index });
      return;
    } catch (error) {
      if (!String(error).includes('not waiting')) throw error;
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  }
}

const percentileOf = (values: readonly number[], p: number) => percentile([...values].sort((a, b) => a - b), p);

/** A cross-process fan-out row: one subscriber (the floor), then `FANOUT_SUBSCRIBERS`, on the API replica. */
async function fanOutRow(api: ClusterProcess, key: string, pace: Pace, redis: { url: string; prefix: string }): Promise<BenchRow> {
  await watchAcross(api, key, 1, pace, redis); // warm-up
  const one = await watchAcross(api, key, 1, pace, redis);
  const many = await watchAcross(api, key, FANOUT_SUBSCRIBERS, pace, redis);
  const p99 = percentileOf(many.latencies, 99);
  const intact = many.broken === 0 && one.broken === 0 && many.clients === FANOUT_SUBSCRIBERS;
  return {
    name: `live across processes: publish-to-client p99, ${FANOUT_SUBSCRIBERS.toLocaleString('en')} subscribers on the API replica, ${PACE_LABELS[pace]} [${FANOUT_HARNESS} x${FANOUT_PROCESSES}]`,
    backend: BACKEND,
    value: p99,
    unit: 'ms',
    floor: percentileOf(one.latencies, 99),
    bar: 'as in one process (p99 <= 50 ms)',
    meets: p99 <= 50 && intact,
    note:
      `a worker process runs ${FANOUT_STEPS} ${PACE_LABELS[pace]}; p50 ${percentileOf(many.latencies, 50).toFixed(1)} ms ` +
      `(1 subscriber: p50 ${percentileOf(one.latencies, 50).toFixed(1)} ms); ${many.latencies.length} deliveries; ` +
      `${intact ? 'no gap or duplicate' : `GAPS/DUPLICATES/ERRORS in ${many.broken + one.broken} clients`}; from the worker's publish (as Redis hands it out) to receipt; ` +
      `from the update's at (stamped before the commit): p50 ${percentileOf(many.fromAt, 50).toFixed(1)} ms, p99 ${percentileOf(many.fromAt, 99).toFixed(1)} ms` +
      (pace === 'none'
        ? `; the worker's µs per step from the approval to its last publish: ${one.usPerStep.toFixed(0)} with 1 subscriber, ${many.usPerStep.toFixed(0)} with ${FANOUT_SUBSCRIBERS.toLocaleString('en')} (${(many.usPerStep / one.usPerStep).toFixed(2)}x)`
        : ''),
    load: currentLoad(),
  };
}

/**
 * The worker figures on a fresh database of `databaseUrl`'s server (made and dropped by the caller) with `redisUrl`
 * (keys under a prefix of their own). Workers are added between measurements: 1, then 2, then 4. Each row goes into
 * `rows` as it is measured, so that a later failure keeps it.
 */
export async function benchWorkers(databaseUrl: string, redisUrl: string, rows: BenchRow[]): Promise<void> {
  const database = new URL(databaseUrl).pathname.slice(1);
  const concurrencies = WORKER_COUNTS.map((n) => n * SLOTS);
  // The floors first, while nothing else holds connections (the largest needs one per client), with the database's
  // CPU per raw step.
  const floors: Floor[] = [];
  for (const concurrency of concurrencies) {
    const before = await sampleCpu(database, []);
    const { stepsPerSecond, steps } = await rawLoopStepsPerSecond(databaseUrl, concurrency, FLOOR_PLANS);
    const after = await sampleCpu(database, []);
    floors.push({ concurrency, stepsPerSecond, postgresMsPerStep: (1000 * (after.postgres - before.postgres)) / CLOCK_TICKS / steps });
  }
  progress(`floor: raw loop ${floors.map((f) => `${f.stepsPerSecond.toFixed(0)} steps/s at ${f.concurrency} (PostgreSQL ${f.postgresMsPerStep.toFixed(2)} ms/step)`).join(', ')}`);

  const { default: postgres } = await import('postgres');
  // One connection polls for the end of a run, one samples what the backends wait on.
  const sql = postgres(databaseUrl, { max: 2, onnotice: () => undefined, connection: { application_name: BENCH_APPLICATION } });
  const dataDir = await mkdtemp(join(tmpdir(), 'stepcast-bench-workers-'));
  const env: Record<string, string> = {
    DATABASE_URL: databaseUrl,
    REDIS_URL: redisUrl,
    STEPCAST_REDIS_PREFIX: `bench${randomBytes(4).toString('hex')}:`,
    DATA_DIR: dataDir,
    STEPCAST_DEMO_USERS: '200',
    STEPCAST_DEMO_API: 'off',
    STEPCAST_SHUTDOWN_GRACE_MS: '3000',
    // Rates out of the way, and room for the cross-process fan-out's subscribers (one tenant's).
    ...benchLimits(FANOUT_SUBSCRIBERS),
    STEPCAST_MAX_CONCURRENT_EXECUTIONS: String(SLOTS),
    // Requests carry the bench tenants' API keys.
    STEPCAST_AUTH: 'on',
    // A tenant's cap is above every worker's slots together, so the workers' slots bound the run, not the tenants.
    STEPCAST_TENANT_MAX_CONCURRENT_EXECUTIONS: '256',
    // A connection per slot and two more; 4 workers, the API process and pg-boss's pools stay under PostgreSQL's
    // default max_connections (100).
    DATABASE_POOL_SIZE: String(SLOTS + 2),
  };
  const processes: ClusterProcess[] = [];
  const workers: ClusterProcess[] = [];
  const runs: Run[] = [];
  try {
    // The API process creates the schema and pg-boss's tables; the workers start on them.
    const api = await startProcess({ ...env, STEPCAST_ROLE: 'api' }, 'stepcast is listening');
    processes.push(api);
    const keys = await createTenants(env);
    // Live updates across processes first, with one worker and the machine otherwise quiet.
    if (FANOUT_SUBSCRIBERS > 0) {
      const first = await startProcess({ ...env, STEPCAST_ROLE: 'worker' }, 'stepcast worker is ready');
      processes.push(first);
      workers.push(first);
      for (const pace of ['approvals', 'busy', 'none'] as const) {
        const row = await fanOutRow(api, keys[0]!, pace, { url: redisUrl, prefix: env.STEPCAST_REDIS_PREFIX! });
        rows.push(row);
        progress(`${row.name}: ${row.value.toFixed(1)} ms (${row.note})`);
      }
    }
    for (const [i, count] of WORKER_COUNTS.entries()) {
      const added = await Promise.all(
        Array.from({ length: count - workers.length }, () => startProcess({ ...env, STEPCAST_ROLE: 'worker' }, 'stepcast worker is ready')),
      );
      processes.push(...added);
      workers.push(...added);
      const run = await measure(sql, database, api, workers, keys);
      runs.push(run);
      rows.push(rowOf(run, floors[i]!, runs[0]));
      progress(`${count} worker(s): ${summary(run)}`);
    }
    // The same workers with every plan from one tenant: its admissions take turns on the tenant's lock.
    if (ONE_TENANT_ROW && keys.length > 1) {
      const run = await measure(sql, database, api, workers, keys.slice(0, 1));
      rows.push(rowOf(run, floors.at(-1)!, runs[0]));
      progress(`${workers.length} worker(s), one tenant: ${summary(run)}`);
    }
    const [connections] = await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ${database}`;
    progress(`connections to the bench database at the end: ${connections!.n}`);
  } finally {
    await Promise.all(processes.map(stopProcess));
    await sql.end();
    await rm(dataDir, { recursive: true, force: true });
  }
}
