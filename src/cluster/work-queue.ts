import { sql, type SQL } from 'drizzle-orm';
import type { Db } from '../db/client.js';
import type { Logger } from '../logger.js';

/** The pg-boss queue that hands executions to workers. */
export const EXECUTIONS_QUEUE = 'stepcast-executions';
/** pg-boss keeps its tables in this schema of the service's database. */
const QUEUE_SCHEMA = 'pgboss';

/** A job: an execution of the tenant needs a worker. */
export interface ExecutionJob {
  executionId: string;
  tenantId: string;
}

export interface WorkQueue {
  /** Enqueues the job in the caller's transaction (the one that stores the execution): both commit, or neither. */
  sendInTransaction(tx: Db, job: ExecutionJob): Promise<void>;
  /** Enqueues the job, unless the execution has one waiting already (its id is the job's singleton key). */
  send(job: ExecutionJob): Promise<void>;
  /** Takes up to `limit` jobs (they are active until completed, or retried once they expire). */
  fetch(limit: number): Promise<{ id: string; data: ExecutionJob }[]>;
  complete(jobIds: readonly string[]): Promise<void>;
  /** The job could not be handled (the database went away meanwhile): pg-boss retries it after its delay. */
  fail(jobId: string, error: unknown): Promise<void>;
  stop(): Promise<void>;
}

/** Job options: a job is only a worker's admission (taken, then completed), so it never runs long. */
const JOB_OPTIONS = {
  retryLimit: 20,
  retryDelay: 1,
  retryBackoff: true,
  // A worker that dies between taking a job and completing it: pg-boss gives the job back after this.
  expireInSeconds: 60,
} as const;

/**
 * pg-boss's statement (numbered `$n` parameters) as one drizzle statement, so that it runs on the transaction that
 * stores the execution. Objects go as their JSON text (pg-boss casts them to jsonb), as node-postgres would send them.
 */
function statementOf(text: string, values: readonly unknown[]): SQL {
  const parts = text.split(/\$(\d+)/);
  const chunks: SQL[] = [];
  for (let i = 0; i < parts.length; i++) {
    if (i % 2 === 0) {
      chunks.push(sql.raw(parts[i]!));
      continue;
    }
    const value = values[Number(parts[i]) - 1];
    chunks.push(sql`${value !== null && typeof value === 'object' && !(value instanceof Date) ? JSON.stringify(value) : (value ?? null)}`);
  }
  return sql.join(chunks);
}

/**
 * The work queue on the service's PostgreSQL: pg-boss (its own small pool of node-postgres connections), with the
 * executions queue created once (a `short` policy: at most one waiting job per execution).
 */
export async function startWorkQueue({ url, logger }: { url: string; logger: Logger }): Promise<WorkQueue> {
  // Loaded here, not at every start: only the processes of a cluster have a queue.
  const { default: PgBoss } = await import('pg-boss');
  const boss = new PgBoss({
    connectionString: url,
    schema: QUEUE_SCHEMA,
    max: 3,
    application_name: 'stepcast-queue',
    // No cron schedules: nothing of ours is scheduled, and the clock monitor would only cost queries.
    schedule: false,
    archiveCompletedAfterSeconds: 3_600,
    deleteAfterDays: 1,
  });
  let errorLogged = 0;
  boss.on('error', (error: Error) => {
    // pg-boss reports its maintenance's failures here (the database is down): once a minute is enough to tell.
    if (Date.now() - errorLogged < 60_000) return;
    errorLogged = Date.now();
    logger.warn({ err: error }, 'work queue (pg-boss) error');
  });
  await boss.start();
  await boss.createQueue(EXECUTIONS_QUEUE, { name: EXECUTIONS_QUEUE, policy: 'short', ...JOB_OPTIONS });
  const options = (job: ExecutionJob) => ({ ...JOB_OPTIONS, singletonKey: job.executionId });
  return {
    async sendInTransaction(tx, job) {
      await boss.send(EXECUTIONS_QUEUE, job, {
        ...options(job),
        db: {
          executeSql: async (text: string, values: unknown[]) => ({
            rows: [...((await tx.execute(statementOf(text, values ?? []))) as unknown as Iterable<Record<string, unknown>>)],
          }),
        },
      });
    },
    async send(job) {
      await boss.send(EXECUTIONS_QUEUE, job, options(job));
    },
    async fetch(limit) {
      const jobs = await boss.fetch<ExecutionJob>(EXECUTIONS_QUEUE, { batchSize: limit });
      return (jobs ?? []).map((job) => ({ id: job.id, data: job.data }));
    },
    async complete(jobIds) {
      if (jobIds.length > 0) await boss.complete(EXECUTIONS_QUEUE, [...jobIds]);
    },
    async fail(jobId, error) {
      await boss.fail(EXECUTIONS_QUEUE, jobId, { message: error instanceof Error ? error.message : String(error) });
    },
    async stop() {
      await boss.stop({ graceful: false, wait: true, close: true, timeout: 2_000 });
    },
  };
}
