import { randomUUID } from 'node:crypto';
import { and, asc, desc, eq, getTableColumns, gt, inArray, isNotNull, lt, notExists, or, sql, type SQL } from 'drizzle-orm';
import { PgDialect, type PgColumn } from 'drizzle-orm/pg-core';
import type { ClaimInTransaction } from '../executor/idempotency.js';
import type { EnqueueInTransaction } from '../executor/dispatcher.js';
import type { ValidatedPlan } from '../executor/plan.js';
import { storableText } from '../executor/storable-text.js';
import { applyStepChange, applyStepDelta, pendingSnapshot, stepDeltaOf, type StepChange } from '../executor/step-snapshots.js';
import type { ExecutionStatus, StepUpdate, StepUpdateType } from '../executor/step-update.js';
import {
  ExecutionNotRunnableError,
  UNFINISHED_STATUSES,
  type ClaimedExecution,
  type CommittedTransition,
  type TransitionObserver,
  type ExecutionDetails,
  type ExecutionPage,
  type ExecutionPageRequest,
  type ExecutionStore,
  type ExecutionSummary,
  type StepKey,
  type StoredStep,
  type LeaseHold,
  type LeaseProvider,
  type LeaseState,
  type TenantAdmission,
  type TenantDirectory,
  type Transition,
} from '../executor/store.js';
import type { Db } from './client.js';
import { isUuid } from '../executor/ids.js';
import {
  executions,
  idempotencyKeys,
  stepEvents,
  stepResults,
  tenants,
  type ExecutionRow,
  type StepRow,
  type StepSnapshot,
  type StepState,
  type StoredTokenUsage,
  type TenantRow,
} from './tables.js';

const UNFINISHED = UNFINISHED_STATUSES;

function storableError<T extends { message: string } | null | undefined>(error: T): T {
  return error ? { ...error, message: storableText(error.message) } : error;
}

function storableChange(change: StepChange): StepChange {
  return change.error === undefined ? change : { ...change, error: storableError(change.error) };
}

const { result: _result, records: _records, ...stepStateColumns } = getTableColumns(stepResults);
const { records: _allRecords, ...stepColumns } = getTableColumns(stepResults);
const { plan: _plan, finalResult: _finalResult, ...summaryColumns } = getTableColumns(executions);

/**
 * Nobody holds the lease, `owner` does (a run of its that stopped), or its holder stopped renewing it. `owner` is a
 * value, or SQL (a statement written as text passes its parameter: see TAKE_LEASE).
 */
const leaseIsFree = (owner: string | SQL) =>
  sql`(${executions.leaseOwner} IS NULL OR ${executions.leaseOwner} = ${owner} OR ${executions.leaseExpiresAt} < clock_timestamp())`;

/**
 * An execution a worker should take: QUEUED or RUNNING with its lease free, or WAITING with its lease free whose
 * approval timed out or that was cancelled.
 */
const claimable = (owner: string) =>
  or(
    and(inArray(executions.status, ['QUEUED', 'RUNNING']), leaseIsFree(owner)),
    and(
      eq(executions.status, 'WAITING'),
      leaseIsFree(owner),
      or(isNotNull(executions.cancelRequestedAt), lt(executions.wakeAt, sql`clock_timestamp()`)),
    ),
  );

/**
 * A lease that counts as a run under a tenant's cap: live, and not this worker's own unless one of its runs holds it
 * (`here`): a lease of its own that no run here holds (a run stopped on an outage) is work to take, not a run.
 */
const liveLease = (owner: string, here: SQL) =>
  sql`(${executions.leaseOwner} IS NOT NULL AND ${executions.leaseExpiresAt} >= clock_timestamp() AND NOT (${executions.leaseOwner} = ${owner} AND NOT ${executions.id} = ANY(${here})))`;

/** A moment ttlMs from now on the database's clock (one clock for every worker): a lease's expiry, an approval's deadline. */
const leaseExpiry = (ttlMs: number) => sql`clock_timestamp() + ${Math.max(1, Math.round(ttlMs))} * interval '1 millisecond'`;

/** Every read and write of executions, step_results and step_events goes through here (PGlite and PostgreSQL). */
export class DrizzleExecutionStore implements ExecutionStore, LeaseProvider, TenantAdmission, TenantDirectory {
  constructor(
    private readonly db: Db,
    private readonly raw: RawQuery,
    private readonly onCommitted?: TransitionObserver,
  ) {}

  async findTenant(tenantId: string): Promise<TenantRow | undefined> {
    const [row] = await TENANT_BY_ID.run(this.db, [tenantId]);
    return row;
  }

  /**
   * The sql and code each step of the executions `where` names came with in their plans, each plan read once (a
   * plan may hold megabytes of programs; reading it once per step would read it that many times).
   */
  private planned(where: SQL | undefined) {
    return this.db.$with('planned').as(
      this.db
        .select({
          executionId: sql<string>`${executions.id}`.as('planned_execution_id'),
          index: sql<number>`planned_step.ordinal::int`.as('planned_index'),
          planSql: sql<string | null>`planned_step.step ->> 'sql'`.as('planned_sql'),
          planCode: sql<string | null>`planned_step.step ->> 'code'`.as('planned_code'),
        })
        .from(
          sql`${executions} CROSS JOIN LATERAL jsonb_array_elements(${executions.plan} -> 'steps') WITH ORDINALITY AS planned_step(step, ordinal)`,
        )
        .where(where),
    );
  }


  /**
   * Stores a QUEUED execution with its PENDING steps. A plan the planner wrote also gets its
   * PLAN_CREATED update, sequence 1, in the same transaction, and the planner's tokens as usage.
   */
  async createExecution(
    tenantId: string,
    validated: ValidatedPlan,
    { plannerUsage, claim, enqueue }: { plannerUsage?: StoredTokenUsage; claim?: ClaimInTransaction; enqueue?: EnqueueInTransaction } = {},
  ): Promise<{ execution: ExecutionRow; planCreated: StepUpdate | null }> {
    const planned = plannerUsage !== undefined;
    const id = randomUUID();
    const createdAt = new Date();
    // One statement, atomic on its own; a transaction (two round trips more) only for hooks that must share it.
    const inTransaction = <T>(work: (db: Db) => Promise<T>): Promise<T> =>
      claim || enqueue ? this.db.transaction((tx) => work(tx as unknown as Db)) : work(this.db);
    return inTransaction(async (db) => {
      // One statement: the execution, its steps (from the plan's, in the same parameter) and a planned one's PLAN_CREATED.
      const [execution] = await CREATE_EXECUTION.run(db, [
        id,
        tenantId,
        validated.correlationId,
        encode(executions.plan, validated.plan),
        encode(executions.options, validated.options),
        validated.plan.steps.length,
        planned ? 1 : 0,
        encode(executions.usage, plannerUsage ?? null),
        encode(executions.createdAt, createdAt),
        planned,
      ]);
      await claim?.(db, id);
      await enqueue?.(db, id, tenantId);
      if (!planned) return { execution: execution!, planCreated: null };
      const planCreated: StepUpdate = {
        executionId: id,
        tenantId,
        sequence: 1,
        type: 'PLAN_CREATED',
        status: 'QUEUED',
        at: execution!.createdAt,
        step: null,
        message: null,
      };
      return { execution: execution!, planCreated };
    });
  }

  async findExecution(tenantId: string, id: string): Promise<ExecutionRow | undefined> {
    const [row] = await EXECUTION_OF_TENANT.run(this.db, [tenantId, id]);
    return row;
  }

  /** Unscoped lookup for the executor itself, which runs executions of every tenant. */
  async loadExecution(id: string): Promise<ExecutionRow | undefined> {
    const [row] = await EXECUTION_BY_ID.run(this.db, [id]);
    return row;
  }

  async listExecutions(tenantId: string, request: ExecutionPageRequest): Promise<ExecutionPage> {
    const conditions: (SQL | undefined)[] = [eq(executions.tenantId, tenantId)];
    const filter = request.filter ?? {};
    if (filter.status && filter.status.length > 0) conditions.push(inArray(executions.status, [...filter.status]));
    if (filter.correlationId) conditions.push(eq(executions.correlationId, filter.correlationId));
    if (filter.createdAfter) conditions.push(gt(executions.createdAt, filter.createdAfter));
    if (filter.createdBefore) conditions.push(lt(executions.createdAt, filter.createdBefore));
    if (request.after) {
      const { createdAt, id } = request.after;
      // A row comparison, which the index serves as one range (an OR of two conditions would not be).
      conditions.push(sql`(${executions.createdAt}, ${executions.id}) < (${createdAt.toISOString()}::timestamptz, ${id}::uuid)`);
    }
    const rows = await this.db
      .select(summaryColumns)
      .from(executions)
      .where(and(...conditions))
      .orderBy(desc(executions.createdAt), desc(executions.id))
      .limit(request.first + 1);
    return { executions: rows.slice(0, request.first), hasNextPage: rows.length > request.first };
  }

  async listExecutionDetails(tenantId: string, executionIds: readonly string[]): Promise<Map<string, ExecutionDetails>> {
    const ids = [...new Set(executionIds)].filter((id) => isUuid(id));
    if (ids.length === 0) return new Map();
    const rows = await this.db
      .select({ id: executions.id, plan: executions.plan, finalResult: executions.finalResult })
      .from(executions)
      .where(and(sql`${executions.id} = ANY(${uuidArray(ids)})`, eq(executions.tenantId, tenantId)));
    return new Map(rows.map(({ id, ...details }) => [id, details]));
  }

  async listExecutionSummaries(tenantId: string, executionIds: readonly string[]): Promise<Map<string, ExecutionSummary>> {
    const ids = [...new Set(executionIds)].filter((id) => isUuid(id));
    if (ids.length === 0) return new Map();
    const rows = await this.db
      .select(summaryColumns)
      .from(executions)
      .where(and(sql`${executions.id} = ANY(${uuidArray(ids)})`, eq(executions.tenantId, tenantId)));
    return new Map(rows.map((row) => [row.id, row]));
  }

  /** The steps of an execution; with tenantId, only if the execution is that tenant's. */
  async listSteps(executionId: string, tenantId?: string): Promise<StepRow[]> {
    // A step's sql and code: the agent's, or else the plan's (each is stored once: the plan's in executions.plan).
    const planned = this.planned(eq(executions.id, executionId));
    return this.db
      .with(planned)
      .select(withArtefacts(planned))
      .from(stepResults)
      .innerJoin(planned, eq(planned.index, stepResults.index))
      .where(
        and(eq(stepResults.executionId, executionId), tenantId === undefined ? undefined : eq(stepResults.tenantId, tenantId)),
      )
      .orderBy(asc(stepResults.index));
  }

  /**
   * The steps of many executions of one tenant (without their full records) in one statement, ordered by
   * execution then index: what a page of history with its steps reads (src/schema/batch.ts gathers the
   * page's executions into one call). Each step's sql and code as in listSteps: the agent's, or else the
   * plan's, read from each plan once. An id that is not the tenant's execution (or not a UUID) has no steps.
   */
  async listStepsOfExecutions(tenantId: string, executionIds: readonly string[]): Promise<StepRow[]> {
    const ids = [...new Set(executionIds)].filter((id) => isUuid(id));
    if (ids.length === 0) return [];
    const idArray = uuidArray(ids);
    const planned = this.planned(and(sql`${executions.id} = ANY(${idArray})`, eq(executions.tenantId, tenantId)));
    const steps = await this.db
      .with(planned)
      .select(withArtefacts(planned))
      .from(stepResults)
      .innerJoin(planned, and(eq(planned.executionId, stepResults.executionId), eq(planned.index, stepResults.index)))
      .where(and(sql`${stepResults.executionId} = ANY(${idArray})`, eq(stepResults.tenantId, tenantId)));
    // Ordered here, not by the database: a page's few hundred rows, and the plan then has no Sort node.
    return steps.sort((a, b) => (a.executionId < b.executionId ? -1 : a.executionId > b.executionId ? 1 : a.index - b.index));
  }

  /**
   * The named steps of the tenant, without records and result: only those rows (the (execution_id, index) primary
   * key), each with its sql and code as in listSteps, the plan's read from its one element of the plan.
   */
  async findSteps(tenantId: string, steps: readonly StepKey[]): Promise<StepState[]> {
    const keys = steps.filter((step) => isUuid(step.executionId) && Number.isInteger(step.index) && step.index > 0 && step.index < 2 ** 31);
    if (keys.length === 0) return [];
    const planned = (field: 'sql' | 'code') =>
      sql<string | null>`(${executions.plan} -> 'steps' -> (${stepResults.index} - 1) ->> ${field})`;
    return this.db
      .select({
        ...stepStateColumns,
        sql: sql<string | null>`coalesce(${stepResults.sql}, ${planned('sql')})`,
        code: sql<string | null>`coalesce(${stepResults.code}, ${planned('code')})`,
      })
      .from(stepResults)
      .innerJoin(executions, and(eq(executions.id, stepResults.executionId), eq(executions.tenantId, tenantId)))
      .where(
        and(
          eq(stepResults.tenantId, tenantId),
          sql`(${stepResults.executionId}, ${stepResults.index}) IN (SELECT * FROM unnest(${uuidArray(keys.map((key) => key.executionId))}, ${`{${keys.map((key) => key.index).join(',')}}`}::int[]))`,
        ),
      );
  }

  async findStepResult(tenantId: string, executionId: string, index: number): Promise<unknown[] | null> {
    const [row] = await this.db
      .select({ result: stepResults.result })
      .from(stepResults)
      .where(
        and(eq(stepResults.tenantId, tenantId), eq(stepResults.executionId, executionId), eq(stepResults.index, index)),
      );
    return row?.result ?? null;
  }

  /**
   * The updates after afterSequence (up to upToSequence), each with its step as it was then: events store
   * what changed, so every step is replayed from PENDING through the events before.
   */
  async loadEvents(executionId: string, afterSequence: number, upToSequence?: number): Promise<StepUpdate[]> {
    // Events first, steps after: a step row is then at least as new as every event read, so the fields an
    // event names as kept on the step are there (the two reads need not share a snapshot). Every event is read, from
    // the first, since each step's snapshot is rebuilt from PENDING; the steps only when an update to hand out has one.
    const events = await EVENTS_OF_EXECUTION.run(this.db, [executionId, upToSequence ?? MAX_INT4]);
    const stepsNeeded = events.some((event) => event.sequence > afterSequence && event.stepIndex !== null);
    const steps = stepsNeeded ? await STEP_STATES_OF_EXECUTION.run(this.db, [executionId]) : [];
    const rows = new Map(steps.map((step) => [step.index, step]));
    const states = new Map<number, StepSnapshot>();
    const updates: StepUpdate[] = [];
    for (const event of events) {
      let snapshot: StepSnapshot | null = null;
      const row = event.stepIndex === null ? undefined : rows.get(event.stepIndex);
      if (row) {
        const before = states.get(row.index) ?? pendingSnapshot(row, { sql: row.planSql, code: row.planCode });
        const kept = { sql: row.sql ?? row.planSql, code: row.code ?? row.planCode, sample: row.sample, logs: row.logs };
        snapshot = applyStepDelta(before, event.step ?? {}, kept);
        states.set(row.index, snapshot);
      }
      if (event.sequence <= afterSequence) continue;
      updates.push({
        executionId: event.executionId,
        tenantId: event.tenantId,
        sequence: event.sequence,
        type: event.type as StepUpdateType,
        at: event.at,
        status: event.executionStatus as ExecutionStatus,
        step: snapshot,
        message: event.message ?? null,
      });
    }
    return updates;
  }

  /** The steps with everything a run continues from: their sql and code, and all their records. */
  private async stepsForRun(db: Db, executionId: string): Promise<StoredStep[]> {
    return STEPS_FOR_RUN.run(db, [executionId]);
  }

  /**
   * One statement takes the lease (the row locked FOR UPDATE, so two claims never both win); a second reads the
   * steps to continue from, which nobody else changes while the lease is held.
   */
  claim(executionId: string, owner: string, ttlMs: number): Promise<ClaimedExecution | null> {
    return this.claimWith(this.db, executionId, owner, ttlMs);
  }

  /**
   * Claims the tenant's oldest claimable execution (its resumes and queued ones in submission order), unless the
   * tenant's executions already hold `maxRunning` live leases across every worker: one transaction, serialized per
   * tenant by an advisory lock, so that two workers admitting the same tenant at once never both pass the cap.
   * `runningHere` are this worker's own runs: held by it, not claimable by it again.
   */
  async claimNextOfTenant(
    tenantId: string,
    owner: string,
    ttlMs: number,
    { maxRunning, runningHere }: { maxRunning: number; runningHere: readonly string[] },
  ): Promise<ClaimedExecution | 'at-capacity' | null> {
    const here = uuidArray(runningHere);
    // The lock's holder runs four round trips (BEGIN, the lock, the count with the pick, the claim) and the commit; the
    // steps to continue from are read after it, under the lease. The count is a statement after the lock's: in READ
    // COMMITTED each statement sees what committed before it began, so it sees the claim the previous holder made.
    const claimed = await this.db.transaction(async (tx) => {
      await tx.execute(sql`SELECT pg_advisory_xact_lock(hashtextextended(${`stepcast:tenant:${tenantId}`}, 0))`);
      const next = this.db
        .select({ id: executions.id })
        .from(executions)
        .where(and(eq(executions.tenantId, tenantId), claimable(owner), sql`NOT ${executions.id} = ANY(${here})`))
        .orderBy(asc(executions.createdAt), asc(executions.id))
        .limit(1);
      const [counted] = await tx
        .select({ running: sql<number>`count(*)::int`, next: sql<string | null>`(${next})` })
        .from(executions)
        .where(and(eq(executions.tenantId, tenantId), inArray(executions.status, [...UNFINISHED]), liveLease(owner, here)));
      if ((counted?.running ?? 0) >= maxRunning) return 'at-capacity';
      if (!counted?.next) return null;
      return this.takeLease(tx as unknown as Db, counted.next, owner, ttlMs);
    });
    if (claimed === null || claimed === 'at-capacity') return claimed;
    return this.withSteps(claimed);
  }

  async listTenantsWithWork(
    owner: string,
    limit: number,
    runningHere: readonly string[],
  ): Promise<{ tenantId: string; executions: number; running: number }[]> {
    const here = uuidArray(runningHere);
    const work = sql`(${claimable(owner)} AND NOT ${executions.id} = ANY(${here}))`;
    // One pass over the unfinished executions, grouped: no sort of them all, as ranking each tenant's would need.
    return this.db
      .select({
        tenantId: executions.tenantId,
        executions: sql<number>`(count(*) FILTER (WHERE ${work}))::int`,
        running: sql<number>`(count(*) FILTER (WHERE ${liveLease(owner, here)}))::int`,
      })
      .from(executions)
      .where(inArray(executions.status, [...UNFINISHED]))
      .groupBy(executions.tenantId)
      .having(sql`count(*) FILTER (WHERE ${work}) > 0`)
      .orderBy(sql`min(${executions.createdAt}) FILTER (WHERE ${work})`, executions.tenantId)
      .limit(limit);
  }

  private async claimWith(db: Db, executionId: string, owner: string, ttlMs: number): Promise<ClaimedExecution | null> {
    const taken = await this.takeLease(db, executionId, owner, ttlMs);
    return taken && this.withSteps(taken);
  }

  /** The lease taken (one statement), with the execution as it is now; null when it cannot be taken. */
  private async takeLease(
    db: Db,
    executionId: string,
    owner: string,
    ttlMs: number,
  ): Promise<{ row: ExecutionRow; previousOwner: string | null; wakeDue: boolean; owner: string } | null> {
    const [execution] = await TAKE_LEASE.run(db, [executionId, owner, Math.max(1, Math.round(ttlMs))]);
    if (!execution) return null;
    const { previousOwner, wakeDue, ...row } = execution;
    return { row, previousOwner, wakeDue, owner };
  }

  /** The steps a claim continues from, read under its lease (nobody else changes them while it is held). */
  private async withSteps({
    row,
    previousOwner,
    wakeDue,
    owner,
  }: {
    row: ExecutionRow;
    previousOwner: string | null;
    wakeDue: boolean;
    owner: string;
  }): Promise<ClaimedExecution> {
    const steps = await this.stepsForRun(this.db, row.id);
    const running = row.status === 'RUNNING';
    const resumed = running && (previousOwner !== null || steps.some((s) => s.status === 'RUNNING'));
    return { execution: row, steps, lease: { owner, epoch: row.leaseEpoch }, resumed, wakeDue };
  }

  async renew(executionId: string, lease: LeaseHold, ttlMs: number): Promise<LeaseState> {
    const [row] = await this.db
      .update(executions)
      .set({ leaseExpiresAt: leaseExpiry(ttlMs) })
      .where(and(eq(executions.id, executionId), eq(executions.leaseOwner, lease.owner), eq(executions.leaseEpoch, lease.epoch)))
      .returning({ cancelRequestedAt: executions.cancelRequestedAt });
    return { held: row !== undefined, cancelRequested: row?.cancelRequestedAt != null };
  }

  async release(executionId: string, lease: LeaseHold): Promise<void> {
    await this.db
      .update(executions)
      .set({ leaseOwner: null, leaseExpiresAt: null })
      .where(and(eq(executions.id, executionId), eq(executions.leaseOwner, lease.owner), eq(executions.leaseEpoch, lease.epoch)));
  }

  async listClaimable(owner: string, limit: number): Promise<{ id: string; tenantId: string }[]> {
    return this.db
      .select({ id: executions.id, tenantId: executions.tenantId })
      .from(executions)
      .where(claimable(owner))
      .orderBy(asc(executions.createdAt), asc(executions.id))
      .limit(limit);
  }

  async markUnsafeCalls(executionId: string, lease: LeaseHold, index: number): Promise<void> {
    const held = this.db
      .select({ id: executions.id })
      .from(executions)
      .where(and(eq(executions.id, executionId), eq(executions.leaseOwner, lease.owner), eq(executions.leaseEpoch, lease.epoch)));
    const marked = await this.db
      .update(stepResults)
      .set({ unsafeCalls: true })
      .where(and(eq(stepResults.executionId, sql`(${held})`), eq(stepResults.index, index)))
      .returning({ index: stepResults.index });
    if (marked.length === 0) throw new ExecutionNotRunnableError(executionId);
  }

  async requestCancel(tenantId: string, executionId: string): Promise<ExecutionRow | undefined> {
    const [cancelled] = await this.db
      .update(executions)
      .set({ cancelRequestedAt: sql`coalesce(${executions.cancelRequestedAt}, clock_timestamp())` })
      .where(
        and(eq(executions.tenantId, tenantId), eq(executions.id, executionId), inArray(executions.status, [...UNFINISHED])),
      )
      .returning();
    return cancelled ?? (await this.findExecution(tenantId, executionId));
  }

  /**
   * Deletes up to `limit` executions that finished more than olderThanMs ago on the database's clock, oldest first,
   * in one statement: their steps, events and idempotency keys go with them (ON DELETE CASCADE). Unfinished
   * executions are never touched. Rows another transaction has locked (another process's sweep) are skipped,
   * not waited for. An execution that an unexpired idempotency key still
   * answers with is kept until the key expires, so a retry with the key never runs the request again.
   * Returns how many were deleted.
   */
  async deleteFinishedExecutions(olderThanMs: number, limit: number): Promise<number> {
    const answeredByLiveKey = this.db
      .select({ executionId: idempotencyKeys.executionId })
      .from(idempotencyKeys)
      .where(and(eq(idempotencyKeys.executionId, executions.id), gt(idempotencyKeys.expiresAt, sql`now()`)));
    // The statuses as literals, not parameters: only then can the planner match the partial index on finished_at.
    const expired = this.db
      .select({ id: executions.id })
      .from(executions)
      .where(
        and(
          sql`${executions.status} in ('SUCCEEDED', 'FAILED', 'CANCELLED')`,
          lt(executions.finishedAt, sql`now() - make_interval(secs => ${olderThanMs / 1000}::double precision)`),
          notExists(answeredByLiveKey),
        ),
      )
      .orderBy(asc(executions.finishedAt))
      .limit(limit)
      .for('update', { skipLocked: true });
    const deleted = await this.db
      .delete(executions)
      .where(inArray(executions.id, expired))
      .returning({ id: executions.id });
    return deleted.length;
  }

  /**
   * One state change, or several in a row (a step's end and the next step's start), as ONE statement: the
   * execution's update, each step's, and the events appended, all or nothing, in one round trip and one commit.
   * The first transition's conditions (its statuses, its lease, the sequence it expects) decide whether the
   * batch applies; the rest follow it in order. The caller publishes the returned updates only after this has
   * returned (committed).
   */
  async recordTransition(executionId: string, batch: Transition | readonly Transition[]): Promise<CommittedTransition> {
    if (!this.onCommitted) return this.commitTransition(executionId, batch);
    const started = performance.now();
    const committed = await this.commitTransition(executionId, batch);
    this.onCommitted(committed.updates, (performance.now() - started) / 1000);
    return committed;
  }

  private async commitTransition(executionId: string, batch: Transition | readonly Transition[]): Promise<CommittedTransition> {
    const transitions = Array.isArray(batch) ? (batch as readonly Transition[]) : [batch as Transition];
    const [first] = transitions;
    if (!first) throw new Error('recordTransition needs at least one transition');
    const { lease } = first;
    const at = new Date();

    // What the execution becomes: the changes in order, the counters summed.
    const executionChange: Record<string, unknown> = {};
    let successfulStepsDelta = 0;
    let failedStepsDelta = 0;
    let wakeInMs: number | null | undefined;
    for (const { execution } of transitions) {
      if (!execution) continue;
      const { successfulStepsDelta: succeeded = 0, failedStepsDelta: failed = 0, wakeInMs: wake, ...changed } = execution;
      successfulStepsDelta += succeeded;
      failedStepsDelta += failed;
      if (wake !== undefined) wakeInMs = wake;
      Object.assign(executionChange, changed.error === undefined ? changed : { ...changed, error: storableError(changed.error) });
    }
    // What each step becomes (a step changed twice gets both, in order), and the events with the status each leaves.
    const stepChanges = new Map<number, StepChange>();
    let status: string | null = null;
    const events = transitions.map((transition) => {
      // A program's error and progress messages may hold text PostgreSQL refuses (NUL, lone surrogates).
      const message = transition.message === undefined ? null : storableText(transition.message);
      const step = transition.step && { before: transition.step.before, change: storableChange(transition.step.change) };
      if (step && Object.keys(step.change).length > 0) {
        stepChanges.set(step.before.index, { ...stepChanges.get(step.before.index), ...step.change });
      }
      status = transition.execution?.status ?? status;
      return { transition, step, message, status };
    });

    // Written as text, not built by drizzle: this runs at every step, and the text takes a handful of shapes, each
    // prepared once per connection.
    const params: unknown[] = [];
    const param = (value: unknown, cast?: string) => `$${params.push(value)}${cast ? `::${cast}` : ''}`;
    const set = [
      ...assignments(executionColumnsByKey, executionChange, param),
      `successful_steps = successful_steps + ${param(successfulStepsDelta, 'int')}`,
      `failed_steps = failed_steps + ${param(failedStepsDelta, 'int')}`,
      `last_sequence = last_sequence + ${param(transitions.length, 'int')}`,
    ];
    if (wakeInMs !== undefined) {
      set.push(`wake_at = ${wakeInMs === null ? 'NULL' : `clock_timestamp() + ${param(Math.max(1, Math.round(wakeInMs)), 'int')} * interval '1 millisecond'`}`);
    }
    if (transitions.some((t) => t.releaseLease) || !lease) set.push('lease_owner = NULL, lease_expires_at = NULL');
    const id = param(executionId, 'uuid');
    const conditions = [
      `executions.id = ${id}`,
      `executions.status = ANY(${param([...(first.from ?? UNFINISHED)], 'text[]')})`,
      lease
        ? `executions.lease_owner = ${param(lease.owner, 'text')} AND executions.lease_epoch = ${param(lease.epoch, 'int')}`
        : '(executions.lease_owner IS NULL OR executions.lease_expires_at < clock_timestamp())',
      ...(first.expectSequence === undefined ? [] : [`executions.last_sequence = ${param(first.expectSequence, 'int')}`]),
    ];
    const stepUpdates = [...stepChanges].map(
      ([index, change], i) => `, step_${i} AS (
        UPDATE step_results SET ${assignments(stepColumnsByKey, change, param).join(', ')}
        WHERE execution_id = ${id} AND index = ${param(index, 'int')} AND EXISTS (SELECT 1 FROM changed)
        RETURNING index)`,
    );
    const eventRows = events.map(
      ({ transition, step, message, status: eventStatus }, i) =>
        `(${param(i - (events.length - 1), 'int')}, ${param(transition.type, 'text')}, ${param(eventStatus, 'text')}, ` +
        `${param(step?.before.index ?? null, 'int')}, ${param(step ? JSON.stringify(stepDeltaOf(step.change)) : null, 'json')}, ` +
        `${param(message, 'text')}, ${param(at.toISOString(), 'timestamptz')})`,
    );
    const stepsFound = stepUpdates.map((_, i) => `(SELECT count(*) FROM step_${i})`).join(' + ');
    // The execution's status before the change comes from the row locked FOR UPDATE (the newest version), so an
    // event that does not set the status records the one it was in.
    const rows = await this.raw(
      `WITH changed AS (
        UPDATE executions SET ${set.join(', ')}
        FROM (SELECT status AS old_status FROM executions WHERE id = ${id} FOR UPDATE) AS locked
        WHERE ${conditions.join(' AND ')}
        RETURNING executions.last_sequence, executions.status, executions.tenant_id, executions.correlation_id,
          executions.cancel_requested_at IS NOT NULL AS cancel_requested, locked.old_status
      )${stepUpdates.join('')}, appended AS (
        INSERT INTO step_events (execution_id, sequence, tenant_id, correlation_id, type, execution_status, step_index, step, message, at)
        SELECT ${id}, changed.last_sequence + event.offset_from_last, changed.tenant_id, changed.correlation_id,
          event.type, coalesce(event.status, changed.old_status), event.step_index, event.step, event.message, event.at
        FROM changed CROSS JOIN (VALUES ${eventRows.join(', ')}) AS event(offset_from_last, type, status, step_index, step, message, at)
        RETURNING sequence
      )
      SELECT changed.last_sequence, changed.status, changed.tenant_id, changed.old_status, changed.cancel_requested,
        -- A step the batch names that does not exist fails the whole statement, so nothing of it commits.
        ${
          stepUpdates.length === 0
            ? 'NULL'
            : // Not constant (it counts rows), so the planner cannot fold the failing cast into an error of every statement.
              `CASE WHEN (${stepsFound}) <> ${param(stepChanges.size, 'int')}
          THEN ('stepcast: a step this transition changes does not exist (' || (${stepsFound}) || ' found)')::int END`
        } AS missing_step
      FROM changed`,
      params,
    );
    const [row] = rows as {
      last_sequence: number;
      status: string;
      tenant_id: string;
      old_status: string;
      cancel_requested: boolean;
    }[];
    if (!row) throw new ExecutionNotRunnableError(executionId);
    const lastSequence = Number(row.last_sequence);
    const updates = events.map(({ transition, step, message, status: eventStatus }, i): StepUpdate => ({
      executionId,
      tenantId: row.tenant_id,
      sequence: lastSequence - (events.length - 1 - i),
      type: transition.type,
      at,
      status: (eventStatus ?? row.old_status) as ExecutionStatus,
      step: step ? applyStepChange(step.before, step.change) : null,
      message,
    }));
    return { update: updates.at(-1)!, updates, cancelRequested: row.cancel_requested };
  }
}

/** A step's columns (without its full records), with its sql and code: the agent's, or else the plan's. */
function withArtefacts(planned: { planSql: SQL.Aliased<string | null>; planCode: SQL.Aliased<string | null> }) {
  return {
    ...stepColumns,
    sql: sql<string | null>`coalesce(${stepResults.sql}, ${planned.planSql})`,
    code: sql<string | null>`coalesce(${stepResults.code}, ${planned.planCode})`,
  };
}

/**
 * Ids as one uuid[] parameter (their text form, checked by isUuid), so a statement is the same text whatever the
 * number of ids: prepared once, not once per page size.
 */
function uuidArray(ids: readonly string[]): SQL {
  return sql`${`{${ids.join(',')}}`}::uuid[]`;
}

/** Runs one of the service's own statements with parameters, prepared (Database.query). */
type RawQuery = (text: string, params: unknown[]) => Promise<Record<string, unknown>[]>;

/** The columns of a table by their key in the row type (`finalResult`), to name and encode them in raw SQL. */
function columnsByKey(table: typeof executions | typeof stepResults): ReadonlyMap<string, PgColumn> {
  return new Map(Object.entries(getTableColumns(table)) as [string, PgColumn][]);
}
const executionColumnsByKey = columnsByKey(executions);
const stepColumnsByKey = columnsByKey(stepResults);

/** A value as its column encodes it for the driver (json as text, timestamps as ISO text), as drizzle sends it. */
function encode(column: PgColumn, value: unknown): unknown {
  return value === null ? null : column.mapToDriverValue(value);
}

/** `column = $n` for each field of a change, each value encoded as its column encodes it (json, timestamps). */
function assignments(columns: ReadonlyMap<string, PgColumn>, change: Record<string, unknown>, param: (value: unknown) => string): string[] {
  const set: string[] = [];
  for (const [key, value] of Object.entries(change)) {
    if (value === undefined) continue;
    const column = columns.get(key);
    if (!column) throw new Error(`no column for ${key}`);
    set.push(`"${column.name}" = ${param(encode(column, value))}`);
  }
  return set;
}

/**
 * What a statement written as text selects, in order: each field's key in the row, its SQL, and the column drizzle
 * decodes it as (none for a computed field, which drizzle hands over as the driver gives it).
 */
type Selected = readonly { key: string; sql: string; column: PgColumn | null }[];

/**
 * A table's columns (but `omit`), each qualified by `qualifier`, as drizzle's select of them would give them; a key of
 * `computed` replaces its column's SQL, or adds a field after the table's.
 */
function selectedColumns(
  table: typeof executions | typeof stepResults | typeof stepEvents | typeof tenants,
  qualifier: string,
  { omit = [], computed = {} }: { omit?: readonly string[]; computed?: Record<string, string> } = {},
): Selected {
  const selected: { key: string; sql: string; column: PgColumn | null }[] = [];
  for (const [key, column] of Object.entries(getTableColumns(table)) as [string, PgColumn][]) {
    if (omit.includes(key)) continue;
    const expression = computed[key];
    selected.push(expression === undefined ? { key, sql: `${qualifier}."${column.name}"`, column } : { key, sql: expression, column: null });
  }
  for (const [key, expression] of Object.entries(computed)) {
    if (!selected.some((field) => field.key === key)) selected.push({ key, sql: expression, column: null });
  }
  return selected;
}

const selectList = (selected: Selected) => selected.map((field) => field.sql).join(', ');

/**
 * A fragment built by drizzle, as text for a statement written as text: one rule, whichever way it is sent. Its values
 * must come as the statement's own parameters (sql.raw('$n')), or they would be lost.
 */
function textOf(fragment: SQL): string {
  const { sql: text, params } = new PgDialect().sqlToQuery(fragment);
  if (params.length > 0) throw new Error(`a fragment written into a statement as text carries values: ${text}`);
  return text;
}

/**
 * One of the store's statements written as text once, not built by drizzle at each call: those that run for every
 * execution. It runs through drizzle's session of `db` (the store's, or a transaction's: the same connection as the
 * statements around it, prepared on PostgreSQL as drizzle's own are), and its rows, read as arrays, are decoded field
 * by field with the columns' own decoders, as drizzle decodes a select's (timestamps as Dates, json parsed).
 */
class TextStatement<Row> {
  private readonly decode: (rows: unknown[][]) => Row[];

  constructor(
    readonly text: string,
    selected: Selected,
  ) {
    const keys = selected.map((field) => field.key);
    const columns = selected.map((field) => field.column);
    this.decode = (rows) =>
      rows.map((values) => {
        const row: Record<string, unknown> = {};
        for (let i = 0; i < keys.length; i++) {
          const value = values[i];
          const column = columns[i];
          row[keys[i]!] = value === null ? null : column ? column.mapFromDriverValue(value) : value;
        }
        return row as Row;
      });
  }

  run(db: Db, params: unknown[]): Promise<Row[]> {
    return db._.session
      .prepareQuery<{ execute: Row[]; all: unknown; values: unknown }>({ sql: this.text, params }, undefined, 'stepcast', true, this.decode)
      .execute();
  }
}

/** The largest int4: loadEvents' bound on sequences when it is given none. */
const MAX_INT4 = 2_147_483_647;

const UNFINISHED_LIST = UNFINISHED.map((status) => `'${status}'`).join(', ');

const EXECUTION_COLUMNS = selectedColumns(executions, 'executions');

const EXECUTION_BY_ID = new TextStatement<ExecutionRow>(
  `SELECT ${selectList(EXECUTION_COLUMNS)} FROM executions WHERE executions.id = $1::uuid`,
  EXECUTION_COLUMNS,
);

const EXECUTION_OF_TENANT = new TextStatement<ExecutionRow>(
  `SELECT ${selectList(EXECUTION_COLUMNS)} FROM executions WHERE executions.tenant_id = $1::text AND executions.id = $2::uuid`,
  EXECUTION_COLUMNS,
);

const TENANT_COLUMNS = selectedColumns(tenants, 'tenants');

const TENANT_BY_ID = new TextStatement<TenantRow>(`SELECT ${selectList(TENANT_COLUMNS)} FROM tenants WHERE tenants.id = $1::text`, TENANT_COLUMNS);

const EVENT_COLUMNS = selectedColumns(stepEvents, 'step_events');

const EVENTS_OF_EXECUTION = new TextStatement<typeof stepEvents.$inferSelect>(
  `SELECT ${selectList(EVENT_COLUMNS)} FROM step_events
  WHERE step_events.execution_id = $1::uuid AND step_events.sequence <= $2::int ORDER BY step_events.sequence`,
  EVENT_COLUMNS,
);

/** The sql and code each step of the execution $1 came with in its plan, the plan read once (as planned() does). */
const PLANNED_OF_EXECUTION = `planned AS (
    SELECT planned_step.ordinal::int AS index, planned_step.step ->> 'sql' AS sql, planned_step.step ->> 'code' AS code
    FROM executions CROSS JOIN LATERAL jsonb_array_elements(executions.plan -> 'steps') WITH ORDINALITY AS planned_step(step, ordinal)
    WHERE executions.id = $1::uuid
  )`;

const STEP_STATE_COLUMNS = selectedColumns(stepResults, 'step_results', {
  omit: ['result', 'records'],
  computed: { planSql: 'planned.sql', planCode: 'planned.code' },
});

/** loadEvents' steps: without records and result, with the plan's sql and code. */
const STEP_STATES_OF_EXECUTION = new TextStatement<StepState & { planSql: string | null; planCode: string | null }>(
  `WITH ${PLANNED_OF_EXECUTION}
  SELECT ${selectList(STEP_STATE_COLUMNS)} FROM step_results JOIN planned ON planned.index = step_results.index
  WHERE step_results.execution_id = $1::uuid`,
  STEP_STATE_COLUMNS,
);

const STEP_FOR_RUN_COLUMNS = selectedColumns(stepResults, 'step_results', {
  computed: {
    sql: 'coalesce(step_results.sql, planned.sql)',
    code: 'coalesce(step_results.code, planned.code)',
    records: 'coalesce(step_results.records, step_results.result)',
  },
});

/** The steps with everything a run continues from: their sql and code (the agent's, or else the plan's), and all their records. */
const STEPS_FOR_RUN = new TextStatement<StoredStep>(
  `WITH ${PLANNED_OF_EXECUTION}
  SELECT ${selectList(STEP_FOR_RUN_COLUMNS)} FROM step_results JOIN planned ON planned.index = step_results.index
  WHERE step_results.execution_id = $1::uuid ORDER BY step_results.index`,
  STEP_FOR_RUN_COLUMNS,
);

const LEASED_COLUMNS = selectedColumns(executions, 'executions', {
  computed: { previousOwner: 'locked.previous_owner', wakeDue: 'locked.wake_due' },
});

/**
 * The lease of execution $1 taken by owner $2 for $3 ms (the row locked FOR UPDATE, so two claims never both win),
 * when it is unfinished and its lease free: nobody holds it, $2 does (a run of its that stopped), or its holder stopped
 * renewing it. A RUNNING execution whose holder was another worker (it crashed or stalled) counts one more resume.
 */
const TAKE_LEASE = new TextStatement<ExecutionRow & { previousOwner: string | null; wakeDue: boolean }>(
  `UPDATE executions SET lease_owner = $2::text, lease_epoch = executions.lease_epoch + 1,
    lease_expires_at = clock_timestamp() + $3::int * interval '1 millisecond',
    resumes = executions.resumes + CASE WHEN (executions.status = 'RUNNING' AND locked.previous_owner IS NOT NULL AND locked.previous_owner <> $2::text) THEN 1 ELSE 0 END
  FROM (
    SELECT executions.lease_owner AS previous_owner,
      ${textOf(leaseIsFree(sql.raw('$2::text')))} AS free,
      coalesce(executions.wake_at <= clock_timestamp(), false) AS wake_due
    FROM executions WHERE executions.id = $1::uuid FOR UPDATE
  ) AS locked
  WHERE executions.id = $1::uuid AND executions.status IN (${UNFINISHED_LIST}) AND locked.free
  RETURNING ${selectList(LEASED_COLUMNS)}`,
  LEASED_COLUMNS,
);

const CREATED_COLUMNS = selectedColumns(executions, 'created');

/**
 * A QUEUED execution (id $1, tenant $2, correlation id $3, plan $4, options $5, total steps $6, last sequence $7, usage
 * $8, created at $9), its PENDING steps taken from the plan's own (one parameter, sent once), and, when $10, its
 * PLAN_CREATED event (sequence 1): one statement, one round trip. The steps' rows refer to the execution's, inserted by
 * the same statement: the foreign key is checked at its end.
 */
const CREATE_EXECUTION = new TextStatement<ExecutionRow>(
  `WITH created AS (
    INSERT INTO executions (id, tenant_id, correlation_id, status, plan, options, total_steps, last_sequence, usage, created_at)
    VALUES ($1::uuid, $2::text, $3::text, 'QUEUED', $4::jsonb, $5::jsonb, $6::int, $7::int, $8::jsonb, $9::timestamptz)
    RETURNING *
  ), steps AS (
    INSERT INTO step_results (execution_id, index, tenant_id, correlation_id, kind, status, query_context, entity, reasoning, critical, approval)
    SELECT $1::uuid, planned_step.ordinal::int, $2::text, $3::text, planned_step.step ->> 'kind', 'PENDING',
      planned_step.step ->> 'queryContext', planned_step.step ->> 'entity', planned_step.step ->> 'reasoning',
      (planned_step.step ->> 'critical')::boolean, coalesce((planned_step.step ->> 'approval')::boolean, false)
    FROM jsonb_array_elements($4::jsonb -> 'steps') WITH ORDINALITY AS planned_step(step, ordinal)
  ), plan_created AS (
    INSERT INTO step_events (execution_id, sequence, tenant_id, correlation_id, type, execution_status, step_index, step, message, at)
    SELECT $1::uuid, 1, $2::text, $3::text, 'PLAN_CREATED', 'QUEUED', NULL, NULL, NULL, $9::timestamptz WHERE $10::boolean
  )
  SELECT ${selectList(CREATED_COLUMNS)} FROM created`,
  CREATED_COLUMNS,
);
