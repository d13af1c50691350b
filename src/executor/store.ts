import { randomUUID } from 'node:crypto';
import { and, asc, desc, eq, gt, inArray, lt, lte, or, sql, type SQL } from 'drizzle-orm';
import type { Db } from '../db/client.js';
import {
  executions,
  stepEvents,
  stepResults,
  type ExecutionRow,
  type StepEventRow,
  type StepResultRow,
  type StepSnapshot,
  type StoredTokenUsage,
} from '../db/tables.js';
import type { ValidatedPlan } from './plan.js';
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

type StepChange = Partial<
  Omit<StepResultRow, 'executionId' | 'index' | 'tenantId' | 'correlationId' | 'kind' | 'queryContext'>
>;

export interface Transition {
  type: StepUpdateType;
  message?: string;
  /** The statuses the execution must be in for this change; by default any unfinished one. */
  from?: readonly ExecutionStatus[];
  execution?: ExecutionChange;
  step?: { index: number; change: StepChange };
}

const UNFINISHED: readonly ExecutionStatus[] = ['QUEUED', 'RUNNING'];

/** The execution is finished, or (for a claim) no longer QUEUED: another run got there first. */
export class ExecutionNotRunnableError extends Error {
  override name = 'ExecutionNotRunnableError';
  constructor(executionId: string) {
    super(`execution ${executionId} is not in a state this change applies to`);
  }
}

export function snapshotOf(row: StepResultRow): StepSnapshot {
  const { result: _result, startedAt, finishedAt, ...rest } = row;
  return { ...rest, startedAt: startedAt?.toISOString() ?? null, finishedAt: finishedAt?.toISOString() ?? null };
}

export function toStepUpdate(row: StepEventRow): StepUpdate {
  return {
    executionId: row.executionId,
    tenantId: row.tenantId,
    sequence: row.sequence,
    type: row.type as StepUpdateType,
    at: row.at,
    status: row.executionStatus as ExecutionStatus,
    step: row.step ?? null,
    message: row.message ?? null,
  };
}

/** Every read and write of executions, step_results and step_events goes through here. */
export class ExecutionStore {
  constructor(private readonly db: Db) {}

  /**
   * Stores a QUEUED execution with its PENDING steps. A plan the planner wrote also gets its
   * PLAN_CREATED update, sequence 1, in the same transaction, and the planner's tokens as usage.
   */
  async createExecution(
    tenantId: string,
    validated: ValidatedPlan,
    { plannerUsage }: { plannerUsage?: StoredTokenUsage } = {},
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
          sql: step.sql,
          code: step.code,
        })),
      );
      if (!planned) return { execution: execution!, planCreated: null };
      const [event] = await tx
        .insert(stepEvents)
        .values({
          executionId: id,
          sequence: 1,
          tenantId,
          correlationId: validated.correlationId,
          type: 'PLAN_CREATED',
          executionStatus: 'QUEUED',
          stepIndex: null,
          step: null,
          at: execution!.createdAt,
        })
        .returning();
      return { execution: execution!, planCreated: toStepUpdate(event!) };
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
    return this.db
      .select()
      .from(stepResults)
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

  async loadEvents(executionId: string, afterSequence: number, upToSequence?: number): Promise<StepUpdate[]> {
    const conditions = [eq(stepEvents.executionId, executionId), gt(stepEvents.sequence, afterSequence)];
    if (upToSequence !== undefined) conditions.push(lte(stepEvents.sequence, upToSequence));
    const rows = await this.db
      .select()
      .from(stepEvents)
      .where(and(...conditions))
      .orderBy(asc(stepEvents.sequence));
    return rows.map(toStepUpdate);
  }

  async listUnfinished(status: 'QUEUED' | 'RUNNING'): Promise<ExecutionRow[]> {
    return this.db
      .select()
      .from(executions)
      .where(eq(executions.status, status))
      .orderBy(asc(executions.createdAt), asc(executions.id));
  }

  /**
   * One state change: updates the execution and the step, and appends the event, in one
   * transaction. The caller publishes the returned update only after this has committed.
   */
  async recordTransition(executionId: string, transition: Transition): Promise<StepUpdate> {
    return this.db.transaction(async (tx) => {
      const { successfulStepsDelta = 0, failedStepsDelta = 0, ...executionChange } = transition.execution ?? {};
      const [execution] = await tx
        .update(executions)
        .set({
          ...executionChange,
          successfulSteps: sql`${executions.successfulSteps} + ${successfulStepsDelta}`,
          failedSteps: sql`${executions.failedSteps} + ${failedStepsDelta}`,
          lastSequence: sql`${executions.lastSequence} + 1`,
        })
        .where(and(eq(executions.id, executionId), inArray(executions.status, [...(transition.from ?? UNFINISHED)])))
        .returning();
      if (!execution) throw new ExecutionNotRunnableError(executionId);
      let snapshot: StepSnapshot | null = null;
      if (transition.step) {
        const stepKey = and(eq(stepResults.executionId, executionId), eq(stepResults.index, transition.step.index));
        const [step] =
          Object.keys(transition.step.change).length > 0
            ? await tx.update(stepResults).set(transition.step.change).where(stepKey).returning()
            : await tx.select().from(stepResults).where(stepKey);
        if (!step) throw new Error(`step ${transition.step.index} of execution ${executionId} does not exist`);
        snapshot = snapshotOf(step);
      }
      const [event] = await tx
        .insert(stepEvents)
        .values({
          executionId,
          sequence: execution.lastSequence,
          tenantId: execution.tenantId,
          correlationId: execution.correlationId,
          type: transition.type,
          executionStatus: execution.status,
          stepIndex: transition.step?.index ?? null,
          step: snapshot,
          message: transition.message ?? null,
          at: new Date(),
        })
        .returning();
      return toStepUpdate(event!);
    });
  }
}
