import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';
import { DrizzleExecutionStore } from '../src/db/execution-store.js';
import { RetentionSweeper } from '../src/db/retention.js';
import { createLogger } from '../src/logger.js';
import type { PlanInput } from './generated/graphql.js';
import { backends } from './support/database.js';
import { CancelExecutionMutation, DurableExecutionQuery, ExecutePlanMutation } from './support/operations.js';
import { sqlStep, storeQueuedExecution, submitPlan } from './support/plans.js';
import { startTestServer, type TestServer } from './support/server.js';
import { scaledTimeout } from './support/timing.js';

const DAY_MS = 86_400_000;
const WAIT = { timeout: scaledTimeout(20_000), interval: 50 };

const TWO_STEPS: PlanInput = {
  query: 'two small reads',
  steps: [sqlStep('SELECT id FROM users ORDER BY id LIMIT 2'), sqlStep('SELECT count(*) AS n FROM step_1')],
};
/** The guard refuses pg_sleep: the execution ends FAILED. */
const FAILING: PlanInput = { query: 'refused', steps: [sqlStep('SELECT pg_sleep(1)')] };
const WAITING_FOR_APPROVAL: PlanInput = { query: 'waits for a person', steps: [sqlStep('SELECT 1 AS one', { approval: true })] };

/** Ids as one uuid[] parameter, as the store passes them. */
const uuids = (ids: readonly string[]) => `{${ids.join(',')}}`;

async function statusOf(server: TestServer, id: string): Promise<string | null> {
  const response = await server.request(DurableExecutionQuery, { id });
  return response.data?.execution?.status ?? null;
}

async function submitAndWait(server: TestServer, plan: PlanInput, status: string, idempotencyKey?: string): Promise<string> {
  const id = await submitPlan(server, plan, idempotencyKey ? { idempotencyKey } : undefined);
  await expect.poll(() => statusOf(server, id), WAIT).toBe(status);
  return id;
}

/** What the database holds of these executions: their rows, steps, events and idempotency keys. */
async function storedRows(server: TestServer, ids: readonly string[]) {
  const [row] = await server.app.database.query(
    `SELECT (SELECT count(*) FROM executions WHERE id = ANY($1::uuid[]))::int AS executions,
       (SELECT count(*) FROM step_results WHERE execution_id = ANY($1::uuid[]))::int AS steps,
       (SELECT count(*) FROM step_events WHERE execution_id = ANY($1::uuid[]))::int AS events,
       (SELECT count(*) FROM idempotency_keys WHERE execution_id = ANY($1::uuid[]))::int AS keys`,
    [uuids(ids)],
  );
  return row as { executions: number; steps: number; events: number; keys: number };
}

/** Moves an execution's times back by `days`, as if it had run then. */
async function backdate(server: TestServer, ids: readonly string[], days: number): Promise<void> {
  await server.app.database.query(
    `UPDATE executions SET created_at = created_at - make_interval(days => $2::int),
       started_at = started_at - make_interval(days => $2::int), finished_at = finished_at - make_interval(days => $2::int)
     WHERE id = ANY($1::uuid[])`,
    [uuids(ids), days],
  );
}

describe('STEPCAST_RETENTION_DAYS', () => {
  it('is off unless set above 0, takes fractions of a day, and refuses what is not a duration', () => {
    expect(loadConfig({}).retention).toBeUndefined();
    expect(loadConfig({ STEPCAST_RETENTION_DAYS: '0' }).retention).toBeUndefined();
    expect(loadConfig({ STEPCAST_RETENTION_DAYS: '30' }).retention).toEqual({ maxAgeMs: 30 * DAY_MS, intervalMs: 600_000, batchSize: 200 });
    expect(
      loadConfig({ STEPCAST_RETENTION_DAYS: '0.5', STEPCAST_RETENTION_INTERVAL_MS: '1000', STEPCAST_RETENTION_BATCH_SIZE: '50' }).retention,
    ).toEqual({ maxAgeMs: DAY_MS / 2, intervalMs: 1_000, batchSize: 50 });
    for (const env of [
      { STEPCAST_RETENTION_DAYS: '-1' },
      { STEPCAST_RETENTION_DAYS: 'a week' },
      { STEPCAST_RETENTION_DAYS: '1', STEPCAST_RETENTION_INTERVAL_MS: '10' },
      { STEPCAST_RETENTION_DAYS: '1', STEPCAST_RETENTION_BATCH_SIZE: '0' },
    ]) {
      expect(() => loadConfig(env), JSON.stringify(env)).toThrow(ConfigError);
    }
  });
});

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`retention on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    describe('the service with STEPCAST_RETENTION_DAYS=1', () => {
      let server: TestServer;
      beforeAll(async () => {
        server = await startTestServer(backend, {
          env: {
            STEPCAST_RETENTION_DAYS: '1',
            STEPCAST_RETENTION_INTERVAL_MS: '100',
            // Six executions to delete: three batches.
            STEPCAST_RETENTION_BATCH_SIZE: '2',
            // Executions stored past the executor below stay as they are: nothing looks for work after the start.
            STEPCAST_RECOVERY_INTERVAL_MS: '0',
            STEPCAST_TENANT_RATE_BURST: '100',
            STEPCAST_DEMO_API: 'off',
          },
        });
      });
      afterAll(async () => {
        await server?.close();
      });

      it('deletes finished executions past retention with their steps and events, and keeps newer and unfinished ones', async () => {
        const old = [
          ...[1, 2, 3, 4].map(() => submitAndWait(server, TWO_STEPS, 'SUCCEEDED')),
          submitAndWait(server, FAILING, 'FAILED'),
        ];
        const oldIds = await Promise.all(old);
        const cancelled = await submitAndWait(server, WAITING_FOR_APPROVAL, 'WAITING');
        expect((await server.request(CancelExecutionMutation, { id: cancelled })).data?.cancelExecution.status).toBe('CANCELLED');
        oldIds.push(cancelled);
        const recent = await submitAndWait(server, TWO_STEPS, 'SUCCEEDED');
        const keyed = await submitAndWait(server, TWO_STEPS, 'SUCCEEDED', 'retention-key');
        const waiting = await submitAndWait(server, WAITING_FOR_APPROVAL, 'WAITING');
        const queued = (await storeQueuedExecution(server.app.database)).id;
        const running = (await storeQueuedExecution(server.app.database)).id;
        // Held by another process's lease, as a run elsewhere would be.
        await server.app.database.query(
          `UPDATE executions SET lease_owner = 'another-process', lease_expires_at = now() + interval '1 day',
             status = CASE WHEN id = $2::uuid THEN 'RUNNING' ELSE status END
           WHERE id = ANY($1::uuid[])`,
          [uuids([queued, running]), running],
        );
        const before = await storedRows(server, oldIds);
        expect(before.executions).toBe(6);
        expect(before.steps).toBe(10);
        expect(before.events).toBeGreaterThan(20);

        // Older than the ones to delete, and before them: a batch takes the oldest first, so the statement that
        // deleted the last 30-day-old execution passed over these.
        await backdate(server, [keyed], 60);
        // Unfinished executions given a finished_at too: only their status keeps them.
        await server.app.database.query(
          `UPDATE executions SET created_at = now() - interval '60 days', finished_at = now() - interval '60 days'
           WHERE id = ANY($1::uuid[])`,
          [uuids([waiting, queued, running])],
        );
        await backdate(server, oldIds, 30);

        await expect.poll(async () => (await storedRows(server, oldIds)).executions, WAIT).toBe(0);
        expect(await storedRows(server, oldIds)).toEqual({ executions: 0, steps: 0, events: 0, keys: 0 });
        for (const id of oldIds) {
          const response = await server.request(DurableExecutionQuery, { id });
          expect(response.data?.execution).toBeNull();
          expect(response.errors?.[0]?.extensions?.code).toBe('NOT_FOUND');
        }

        const kept = { [recent]: 'SUCCEEDED', [keyed]: 'SUCCEEDED', [waiting]: 'WAITING', [queued]: 'QUEUED', [running]: 'RUNNING' };
        for (const [id, status] of Object.entries(kept)) expect(await statusOf(server, id), id).toBe(status);
        expect(await storedRows(server, Object.keys(kept))).toMatchObject({ executions: 5, steps: 2 + 2 + 1 + 1 + 1 });

        // The key still answers with its execution; once it expires, the execution goes, and the key makes a new one.
        const again = await server.request(ExecutePlanMutation, { plan: TWO_STEPS, options: { idempotencyKey: 'retention-key' } });
        expect(again.data?.executePlan.id).toBe(keyed);
        await server.app.database.query(
          `UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE execution_id = $1::uuid`,
          [keyed],
        );
        await expect.poll(async () => (await storedRows(server, [keyed])).executions, WAIT).toBe(0);
        expect(await storedRows(server, [keyed])).toEqual({ executions: 0, steps: 0, events: 0, keys: 0 });
        const fresh = await server.request(ExecutePlanMutation, { plan: TWO_STEPS, options: { idempotencyKey: 'retention-key' } });
        expect(fresh.errors).toBeUndefined();
        expect(fresh.data?.executePlan.id).not.toBe(keyed);
      });
    });

    describe('a sweep', () => {
      let server: TestServer;
      let store: DrizzleExecutionStore;
      const sweeper = (batchSize: number) =>
        new RetentionSweeper(store, { maxAgeMs: DAY_MS, intervalMs: 60_000, batchSize }, createLogger('silent'));

      beforeAll(async () => {
        // Retention off: only the sweeps below delete anything.
        server = await startTestServer(backend, { env: { STEPCAST_TENANT_RATE_BURST: '100', STEPCAST_DEMO_API: 'off' } });
        store = new DrizzleExecutionStore(server.app.database.db, server.app.database.query);
      });
      afterAll(async () => {
        await server?.close();
      });

      async function oldExecutions(count: number): Promise<string[]> {
        const ids: string[] = [];
        for (let i = 0; i < count; i++) ids.push(await submitAndWait(server, TWO_STEPS, 'SUCCEEDED'));
        await backdate(server, ids, 2);
        return ids;
      }

      it('deletes at most a batch per statement, and batch after batch until none is left', async () => {
        const ids = await oldExecutions(5);
        expect(await store.deleteFinishedExecutions(DAY_MS, 2)).toBe(2);
        expect((await storedRows(server, ids)).executions).toBe(3);
        expect(await sweeper(2).sweep()).toEqual({ deleted: 3, batches: 2 });
        expect(await storedRows(server, ids)).toEqual({ executions: 0, steps: 0, events: 0, keys: 0 });
        expect(await sweeper(2).sweep()).toEqual({ deleted: 0, batches: 1 });
      });

      const onPglite = backend === 'pglite' ? ' (skipped on PGlite: it serves one connection, so no other transaction can hold a row)' : '';
      it.skipIf(backend === 'pglite')(`skips an execution another transaction holds instead of waiting for it${onPglite}`, async () => {
        const ids = await oldExecutions(3);
        const [held, ...others] = ids as [string, ...string[]];
        const other = postgres(server.databaseUrl!, { max: 1, onnotice: () => undefined });
        try {
          await other.begin(async (tx) => {
            await tx`SELECT id FROM executions WHERE id = ${held} FOR UPDATE`;
            // Runs while the row is locked: it would hang here if it waited for the lock.
            expect(await sweeper(10).sweep()).toEqual({ deleted: 2, batches: 1 });
          });
          expect((await storedRows(server, others)).executions).toBe(0);
          expect((await storedRows(server, [held])).executions).toBe(1);
          expect(await sweeper(10).sweep()).toEqual({ deleted: 1, batches: 1 });
        } finally {
          await other.end();
        }
      });
    });
  });
}
