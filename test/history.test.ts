import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createApiKey, createTenant } from '../src/admin/tenants.js';
import { DrizzleExecutionStore } from '../src/db/execution-store.js';
import { DEMO_TENANT_ID } from '../src/db/demo-data.js';
import type { ExecutionFilter, ExecutionsQuery as ExecutionsResult } from './generated/graphql.js';
import { backends } from './support/database.js';
import { ExecutionQuery, ExecutionsQuery, ExecutionsWithPlansQuery, ExecutionsWithStepsQuery } from './support/operations.js';
import { fetchExecution, sqlStep, submitPlan, type ExecutionDetails } from './support/plans.js';
import { startTestServer, type TestClient, type TestServer } from './support/server.js';

const TWO_USERS = 'SELECT id FROM users ORDER BY id LIMIT 2';
const REJECTED_SQL = 'SELECT pg_sleep(1)';
const FINISHED_STATUSES: readonly string[] = ['SUCCEEDED', 'FAILED', 'CANCELLED'];

type Page = ExecutionsResult['executions'];

/** Polls execution(id) until it has finished; fails after a bounded number of tries. */
async function waitUntilFinished(server: TestClient, id: string, tries = 400, pauseMs = 25): Promise<ExecutionDetails> {
  let execution: ExecutionDetails | undefined;
  for (let attempt = 0; attempt < tries; attempt++) {
    execution = await fetchExecution(server, id);
    if (FINISHED_STATUSES.includes(execution.status)) return execution;
    await sleep(pauseMs);
  }
  throw new Error(`execution ${id} did not finish after ${tries} polls; last status ${execution?.status}`);
}

const ms = (value: string | null | undefined): number => {
  expect(value, 'expected a timestamp').toBeTruthy();
  return new Date(value!).getTime();
};

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`history on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    /** Oldest first, each finished before the next was submitted, so createdAt strictly increases. */
    const created: ExecutionDetails[] = [];
    const newestFirst = () => [...created].reverse().map((execution) => execution.id);
    const byCorrelationId = (correlationId: string) => created.find((e) => e.correlationId === correlationId)!;

    async function page(variables: { first?: number; after?: string | null; filter?: ExecutionFilter }): Promise<Page> {
      const response = await server.request(ExecutionsQuery, variables);
      expect(response.errors).toBeUndefined();
      return response.data!.executions;
    }

    async function listIds(filter: ExecutionFilter): Promise<string[]> {
      return (await page({ first: 100, filter })).edges.map((edge) => edge.node.id);
    }

    async function expectBadUserInput(variables: { first?: number; after?: string }, message: RegExp) {
      const response = await server.request(ExecutionsQuery, variables);
      expect(response.data?.executions ?? null).toBeNull();
      expect(response.errors).toHaveLength(1);
      expect(response.errors![0]!.extensions?.code).toBe('BAD_USER_INPUT');
      expect(response.errors![0]!.message).toMatch(message);
    }

    beforeAll(async () => {
      server = await startTestServer(backend);
      const plans: { correlationId: string; failing: boolean }[] = [
        { correlationId: 'history-ok-1', failing: false },
        { correlationId: 'history-ok-2', failing: false },
        { correlationId: 'history-failed', failing: true },
        { correlationId: 'history-ok-3', failing: false },
        { correlationId: 'history-ok-4', failing: false },
      ];
      for (const { correlationId, failing } of plans) {
        const steps = failing ? [sqlStep(REJECTED_SQL), sqlStep(TWO_USERS)] : [sqlStep(TWO_USERS)];
        const id = await submitPlan(server, { query: `history ${correlationId}`, steps }, { correlationId });
        created.push(await waitUntilFinished(server, id));
      }
    });

    afterAll(async () => {
      await server?.close();
    });

    it('finishes the fixture executions as planned (four SUCCEEDED, one FAILED)', () => {
      expect(created.map((execution) => [execution.correlationId, execution.status])).toEqual([
        ['history-ok-1', 'SUCCEEDED'],
        ['history-ok-2', 'SUCCEEDED'],
        ['history-failed', 'FAILED'],
        ['history-ok-3', 'SUCCEEDED'],
        ['history-ok-4', 'SUCCEEDED'],
      ]);
    });

    it('lists executions newest first, with their status and correlation id', async () => {
      const { edges, pageInfo } = await page({ first: 100 });
      expect(edges.map((edge) => edge.node.id)).toEqual(newestFirst());
      expect(edges.map((edge) => [edge.node.correlationId, edge.node.status])).toEqual(
        [...created].reverse().map((execution) => [execution.correlationId, execution.status]),
      );
      expect(edges.map((edge) => edge.node.createdAt)).toEqual([...created].reverse().map((e) => e.createdAt));
      expect(pageInfo.hasNextPage).toBe(false);
    });

    it('walks every execution exactly once in pages of two, and the last page has no next page', async () => {
      const pages: Page[] = [];
      let after: string | null = null;
      for (let guard = 0; guard < 10; guard++) {
        const current: Page = await page({ first: 2, after });
        pages.push(current);
        if (!current.pageInfo.hasNextPage) break;
        expect(current.pageInfo.endCursor).toBe(current.edges.at(-1)!.cursor);
        after = current.pageInfo.endCursor;
      }
      expect(pages.map((p) => p.edges.length)).toEqual([2, 2, 1]);
      expect(pages.map((p) => p.pageInfo.hasNextPage)).toEqual([true, true, false]);
      const ids = pages.flatMap((p) => p.edges.map((edge) => edge.node.id));
      expect(new Set(ids).size).toBe(ids.length);
      expect(ids).toEqual(newestFirst());
    });

    it('says there is no next page when a page ends exactly at the oldest execution', async () => {
      const all = await page({ first: created.length });
      expect(all.edges).toHaveLength(created.length);
      expect(all.pageInfo.hasNextPage).toBe(false);

      const allButOne = await page({ first: created.length - 1 });
      expect(allButOne.edges).toHaveLength(created.length - 1);
      expect(allButOne.pageInfo.hasNextPage).toBe(true);
    });

    it('resumes right after any edge cursor, not only the endCursor', async () => {
      const { edges } = await page({ first: 100 });
      const resumed = await page({ first: 100, after: edges[1]!.cursor });
      expect(resumed.edges.map((edge) => edge.node.id)).toEqual(newestFirst().slice(2));
    });

    it('gives an empty page with a null endCursor after the last page', async () => {
      const last = await page({ first: 100 });
      expect(last.pageInfo.endCursor).not.toBeNull();
      const beyond = await page({ first: 2, after: last.pageInfo.endCursor });
      expect(beyond.edges).toEqual([]);
      expect(beyond.pageInfo).toEqual({ hasNextPage: false, endCursor: null });
    });

    it('accepts page sizes 1 and 100, the ends of the allowed range', async () => {
      const one = await page({ first: 1 });
      expect(one.edges.map((edge) => edge.node.id)).toEqual(newestFirst().slice(0, 1));
      expect(one.pageInfo.hasNextPage).toBe(true);
      expect((await page({ first: 100 })).edges).toHaveLength(created.length);
    });

    it('filters by status: any of the statuses given', async () => {
      const failed = byCorrelationId('history-failed');
      expect(await listIds({ status: ['FAILED'] })).toEqual([failed.id]);
      expect(await listIds({ status: ['SUCCEEDED'] })).toEqual(newestFirst().filter((id) => id !== failed.id));
      expect(await listIds({ status: ['SUCCEEDED', 'FAILED'] })).toEqual(newestFirst());
      expect(await listIds({ status: ['QUEUED', 'RUNNING', 'CANCELLED'] })).toEqual([]);
    });

    it('pages through a status filter without letting other statuses in', async () => {
      const first = await page({ first: 2, filter: { status: ['SUCCEEDED'] } });
      const second = await page({ first: 2, after: first.pageInfo.endCursor, filter: { status: ['SUCCEEDED'] } });
      expect(first.pageInfo.hasNextPage).toBe(true);
      expect(second.pageInfo.hasNextPage).toBe(false);
      expect([...first.edges, ...second.edges].map((edge) => edge.node.correlationId)).toEqual([
        'history-ok-4',
        'history-ok-3',
        'history-ok-2',
        'history-ok-1',
      ]);
    });

    it('filters by correlation id', async () => {
      expect(await listIds({ correlationId: 'history-ok-2' })).toEqual([byCorrelationId('history-ok-2').id]);
      expect(await listIds({ correlationId: 'history-nobody' })).toEqual([]);
    });

    it('combines filters: every condition must hold', async () => {
      expect(await listIds({ correlationId: 'history-ok-2', status: ['FAILED'] })).toEqual([]);
      expect(await listIds({ correlationId: 'history-failed', status: ['FAILED'] })).toEqual([
        byCorrelationId('history-failed').id,
      ]);
    });

    it('filters by createdAfter and createdBefore, both exclusive', async () => {
      const ids = created.map((execution) => execution.id);
      const createdAt = created.map((execution) => execution.createdAt);
      expect(await listIds({ createdAfter: createdAt[1] })).toEqual(ids.slice(2).reverse());
      expect(await listIds({ createdBefore: createdAt[3] })).toEqual(ids.slice(0, 3).reverse());
      expect(await listIds({ createdAfter: createdAt[1], createdBefore: createdAt[3] })).toEqual([ids[2]]);
      expect(await listIds({ createdAfter: createdAt[4] })).toEqual([]);
      expect(await listIds({ createdBefore: createdAt[0] })).toEqual([]);
    });

    it('returns a succeeded execution with its plan, step results, counters and timings', async () => {
      const { id } = byCorrelationId('history-ok-1');
      const execution = await fetchExecution(server, id);
      const expectedRecords = [{ id: 1 }, { id: 2 }];
      expect(execution).toMatchObject({
        id,
        correlationId: 'history-ok-1',
        status: 'SUCCEEDED',
        totalSteps: 1,
        successfulSteps: 1,
        failedSteps: 0,
        finalResult: expectedRecords,
        error: null,
        lastSequence: 4,
        plan: {
          query: 'history history-ok-1',
          steps: [{ kind: 'SQL', queryContext: sqlStep(TWO_USERS).queryContext, critical: true, sql: TWO_USERS }],
        },
      });
      expect(execution.steps).toHaveLength(1);
      expect(execution.steps[0]).toMatchObject({
        index: 1,
        kind: 'SQL',
        status: 'SUCCEEDED',
        critical: true,
        sql: TWO_USERS,
        recordCount: 2,
        result: expectedRecords,
        sample: expectedRecords,
        truncated: false,
        attempts: 1,
        columns: [{ name: 'id', type: 'integer' }],
        error: null,
      });

      const [createdAt, started, finished] = [execution.createdAt, execution.startedAt, execution.finishedAt].map(ms);
      expect(started).toBeGreaterThanOrEqual(createdAt!);
      expect(finished).toBeGreaterThanOrEqual(started!);
      expect(execution.durationMs).toBeGreaterThanOrEqual(0);
      expect(execution.durationMs).toBe(finished! - started!);

      const step = execution.steps[0]!;
      const [stepStarted, stepFinished] = [step.startedAt, step.finishedAt].map(ms);
      expect(stepStarted).toBeGreaterThanOrEqual(started!);
      expect(stepFinished).toBeGreaterThanOrEqual(stepStarted!);
      expect(stepFinished).toBeLessThanOrEqual(finished!);
      expect(step.durationMs).toBe(stepFinished! - stepStarted!);
    });

    it('returns a failed execution with the error of the critical step and the later step skipped', async () => {
      const { id } = byCorrelationId('history-failed');
      const execution = await fetchExecution(server, id);
      expect(execution).toMatchObject({
        status: 'FAILED',
        totalSteps: 2,
        successfulSteps: 0,
        failedSteps: 1,
        finalResult: null,
        error: { code: 'SQL_REJECTED', retryable: false },
        plan: { steps: [{ sql: REJECTED_SQL }, { sql: TWO_USERS }] },
      });
      expect(execution.error!.message).toMatch(/pg_sleep/);
      expect(execution.steps.map((step) => [step.index, step.status])).toEqual([
        [1, 'FAILED'],
        [2, 'SKIPPED'],
      ]);
      expect(execution.steps[0]!.error).toEqual(execution.error);
      expect(execution.steps[0]!.result).toBeNull();
      expect(execution.steps[1]!.startedAt).toBeNull();
      expect(execution.durationMs).toBeGreaterThanOrEqual(0);
      expect(ms(execution.finishedAt)).toBeGreaterThanOrEqual(ms(execution.startedAt));
    });

    it('answers null with NOT_FOUND for an unknown id and for an id that is not a UUID', async () => {
      for (const id of ['00000000-0000-4000-8000-000000000000', 'not-a-uuid', '42', '']) {
        const response = await server.request(ExecutionQuery, { id });
        expect(response.errors?.map((e) => e.extensions?.code), `errors for id ${JSON.stringify(id)}`).toEqual(['NOT_FOUND']);
        expect(response.data).toEqual({ execution: null });
      }
    });

    it('rejects a page size outside 1..100 as BAD_USER_INPUT', async () => {
      for (const first of [0, -1, 101]) {
        await expectBadUserInput({ first }, /first must be between 1 and 100/);
      }
    });

    it('rejects an after cursor the server did not issue as BAD_USER_INPUT', async () => {
      const base64url = (text: string) => Buffer.from(text).toString('base64url');
      const forged = [
        'not-a-cursor',
        base64url('{"garbage'),
        base64url('{"createdAt":"2024-01-01T00:00:00Z"}'),
        base64url('["2024-01-01T00:00:00Z","not-a-uuid"]'),
        base64url('["not a date","00000000-0000-4000-8000-000000000000"]'),
      ];
      for (const after of forged) {
        await expectBadUserInput({ first: 2, after }, /pass an endCursor from a previous page/);
      }
    });
  });
}

/** The store's reads a history request could make; the executor's own background calls (leases, sweeps) are not among them. */
const READS = ['listExecutions', 'listExecutionDetails', 'listSteps', 'listStepsOfExecutions', 'findExecution', 'loadEvents', 'findStepResult'] as const;

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`history with steps on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    let demo: TestClient;
    let other: TestClient;
    /** The demo tenant's executions, newest first, with the sql of each of their steps. */
    const demoRuns: { id: string; sqls: string[] }[] = [];
    let otherRun: { id: string; sqls: string[] };
    const spies = new Map<string, { mock: { calls: unknown[][] } }>();

    /** The store reads made while `request` ran, by method, with the ids listStepsOfExecutions was given. */
    async function readsDuring(request: () => Promise<unknown>): Promise<{ counts: Record<string, number>; batches: string[][] }> {
      const before = new Map([...spies].map(([name, spy]) => [name, spy.mock.calls.length]));
      await request();
      const counts: Record<string, number> = {};
      for (const [name, spy] of spies) {
        const made = spy.mock.calls.length - before.get(name)!;
        if (made > 0) counts[name] = made;
      }
      const batchCalls = spies.get('listStepsOfExecutions')!.mock.calls.slice(before.get('listStepsOfExecutions'));
      return { counts, batches: batchCalls.map((args) => [...(args[1] as string[])]) };
    }

    async function run(client: TestClient, sqls: string[]): Promise<string> {
      const id = await submitPlan(client, { query: `history with steps: ${sqls.join('; ')}`, steps: sqls.map((sql) => sqlStep(sql)) });
      const finished = await waitUntilFinished(client, id);
      expect(finished.status).toBe('SUCCEEDED');
      return id;
    }

    beforeAll(async () => {
      server = await startTestServer(backend, {
        env: {
          STEPCAST_AUTH: 'on',
          STEPCAST_DEMO: 'on',
          STEPCAST_TENANT_RATE_BURST: '100',
          STEPCAST_TENANT_RATE_PER_MINUTE: '6000',
          // The cost counts every execution of a page at the most steps a plan may have: 20 of them with steps exceed the default.
          STEPCAST_GRAPHQL_MAX_COST: '50000',
        },
      });
      const { database, secrets } = server.app;
      await createTenant(database, secrets, { name: 'Other', id: 'other' });
      demo = server.as(`Bearer ${(await createApiKey(database, DEMO_TENANT_ID)).token}`);
      other = server.as(`Bearer ${(await createApiKey(database, 'other')).token}`);
      otherRun = { sqls: ["SELECT 'other' AS tenant"], id: '' };
      otherRun.id = await run(other, otherRun.sqls);
      // 21 executions of one to three steps each, every step selecting a number of its own: more than a page of 20.
      const created: { id: string; sqls: string[] }[] = [];
      for (let i = 0; i < 21; i++) {
        const sqls = Array.from({ length: (i % 3) + 1 }, (_, k) => `SELECT ${i * 10 + k} AS n`);
        created.push({ id: await run(demo, sqls), sqls });
      }
      demoRuns.push(...created.reverse());
      for (const name of READS) spies.set(name, vi.spyOn(DrizzleExecutionStore.prototype, name));
    });

    afterAll(async () => {
      vi.restoreAllMocks();
      await server?.close();
    });

    it('reads the steps of a whole page in one query, whether the page holds 2 executions or 20', async () => {
      for (const first of [2, 20]) {
        const { counts, batches } = await readsDuring(async () => {
          const response = await demo.request(ExecutionsWithStepsQuery, { first });
          expect(response.errors).toBeUndefined();
          expect(response.data!.executions.edges).toHaveLength(first);
        });
        expect(counts, `store reads for a page of ${first}`).toEqual({ listExecutions: 1, listStepsOfExecutions: 1 });
        expect(new Set(batches[0]), `ids loaded for a page of ${first}`).toEqual(new Set(demoRuns.slice(0, first).map((r) => r.id)));
      }
    });

    it('lists a page without plans and final results, and reads those of the whole page in one query when asked', async () => {
      for (const first of [2, 20]) {
        const { counts } = await readsDuring(async () => {
          const response = await demo.request(ExecutionsWithPlansQuery, { first });
          expect(response.errors).toBeUndefined();
          const edges = response.data!.executions.edges;
          expect(edges.map((edge) => edge.node.id)).toEqual(demoRuns.slice(0, first).map((r) => r.id));
          for (const [i, { node }] of edges.entries()) {
            const { sqls } = demoRuns[i]!;
            expect(node.plan.query).toBe(`history with steps: ${sqls.join('; ')}`);
            expect(node.plan.steps.map((step) => step.sql)).toEqual(sqls);
            expect(node.finalResult).toEqual([{ n: Number(/\d+/.exec(sqls.at(-1)!)![0]) }]);
          }
        });
        expect(counts, `store reads for a page of ${first} with plans`).toEqual({ listExecutions: 1, listExecutionDetails: 1 });
      }
      // Asked for both tenants' executions at once, the store answers only those of the tenant asking.
      const details = await server.app.executor.listExecutionDetails('other', [demoRuns[0]!.id, otherRun.id, 'not-a-uuid']);
      expect([...details.keys()]).toEqual([otherRun.id]);
    });

    it("gives every execution of the page its own steps, in order, with their sql and records", async () => {
      const response = await demo.request(ExecutionsWithStepsQuery, { first: 20 });
      expect(response.errors).toBeUndefined();
      const edges = response.data!.executions.edges;
      expect(edges.map((edge) => edge.node.id)).toEqual(demoRuns.slice(0, 20).map((r) => r.id));
      for (const [i, { node }] of edges.entries()) {
        const { sqls } = demoRuns[i]!;
        expect(node.steps, `steps of execution ${i}`).toEqual(
          sqls.map((sql, k) => ({ index: k + 1, status: 'SUCCEEDED', sql, result: [{ n: Number(/\d+/.exec(sql)![0]) }] })),
        );
      }
    });

    it("shows each tenant only its executions and their steps, and never loads another tenant's steps", async () => {
      const response = await other.request(ExecutionsWithStepsQuery, { first: 20 });
      expect(response.errors).toBeUndefined();
      expect(response.data!.executions.edges).toEqual([
        { node: { id: otherRun.id, steps: [{ index: 1, status: 'SUCCEEDED', sql: otherRun.sqls[0], result: [{ tenant: 'other' }] }] } },
      ]);
      // Asked for both tenants' executions at once, the store answers only those of the tenant asking.
      const mixed = [demoRuns[0]!.id, otherRun.id];
      const forOther = await server.app.executor.listStepsOfExecutions('other', mixed);
      expect(forOther.get(demoRuns[0]!.id)).toEqual([]);
      expect(forOther.get(otherRun.id)!.map((step) => step.sql)).toEqual(otherRun.sqls);
      const forDemo = await server.app.executor.listStepsOfExecutions(DEMO_TENANT_ID, mixed);
      expect(forDemo.get(otherRun.id)).toEqual([]);
      expect(forDemo.get(demoRuns[0]!.id)!.map((step) => step.sql)).toEqual(demoRuns[0]!.sqls);
    });
  });
}
