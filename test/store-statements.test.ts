import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { and, asc, eq, getTableColumns, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { openDatabase, type Database, type Db } from '../src/db/client.js';
import { DrizzleExecutionStore } from '../src/db/execution-store.js';
import { executions, stepEvents, stepResults, tenants } from '../src/db/tables.js';
import { validatePlan, type ValidatedPlan } from '../src/executor/plan.js';
import { backends, createTestDatabase, type TestDatabase } from './support/database.js';
import { seedPgliteDataDir } from './support/pglite-template.js';

const TENANT = 'statements';

function validated(steps: Record<string, unknown>[]): ValidatedPlan {
  const { executor, inputLimits } = loadConfig({ STEPCAST_PLAN_MAX_STEPS: '1000' });
  return validatePlan({ query: 'q', steps } as never, null, {
    sampleSize: executor.defaultSampleSize,
    stepTimeoutMs: executor.stepTimeoutMs,
    maxStepTimeoutMs: executor.maxStepTimeoutMs,
    limits: inputLimits,
  });
}

const ODD_TEXT = `ünïcødé 🚀 "quoted" 'single' \\ back\\slash $1 ::jsonb -- ); DROP TABLE executions; \n\t tab`;

/** Every value of a row with its JS type, so that a Date and its ISO text, or 1 and '1', do not compare equal. */
function typed(row: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (!row) return row;
  return Object.fromEntries(
    Object.entries(row).map(([key, value]) => [
      key,
      { type: value === null ? 'null' : value instanceof Date ? 'Date' : Array.isArray(value) ? 'array' : typeof value, value },
    ]),
  );
}

/**
 * The statements the store writes as text decode their rows as drizzle's select of the same columns did: every column
 * type (timestamps with time zone, json, jsonb, booleans, integers, nulls), on PGlite and PostgreSQL.
 */
for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`the store's statements written as text on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let dataDir: string;
    let testDatabase: TestDatabase | undefined;
    let database: Database;
    let db: Db;
    let store: DrizzleExecutionStore;

    beforeAll(async () => {
      dataDir = await mkdtemp(join(tmpdir(), 'stepcast-statements-'));
      if (backend === 'postgres') testDatabase = await createTestDatabase();
      else await seedPgliteDataDir(dataDir);
      database =
        backend === 'pglite'
          ? await openDatabase(loadConfig({ DATA_DIR: dataDir }).database)
          : await openDatabase({ kind: 'postgres', url: testDatabase!.url, poolSize: 2 }, { tenantStatements: 1 });
      db = database.db;
      store = new DrizzleExecutionStore(db, database.query);
      await db.insert(tenants).values({
        id: TENANT,
        name: ODD_TEXT,
        dataSchema: 'statements_data',
        apiBaseUrl: 'https://api.example',
        apiOpenapi: { openapi: '3.0.0', paths: { '/a': { get: { summary: ODD_TEXT } } }, n: 1.5, list: [1, 'two', null] },
        apiCredentialsEncrypted: 'secret',
        apiAllowedMethods: ['GET', 'POST'],
        dbRole: 'role_x',
      });
      await db.insert(tenants).values({ id: `${TENANT}-bare`, name: 'bare', dataSchema: 'statements_bare' });
    });

    afterAll(async () => {
      await database?.close();
      await testDatabase?.drop();
      await rm(dataDir, { recursive: true, force: true });
    });

    it('reads a tenant as drizzle did, every column set or not', async () => {
      for (const id of [TENANT, `${TENANT}-bare`]) {
        const [expected] = await db.select().from(tenants).where(eq(tenants.id, id));
        const actual = await store.findTenant(id);
        expect(typed(actual as never)).toEqual(typed(expected as never));
        expect(actual!.createdAt).toBeInstanceOf(Date);
      }
      expect(await store.findTenant('nobody')).toBeUndefined();
    });

    it('stores an execution, its steps and its PLAN_CREATED in one go, as the separate inserts did', async () => {
      const plan = validated([
        { kind: 'SQL', queryContext: ODD_TEXT, sql: 'SELECT 1' },
        { kind: 'API', queryContext: 'second', code: 'return 1', entity: ODD_TEXT, reasoning: ODD_TEXT, critical: false, approval: true },
        { kind: 'SQL', queryContext: 'third', entity: null, reasoning: null, critical: true, approval: false },
        ...Array.from({ length: 9 }, (_, i) => ({ kind: 'SQL', queryContext: `step ${i + 4}`, sql: `SELECT ${i + 4}` })),
      ]);
      const usage = { promptTokens: 1, completionTokens: 2, totalTokens: 3 };
      const { execution, planCreated } = await store.createExecution(TENANT, plan, { plannerUsage: usage });
      const [expected] = await db.select().from(executions).where(eq(executions.id, execution.id));
      expect(typed(execution as never)).toEqual(typed(expected as never));
      expect(execution).toMatchObject({ status: 'QUEUED', totalSteps: 12, lastSequence: 1, usage, plan: plan.plan, options: plan.options });

      const steps = await db.select().from(stepResults).where(eq(stepResults.executionId, execution.id)).orderBy(asc(stepResults.index));
      expect(steps.map((step) => step.index)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
      plan.plan.steps.forEach((step, i) => {
        expect(steps[i]).toMatchObject({
          tenantId: TENANT,
          correlationId: plan.correlationId,
          kind: step.kind,
          status: 'PENDING',
          queryContext: step.queryContext,
          entity: step.entity ?? null,
          reasoning: step.reasoning ?? null,
          critical: step.critical,
          approval: step.approval ?? false,
          sql: null,
          code: null,
          attempts: 0,
          truncated: false,
          unsafeCalls: false,
        });
      });
      const events = await db.select().from(stepEvents).where(eq(stepEvents.executionId, execution.id));
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ sequence: 1, type: 'PLAN_CREATED', executionStatus: 'QUEUED', stepIndex: null, step: null, message: null });
      expect(events[0]!.at).toEqual(execution.createdAt);
      expect(planCreated?.at).toEqual(execution.createdAt);
      const [update] = await store.loadEvents(execution.id, 0);
      expect(update).toEqual(planCreated);
    });

    it('stores a submitted plan without PLAN_CREATED, and its hooks see the execution and its steps', async () => {
      const plan = validated([{ kind: 'SQL', queryContext: 'one', sql: 'SELECT 1' }, { kind: 'SQL', queryContext: 'two', sql: 'SELECT 2' }]);
      const seen: Record<string, number> = {};
      const { execution, planCreated } = await store.createExecution(TENANT, plan, {
        claim: async (tx, id) => {
          seen.claimExecutions = (await tx.select().from(executions).where(eq(executions.id, id))).length;
        },
        enqueue: async (tx, id) => {
          seen.enqueueExecutions = (await tx.select().from(executions).where(eq(executions.id, id))).length;
          seen.enqueueSteps = (await tx.select().from(stepResults).where(eq(stepResults.executionId, id))).length;
        },
      });
      expect(planCreated).toBeNull();
      expect(seen).toEqual({ claimExecutions: 1, enqueueExecutions: 1, enqueueSteps: 2 });
      expect(execution.lastSequence).toBe(0);
      expect(execution.usage).toBeNull();
      expect(await db.select().from(stepEvents).where(eq(stepEvents.executionId, execution.id))).toEqual([]);
      expect(await store.loadEvents(execution.id, 0)).toEqual([]);
    });

    it('stores nothing when a hook fails', async () => {
      const plan = validated([{ kind: 'SQL', queryContext: 'one', sql: 'SELECT 1' }]);
      let id: string | undefined;
      for (const failing of ['claim', 'enqueue'] as const) {
        const hook = async (_tx: Db, executionId: string) => {
          id = executionId;
          throw new Error(`${failing} failed`);
        };
        await expect(store.createExecution(TENANT, plan, { plannerUsage: { promptTokens: 0, completionTokens: 0, totalTokens: 0 }, [failing]: hook })).rejects.toThrow(`${failing} failed`);
        expect(await db.select().from(executions).where(eq(executions.id, id!))).toEqual([]);
        expect(await db.select().from(stepResults).where(eq(stepResults.executionId, id!))).toEqual([]);
        expect(await db.select().from(stepEvents).where(eq(stepEvents.executionId, id!))).toEqual([]);
      }
    });

    it('stores a plan of the most steps a plan may have, each at its index', async () => {
      const plan = validated(
        Array.from({ length: 1000 }, (_, i) => ({
          kind: i % 2 ? 'API' : 'SQL',
          queryContext: `step ${i + 1} ${ODD_TEXT}`,
          entity: i % 3 ? null : `e${i + 1}`,
          critical: i % 5 !== 0,
          approval: i % 7 === 0,
        })),
      );
      const { execution } = await store.createExecution(TENANT, plan);
      const steps = await db.select().from(stepResults).where(eq(stepResults.executionId, execution.id)).orderBy(asc(stepResults.index));
      expect(steps).toHaveLength(1000);
      expect(steps.map((step) => [step.index, step.kind, step.queryContext, step.entity, step.critical, step.approval])).toEqual(
        plan.plan.steps.map((step, i) => [i + 1, step.kind, step.queryContext, step.entity, step.critical, step.approval ?? false]),
      );
    });

    it('stores and reads executions side by side, planned or not, on every connection of the pool', async () => {
      const plan = validated([{ kind: 'SQL', queryContext: 'one', sql: 'SELECT 1' }]);
      const created = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          store.createExecution(TENANT, plan, i % 2 ? { plannerUsage: { promptTokens: i, completionTokens: 0, totalTokens: i } } : {}),
        ),
      );
      const read = await Promise.all(created.map(({ execution }) => store.loadExecution(execution.id)));
      expect(read).toEqual(created.map(({ execution }) => execution));
      const claimed = await Promise.all(created.map(({ execution }, i) => store.claim(execution.id, `owner-${i}`, i % 2 ? 1_000.4 : 30_000)));
      expect(claimed.map((claim) => claim?.execution.leaseOwner)).toEqual(created.map((_, i) => `owner-${i}`));
    });

    it('lets one of many claims made at once take the lease, and none that of a finished execution', async () => {
      const plan = validated([{ kind: 'SQL', queryContext: 'one', sql: 'SELECT 1' }]);
      const { execution } = await store.createExecution(TENANT, plan);
      const claims = await Promise.all(Array.from({ length: 8 }, (_, i) => store.claim(execution.id, `racer-${i}`, 30_000)));
      const won = claims.filter((claim) => claim !== null);
      expect(won).toHaveLength(1);
      expect(won[0]!.execution.leaseEpoch).toBe(1);
      expect(won[0]!.resumed).toBe(false);
      await db.update(executions).set({ status: 'SUCCEEDED', leaseOwner: null }).where(eq(executions.id, execution.id));
      expect(await store.claim(execution.id, 'late', 30_000)).toBeNull();
    });

    it('reads executions, claims and steps to continue from as drizzle did, every column set or not', async () => {
      const plan = validated([
        { kind: 'SQL', queryContext: 'one', sql: 'SELECT 1' },
        { kind: 'API', queryContext: 'two', code: 'return 2' },
        { kind: 'SQL', queryContext: 'three' },
      ]);
      const { execution: created } = await store.createExecution(TENANT, plan);
      const id = created.id;
      const compareExecution = async () => {
        const [expected] = await db.select().from(executions).where(eq(executions.id, id));
        expect(typed((await store.loadExecution(id)) as never)).toEqual(typed(expected as never));
        expect(typed((await store.findExecution(TENANT, id)) as never)).toEqual(typed(expected as never));
        expect(await store.findExecution(`${TENANT}-bare`, id)).toBeUndefined();
        return expected!;
      };
      // Before: the nullable columns null.
      await compareExecution();

      const at = new Date('2026-01-02T03:04:05.678Z');
      await db
        .update(executions)
        .set({
          status: 'RUNNING',
          // json keeps its keys' order; a number, a string, nested values.
          finalResult: [{ b: 1, a: 'x', nested: { z: [1, 2.5, null], y: true } }, 'text', 42],
          error: { code: 'E', message: ODD_TEXT, retryable: true },
          usage: { promptTokens: 10, completionTokens: 20, totalTokens: 30 },
          successfulSteps: 1,
          failedSteps: 2,
          leaseOwner: 'someone-else',
          leaseEpoch: 7,
          leaseExpiresAt: new Date(Date.now() - 60_000),
          resumes: 3,
          cancelRequestedAt: at,
          wakeAt: at,
          startedAt: at,
          finishedAt: at,
        })
        .where(eq(executions.id, id));
      const before = await compareExecution();
      expect(before.finalResult).toEqual([{ b: 1, a: 'x', nested: { z: [1, 2.5, null], y: true } }, 'text', 42]);
      expect(Object.keys((before.finalResult as Record<string, unknown>[])[0]!)).toEqual(['b', 'a', 'nested']);
      expect(before.startedAt).toEqual(at);

      await db
        .update(stepResults)
        .set({
          status: 'SUCCEEDED',
          sql: 'SELECT 1 -- the agent',
          recordCount: 2,
          columns: [{ name: 'x', type: 'int4' }],
          sample: [{ x: 1 }],
          result: [{ x: 1 }, { x: 2 }],
          records: [{ x: 1 }, { x: 2 }, { x: 3 }],
          truncated: true,
          error: { code: 'E', message: 'm', retryable: false },
          attempts: 2,
          usage: { promptTokens: 1, completionTokens: 1, totalTokens: 2 },
          logs: ['a', ODD_TEXT],
          unsafeCalls: true,
          approval: true,
          decision: 'APPROVED',
          decidedBy: 'me',
          decidedAt: at,
          decisionComment: ODD_TEXT,
          startedAt: at,
          finishedAt: at,
        })
        .where(and(eq(stepResults.executionId, id), eq(stepResults.index, 1)));
      await db
        .update(stepResults)
        .set({ status: 'RUNNING', result: [{ y: 1 }], startedAt: at })
        .where(and(eq(stepResults.executionId, id), eq(stepResults.index, 2)));

      // What stepsForRun selected before it was written as text.
      const planned = db.$with('planned').as(
        db
          .select({
            index: sql<number>`planned_step.ordinal::int`.as('planned_index'),
            planSql: sql<string | null>`planned_step.step ->> 'sql'`.as('planned_sql'),
            planCode: sql<string | null>`planned_step.step ->> 'code'`.as('planned_code'),
          })
          .from(sql`${executions} CROSS JOIN LATERAL jsonb_array_elements(${executions.plan} -> 'steps') WITH ORDINALITY AS planned_step(step, ordinal)`)
          .where(eq(executions.id, id)),
      );
      const expectedSteps = await db
        .with(planned)
        .select({
          ...getTableColumns(stepResults),
          sql: sql<string | null>`coalesce(${stepResults.sql}, ${planned.planSql})`,
          code: sql<string | null>`coalesce(${stepResults.code}, ${planned.planCode})`,
          records: sql<unknown[] | null>`coalesce(${stepResults.records}, ${stepResults.result})`,
        })
        .from(stepResults)
        .innerJoin(planned, eq(planned.index, stepResults.index))
        .where(eq(stepResults.executionId, id))
        .orderBy(asc(stepResults.index));
      expect(expectedSteps.map((step) => [step.sql, step.code, step.records])).toEqual([
        ['SELECT 1 -- the agent', null, [{ x: 1 }, { x: 2 }, { x: 3 }]],
        [null, 'return 2', [{ y: 1 }]],
        [null, null, null],
      ]);

      const claimed = await store.claim(id, 'me', 30_000);
      expect(claimed).not.toBeNull();
      const [after] = await db.select().from(executions).where(eq(executions.id, id));
      expect(typed(claimed!.execution as never)).toEqual(typed(after as never));
      expect(claimed!.execution).toMatchObject({ leaseOwner: 'me', leaseEpoch: 8, resumes: 4 });
      expect(claimed!.execution.leaseExpiresAt).toBeInstanceOf(Date);
      expect(claimed!).toMatchObject({ resumed: true, wakeDue: true, lease: { owner: 'me', epoch: 8 } });
      expect(claimed!.steps.map((step) => typed(step as never))).toEqual(expectedSteps.map((step) => typed(step as never)));
      // Held: nobody else claims it.
      expect(await store.claim(id, 'another', 30_000)).toBeNull();
    });

    it('replays events with their steps as they were, decoded as drizzle decodes them', async () => {
      const plan = validated([{ kind: 'SQL', queryContext: 'one', sql: 'SELECT 1' }]);
      const { execution } = await store.createExecution(TENANT, plan);
      const at = new Date('2026-03-04T05:06:07.891Z');
      await db.update(stepResults).set({ status: 'RUNNING', sample: [{ v: 1 }], startedAt: at }).where(eq(stepResults.executionId, execution.id));
      await db.insert(stepEvents).values([
        { executionId: execution.id, sequence: 1, tenantId: TENANT, correlationId: 'c', type: 'EXECUTION_STARTED', executionStatus: 'RUNNING', at },
        {
          executionId: execution.id,
          sequence: 2,
          tenantId: TENANT,
          correlationId: 'c',
          type: 'STEP_STARTED',
          executionStatus: 'RUNNING',
          stepIndex: 1,
          step: { status: 'RUNNING', startedAt: at.toISOString(), keptOnStep: ['sample'] },
          at,
        },
        { executionId: execution.id, sequence: 3, tenantId: TENANT, correlationId: 'c', type: 'STEP_PROGRESS', executionStatus: 'RUNNING', stepIndex: 1, message: ODD_TEXT, at },
      ]);
      const updates = await store.loadEvents(execution.id, 0);
      expect(updates.map((update) => [update.sequence, update.type, update.message, update.step?.status ?? null])).toEqual([
        [1, 'EXECUTION_STARTED', null, null],
        [2, 'STEP_STARTED', null, 'RUNNING'],
        [3, 'STEP_PROGRESS', ODD_TEXT, 'RUNNING'],
      ]);
      for (const update of updates) expect(update.at).toEqual(at);
      expect(updates[1]!.step).toMatchObject({ index: 1, sql: 'SELECT 1', sample: [{ v: 1 }], startedAt: at.toISOString(), critical: true });
      expect(await store.loadEvents(execution.id, 1, 2)).toEqual([updates[1]]);
      expect(await store.loadEvents(execution.id, 3)).toEqual([]);
    });
  });
}
