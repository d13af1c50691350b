import { randomUUID } from 'node:crypto';
import { and, asc, desc, eq, getTableColumns, gt, inArray, lt, lte, or, sql, type SQL } from 'drizzle-orm';
import type { Db } from '../db/client.js';
import {
  executions,
  stepEvents,
  stepResults,
  type ExecutionRow,
  type StepResultRow,
  type StepSnapshot,
  type StoredTokenUsage,
} from '../db/tables.js';
import type { ClaimInTransaction } from './idempotency.js';
import type { ValidatedPlan } from './plan.js';
import { storableText } from './storable-text.js';
import { applyStepChange, applyStepDelta, pendingSnapshot, stepDeltaOf, type StepChange } from './step-snapshots.js';
import type { ExecutionStatus, StepUpdate, StepUpdateType } from './step-update.js';

export interface ExecutionFilter {
  status?: readonly ExecutionStatus[] | null;
  correlationId?: string | null;
  createdAfter?: Date | null;
  createdBefore?: Date | null;
}

export interface ExecutionPageRequest {
  first: number;
  after?: ExecutionCursor | null;
  filter?: ExecutionFilter | null;
}

export interface ExecutionCursor {
  createdAt: Date;
  id: string;
}

export interface ExecutionPage {
  executions: ExecutionRow[];
  hasNextPage: boolean;
}

type ExecutionChange = Partial<
  Pick<
    ExecutionRow,
    'status' | 'finalResult' | 'error' | 'startedAt' | 'finishedAt' | 'usage'
  >
> & { successfulStepsDelta?: number; failedStepsDelta?: number };

export interface Transition {
  type: StepUpdateType;
  message?: string;
  /** The statuses the execution must be in for this change; by default any unfinished one. */
  from?: readonly ExecutionStatus[];
  execution?: ExecutionChange;
  /** The step as it is (`before`) and what changes: the update carries `before` with the change applied. */
  step?: { before: StepSnapshot; change: StepChange };
}

const UNFINISHED: readonly ExecutionStatus[] = ['QUEUED', 'RUNNING'];

function storableError<T extends { message: string } | null | undefined>(error: T): T {
  return error ? { ...error, message: storableText(error.message) } : error;
}

function storableChange(change: StepChange): StepChange {
  return change.error === undefined ? change : { ...change, error: storableError(change.error) };
}

/** The execution is finished, or (for a claim) no longer QUEUED: another run got there first. */
export class ExecutionNotRunnableError extends Error {
  override name = 'ExecutionNotRunnableError';
  constructor(executionId: string) {
    super(`execution ${executionId} is not in a state this change applies to`);
  }
}

const { result: _result, ...stepStateColumns } = getTableColumns(stepResults);

/** Every read and write of executions, step_results and step_events goes through here. */
export class ExecutionStore {
  constructor(private readonly db: Db) {}

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
   * `claim` (an idempotency key) runs in that transaction too; what it throws stores nothing.
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
      await claim?.(tx, id);
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
      conditions.push(
        or(lt(executions.createdAt, createdAt), and(eq(executions.createdAt, createdAt), lt(executions.id, id))),
      );
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
  async listSteps(executionId: string, tenantId?: string): Promise<StepResultRow[]> {
    // A step's sql and code: the agent's, or else the plan's (each is stored once: the plan's in executions.plan).
    const planned = this.planned(executionId);
    return this.db
      .with(planned)
      .select({
        ...getTableColumns(stepResults),
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

  async listUnfinished(status: 'QUEUED' | 'RUNNING'): Promise<ExecutionRow[]> {
    return this.db
      .select()
      .from(executions)
      .where(eq(executions.status, status))
      .orderBy(asc(executions.createdAt), asc(executions.id));
  }

  /**
   * One state change: updates the execution and the step, and appends the event (which stores what
   * changed), in one transaction. The caller publishes the returned update only after this has committed.
   */
  async recordTransition(executionId: string, transition: Transition): Promise<StepUpdate> {
    // A program's error and progress messages may hold text PostgreSQL refuses (NUL, lone surrogates).
    const message = transition.message === undefined ? null : storableText(transition.message);
    const step = transition.step && { before: transition.step.before, change: storableChange(transition.step.change) };
    return this.db.transaction(async (tx) => {
      const { successfulStepsDelta = 0, failedStepsDelta = 0, ...changed } = transition.execution ?? {};
      const executionChange = changed.error === undefined ? changed : { ...changed, error: storableError(changed.error) };
      const [execution] = await tx
        .update(executions)
        .set({
          ...executionChange,
          successfulSteps: sql`${executions.successfulSteps} + ${successfulStepsDelta}`,
          failedSteps: sql`${executions.failedSteps} + ${failedStepsDelta}`,
          lastSequence: sql`${executions.lastSequence} + 1`,
        })
        .where(and(eq(executions.id, executionId), inArray(executions.status, [...(transition.from ?? UNFINISHED)])))
        .returning({
          sequence: executions.lastSequence,
          status: executions.status,
          tenantId: executions.tenantId,
          correlationId: executions.correlationId,
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
        executionId,
        tenantId: execution.tenantId,
        sequence: execution.sequence,
        type: transition.type,
        at,
        status: execution.status as ExecutionStatus,
        step: step ? applyStepChange(step.before, step.change) : null,
        message,
      };
    });
  }
}
