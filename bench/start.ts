// Time from `npm start` to ready, on a fresh data directory (first start: migrations and demo data) and on an
// existing one, BENCH_START_RUNS times each (5), alternating. Ready: /ready answers 200 and GraphQL answers a
// query. Each run prints its time with the machine's 1-minute load beside it; the summary gives min, median and
// max, and the CPU time the processes took until ready (what the load does not change). `npm run bench:start`. BENCH_START_COMMAND=entry times `node dist/main.js` alone (no npm, no prestart), and
// BENCH_START_COMMAND=dev times `npm run dev` (the TypeScript through tsx, which is what npm start used to run).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { currentLoad } from './table.js';

const projectRoot = fileURLToPath(new URL('../', import.meta.url));
const runs = Number(process.env.BENCH_START_RUNS ?? 5);
const commands: Record<string, [string, string[]]> = {
  start: ['npm', ['start', '--silent']],
  entry: [process.execPath, ['dist/main.js']],
  dev: ['npm', ['run', 'dev', '--silent']],
};
const commandName = process.env.BENCH_START_COMMAND ?? 'start';
const [command, args] = commands[commandName] ?? commands.start!;
const READY_TIMEOUT_MS = 120_000;

interface Measurement {
  seconds: number;
  /** CPU time of the whole process tree (npm, the build check, the server and its threads) until ready. */
  cpuSeconds: number;
  load: number;
}

const CLOCK_TICKS = 100;

/** utime + stime + cutime + cstime of pid and every process under it, from Linux's /proc (0 elsewhere). */
function treeCpuSeconds(root: number): number {
  const stats = new Map<number, { parent: number; ticks: number }>();
  for (const name of readdirSync('/proc').filter((entry) => /^\d+$/.test(entry))) {
    try {
      const fields = readFileSync(`/proc/${name}/stat`, 'utf8').split(') ')[1]!.split(' ');
      stats.set(Number(name), { parent: Number(fields[1]), ticks: fields.slice(11, 15).reduce((sum, field) => sum + Number(field), 0) });
    } catch {
      // Gone meanwhile.
    }
  }
  let ticks = 0;
  const pending = [root];
  while (pending.length > 0) {
    const pid = pending.pop()!;
    ticks += stats.get(pid)?.ticks ?? 0;
    for (const [child, stat] of stats) if (stat.parent === pid) pending.push(child);
  }
  return ticks / CLOCK_TICKS;
}

async function timeToReady(dataDir: string): Promise<Measurement> {
  const load = currentLoad();
  const started = performance.now();
  const child = spawn(command, args, {
    cwd: projectRoot,
    env: { ...withoutDatabaseUrl(process.env), DATA_DIR: dataDir, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'inherit'],
    // npm starts the server in a child of its own: the group is stopped as a whole.
    detached: true,
  });
  try {
    const url = await listeningUrl(child);
    const deadline = started + READY_TIMEOUT_MS;
    while (!(await isReady(url))) {
      if (performance.now() > deadline) throw new Error(`not ready after ${READY_TIMEOUT_MS} ms`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return { seconds: (performance.now() - started) / 1000, cpuSeconds: existsSync('/proc') ? treeCpuSeconds(child.pid!) : Number.NaN, load };
  } finally {
    await stop(child);
  }
}

/** The embedded database is what a first start on a fresh machine gets. */
function withoutDatabaseUrl(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { DATABASE_URL: _url, REDIS_URL: _redis, ...rest } = env;
  return rest;
}

function listeningUrl(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (!line.startsWith('{')) return void console.error(line);
      const entry = JSON.parse(line) as { level?: number; msg?: string; url?: string };
      if (entry.msg === 'stepcast is listening') resolve(entry.url!);
      // Errors and fatal errors: why a start failed.
      if ((entry.level ?? 0) >= 50) console.error(line);
    });
    child.once('exit', (code) => reject(new Error(`${[command, ...args].join(' ')} exited with ${code} before listening`)));
  });
}

async function isReady(graphqlUrl: string): Promise<boolean> {
  try {
    const ready = await fetch(new URL('/ready', graphqlUrl));
    if (ready.status !== 200) return false;
    const answer = await fetch(graphqlUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ __typename }' }),
    });
    return answer.status === 200;
  } catch {
    return false;
  }
}

/** Stops npm and the server under it, and waits until every process of the group has gone (npm exits first). */
async function stop(child: ChildProcess): Promise<void> {
  const group = -child.pid!;
  if (child.exitCode === null && child.signalCode === null) {
    const exited = once(child, 'exit');
    process.kill(group, 'SIGTERM');
    await exited;
  }
  const groupAlive = () => {
    try {
      process.kill(group, 0);
      return true;
    } catch {
      return false;
    }
  };
  while (groupAlive()) await new Promise((resolve) => setTimeout(resolve, 20));
}

function summary(name: string, measurements: Measurement[]): string {
  const spread = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b);
    return `min ${sorted[0]!.toFixed(2)} s  median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(2)} s  max ${sorted.at(-1)!.toFixed(2)} s`;
  };
  const loads = measurements.map((m) => m.load);
  return (
    `${name.padEnd(9)} ${spread(measurements.map((m) => m.seconds))}   CPU ${spread(measurements.map((m) => m.cpuSeconds))}` +
    `  (load ${Math.min(...loads).toFixed(1)} to ${Math.max(...loads).toFixed(1)} on ${availableParallelism()} cores)`
  );
}

const parent = await mkdtemp(join(tmpdir(), 'stepcast-bench-start-'));
const fresh: Measurement[] = [];
const existing: Measurement[] = [];
try {
  console.log(`${[command === process.execPath ? 'node' : command, ...args].join(' ')} to ready, ${runs} runs each`);
  for (let run = 1; run <= runs; run++) {
    const dataDir = join(parent, `data-${run}`);
    const first = await timeToReady(dataDir);
    fresh.push(first);
    console.log(`run ${run}: fresh    ${first.seconds.toFixed(2)} s  CPU ${first.cpuSeconds.toFixed(2)} s  load ${first.load.toFixed(2)}`);
    const again = await timeToReady(dataDir);
    existing.push(again);
    console.log(`run ${run}: existing ${again.seconds.toFixed(2)} s  CPU ${again.cpuSeconds.toFixed(2)} s  load ${again.load.toFixed(2)}`);
    await rm(dataDir, { recursive: true, force: true });
  }
  console.log(summary('fresh', fresh));
  console.log(summary('existing', existing));
} finally {
  await rm(parent, { recursive: true, force: true });
}
