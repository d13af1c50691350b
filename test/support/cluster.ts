import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, type Client } from 'graphql-ws';
import postgres from 'postgres';
import WebSocket from 'ws';
import type { TypedDocumentString } from '../generated/graphql.js';
import { createTestDatabase, type TestDatabase } from './database.js';
import type { StepUpdateEvent } from './plans.js';
import { StepUpdatesSubscription } from './operations.js';
import { startServiceProcess, stopServiceProcess, type ServiceProcess } from './process.js';
import type { GraphQLResponse } from './server.js';

/** A stepcast process of a cluster: an API replica (its GraphQL url) or a worker (its lease owner id). */
export interface ClusterProcess extends ServiceProcess {
  role: 'api' | 'worker';
  /** The owner its leases carry (a worker's, from its ready line). */
  workerId: string;
}

/**
 * API replicas and workers as separate processes (`npm start` with STEPCAST_ROLE) on one fresh PostgreSQL database
 * and one Redis, with a Redis prefix of their own; `sql` reads the shared database.
 */
export interface ProcessCluster {
  database: TestDatabase;
  sql: postgres.Sql;
  env: Record<string, string>;
  apis: ClusterProcess[];
  workers: ClusterProcess[];
  startApi(extraEnv?: Record<string, string>): Promise<ClusterProcess>;
  startWorker(extraEnv?: Record<string, string>): Promise<ClusterProcess>;
  stop(): Promise<void>;
}

export async function startProcessCluster({
  apis,
  workers,
  redisUrl,
  env = {},
}: {
  apis: number;
  workers: number;
  redisUrl: string;
  env?: Record<string, string>;
}): Promise<ProcessCluster> {
  const dataDir = await mkdtemp(join(tmpdir(), 'stepcast-cluster-'));
  const database = await createTestDatabase();
  const sql = postgres(database.url, { max: 2, onnotice: () => undefined });
  const shared: Record<string, string> = {
    DATABASE_URL: database.url,
    REDIS_URL: redisUrl,
    STEPCAST_REDIS_PREFIX: `test${randomBytes(4).toString('hex')}:`,
    DATA_DIR: dataDir,
    STEPCAST_DEMO_USERS: '200',
    STEPCAST_DEMO_API: 'off',
    STEPCAST_SHUTDOWN_GRACE_MS: '3000',
    ...env,
  };
  const cluster: ProcessCluster = {
    database,
    sql,
    env: shared,
    apis: [],
    workers: [],
    async startApi(extraEnv = {}) {
      const started = await startServiceProcess({ ...shared, STEPCAST_ROLE: 'api', ...extraEnv });
      const api: ClusterProcess = { ...started, role: 'api', workerId: '' };
      cluster.apis.push(api);
      return api;
    },
    async startWorker(extraEnv = {}) {
      const started = await startServiceProcess({ ...shared, STEPCAST_ROLE: 'worker', ...extraEnv }, [], 'stepcast worker is ready');
      const ready = started.logs.find((entry) => entry.msg === 'stepcast worker is ready');
      const worker: ClusterProcess = { ...started, role: 'worker', workerId: String(ready?.workerId) };
      cluster.workers.push(worker);
      return worker;
    },
    async stop() {
      await Promise.all([...cluster.apis, ...cluster.workers].map((p) => stopServiceProcess(p, 5_000)));
      await sql.end();
      await database.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  try {
    // The first process creates the schema and pg-boss's tables; the others start on them.
    if (workers > 0) await cluster.startWorker();
    else if (apis > 0) await cluster.startApi();
    await Promise.all([
      ...Array.from({ length: Math.max(0, apis - (workers > 0 ? 0 : 1)) }, () => cluster.startApi()),
      ...Array.from({ length: Math.max(0, workers - 1) }, () => cluster.startWorker()),
    ]);
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}

/** One GraphQL request over HTTP to a process. */
export async function requestOf<TResult, TVariables>(
  url: string,
  document: TypedDocumentString<TResult, TVariables>,
  variables?: TVariables,
): Promise<GraphQLResponse<TResult>> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
    body: JSON.stringify({ query: document.toString(), variables }),
  });
  return (await response.json()) as GraphQLResponse<TResult>;
}

/** A stepUpdates subscription over graphql-ws on a process: every update as it comes, until the stream completes. */
export interface Following {
  updates: StepUpdateEvent[];
  /** Resolves once the server completed the stream; rejects on an error. */
  completed: Promise<StepUpdateEvent[]>;
  /** Resolves with the first update that `predicate` accepts. */
  until(predicate: (update: StepUpdateEvent) => boolean): Promise<StepUpdateEvent>;
  dispose(): Promise<void>;
}

export function follow(url: string, executionId: string, afterSequence?: number): Following {
  const client: Client = createClient({ url: url.replace(/^http/, 'ws'), webSocketImpl: WebSocket, retryAttempts: 0, lazy: true });
  const updates: StepUpdateEvent[] = [];
  const waiters: { predicate: (update: StepUpdateEvent) => boolean; resolve: (update: StepUpdateEvent) => void }[] = [];
  const completed = new Promise<StepUpdateEvent[]>((resolve, reject) => {
    client.subscribe(
      { query: StepUpdatesSubscription.toString(), variables: { executionId, ...(afterSequence === undefined ? {} : { afterSequence }) } },
      {
        next: (value) => {
          const result = value as GraphQLResponse<{ stepUpdates: StepUpdateEvent }>;
          if (result.errors) return reject(new Error(JSON.stringify(result.errors)));
          const update = result.data!.stepUpdates;
          updates.push(update);
          for (const waiter of [...waiters]) {
            if (!waiter.predicate(update)) continue;
            waiters.splice(waiters.indexOf(waiter), 1);
            waiter.resolve(update);
          }
        },
        error: (error) => reject(error instanceof Error ? error : new Error(JSON.stringify(error))),
        complete: () => resolve(updates),
      },
    );
  });
  // A rejection nobody awaited yet is the test's to see (it awaits `completed`), not an unhandled one.
  completed.catch(() => undefined);
  return {
    updates,
    completed,
    until(predicate) {
      const seen = updates.find(predicate);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve) => waiters.push({ predicate, resolve }));
    },
    dispose: () => client.dispose() as Promise<void>,
  };
}

export { stopServiceProcess, type ServiceProcess };
