import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ExecutionFilter, ExecutionsQuery as ExecutionsResult } from './generated/graphql.js';
import { backends } from './support/database.js';
import { ExecutionQuery, ExecutionsQuery } from './support/operations.js';
import { fetchExecution, sqlStep, submitPlan, type ExecutionDetails } from './support/plans.js';
import { startTestServer, type TestServer } from './support/server.js';

const TWO_USERS = 'SELECT id FROM users ORDER BY id LIMIT 2';
const REJECTED_SQL = 'SELECT pg_sleep(1)';
const FINISHED_STATUSES: readonly string[] = ['SUCCEEDED', 'FAILED', 'CANCELLED'];

type Page = ExecutionsResult['executions'];

/** Polls execution(id) until it has finished; fails after a bounded number of tries. */
async function waitUntilFinished(server: TestServer, id: string, tries = 400, pauseMs = 25): Promise<ExecutionDetails> {
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
