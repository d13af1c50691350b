// Issue 10, parts 3 and 5: one update reaching 1,000 graphql-ws subscribers, and server memory per idle
// subscription. The subscribers live in a child process (bench/fanout-clients.ts), so their CPU and memory are not
// the server's. Commit-to-client latency: the server's bus is observed in-process (publish comes after the commit),
// the client stamps receipt; both use performance.timeOrigin + performance.now().
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { startStepcast, type StepcastApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { benchLimits } from './client.js';
import type { StepUpdate } from '../src/executor/step-update.js';
import type { StepUpdateBus } from '../src/executor/step-update-bus.js';
import { createLogger } from '../src/logger.js';
import type { ClientCommand, ClientReport } from './fanout-harness.js';
import { measureSocketWrites } from './socket-writes.js';
import { currentLoad, type BenchRow } from './table.js';

const SUBSCRIBERS = Number(process.env.BENCH_FANOUT_SUBSCRIBERS ?? 1_000);
const LATENCY_STEPS = 20;
const TIMING_STEPS = 10;
const TIMING_REPS = Number(process.env.BENCH_FANOUT_REPS ?? 3);

const FOLLOW = `subscription Follow($id: ID!) { stepUpdates(executionId: $id) { sequence type at status step { index status recordCount } } }`;
const EXECUTE = `mutation Run($plan: PlanInput!) { executePlan(plan: $plan) { id } }`;
const STATUS = `query Status($id: ID!) { execution(id: $id) { id status } }`;
const APPROVE = `mutation Approve($id: ID!) { approveStep(executionId: $id, index: 1) { id } }`;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const now = () => performance.timeOrigin + performance.now();

/** `count` trivial SQL steps, each reading the previous one's records; the first waits for approval. */
const trivialPlan = (count: number) => ({
  query: 'fan-out bench',
  steps: Array.from({ length: count }, (_, i) => ({
    kind: 'SQL',
    queryContext: `step ${i + 1}`,
    sql: i === 0 ? 'SELECT 1 AS n' : `SELECT n + 1 AS n FROM step_${i}`,
    ...(i === 0 ? { approval: true } : {}),
  })),
});

async function graphql(url: string, query: string, variables: Record<string, unknown>): Promise<Record<string, { id: string }>> {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query, variables }) });
  const body = (await response.json()) as { data?: Record<string, { id: string }>; errors?: unknown };
  if (!body.data) throw new Error(`${query.slice(0, 30)} failed: ${JSON.stringify(body.errors)}`);
  return body.data;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

const median = (values: number[]) => percentile(values, 50);

/** The bytes one watched step sends a subscriber of FOLLOW: its end and the next step's start, as graphql-ws frames. */
function stepBurstBytes(): number {
  const frame = (sequence: number, type: string, status: string, stepStatus: string) =>
    JSON.stringify({
      id: '0b5c3a9e-6f27-4d8e-9a61-2f4c8e7d1b03',
      type: 'next',
      payload: { data: { stepUpdates: { sequence, type, at: new Date().toISOString(), status, step: { index: 5, status: stepStatus, recordCount: stepStatus === 'SUCCEEDED' ? 1 : null } } } },
    });
  // Each frame is a WebSocket text frame with a 2-byte header (under 126 bytes of payload it would be as short).
  return Buffer.byteLength(frame(12, 'STEP_SUCCEEDED', 'RUNNING', 'SUCCEEDED')) + Buffer.byteLength(frame(13, 'STEP_STARTED', 'RUNNING', 'RUNNING')) + 2 * 4;
}

/** The child process and a way to wait for its next report of a type. */
class Clients {
  private readonly child: ChildProcess;
  private waiting: { type: ClientReport['type']; resolve: (report: ClientReport) => void; reject: (error: Error) => void }[] = [];

  constructor() {
    this.child = fork(fileURLToPath(new URL('./fanout-clients.ts', import.meta.url)), [], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child.on('message', (report: ClientReport) => {
      if (report.type === 'failed') {
        for (const waiter of this.waiting.splice(0)) waiter.reject(new Error(report.error));
        return;
      }
      const index = this.waiting.findIndex((waiter) => waiter.type === report.type);
      if (index >= 0) this.waiting.splice(index, 1)[0]!.resolve(report);
    });
  }

  next<T extends ClientReport['type']>(type: T): Promise<Extract<ClientReport, { type: T }>> {
    return new Promise((resolve, reject) => this.waiting.push({ type, resolve: resolve as (report: ClientReport) => void, reject }));
  }

  send(command: ClientCommand): void {
    this.child.send(command);
  }

  async close(): Promise<void> {
    const closed = this.next('closed');
    this.send({ type: 'close' });
    await closed;
  }

  kill(): void {
    this.child.kill();
  }
}

interface Watched {
  /** ms per step from the approval to the terminal update's publish. */
  msPerStep: number;
  /** Commit-to-client latencies (ms) of the live updates, every client. */
  latencies: number[];
  /** Clients whose sequences were not exactly 1..last, or that failed. */
  broken: number;
  clients: number;
  /** Server memory with the subscribers idle, after gc, and before they came. */
  idle?: { heapBefore: number; heapAfter: number; rssBefore: number; rssAfter: number };
}

const serverMemory = () => {
  gc();
  gc();
  const usage = process.memoryUsage();
  return { heap: usage.heapUsed + usage.external, rss: usage.rss };
};

async function watchOnePlan(
  app: StepcastApp,
  clients: Clients,
  published: Map<string, Map<number, number>>,
  terminal: Map<string, (at: number) => void>,
  steps: number,
  subscribers: number,
  measureIdle = false,
): Promise<Watched> {
  const wsUrl = app.url.replace(/^http/, 'ws');
  const { executePlan } = await graphql(app.url, EXECUTE, { plan: trivialPlan(steps) });
  const id = executePlan!.id;
  const stamps = new Map<number, number>();
  published.set(id, stamps);
  const finished = new Promise<number>((resolve) => terminal.set(id, resolve));
  // The execution waits for approval: every subscriber has replayed up to STEP_WAITING before the run goes on.
  await waitUntilWaiting(app.url, id);
  const before = measureIdle ? serverMemory() : undefined;
  let done: Promise<Extract<ClientReport, { type: 'done' }>> | undefined;
  if (subscribers > 0) {
    const ready = clients.next('ready');
    done = clients.next('done');
    clients.send({ type: 'subscribe', wsUrl, executionId: id, count: subscribers, query: FOLLOW, readyType: 'STEP_WAITING' });
    await ready;
  }
  let idle: Watched['idle'];
  if (before) {
    const after = serverMemory();
    idle = { heapBefore: before.heap, heapAfter: after.heap, rssBefore: before.rss, rssAfter: after.rss };
  }
  const approvedAt = now();
  await graphql(app.url, APPROVE, { id });
  const endedAt = await finished;
  const report = done ? await done : { clients: [] };
  const latencies: number[] = [];
  let broken = 0;
  for (const client of report.clients) {
    const contiguous = client.sequences.every((sequence, i) => sequence === i + 1);
    if (client.error || !contiguous || client.sequences.length !== Math.max(...stamps.keys())) broken += 1;
    client.sequences.forEach((sequence, i) => {
      const at = stamps.get(sequence);
      if (at !== undefined && at >= approvedAt) latencies.push(client.times[i]! - at);
    });
  }
  published.delete(id);
  terminal.delete(id);
  if (subscribers > 0) await clients.close();
  return { msPerStep: (endedAt - approvedAt) / steps, latencies, broken, clients: report.clients.length, idle };
}

/** Waits until the execution is WAITING (its first step waits for approval). */
async function waitUntilWaiting(url: string, id: string): Promise<void> {
  for (;;) {
    const { execution } = await graphql(url, STATUS, { id });
    if ((execution as unknown as { status: string }).status === 'WAITING') return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

export async function benchFanOut(target: { backend: string; env: Record<string, string> }): Promise<BenchRow[]> {
  const dataDir = await mkdtemp(join(tmpdir(), 'stepcast-fanout-'));
  const config = loadConfig({
    PORT: '0',
    DATA_DIR: dataDir,
    STEPCAST_DEMO_USERS: '2000',
    // All the subscribers are one tenant's.
    ...benchLimits(SUBSCRIBERS),
    ...target.env,
  });
  const app = await startStepcast(config, createLogger('warn'));
  const clients = new Clients();
  try {
    // Every published update is stamped as it is published (after its commit), before any subscriber sees it.
    const published = new Map<string, Map<number, number>>();
    const terminal = new Map<string, (at: number) => void>();
    const bus = (app.executor as unknown as { bus: StepUpdateBus }).bus;
    const publish = bus.publish.bind(bus);
    bus.publish = (update: StepUpdate) => {
      const at = now();
      published.get(update.executionId)?.set(update.sequence, at);
      publish(update);
      if (update.type.startsWith('EXECUTION_') && update.type !== 'EXECUTION_STARTED' && update.type !== 'EXECUTION_RESUMED') {
        terminal.get(update.executionId)?.(at);
      }
    };
    const watch = (steps: number, subscribers: number, measureIdle = false) =>
      watchOnePlan(app, clients, published, terminal, steps, subscribers, measureIdle);

    await watch(TIMING_STEPS, 1); // warm-up: the first plan and the first socket pay for compilation
    const one = await watch(LATENCY_STEPS, 1);
    const loadOne = currentLoad();
    const many = await watch(LATENCY_STEPS, SUBSCRIBERS, true);
    const loadMany = currentLoad();
    const memoryRow = (): BenchRow => {
      const idle = many.idle!;
      const perIdle = (idle.heapAfter - idle.heapBefore) / SUBSCRIBERS / 1024;
      const rssPerIdle = (idle.rssAfter - idle.rssBefore) / SUBSCRIBERS / 1024;
      return {
        name: 'memory per idle subscription',
        backend: target.backend,
        value: perIdle,
        unit: 'KB',
        bar: '<= 20 KB',
        meets: perIdle <= 20,
        note: `server heapUsed+external after gc, ${SUBSCRIBERS} sockets with one subscription each; RSS delta ${rssPerIdle.toFixed(1)} KB per subscription`,
        load: loadMany,
      };
    };
    // BENCH_FANOUT_ONLY=memory: only the memory per idle subscription (bench/fanout-memory.ts), none of the timing.
    if (process.env.BENCH_FANOUT_ONLY === 'memory') return [memoryRow()];

    const alone: number[] = [];
    const watched: number[] = [];
    let brokenWhileTiming = 0;
    for (let rep = 0; rep < TIMING_REPS; rep++) {
      alone.push((await watch(TIMING_STEPS, 0)).msPerStep * 1000);
      const timed = await watch(TIMING_STEPS, SUBSCRIBERS);
      watched.push(timed.msPerStep * 1000);
      brokenWhileTiming += timed.broken;
    }
    const loadTiming = currentLoad();
    // The least the writes alone cost: one write per socket per step, with no stepcast code on either side.
    const burstBytes = stepBurstBytes();
    const writes = await measureSocketWrites(SUBSCRIBERS, burstBytes);
    const loadWrites = currentLoad();

    const p99 = percentile(many.latencies, 99);
    const noGaps = many.broken === 0 && one.broken === 0 && brokenWhileTiming === 0 && many.clients === SUBSCRIBERS;
    const stepRatio = median(watched) / median(alone);
    return [
      {
        name: `fan-out: commit-to-client p99, ${SUBSCRIBERS.toLocaleString('en')} subscribers`,
        backend: target.backend,
        value: p99,
        unit: 'ms',
        floor: percentile(one.latencies, 99),
        bar: 'p99 <= 50 ms',
        meets: p99 <= 50 && noGaps,
        note:
          `p50 ${percentile(many.latencies, 50).toFixed(1)} ms (1 subscriber: p50 ${percentile(one.latencies, 50).toFixed(1)} ms); ` +
          `${many.latencies.length} deliveries; ${noGaps ? 'no gap or duplicate' : `GAPS/DUPLICATES/ERRORS in ${many.broken + one.broken + brokenWhileTiming} clients`}; load with 1: ${loadOne.toFixed(2)}`,
        load: loadMany,
      },
      {
        name: `fan-out: µs per step while ${SUBSCRIBERS.toLocaleString('en')} watch`,
        backend: target.backend,
        value: median(watched),
        unit: 'µs',
        floor: median(alone),
        bar: '<= 1.2x',
        meets: stepRatio <= 1.2,
        note: `${TIMING_STEPS} trivial SQL steps from approval to the terminal publish, median of ${TIMING_REPS}; without: ${alone.map((v) => v.toFixed(0)).join('/')}, with: ${watched.map((v) => v.toFixed(0)).join('/')}`,
        load: loadTiming,
      },
      {
        name: `fan-out: least µs per step while ${SUBSCRIBERS.toLocaleString('en')} watch in one process (the socket writes alone)`,
        backend: target.backend,
        value: median(alone) + writes.writerUs,
        unit: 'µs',
        floor: median(alone),
        note:
          `the run without watchers plus one write of ${burstBytes} bytes (a step's two frames) to each of ${SUBSCRIBERS.toLocaleString('en')} loopback sockets, ` +
          `no WebSocket or stepcast code: ${writes.writerUs.toFixed(0)} µs of the writer's CPU per round, ${writes.readerUs.toFixed(0)} µs of the readers' (a child process), ` +
          `${writes.wallUs.toFixed(0)} µs wall; the row above is ${(median(watched) / (median(alone) + writes.writerUs)).toFixed(2)}x this`,
        load: loadWrites,
      },
      memoryRow(),
    ];
  } finally {
    clients.kill();
    await app.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}
