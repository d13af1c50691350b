import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { StepUpdatesSubscription as StepUpdatesResult } from './generated/graphql.js';
import { backends, createTestDatabase, type TestDatabase } from './support/database.js';
import { ExecutePlanMutation, ExecutionQuery, StepUpdatesSubscription } from './support/operations.js';
import { describeUpdates, sqlStep } from './support/plans.js';
import { seedPgliteDataDir } from './support/pglite-template.js';
import { killLeftoverProcesses, startServiceProcess, type ServiceProcess } from './support/process.js';
import { readSseEvents } from './support/server.js';
import { scaledTimeout } from './support/timing.js';

type Update = StepUpdatesResult['stepUpdates'];

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

const SLOW_PLAN = {
  query: 'a plan whose second step outlives the server',
  steps: [
    sqlStep('SELECT count(*) AS n FROM users'),
    sqlStep('SELECT count(*) AS n FROM users a, users b, users c, users d, users e'),
    sqlStep('SELECT 1 AS never'),
  ],
};

/** Submits the slow plan and follows it over graphql-ws until step 2 has started. */
async function startSlowExecution(service: ServiceProcess) {
  const { executePlan } = await post<{ executePlan: { id: string } }>(service.url, ExecutePlanMutation, {
    plan: SLOW_PLAN,
    options: { stepTimeoutMs: 120_000 },
  });
  const client = createClient({ url: service.url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, retryAttempts: 0 });
  const updates: Update[] = [];
  let stepTwoStarted!: () => void;
  const started = new Promise<void>((resolve) => (stepTwoStarted = resolve));
  const ended = new Promise<string>((resolve) => {
    client.subscribe(
      { query: StepUpdatesSubscription.toString(), variables: { executionId: executePlan.id } },
      {
        next: (value) => {
          const update = (value.data as { stepUpdates: Update }).stepUpdates;
          updates.push(update);
          if (update.type === 'STEP_STARTED' && update.step?.index === 2) stepTwoStarted();
        },
        error: () => resolve('error'),
        complete: () => resolve('complete'),
      },
    );
  });
  await started;
  return { id: executePlan.id, updates, ended, client };
}

/** Follows an execution over graphql-ws from afterSequence, collecting updates, until `until` says so. */
function follow(service: ServiceProcess, executionId: string, afterSequence: number, until: (update: Update) => boolean) {
  const client = createClient({ url: service.url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, retryAttempts: 0 });
  const updates: Update[] = [];
  const reached = new Promise<void>((resolve, reject) => {
    client.subscribe(
      { query: StepUpdatesSubscription.toString(), variables: { executionId, afterSequence } },
      {
        next: (value) => {
          const update = (value.data as { stepUpdates: Update }).stepUpdates;
          updates.push(update);
          if (until(update)) resolve();
        },
        error: reject,
        complete: () => reject(new Error(`the stream completed before the awaited update: ${describeUpdates(updates).join(', ')}`)),
      },
    );
  });
  return { updates, reached, client };
}

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`stopping and restarting on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    const dataDirs: string[] = [];
    const databases: TestDatabase[] = [];

    /** A fresh data directory (and PostgreSQL database): each test's executions are its own. */
    async function environment(extra: Record<string, string> = {}): Promise<Record<string, string>> {
      const dataDir = await mkdtemp(join(tmpdir(), 'stepcast-restart-'));
      dataDirs.push(dataDir);
      const database = backend === 'postgres' ? await createTestDatabase() : undefined;
      if (database) databases.push(database);
      else await seedPgliteDataDir(dataDir);
      return {
        DATA_DIR: dataDir,
        STEPCAST_DEMO_USERS: '300',
        STEPCAST_SHUTDOWN_GRACE_MS: '300',
        ...(database ? { DATABASE_URL: database.url } : {}),
        ...extra,
      };
    }

    const start = (env: Record<string, string>): Promise<ServiceProcess> => startServiceProcess(env);

    // Each test ends with its services gone, even when it failed.
    afterEach(() => killLeftoverProcesses('services'));
    afterAll(async () => {
      for (const database of databases) await database.drop();
      for (const dataDir of dataDirs) await rm(dataDir, { recursive: true, force: true });
    });

    it('on SIGTERM completes open subscriptions, closes the database and exits 0', async () => {
      const service = await start(await environment());
      const running = await startSlowExecution(service);
      service.child.kill('SIGTERM');
      expect(await running.ended).toBe('complete');
      expect(await service.exited).toEqual({ code: 0, signal: null });
      expect(service.logs.some((entry) => entry.msg === 'stepcast stopped')).toBe(true);
      // Authentication is off by default in development, and the log says so before anything else.
      expect(service.logs.find((entry) => /AUTHENTICATION IS OFF/.test(String(entry.msg)))).toMatchObject({ level: 40 });
      await running.client.dispose();
    }, scaledTimeout(60_000));

    it('after a crash, resumes the interrupted step; past STEPCAST_MAX_RESUMES it fails INTERRUPTED', async () => {
      // A lease outlives a restart by a few seconds, so the subscriber below is reading before the run resumes.
      const env = await environment({ STEPCAST_MAX_RESUMES: '1', STEPCAST_LEASE_TTL_MS: '8000', STEPCAST_RECOVERY_INTERVAL_MS: '200' });
      let service = await start(env);
      const running = await startSlowExecution(service);
      service.child.kill('SIGKILL');
      await service.exited;
      await running.client.dispose();

      // The restarted service continues the execution: step 2 runs again (attempts 2), step 1 does not.
      service = await start(env);
      const resumed = follow(service, running.id, running.updates.length, (u) => u.type === 'EXECUTION_RESUMED');
      await resumed.reached;
      expect(describeUpdates(resumed.updates)).toEqual(['EXECUTION_RESUMED:2']);
      expect(resumed.updates[0]!.step).toMatchObject({ status: 'RUNNING', attempts: 2 });
      expect(resumed.updates[0]!.sequence).toBe(running.updates.length + 1);
      await resumed.client.dispose();
      await expect
        .poll(() => service.logs.find((entry) => entry.msg === 'execution resumed; running the interrupted step again'))
        .toMatchObject({ correlationId: expect.any(String), executionId: running.id });

      // It is killed in the same step again: one resume is all STEPCAST_MAX_RESUMES=1 allows.
      service.child.kill('SIGKILL');
      await service.exited;
      service = await start(env);
      const ended = follow(service, running.id, 0, (u) => u.type === 'EXECUTION_FAILED');
      await ended.reached;
      await ended.client.dispose();
      const { execution } = await post<{
        execution: {
          status: string;
          error: { code: string; message: string };
          finalResult: unknown;
          steps: { status: string; attempts: number; result: unknown; error: { code: string } | null }[];
        };
      }>(service.url, ExecutionQuery, { id: running.id });
      expect(execution.status).toBe('FAILED');
      expect(execution.error.code).toBe('INTERRUPTED');
      expect(execution.error.message).toContain('STEPCAST_MAX_RESUMES');
      expect(execution.steps.map((s) => s.status)).toEqual(['SUCCEEDED', 'FAILED', 'SKIPPED']);
      expect(execution.steps[1]!.error?.code).toBe('INTERRUPTED');
      expect(execution.steps[1]!.attempts).toBe(2);
      expect(execution.finalResult).toEqual(execution.steps[0]!.result);
      expect(execution.finalResult).toEqual([{ n: 300 }]);

      const response = await fetch(service.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
        body: JSON.stringify({ query: StepUpdatesSubscription.toString(), variables: { executionId: running.id } }),
      });
      const replay = (await readSseEvents<{ stepUpdates: Update }>(response)).map((r) => r.data!.stepUpdates);
      expect(describeUpdates(replay)).toEqual([
        'EXECUTION_STARTED',
        'STEP_STARTED:1',
        'STEP_SUCCEEDED:1',
        'STEP_STARTED:2',
        'EXECUTION_RESUMED:2',
        'STEP_FAILED:2',
        'STEP_SKIPPED:3',
        'EXECUTION_FAILED',
      ]);
      expect(replay.map((u) => u.sequence)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(replay.slice(0, 4)).toEqual(running.updates.slice(0, 4));
      expect(ended.updates).toEqual(replay);

      service.child.kill('SIGTERM');
      expect(await service.exited).toEqual({ code: 0, signal: null });
    }, scaledTimeout(90_000));
  });
}
