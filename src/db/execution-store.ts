import { randomUUID } from 'node:crypto';
import { and, asc, desc, eq, getTableColumns, gt, inArray, isNotNull, lt, lte, or, sql, type SQL } from 'drizzle-orm';
import type { ClaimInTransaction } from '../executor/idempotency.js';
import type { ValidatedPlan } from '../executor/plan.js';
import { storableText } from '../executor/storable-text.js';
import { applyStepChange, applyStepDelta, pendingSnapshot, stepDeltaOf, type StepChange } from '../executor/step-snapshots.js';
import type { ExecutionStatus, StepUpdate, StepUpdateType } from '../executor/step-update.js';
import {
  ExecutionNotRunnableError,
  UNFINISHED_STATUSES,
  type ClaimedExecution,
  type CommittedTransition,
  type ExecutionPage,
  type ExecutionPageRequest,
  type ExecutionStore,
  type LeaseHold,
  type LeaseProvider,
  type LeaseState,
  type TenantDirectory,
  type Transition,
} from '../executor/store.js';
import type { Db } from './client.js';
import {
  executions,
  stepEvents,
  stepResults,
  tenants,
  type ExecutionRow,
  type StepRow,
  type StepSnapshot,
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

/** Nobody holds the lease, `owner` does (a run of its that stopped), or its holder stopped renewing it. */
const leaseIsFree = (owner: string) =>
  sql`(${executions.leaseOwner} IS NULL OR ${executions.leaseOwner} = ${owner} OR ${executions.leaseExpiresAt} < clock_timestamp())`;
/** Nobody holds the lease, or its holder stopped renewing it. */
const leaseIsUnheld = sql`(${executions.leaseOwner} IS NULL OR ${executions.leaseExpiresAt} < clock_timestamp())`;

/** A moment ttlMs from now on the database's clock (one clock for every worker): a lease's expiry, an approval's deadline. */
const leaseExpiry = (ttlMs: number) => sql`clock_timestamp() + ${Math.max(1, Math.round(ttlMs))} * interval '1 millisecond'`;

/** Every read and write of executions, step_results and step_events goes through here (PGlite and PostgreSQL). */
export class DrizzleExecutionStore implements ExecutionStore, LeaseProvider, TenantDirectory {
  constructor(private readonly db: Db) {}

  async findTenant(tenantId: string): Promise<TenantRow | undefined> {
    const [row] = await this.db.select().from(tenants).where(eq(tenants.id, tenantId));
    return row;
  }

  /**
   * The sql and code each step of one execution came with in its plan, read from the plan once (a plan
   * may hold megabytes of programs; reading it once per step would read it that many times).
   */
  private planned(executionId: string) {
    return this.db.$with('planned').as(
      this.db
        .select({
          index: sql<number>`planned_step.ordinal::int`.as('planned_index'),
          planSql: sql<string | null>`planned_step.step ->> 'sql'`.as('planned_sql'),
          planCode: sql<string | null>`planned_step.step ->> 'code'`.as('planned_code'),
        })
        .from(
          sql`${executions} CROSS JOIN LATERAL jsonb_array_elements(${executions.plan} -> 'steps') WITH ORDINALITY AS planned_step(step, ordinal)`,
        )
        .where(eq(executions.id, executionId)),
    );
  }

  /**
   * Stores a QUEUED execution with its PENDING steps. A plan the planner wrote also gets its
   * PLAN_CREATED update, sequence 1, in the same transaction, and the planner's tokens as usage.
   */
  async createExecution(
    tenantId: string,
    validated: ValidatedPlan,
    { plannerUsage, claim }: { plannerUsage?: StoredTokenUsage; claim?: ClaimInTransaction } = {},
  ): Promise<{ execution: ExecutionRow; planCreated: StepUpdate | null }> {
    const planned = plannerUsage !== undefined;
    const id = randomUUID();
    return this.db.transaction(async (tx) => {
      const [execution] = await tx
        .insert(executions)
        .values({
          id,
          tenantId,
          correlationId: validated.correlationId,
          status: 'QUEUED',
          plan: validated.plan,
          options: validated.options,
          totalSteps: validated.plan.steps.length,
          lastSequence: planned ? 1 : 0,
          usage: plannerUsage ?? null,
          createdAt: new Date(),
        })
        .returning();
      await claim?.(tx as unknown as Db, id);
      await tx.insert(stepResults).values(
        validated.plan.steps.map((step, i) => ({
          executionId: id,
          index: i + 1,
          tenantId,
          correlationId: validated.correlationId,
          kind: step.kind,
          status: 'PENDING',
          queryContext: step.queryContext,
          entity: step.entity,
          reasoning: step.reasoning,
          critical: step.critical,
          approval: step.approval ?? false,
        })),
      );
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
      await tx.insert(stepEvents).values({
        executionId: id,
        sequence: 1,
        tenantId,
        correlationId: validated.correlationId,
        type: 'PLAN_CREATED',
        executionStatus: 'QUEUED',
        stepIndex: null,
        step: null,
        at: planCreated.at,
      });
      return { execution: execution!, planCreated };
    });
  }

  async findExecution(tenantId: string, id: string): Promise<ExecutionRow | undefined> {
    const [row] = await this.db
      .select()
      .from(executions)
      .where(and(eq(executions.tenantId, tenantId), eq(executions.id, id)));
    return row;
  }

  /** Unscoped lookup for the executor itself, which runs executions of every tenant. */
  async loadExecution(id: string): Promise<ExecutionRow | undefined> {
    const [row] = await this.db.select().from(executions).where(eq(executions.id, id));
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
      .select()
      .from(executions)
      .where(and(...conditions))
      .orderBy(desc(executions.createdAt), desc(executions.id))
      .limit(request.first + 1);
    return { executions: rows.slice(0, request.first), hasNextPage: rows.length > request.first };
  }

  /** The steps of an execution; with tenantId, only if the execution is that tenant's. */
  async listSteps(executionId: string, tenantId?: string): Promise<StepRow[]> {
    // A step's sql and code: the agent's, or else the plan's (each is stored once: the plan's in executions.plan).
    const planned = this.planned(executionId);
    return this.db
      .with(planned)
      .select({
        ...stepColumns,
        sql: sql<string | null>`coalesce(${stepResults.sql}, ${planned.planSql})`,
        code: sql<string | null>`coalesce(${stepResults.code}, ${planned.planCode})`,
      })
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
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
    const ids = [...new Set(executionIds)].filter((id) => uuid.test(id));
    if (ids.length === 0) return [];
    // One parameter (a uuid[] literal), so the statement is the same text whatever the page size.
    const idArray = sql`${`{${ids.join(',')}}`}::uuid[]`;
    const planned = this.db.$with('planned').as(
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
        .where(and(sql`${executions.id} = ANY(${idArray})`, eq(executions.tenantId, tenantId))),
    );
    const steps = await this.db
      .with(planned)
      .select({
        ...stepColumns,
        sql: sql<string | null>`coalesce(${stepResults.sql}, ${planned.planSql})`,
        code: sql<string | null>`coalesce(${stepResults.code}, ${planned.planCode})`,
      })
      .from(stepResults)
      .innerJoin(planned, and(eq(planned.executionId, stepResults.executionId), eq(planned.index, stepResults.index)))
      .where(and(sql`${stepResults.executionId} = ANY(${idArray})`, eq(stepResults.tenantId, tenantId)));
    // Ordered here, not by the database: a page's few hundred rows, and the plan then has no Sort node.
    return steps.sort((a, b) => (a.executionId < b.executionId ? -1 : a.executionId > b.executionId ? 1 : a.index - b.index));
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
    const conditions = [eq(stepEvents.executionId, executionId)];
    if (upToSequence !== undefined) conditions.push(lte(stepEvents.sequence, upToSequence));
    // Events first, steps after: a step row is then at least as new as every event read, so the fields an
    // event names as kept on the step are there (the two reads need not share a snapshot).
    const events = await this.db
      .select()
      .from(stepEvents)
      .where(and(...conditions))
      .orderBy(asc(stepEvents.sequence));
    const planned = this.planned(executionId);
    const steps = await this.db
      .with(planned)
      .select({ ...stepStateColumns, planSql: planned.planSql, planCode: planned.planCode })
      .from(stepResults)
      .innerJoin(planned, eq(planned.index, stepResults.index))
      .where(eq(stepResults.executionId, executionId));
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
  private async stepsForRun(db: Db, executionId: string) {
    const planned = this.planned(executionId);
    return db
      .with(planned)
      .select({
        ...getTableColumns(stepResults),
        sql: sql<string | null>`coalesce(${stepResults.sql}, ${planned.planSql})`,
        code: sql<string | null>`coalesce(${stepResults.code}, ${planned.planCode})`,
        records: sql<unknown[] | null>`coalesce(${stepResults.records}, ${stepResults.result})`,
      })
      .from(stepResults)
      .innerJoin(planned, eq(planned.index, stepResults.index))
      .where(eq(stepResults.executionId, executionId))
      .orderBy(asc(stepResults.index));
  }

  async claim(executionId: string, owner: string, ttlMs: number): Promise<ClaimedExecution | null> {
    return this.db.transaction(async (tx) => {
      const [current] = await tx
        .select({
          status: executions.status,
          leaseOwner: executions.leaseOwner,
          free: sql<boolean>`${leaseIsFree(owner)}`,
          wakeDue: sql<boolean>`coalesce(${executions.wakeAt} <= clock_timestamp(), false)`,
        })
        .from(executions)
        .where(eq(executions.id, executionId))
        .for('update');
      if (!current || !UNFINISHED.includes(current.status as ExecutionStatus) || !current.free) return null;
      const steps = await this.stepsForRun(tx as unknown as Db, executionId);
      const running = current.status === 'RUNNING';
      const resumed = running && (current.leaseOwner !== null || steps.some((s) => s.status === 'RUNNING'));
      const takenOver = running && current.leaseOwner !== null && current.leaseOwner !== owner;
      const [execution] = await tx
        .update(executions)
        .set({
          leaseOwner: owner,
          leaseEpoch: sql`${executions.leaseEpoch} + 1`,
          leaseExpiresAt: leaseExpiry(ttlMs),
          ...(takenOver ? { resumes: sql`${executions.resumes} + 1` } : {}),
        })
        .where(eq(executions.id, executionId))
        .returning();
      return { execution: execution!, steps, lease: { owner, epoch: execution!.leaseEpoch }, resumed, wakeDue: current.wakeDue };
    });
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
      .where(
        or(
          and(inArray(executions.status, ['QUEUED', 'RUNNING']), leaseIsFree(owner)),
          and(
            eq(executions.status, 'WAITING'),
            leaseIsFree(owner),
            or(isNotNull(executions.cancelRequestedAt), lt(executions.wakeAt, sql`clock_timestamp()`)),
          ),
        ),
      )
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
   * One state change: updates the execution and the step, and appends the event (which stores what
   * changed), in one transaction. The caller publishes the returned update only after this has committed.
   */
  async recordTransition(executionId: string, transition: Transition): Promise<CommittedTransition> {
    // A program's error and progress messages may hold text PostgreSQL refuses (NUL, lone surrogates).
    const message = transition.message === undefined ? null : storableText(transition.message);
    const step = transition.step && { before: transition.step.before, change: storableChange(transition.step.change) };
    const { lease } = transition;
    return this.db.transaction(async (tx) => {
      const { successfulStepsDelta = 0, failedStepsDelta = 0, wakeInMs, ...changed } = transition.execution ?? {};
      const executionChange = changed.error === undefined ? changed : { ...changed, error: storableError(changed.error) };
      const [execution] = await tx
        .update(executions)
        .set({
          ...executionChange,
          ...(wakeInMs === undefined ? {} : { wakeAt: wakeInMs === null ? null : leaseExpiry(wakeInMs) }),
          ...(transition.releaseLease || !lease ? { leaseOwner: null, leaseExpiresAt: null } : {}),
          successfulSteps: sql`${executions.successfulSteps} + ${successfulStepsDelta}`,
          failedSteps: sql`${executions.failedSteps} + ${failedStepsDelta}`,
          lastSequence: sql`${executions.lastSequence} + 1`,
        })
        .where(
          and(
            eq(executions.id, executionId),
            inArray(executions.status, [...(transition.from ?? UNFINISHED)]),
            lease ? and(eq(executions.leaseOwner, lease.owner), eq(executions.leaseEpoch, lease.epoch)) : leaseIsUnheld,
            transition.expectSequence === undefined ? undefined : eq(executions.lastSequence, transition.expectSequence),
          ),
        )
        .returning({
          sequence: executions.lastSequence,
          status: executions.status,
          tenantId: executions.tenantId,
          correlationId: executions.correlationId,
          cancelRequestedAt: executions.cancelRequestedAt,
        });
      if (!execution) throw new ExecutionNotRunnableError(executionId);
      if (step && Object.keys(step.change).length > 0) {
        const updated = await tx
          .update(stepResults)
          .set(step.change)
          .where(and(eq(stepResults.executionId, executionId), eq(stepResults.index, step.before.index)))
          .returning({ index: stepResults.index });
        if (updated.length === 0) throw new Error(`step ${step.before.index} of execution ${executionId} does not exist`);
      }
      const at = new Date();
      await tx.insert(stepEvents).values({
        executionId,
        sequence: execution.sequence,
        tenantId: execution.tenantId,
        correlationId: execution.correlationId,
        type: transition.type,
        executionStatus: execution.status,
        stepIndex: step?.before.index ?? null,
        step: step ? stepDeltaOf(step.change) : null,
        message,
        at,
      });
      return {
        update: {
          executionId,
          tenantId: execution.tenantId,
          sequence: execution.sequence,
          type: transition.type,
          at,
          status: execution.status as ExecutionStatus,
          step: step ? applyStepChange(step.before, step.change) : null,
          message,
        },
        cancelRequested: execution.cancelRequestedAt !== null,
      };
    });
  }
}
