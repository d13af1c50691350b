// Issue 10, parts 1 and 2: what a step costs, sequentially and at 16 concurrent clients, against the physical
// floor measured in the same run on the same database: a raw loop that commits an INSERT when a step starts
// and an UPDATE when it finishes.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { startStepcast, type StepcastApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { DEMO_TENANT_ID } from '../src/db/demo-data.js';
import type { Executor } from '../src/executor/executor.js';
import type { PlanInput } from '../src/executor/plan.js';
import { isStreamDenied } from '../src/executor/step-update-stream.js';
import { createLogger } from '../src/logger.js';
import { postgresBoundStep } from './bound.js';
import { follow, median, submit, wsClient } from './client.js';
import { currentLoad, machineTicks, type BenchRow } from './table.js';

const PLANS = Number(process.env.BENCH_PLANS ?? 200);
const REPS = Number(process.env.BENCH_REPS ?? 3);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
/** Plans of the end-to-end row (HTTP + graphql-ws), run once. */
const E2E_PLANS = Number(process.env.BENCH_E2E_PLANS ?? 50);
/** Plans run before each measurement and not counted: JIT, prepared statements, pools. */
const WARMUP_PLANS = 5;
const STEPS = 10;
/** Plans each concurrent client runs back to back: together about as many steps as the sequential run. */
const PLANS_PER_CLIENT = Math.max(1, Math.ceil(PLANS / CONCURRENCY));

export interface StepsTarget {
  /** 'PostgreSQL' or 'PGlite', as the table prints it. */
  backend: string;
  /** The service's environment for this backend (DATABASE_URL for PostgreSQL; none for PGlite). */
  env: Record<string, string>;
  /** The database the PostgreSQL floor runs in (the bench's own); unset: the floor runs in an in-process PGlite. */
  floorUrl?: string;
}

/** 10 trivial SQL steps, each reading the previous step's records. */
export function chainPlan(): PlanInput {
  return {
    query: 'bench: a chain of 10 trivial steps',
    steps: Array.from({ length: STEPS }, (_, i) => ({
      kind: 'SQL',
      queryContext: `step ${i + 1}`,
      sql: i === 0 ? 'SELECT 1 AS n' : `SELECT n + 1 AS n FROM step_${i}`,
    })),
  };
}

const progress = (backend: string, text: string) => console.error(`[${backend}] ${text} (load ${currentLoad().toFixed(2)})`);

// ---------------------------------------------------------------------------------------------------------------
// The floor: per step, one committed INSERT when it starts and one committed UPDATE when it finishes.

/** One raw step: two statements, each its own (autocommitted) transaction. */
type RawStep = (plan: number, step: number, worker: number) => Promise<void>;

interface Floor {
  /** µs per step, median of the reps. */
  sequentialUs: number;
  /** Measures steps/s at CONCURRENCY workers, median of the reps; absent where one connection serves everything. */
  concurrent?: () => Promise<number>;
  /** What the raw loop ran on, for the table. */
  where: string;
  /** The lower bound (bench/bound.ts), PostgreSQL only: µs per step sequentially, and a measure of steps/s at CONCURRENCY. */
  bound?: { sequentialUs: number; concurrent: () => Promise<number> };
  close(): Promise<void>;
}

const FLOOR_TABLE = 'bench_floor_steps';
const FLOOR_DDL = `CREATE TABLE ${FLOOR_TABLE} (
  id bigserial PRIMARY KEY,
  plan integer NOT NULL,
  step integer NOT NULL,
  status text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz
)`;

/** Runs a concurrent measure (steps/s) and reads, around it, this process's CPU per step and the machine's busy share. */
async function cpuAround(measure: () => Promise<number>): Promise<{ value: number; processUsPerStep: number; machineBusy?: number }> {
  const machine0 = await machineTicks();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await measure();
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const machine1 = await machineTicks();
  // Every rep runs at about `value` steps/s (the median): the steps measured are about value × seconds.
  const processUsPerStep = (cpu.user + cpu.system) / (value * seconds);
  const machineBusy = machine0 && machine1 ? (machine1.busy - machine0.busy) / (machine1.total - machine0.total) : undefined;
  return { value, processUsPerStep, machineBusy };
}

const cpuText = (usage: { processUsPerStep: number; machineBusy?: number }) =>
  `its own process ${usage.processUsPerStep.toFixed(0)} µs of CPU per step` +
  (usage.machineBusy === undefined ? '' : `, the machine ${(100 * usage.machineBusy).toFixed(0)} % busy`);

async function rawPlans(step: RawStep, first: number, count: number, worker = 0): Promise<void> {
  for (let plan = first; plan < first + count; plan++) {
    for (let s = 1; s <= STEPS; s++) await step(plan, s, worker);
  }
}

async function sequentialFloorUs(step: RawStep): Promise<number> {
  await rawPlans(step, -WARMUP_PLANS, WARMUP_PLANS);
  const reps: number[] = [];
  for (let rep = 0; rep < REPS; rep++) {
    const t0 = performance.now();
    await rawPlans(step, rep * PLANS, PLANS);
    reps.push(((performance.now() - t0) * 1000) / (PLANS * STEPS));
  }
  return median(reps);
}

/** Steps/s of `concurrency` clients each running `plansPerClient` raw plans back to back, median of REPS. */
async function concurrentFloor(step: RawStep, concurrency = CONCURRENCY, plansPerClient = PLANS_PER_CLIENT): Promise<number> {
  const reps: number[] = [];
  for (let rep = 0; rep < REPS; rep++) {
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, (_, worker) => rawPlans(step, (rep * concurrency + worker) * plansPerClient, plansPerClient, worker)),
    );
    reps.push((concurrency * plansPerClient * STEPS) / ((performance.now() - t0) / 1000));
  }
  return median(reps);
}

/** The raw step on postgres.js, a pool of `poolSize` connections, in a table of its own (dropped by `close`). */
async function postgresRawStep(url: string, poolSize: number): Promise<{ step: RawStep; close(): Promise<void> }> {
  const { default: postgres } = await import('postgres');
  const sql = postgres(url, { max: poolSize, onnotice: () => undefined });
  try {
    await sql.unsafe(`DROP TABLE IF EXISTS ${FLOOR_TABLE}`);
    await sql.unsafe(FLOOR_DDL);
  } catch (error) {
    await sql.end();
    throw error;
  }
  return {
    step: async (plan, s) => {
      const [row] = await sql<{ id: string }[]>`INSERT INTO bench_floor_steps (plan, step, status) VALUES (${plan}, ${s}, 'RUNNING') RETURNING id`;
      await sql`UPDATE bench_floor_steps SET status = 'SUCCEEDED', finished_at = now() WHERE id = ${row!.id}`;
    },
    close: async () => {
      await sql.unsafe(`DROP TABLE IF EXISTS ${FLOOR_TABLE}`);
      await sql.end();
    },
  };
}

/** postgres.js on the bench's database, a pool of CONCURRENCY connections, the table its own; and the lower bound. */
async function postgresFloor(url: string): Promise<Floor> {
  const raw = await postgresRawStep(url, CONCURRENCY);
  const bound = await postgresBoundStep(url, CONCURRENCY).catch(async (error: unknown) => {
    await raw.close();
    throw error;
  });
  const close = async () => {
    await raw.close();
    await bound.close();
  };
  try {
    const sequentialUs = await sequentialFloorUs(raw.step);
    // The worker's index picks its connection for reads: the sequential loop is worker 0.
    const boundSequentialUs = await sequentialFloorUs((plan, step) => bound.step(plan, step, 0));
    return {
      sequentialUs,
      // Measured later, just before stepcast's concurrent figure.
      concurrent: () => concurrentFloor(raw.step),
      where: `postgres.js, pool of ${CONCURRENCY}`,
      bound: { sequentialUs: boundSequentialUs, concurrent: () => concurrentFloor(bound.step) },
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}

/**
 * The raw loop's steps/s at `concurrency` clients (a connection each), median of REPS reps of about `plans` plans
 * of STEPS steps, and how many steps it ran in all (warm-up included): the floor of a concurrent figure measured
 * elsewhere (bench/workers.ts), which reads the database's CPU around it.
 */
export async function rawLoopStepsPerSecond(url: string, concurrency: number, plans = PLANS): Promise<{ stepsPerSecond: number; steps: number }> {
  const raw = await postgresRawStep(url, concurrency);
  try {
    const plansPerClient = Math.max(1, Math.ceil(plans / concurrency));
    await rawPlans(raw.step, -WARMUP_PLANS, WARMUP_PLANS);
    const stepsPerSecond = await concurrentFloor(raw.step, concurrency, plansPerClient);
    return { stepsPerSecond, steps: (WARMUP_PLANS + REPS * concurrency * plansPerClient) * STEPS };
  } finally {
    await raw.close();
  }
}

/** A separate PGlite in this thread, on a temporary directory like the service's (which runs its own in a worker). */
async function pgliteFloor(): Promise<Floor> {
  const { PGlite } = await import('@electric-sql/pglite');
  const dir = await mkdtemp(join(tmpdir(), 'stepcast-bench-floor-'));
  const db = await PGlite.create(dir);
  const close = async () => {
    await db.close();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await db.exec(FLOOR_DDL);
    const step: RawStep = async (plan, s) => {
      const { rows } = await db.query<{ id: string }>(`INSERT INTO ${FLOOR_TABLE} (plan, step, status) VALUES ($1, $2, 'RUNNING') RETURNING id`, [plan, s]);
      await db.query(`UPDATE ${FLOOR_TABLE} SET status = 'SUCCEEDED', finished_at = now() WHERE id = $1`, [rows[0]!.id]);
    };
    return { sequentialUs: await sequentialFloorUs(step), where: 'in-process PGlite on a temp dir', close };
  } catch (error) {
    await close();
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// stepcast.

/** Submits the plan in-process and reads its updates from the executor's stream until the terminal one. */
async function runInProcess(executor: Executor, plan: PlanInput): Promise<void> {
  const execution = await executor.submitPlan(DEMO_TENANT_ID, plan);
  let last: string | undefined;
  for await (const item of await executor.stepUpdates({ tenantId: DEMO_TENANT_ID }, execution.id, 0)) {
    if (isStreamDenied(item)) throw new Error(`the stream was denied: ${item.denied}`);
    last = item.type;
  }
  if (last !== 'EXECUTION_SUCCEEDED') throw new Error(`a bench plan ended with ${last}`);
}

async function inProcessPlans(executor: Executor, count: number): Promise<void> {
  for (let i = 0; i < count; i++) await runInProcess(executor, chainPlan());
}

/** The service's limits raised for the bench's one tenant, so that quotas do not throttle it. */
function benchEnvironment(dataDir: string, env: Record<string, string>): Record<string, string> {
  return {
    PORT: '0',
    DATA_DIR: dataDir,
    // CONCURRENCY of the tenant's executions at once; the fair-share policy keeps one more slot for a tenant
    // with nothing running.
    STEPCAST_MAX_CONCURRENT_EXECUTIONS: String(CONCURRENCY + 1),
    STEPCAST_TENANT_MAX_CONCURRENT_EXECUTIONS: String(CONCURRENCY),
    STEPCAST_TENANT_RATE_BURST: '1000000',
    STEPCAST_TENANT_RATE_PER_MINUTE: '1000000',
    // The service's own pool (transitions, stream reads); tenant statements have a pool of their own, one
    // connection per execution slot.
    DATABASE_POOL_SIZE: String(CONCURRENCY + 4),
    ...env,
  };
}

export async function benchSteps(target: StepsTarget): Promise<BenchRow[]> {
  const { backend } = target;
  const rows: BenchRow[] = [];
  const dataDir = await mkdtemp(join(tmpdir(), 'stepcast-bench-steps-'));
  const app: StepcastApp = await startStepcast(loadConfig(benchEnvironment(dataDir, target.env)), createLogger('warn'));
  let floor: Floor | undefined;
  try {
    const { executor } = app;
    const steps = PLANS * STEPS;

    // The floor first, on the same database (PostgreSQL) or the same engine (PGlite).
    floor = target.floorUrl ? await postgresFloor(target.floorUrl) : await pgliteFloor();
    progress(backend, `floor: ${floor.sequentialUs.toFixed(0)} µs per step (${floor.where})`);
    if (floor.bound) progress(backend, `lower bound: ${floor.bound.sequentialUs.toFixed(0)} µs per step (bench/bound.ts)`);

    // Sequential, in-process: wall time and this process's CPU over the same window.
    await inProcessPlans(executor, WARMUP_PLANS);
    const walls: number[] = [];
    const cpus: number[] = [];
    for (let rep = 0; rep < REPS; rep++) {
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      await inProcessPlans(executor, PLANS);
      const wallMs = performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      walls.push((wallMs * 1000) / steps);
      cpus.push((cpu.user + cpu.system) / steps);
      progress(backend, `stepcast sequential rep ${rep + 1}: ${walls.at(-1)!.toFixed(0)} µs per step, CPU ${cpus.at(-1)!.toFixed(0)} µs per step`);
    }
    const sequentialUs = median(walls);
    const cpuUs = median(cpus);
    const sequentialRatio = sequentialUs / floor.sequentialUs;
    rows.push({
      name: `sequential in-process: µs per step (${PLANS} plans × ${STEPS} SQL steps, median of ${REPS})`,
      backend,
      value: sequentialUs,
      unit: 'µs',
      floor: floor.sequentialUs,
      bar: '≤ 1.5x',
      meets: sequentialRatio <= 1.5,
      note:
        `CPU ${cpuUs.toFixed(0)} µs/step (bar ≤ 1000 µs: ${cpuUs <= 1000 ? 'yes' : 'NO'}; ` +
        (target.floorUrl ? 'the process: service + in-process client' : 'the process: service + in-process client + PGlite worker') +
        `); floor: ${floor.where}`,
      load: currentLoad(),
    });

    if (floor.bound) {
      const aboveUs = sequentialUs - floor.bound.sequentialUs;
      rows.push({
        name: `lower bound, sequential: µs per step of a raw loop doing a step's database work in stepcast's current protocol (bench/bound.ts)`,
        backend,
        value: floor.bound.sequentialUs,
        unit: 'µs',
        floor: floor.sequentialUs,
        note:
          `none of stepcast's other code: 1 commit, and while it commits the step's statement in its own READ ONLY transaction as a tenant's role, under stepcast's limits, in one flight (a plan's first step after its commit); ` +
          `stepcast's own cost above it: ${aboveUs.toFixed(0)} µs/step (${(aboveUs / floor.sequentialUs).toFixed(2)}x of the floor)`,
        load: currentLoad(),
      });
    }

    // End to end: HTTP executePlan, then the updates over graphql-ws to the terminal one (one socket for all).
    const client = wsClient(app.url.replace(/^http/, 'ws'));
    try {
      const runE2E = async (count: number) => {
        for (let i = 0; i < count; i++) {
          const { last } = await follow(client, await submit(app.url, chainPlan()));
          if (last !== 'EXECUTION_SUCCEEDED') throw new Error(`an end-to-end bench plan ended with ${last}`);
        }
      };
      await runE2E(WARMUP_PLANS);
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      await runE2E(E2E_PLANS);
      const e2eUs = ((performance.now() - t0) * 1000) / (E2E_PLANS * STEPS);
      const cpu = process.cpuUsage(cpu0);
      rows.push({
        name: `sequential end to end: µs per step (${E2E_PLANS} plans, HTTP + graphql-ws, one run)`,
        backend,
        value: e2eUs,
        unit: 'µs',
        floor: floor.sequentialUs,
        note: `CPU ${((cpu.user + cpu.system) / (E2E_PLANS * STEPS)).toFixed(0)} µs/step (service + HTTP and WebSocket client${target.floorUrl ? '' : ' + PGlite worker'})`,
        load: currentLoad(),
      });
      progress(backend, `stepcast end to end: ${e2eUs.toFixed(0)} µs per step`);
    } finally {
      await client.dispose();
    }

    // Concurrent: CONCURRENCY in-process clients, each running plans back to back. Beside each raw loop, what it
    // took of this process's CPU (its driver and loop) and of the machine's, to tell a loop bound by its own event
    // loop from one bound by the cores.
    const floorUsage = floor.concurrent ? await cpuAround(floor.concurrent) : undefined;
    const floorConcurrent = floorUsage?.value;
    if (floorConcurrent !== undefined) progress(backend, `floor at ${CONCURRENCY}: ${floorConcurrent.toFixed(0)} steps/s`);
    const boundUsage = floor.bound ? await cpuAround(floor.bound.concurrent) : undefined;
    const boundConcurrent = boundUsage?.value;
    if (boundConcurrent !== undefined) progress(backend, `lower bound at ${CONCURRENCY}: ${boundConcurrent.toFixed(0)} steps/s`);
    await Promise.all(Array.from({ length: CONCURRENCY }, () => inProcessPlans(executor, 1)));
    const rates: number[] = [];
    const concurrentCpus: number[] = [];
    const concurrentSteps = CONCURRENCY * PLANS_PER_CLIENT * STEPS;
    for (let rep = 0; rep < REPS; rep++) {
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      await Promise.all(Array.from({ length: CONCURRENCY }, () => inProcessPlans(executor, PLANS_PER_CLIENT)));
      rates.push(concurrentSteps / ((performance.now() - t0) / 1000));
      const cpu = process.cpuUsage(cpu0);
      concurrentCpus.push((cpu.user + cpu.system) / concurrentSteps);
      progress(backend, `stepcast at ${CONCURRENCY} rep ${rep + 1}: ${rates.at(-1)!.toFixed(0)} steps/s`);
    }
    const rate = median(rates);
    rows.push({
      name: `concurrent in-process: steps/s at ${CONCURRENCY} clients (${PLANS_PER_CLIENT} plans each, median of ${REPS})`,
      backend,
      value: rate,
      unit: 'steps/s',
      floor: floorConcurrent,
      bar: floorConcurrent === undefined ? undefined : '≥ 0.6x',
      meets: floorConcurrent === undefined ? undefined : rate / floorConcurrent >= 0.6,
      note:
        `CPU ${median(concurrentCpus).toFixed(0)} µs/step` +
        (floorConcurrent === undefined
          ? '; no floor: PGlite serves one connection, so a concurrent raw loop means nothing'
          : `; floor: raw loop, ${CONCURRENCY} workers, pool of ${CONCURRENCY}${floorUsage ? `, ${cpuText(floorUsage)}` : ''}`),
      load: currentLoad(),
    });
    if (boundConcurrent !== undefined && floorConcurrent !== undefined) {
      rows.push({
        name: `lower bound, concurrent: steps/s of the raw loop of bench/bound.ts at ${CONCURRENCY} clients (median of ${REPS})`,
        backend,
        value: boundConcurrent,
        unit: 'steps/s',
        floor: floorConcurrent,
        note:
          `stepcast's current protocol for a step's own database work, none of its other code (as the sequential row); ` +
          `${boundUsage ? `${cpuText(boundUsage)}; ` : ''}stepcast reaches ${((100 * rate) / boundConcurrent).toFixed(0)} % of it`,
        load: currentLoad(),
      });
    }
    return rows;
  } finally {
    await floor?.close();
    await app.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}
