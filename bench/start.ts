// Time from `npm start` to ready, on a fresh data directory (first start: migrations and demo data) and on an
// existing one, BENCH_START_RUNS times each (5), alternating. Ready: /ready answers 200 and GraphQL answers a
// query. Each run prints its time with the machine's 1-minute load beside it; the summary gives min, median and
// max. `npm run bench:start`. BENCH_START_COMMAND=entry times `node dist/main.js` alone (no npm, no prestart).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { currentLoad } from './table.js';

const projectRoot = fileURLToPath(new URL('../', import.meta.url));
const runs = Number(process.env.BENCH_START_RUNS ?? 5);
const entryOnly = process.env.BENCH_START_COMMAND === 'entry';
const READY_TIMEOUT_MS = 120_000;

interface Measurement {
  seconds: number;
  load: number;
}

async function timeToReady(dataDir: string): Promise<Measurement> {
  const load = currentLoad();
  const started = performance.now();
  const [command, args] = entryOnly ? [process.execPath, ['dist/main.js']] : ['npm', ['start', '--silent']];
  const child = spawn(command, args, {
    cwd: projectRoot,
    env: { ...process.env, DATA_DIR: dataDir, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', DATABASE_URL: '' },
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
    return { seconds: (performance.now() - started) / 1000, load };
  } finally {
    await stop(child);
  }
}

function listeningUrl(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (!line.startsWith('{')) return;
      const entry = JSON.parse(line) as { msg?: string; url?: string };
      if (entry.msg === 'stepcast is listening') resolve(entry.url!);
    });
    child.once('exit', (code) => reject(new Error(`npm start exited with ${code} before listening`)));
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

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  process.kill(-child.pid!, 'SIGTERM');
  await exited;
}

function summary(name: string, measurements: Measurement[]): string {
  const seconds = measurements.map((m) => m.seconds).sort((a, b) => a - b);
  const loads = measurements.map((m) => m.load);
  const median = seconds[Math.floor(seconds.length / 2)]!;
  return (
    `${name.padEnd(9)} min ${seconds[0]!.toFixed(2)} s  median ${median.toFixed(2)} s  max ${seconds.at(-1)!.toFixed(2)} s` +
    `  (load ${Math.min(...loads).toFixed(1)} to ${Math.max(...loads).toFixed(1)} on ${availableParallelism()} cores)`
  );
}

const parent = await mkdtemp(join(tmpdir(), 'stepcast-bench-start-'));
const fresh: Measurement[] = [];
const existing: Measurement[] = [];
try {
  console.log(`${entryOnly ? 'node dist/main.js' : 'npm start'} to ready, ${runs} runs each`);
  for (let run = 1; run <= runs; run++) {
    const dataDir = join(parent, `data-${run}`);
    const first = await timeToReady(dataDir);
    fresh.push(first);
    console.log(`run ${run}: fresh    ${first.seconds.toFixed(2)} s  load ${first.load.toFixed(2)}`);
    const again = await timeToReady(dataDir);
    existing.push(again);
    console.log(`run ${run}: existing ${again.seconds.toFixed(2)} s  load ${again.load.toFixed(2)}`);
    await rm(dataDir, { recursive: true, force: true });
  }
  console.log(summary('fresh', fresh));
  console.log(summary('existing', existing));
} finally {
  await rm(parent, { recursive: true, force: true });
}
