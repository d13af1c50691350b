import type { ExecutionRow, StepResultRow, StepRow, StepSnapshot, StepState, StoredTokenUsage, TenantRow } from '../db/tables.js';
import type { EnqueueInTransaction } from './dispatcher.js';
import type { ClaimInTransaction } from './idempotency.js';
import type { ValidatedPlan } from './plan.js';
import type { StepChange } from './step-snapshots.js';
import type { ExecutionStatus, StepUpdate, StepUpdateType } from './step-update.js';

/*
 * The storage the engine needs, as the engine sees it. The Drizzle implementation (PGlite and PostgreSQL)
 * is src/db/execution-store.ts; src/executor/memory-store.ts keeps everything in memory for fast tests of
 * the engine. Every write of an execution's state is one call (a transition), so that an implementation can
 * make it one statement.
 */

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

/**
 * An execution as a history page lists it: without its plan and final result (kilobytes to megabytes each), which
 * are read only for the executions whose plan or finalResult a client asks for (listExecutionDetails).
 */
export type ExecutionSummary = Omit<ExecutionRow, 'plan' | 'finalResult'>;

export type ExecutionDetails = Pick<ExecutionRow, 'plan' | 'finalResult'>;

export interface ExecutionPage {
  executions: ExecutionSummary[];
  hasNextPage: boolean;
}

export type ExecutionChange = Partial<
  Pick<ExecutionRow, 'status' | 'finalResult' | 'error' | 'startedAt' | 'finishedAt' | 'usage'>
> & {
  successfulStepsDelta?: number;
  failedStepsDelta?: number;
  /** Sets wake_at this many milliseconds from now on the store's clock (null clears it). */
  wakeInMs?: number | null;
};

/** A claim of an execution's lease: who holds it, and which claim it is (the fencing token). */
export interface LeaseHold {
  owner: string;
  epoch: number;
}

export interface Transition {
  type: StepUpdateType;
  message?: string;
  /** The statuses the execution must be in for this change; by default QUEUED, RUNNING and WAITING. */
  from?: readonly ExecutionStatus[];
  /**
   * The lease the change is made under: it commits only while that claim still holds the lease, so a
   * holder whose lease was taken over commits nothing (ExecutionNotRunnableError). Without it, the change
   * commits only while nobody holds the lease (a person's decision on a WAITING execution).
   */
  lease?: LeaseHold;
  /** The holder lets go of the lease with this change (the execution finished, or waits for a person). */
  releaseLease?: boolean;
  /**
   * The execution's last sequence as the caller knows it: the change commits only if no other has since. A
   * transition retried after a lost answer (did the first attempt commit?) therefore commits at most once.
   */
  expectSequence?: number;
  execution?: ExecutionChange;
  /** The step as it is (`before`) and what changes: the update carries `before` with the change applied. */
  step?: { before: StepSnapshot; change: StepChange };
}

/**
 * A committed transition (or batch of them): its updates in order, the last as `update`, and whether a cancel has
 * been asked for (the holder stops the run).
 */
export interface CommittedTransition {
  update: StepUpdate;
  updates: StepUpdate[];
  cancelRequested: boolean;
}

/** Told of every transition a store commits, with how long the commit took (metrics). */
export type TransitionObserver = (updates: readonly StepUpdate[], seconds: number) => void;

/** A step as a run needs it: its row with its sql and code, and every record it produced. */
export type StoredStep = Omit<StepResultRow, 'records'> & { records: unknown[] | null };

/** What a worker that claimed an execution continues from: its committed state. */
export interface ClaimedExecution {
  /** The execution after the claim (its lease columns are the new holder's). */
  execution: ExecutionRow;
  steps: StoredStep[];
  lease: LeaseHold;
  /** The execution was running under a holder that stopped before finishing it (a crash, a shutdown, an outage). */
  resumed: boolean;
  /** Its wake_at (an approval's deadline) has passed, on the store's clock. */
  wakeDue: boolean;
}

export interface LeaseState {
  /** False once another claim took the lease (or the execution finished): the holder stops at once. */
  held: boolean;
  cancelRequested: boolean;
}

/**
 * Leases are columns of the execution (owner, epoch, expiry), so taking one and reading the state to
 * continue from is one call; no lease holds a database connection.
 */
export interface LeaseProvider {
  /**
   * Takes the lease of an execution that is QUEUED, RUNNING or WAITING, when nobody holds it, its holder
   * stopped renewing it, or the holder is this owner (a run of this process that stopped on an outage);
   * null otherwise. A RUNNING execution taken over from another holder whose lease lapsed (it crashed, or
   * stalled) counts one more resume: not one this worker takes back after an outage, nor one let go at a
   * shutdown, which no step can be blamed for.
   */
  claim(executionId: string, owner: string, ttlMs: number): Promise<ClaimedExecution | null>;
  /** Extends the lease by ttlMs from now; says whether it is still held and whether a cancel was asked for. */
  renew(executionId: string, lease: LeaseHold, ttlMs: number): Promise<LeaseState>;
  /**
   * Lets the lease go now (nobody holds it), so another worker or the next start continues the execution at
   * once; a step it left RUNNING makes that a resume.
   */
  release(executionId: string, lease: LeaseHold): Promise<void>;
  /**
   * Executions a worker should take: QUEUED or RUNNING with nobody holding them (or held by `owner`, whose
   * run stopped, or by a holder whose lease lapsed), and WAITING ones, free the same way, whose approval
   * timed out or that were cancelled. Oldest first.
   */
  listClaimable(owner: string, limit: number): Promise<{ id: string; tenantId: string }[]>;
}

/**
 * Admission across a cluster of workers: which execution a worker with a free slot takes next for a tenant, under
 * the tenant's cap on executions running at once (counted from the live leases of every worker).
 */
export interface TenantAdmission {
  /**
   * Claims the tenant's oldest claimable execution (the same ones listClaimable lists), unless the tenant's
   * executions hold `maxRunning` live leases: 'at-capacity' then; null when the tenant has nothing to take.
   */
  claimNextOfTenant(
    tenantId: string,
    owner: string,
    ttlMs: number,
    options: { maxRunning: number; runningHere: readonly string[] },
  ): Promise<ClaimedExecution | 'at-capacity' | null>;
  /**
   * The tenants with executions a worker should take (the ones listClaimable lists, but for `runningHere`, this
   * worker's own runs), the tenant whose oldest such execution is oldest first, with how many each has and how many
   * of its executions hold live leases (as claimNextOfTenant counts them): a sweep offers each tenant its turn,
   * however many executions older tenants have waiting at their caps.
   */
  listTenantsWithWork(
    owner: string,
    limit: number,
    runningHere: readonly string[],
  ): Promise<{ tenantId: string; executions: number; running: number }[]>;
}

export interface TenantDirectory {
  findTenant(tenantId: string): Promise<TenantRow | undefined>;
}

/** The execution is finished, no longer in a status the change applies to, or its lease was taken over. */
export class ExecutionNotRunnableError extends Error {
  override name = 'ExecutionNotRunnableError';
  constructor(executionId: string) {
    super(`execution ${executionId} is not in a state this change applies to, or its lease is no longer held`);
  }
}

/** A step of an execution: its execution's id and its 1-based index. */
export interface StepKey {
  executionId: string;
  index: number;
}

export interface ExecutionStore {
  /**
   * Stores a QUEUED execution with its PENDING steps. A plan the planner wrote also gets its
   * PLAN_CREATED update, sequence 1, and the planner's tokens as usage. `claim` (an idempotency key) runs
   * in the same transaction, after the execution's row is written, and `enqueue` (the durable queue's job) after its
   * steps; what either throws stores nothing.
   */
  createExecution(
    tenantId: string,
    validated: ValidatedPlan,
    options?: { plannerUsage?: StoredTokenUsage; claim?: ClaimInTransaction; enqueue?: EnqueueInTransaction },
  ): Promise<{ execution: ExecutionRow; planCreated: StepUpdate | null }>;
  findExecution(tenantId: string, id: string): Promise<ExecutionRow | undefined>;
  /** Unscoped lookup for the executor itself, which runs executions of every tenant. */
  loadExecution(id: string): Promise<ExecutionRow | undefined>;
  listExecutions(tenantId: string, request: ExecutionPageRequest): Promise<ExecutionPage>;
  /** The plans and final results of some of the tenant's executions, in one read (ids of others are left out). */
  listExecutionDetails(tenantId: string, executionIds: readonly string[]): Promise<Map<string, ExecutionDetails>>;
  /** Some of the tenant's executions as history lists them (without plan and final result), in one read. */
  listExecutionSummaries(tenantId: string, executionIds: readonly string[]): Promise<Map<string, ExecutionSummary>>;
  /** The steps of an execution (without their full records); with tenantId, only if the execution is that tenant's. */
  listSteps(executionId: string, tenantId?: string): Promise<StepRow[]>;
  /**
   * The steps of many executions of the tenant (without their full records), ordered by execution then
   * index, in one read: a page of history with its steps. Ids that are not the tenant's executions have none.
   */
  listStepsOfExecutions(tenantId: string, executionIds: readonly string[]): Promise<StepRow[]>;
  /**
   * Some steps of the tenant's executions, named by execution and index, without their records and their result, in
   * one read: node(id) and nodes(ids). A step that does not exist, or is another tenant's, is left out.
   */
  findSteps(tenantId: string, steps: readonly StepKey[]): Promise<StepState[]>;
  findStepResult(tenantId: string, executionId: string, index: number): Promise<unknown[] | null>;
  /** The updates after afterSequence (up to upToSequence), each with its step as it was then. */
  loadEvents(executionId: string, afterSequence: number, upToSequence?: number): Promise<StepUpdate[]>;
  /**
   * One state change: the execution, the step and the appended event, all or nothing. The caller publishes
   * the update only after this has returned. ExecutionNotRunnableError when the change does not apply.
   * Several transitions in a row (a step's end and the next one's start) commit together, in order, with
   * consecutive sequences: the first's conditions (from, lease, expectSequence) decide for the batch.
   */
  recordTransition(executionId: string, transition: Transition | readonly Transition[]): Promise<CommittedTransition>;
  /**
   * Records, under the lease, that a step's program is about to make a call that is not safe to repeat, so
   * that a run continuing after a crash does not run the step again. Not an update: no event is appended.
   */
  markUnsafeCalls(executionId: string, lease: LeaseHold, index: number): Promise<void>;
  /**
   * Records that the tenant asked to cancel an unfinished execution (durable: a holder that restarts
   * honours it). Returns the execution as it is now, undefined when it is not the tenant's.
   */
  requestCancel(tenantId: string, executionId: string): Promise<ExecutionRow | undefined>;
}

export const UNFINISHED_STATUSES: readonly ExecutionStatus[] = ['QUEUED', 'RUNNING', 'WAITING'];
