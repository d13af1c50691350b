import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { StepUpdatesSubscription as StepUpdatesResult } from './generated/graphql.js';
import { copyTemplateCluster } from '../src/db/pglite-open.js';
import { ExecutePlanMutation, ExecutionQuery, StepUpdatesSubscription } from './support/operations.js';
import { sqlStep } from './support/plans.js';
import { stopServiceProcess, trackService, type ServiceProcess } from './support/process.js';
import { readSseEvents } from './support/server.js';
import { scaledTimeout } from './support/timing.js';

// npm start runs `node dist/main.js`, what `npm install` built (scripts/build.mjs). These tests build it first if it is
// stale (as prestart does), so that they test the current src/, then start that entry as npm start does, and npm start
// itself once. How fast it gets ready is measured by `npm run bench:start`, not asserted here.
const projectRoot = fileURLToPath(new URL('../', import.meta.url));
const builtEntry = join(projectRoot, 'dist', 'main.js');

/** Runs `node dist/main.js` on dataDir and waits for the line that says where it listens. */
async function startBuiltService(dataDir: string): Promise<ServiceProcess> {
  const child = spawn(process.execPath, [builtEntry], {
    cwd: projectRoot,
    env: { PATH: process.env.PATH ?? '', PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', DATA_DIR: dataDir, STEPCAST_DEMO_USERS: '200' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = trackService(child);
  const logs: Record<string, unknown>[] = [];
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        if (entry.msg === 'stepcast is listening') resolve(String(entry.url));
      } catch {
        logs.push({ raw: line });
      }
    });
    void exited.then(({ code }) => reject(new Error(`dist/main.js exited with ${code} before listening: ${stderr} ${JSON.stringify(logs)}`)));
  });
  return { child, url, logs, exited };
}

/** Waits until /ready answers 200 (it answers 503 until the database is open and the service prepared). */
async function waitUntilReady(graphqlUrl: string): Promise<void> {
  const readyUrl = new URL('/ready', graphqlUrl);
  await vi.waitFor(
    async () => {
      const response = await fetch(readyUrl);
      expect(response.status).toBe(200);
    },
    { timeout: scaledTimeout(30_000), interval: 50 },
  );
}

async function post<T>(url: string, query: { toString(): string }, variables: unknown): Promise<T> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query: query.toString(), variables }),
  });
  const body = (await response.json()) as { data: T; errors?: unknown };
  expect(body.errors).toBeUndefined();
  return body.data;
}

async function followToTheEnd(url: string, executionId: string): Promise<StepUpdatesResult['stepUpdates'][]> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify({ query: StepUpdatesSubscription.toString(), variables: { executionId } }),
  });
  const events = await readSseEvents<StepUpdatesResult>(response);
  return events.map((event) => event.data!.stepUpdates);
}

describe('npm start (the built entry, dist/main.js)', () => {
  let dataDir: string;
  let service: ServiceProcess | undefined;
  let executionId: string;

  beforeAll(async () => {
    await promisify(execFile)(process.execPath, ['scripts/build.mjs', '--if-stale'], { cwd: projectRoot });
    if (!existsSync(builtEntry)) throw new Error('dist/main.js is missing after scripts/build.mjs --if-stale');
    dataDir = await mkdtemp(join(tmpdir(), 'stepcast-fast-start-'));
  });

  afterAll(async () => {
    if (service) await stopServiceProcess(service);
    await rm(dataDir, { recursive: true, force: true });
  });

  it('gets ready on a fresh data directory: migrated, with the demo tenant, running SQL and API steps', { timeout: scaledTimeout(90_000) }, async () => {
    service = await startBuiltService(dataDir);
    await waitUntilReady(service.url);

    const { executePlan } = await post<{ executePlan: { id: string } }>(service.url, ExecutePlanMutation, {
      plan: {
        query: 'how many demo users, doubled in the sandbox',
        steps: [
          sqlStep('SELECT count(*)::int AS users FROM users'),
          { kind: 'API', queryContext: 'double it', code: 'return steps[0].records.map((r) => ({ doubled: r.users * 2 }));' },
        ],
      },
    });
    executionId = executePlan.id;
    const updates = await followToTheEnd(service.url, executionId);

    expect(updates.at(-1)?.type).toBe('EXECUTION_SUCCEEDED');
    const steps = updates.filter((update) => update.type === 'STEP_SUCCEEDED').map((update) => update.step?.sample);
    expect(steps).toEqual([[{ users: 200 }], [{ doubled: 400 }]]);
  });

  it('gets ready again on the same data directory, with what it stored', { timeout: scaledTimeout(90_000) }, async () => {
    expect(executionId).toBeDefined();
    await stopServiceProcess(service!);
    expect((await service!.exited).code).toBe(0);

    service = await startBuiltService(dataDir);
    await waitUntilReady(service.url);

    const { execution } = await post<{ execution: { status: string; successfulSteps: number } }>(service.url, ExecutionQuery, {
      id: executionId,
    });
    expect(execution).toMatchObject({ status: 'SUCCEEDED', successfulSteps: 2 });
  });

  it('npm start runs prestart, then the server under exec: SIGTERM to npm reaches it, it shuts down and unlocks the data directory', { timeout: scaledTimeout(90_000) }, async () => {
    if (service) await stopServiceProcess(service);
    service = undefined;
    const npm = spawn('npm', ['start'], {
      cwd: projectRoot,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? tmpdir(), PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info', DATA_DIR: dataDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = trackService(npm);
    const lockFile = join(dataDir, 'stepcast.lock');
    let serverPid: number | undefined;
    try {
      const logs: Record<string, unknown>[] = [];
      const raw: string[] = [];
      const url = await new Promise<string>((resolve, reject) => {
        createInterface({ input: npm.stdout! }).on('line', (line) => {
          try {
            const entry = JSON.parse(line) as Record<string, unknown>;
            logs.push(entry);
            if (entry.msg === 'stepcast is listening') resolve(String(entry.url));
          } catch {
            raw.push(line);
          }
        });
        void exited.then(({ code }) => reject(new Error(`npm start exited with ${code} before listening: ${raw.join('\n')}`)));
      });
      expect(raw.some((line) => line.includes('prestart'))).toBe(true);
      await waitUntilReady(url);
      serverPid = Number(await readFile(lockFile, 'utf8'));
      expect(serverPid).not.toBe(npm.pid);

      npm.kill('SIGTERM');
      expect(await exited).toMatchObject({ code: 0 });
      expect(logs.some((entry) => entry.msg === 'shutting down')).toBe(true);
      expect(existsSync(lockFile)).toBe(false);
      expect(() => process.kill(serverPid!, 0)).toThrow();
    } finally {
      if (npm.exitCode === null && npm.signalCode === null) npm.kill('SIGKILL');
      await exited;
      if (serverPid !== undefined) {
        try {
          process.kill(serverPid, 'SIGKILL');
        } catch {
          // gone, as it should be
        }
      }
    }
  });
});

describe('the build\'s pristine cluster, copied into a new data directory', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stepcast-template-'));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is used only when whole (PG_VERSION in it), and a copy that fails is removed so that PGlite runs initdb', async () => {
    const template = join(dir, 'template');
    await mkdir(join(template, 'base', '1'), { recursive: true });
    await writeFile(join(template, 'base', '1', 'file'), 'x');
    const dataDir = join(dir, 'data');
    await mkdir(dataDir);
    await writeFile(join(dataDir, 'stepcast.lock'), '1');

    expect(await copyTemplateCluster(template, dataDir)).toBe(false);
    expect(await readdir(dataDir)).toEqual(['stepcast.lock']);

    await writeFile(join(template, 'PG_VERSION'), '17\n');
    await symlink(join(dir, 'nowhere'), join(template, 'base', 'dangling'));
    expect(await copyTemplateCluster(template, dataDir)).toBe(false);
    expect(await readdir(dataDir)).toEqual(['stepcast.lock']);

    await rm(join(template, 'base', 'dangling'));
    expect(await copyTemplateCluster(template, dataDir)).toBe(true);
    expect((await readdir(dataDir)).sort()).toEqual(['PG_VERSION', 'base', 'stepcast.lock']);
  });
});
