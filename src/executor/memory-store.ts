import { randomUUID } from 'node:crypto';
import type { ExecutionRow, StepResultRow, StepRow, StepState, StoredTokenUsage, TenantRow } from '../db/tables.js';
import type { ClaimInTransaction } from './idempotency.js';
import type { ValidatedPlan } from './plan.js';
import { applyStepChange, pendingSnapshot } from './step-snapshots.js';
import type { ExecutionStatus, StepUpdate } from './step-update.js';
import {
  ExecutionNotRunnableError,
  UNFINISHED_STATUSES,
  type ClaimedExecution,
  type CommittedTransition,
  type ExecutionDetails,
  type ExecutionPage,
  type ExecutionPageRequest,
  type ExecutionStore,
  type ExecutionSummary,
  type StepKey,
  type LeaseHold,
  type LeaseProvider,
  type LeaseState,
  type TenantDirectory,
  type Transition,
} from './store.js';

interface StoredExecution {
  row: ExecutionRow;
  steps: StepResultRow[];
  events: StepUpdate[];
}

const clone = <T>(value: T): T => structuredClone(value);

/**
 * The engine's store in memory: the same contract as the Drizzle store (src/db/execution-store.ts), for
 * tests of the engine that run in milliseconds. Each call is atomic, as a transaction is there; `now` is
 * the clock leases expire by, so tests can move time.
 */
export class MemoryExecutionStore implements ExecutionStore, LeaseProvider, TenantDirectory {
  private readonly executions = new Map<string, StoredExecution>();
  readonly tenants = new Map<string, TenantRow>();
  /** Makes the next calls of a method fail (a store that went away), as many times as given. */
  readonly failures = new Map<string, { times: number; error: () => Error }>();

  constructor(public now: () => number = Date.now) {}

  private failIfAsked(method: string): void {
    const failure = this.failures.get(method);
    if (!failure || failure.times <= 0) return;
    failure.times--;
    throw failure.error();
  }

  async findTenant(tenantId: string): Promise<TenantRow | undefined> {
    return this.tenants.get(tenantId);
  }

  async createExecution(
    tenantId: string,
    validated: ValidatedPlan,
    { plannerUsage, claim }: { plannerUsage?: StoredTokenUsage; claim?: ClaimInTransaction } = {},
  ): Promise<{ execution: ExecutionRow; planCreated: StepUpdate | null }> {
    this.failIfAsked('createExecution');
    // Idempotency keys are settled by the database (INSERT ... ON CONFLICT); this store has none.
    if (claim) throw new Error('the in-memory store does not keep idempotency keys');
    const id = randomUUID();
    const createdAt = new Date(this.now());
    const row: ExecutionRow = {
      id,
      tenantId,
      correlationId: validated.correlationId,
      status: 'QUEUED',
      plan: validated.plan,
      options: validated.options,
      finalResult: null,
      error: null,
      totalSteps: validated.plan.steps.length,
      successfulSteps: 0,
      failedSteps: 0,
      usage: plannerUsage ?? null,
      lastSequence: 0,
      leaseOwner: null,
      leaseEpoch: 0,
      leaseExpiresAt: null,
      resumes: 0,
      cancelRequestedAt: null,
      wakeAt: null,
      createdAt,
      startedAt: null,
      finishedAt: null,
    };
    const steps: StepResultRow[] = validated.plan.steps.map((step, i) => ({
      ...pendingSnapshot(
        { ...step, executionId: id, index: i + 1, tenantId, correlationId: validated.correlationId, approval: step.approval ?? false },
        { sql: step.sql, code: step.code },
      ),
      result: null,
      records: null,
      startedAt: null,
      finishedAt: null,
      decidedAt: null,
    }));
    const stored: StoredExecution = { row, steps, events: [] };
    this.executions.set(id, stored);
    if (plannerUsage === undefined) return { execution: clone(row), planCreated: null };
    row.lastSequence = 1;
    const planCreated: StepUpdate = {
      executionId: id,
      tenantId,
      sequence: 1,
      type: 'PLAN_CREATED',
      status: 'QUEUED',
      at: createdAt,
      step: null,
      message: null,
    };
    stored.events.push(planCreated);
    return { execution: clone(row), planCreated: clone(planCreated) };
  }

  async findExecution(tenantId: string, id: string): Promise<ExecutionRow | undefined> {
    const stored = this.executions.get(id);
    return stored && stored.row.tenantId === tenantId ? clone(stored.row) : undefined;
  }

  async loadExecution(id: string): Promise<ExecutionRow | undefined> {
    const stored = this.executions.get(id);
    return stored && clone(stored.row);
  }

  async listExecutions(tenantId: string, request: ExecutionPageRequest): Promise<ExecutionPage> {
    const filter = request.filter ?? {};
    const rows = [...this.executions.values()]
      .map((stored) => stored.row)
      .filter(
        (row) =>
          row.tenantId === tenantId &&
          (!filter.status?.length || filter.status.includes(row.status as ExecutionStatus)) &&
          (!filter.correlationId || row.correlationId === filter.correlationId),
      )
      .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime() || (a.id < b.id ? 1 : -1));
    const summaries = rows.slice(0, request.first).map(({ plan: _plan, finalResult: _finalResult, ...summary }) => summary);
    return { executions: clone(summaries), hasNextPage: rows.length > request.first };
  }

  async listExecutionDetails(tenantId: string, executionIds: readonly string[]): Promise<Map<string, ExecutionDetails>> {
    const details = new Map<string, ExecutionDetails>();
    for (const id of executionIds) {
      const row = this.executions.get(id)?.row;
      if (row && row.tenantId === tenantId) details.set(id, clone({ plan: row.plan, finalResult: row.finalResult }));
    }
    return details;
  }

  async listExecutionSummaries(tenantId: string, executionIds: readonly string[]): Promise<Map<string, ExecutionSummary>> {
    const summaries = new Map<string, ExecutionSummary>();
    for (const id of executionIds) {
      const row = this.executions.get(id)?.row;
      if (!row || row.tenantId !== tenantId) continue;
      const { plan: _plan, finalResult: _finalResult, ...summary } = row;
      summaries.set(id, clone(summary));
    }
    return summaries;
  }

  async listSteps(executionId: string, tenantId?: string): Promise<StepRow[]> {
    const stored = this.executions.get(executionId);
    if (!stored || (tenantId !== undefined && stored.row.tenantId !== tenantId)) return [];
    return stored.steps.map(({ records: _records, ...step }) => clone(step));
  }

  async listStepsOfExecutions(tenantId: string, executionIds: readonly string[]): Promise<StepRow[]> {
    const steps: StepRow[] = [];
    for (const id of [...new Set(executionIds)].sort()) steps.push(...(await this.listSteps(id, tenantId)));
    return steps;
  }

  async findSteps(tenantId: string, steps: readonly StepKey[]): Promise<StepState[]> {
    const found: StepState[] = [];
    for (const { executionId, index } of steps) {
      const stored = this.executions.get(executionId);
      const step = stored && stored.row.tenantId === tenantId ? stored.steps[index - 1] : undefined;
      if (!step) continue;
      const { records: _records, result: _result, ...state } = step;
      found.push(clone(state));
    }
    return found;
  }

  async findStepResult(tenantId: string, executionId: string, index: number): Promise<unknown[] | null> {
    const stored = this.executions.get(executionId);
    if (!stored || stored.row.tenantId !== tenantId) return null;
    return clone(stored.steps[index - 1]?.result ?? null);
  }

  async loadEvents(executionId: string, afterSequence: number, upToSequence?: number): Promise<StepUpdate[]> {
    const events = this.executions.get(executionId)?.events ?? [];
    return clone(events.filter((e) => e.sequence > afterSequence && (upToSequence === undefined || e.sequence <= upToSequence)));
  }

  private lapsed(row: ExecutionRow): boolean {
    return (row.leaseExpiresAt?.getTime() ?? 0) < this.now();
  }

  /** The lease is this claim's; without a claim, nobody holds it (or its holder stopped renewing it). */
  private holds(row: ExecutionRow, lease: LeaseHold | undefined): boolean {
    return lease ? row.leaseOwner === lease.owner && row.leaseEpoch === lease.epoch : row.leaseOwner === null || this.lapsed(row);
  }

  async recordTransition(executionId: string, batch: Transition | readonly Transition[]): Promise<CommittedTransition> {
    this.failIfAsked('recordTransition');
    const transitions = Array.isArray(batch) ? (batch as readonly Transition[]) : [batch as Transition];
    const [first] = transitions;
    const stored = this.executions.get(executionId);
    const from = first?.from ?? UNFINISHED_STATUSES;
    if (
      !first ||
      !stored ||
      !from.includes(stored.row.status as ExecutionStatus) ||
      !this.holds(stored.row, first.lease) ||
      (first.expectSequence !== undefined && stored.row.lastSequence !== first.expectSequence)
    ) {
      throw new ExecutionNotRunnableError(executionId);
    }
    const { row } = stored;
    const at = new Date(this.now());
    const updates = transitions.map((transition): StepUpdate => {
      const { successfulStepsDelta = 0, failedStepsDelta = 0, wakeInMs, ...changed } = transition.execution ?? {};
      Object.assign(row, clone(changed));
      if (wakeInMs !== undefined) row.wakeAt = wakeInMs === null ? null : new Date(this.now() + wakeInMs);
      row.successfulSteps += successfulStepsDelta;
      row.failedSteps += failedStepsDelta;
      row.lastSequence += 1;
      if (transition.releaseLease || !first.lease) Object.assign(row, { leaseOwner: null, leaseExpiresAt: null });
      const step = transition.step;
      if (step) Object.assign(stored.steps[step.before.index - 1]!, clone(step.change));
      const update: StepUpdate = {
        executionId,
        tenantId: row.tenantId,
        sequence: row.lastSequence,
        type: transition.type,
        at,
        status: row.status as ExecutionStatus,
        step: step ? applyStepChange(step.before, step.change) : null,
        message: transition.message ?? null,
      };
      stored.events.push(clone(update));
      return update;
    });
    return { update: updates.at(-1)!, updates, cancelRequested: row.cancelRequestedAt !== null };
  }

  async markUnsafeCalls(executionId: string, lease: LeaseHold, index: number): Promise<void> {
    this.failIfAsked('markUnsafeCalls');
    const stored = this.executions.get(executionId);
    if (!stored || !this.holds(stored.row, lease)) throw new ExecutionNotRunnableError(executionId);
    stored.steps[index - 1]!.unsafeCalls = true;
  }

  async requestCancel(tenantId: string, executionId: string): Promise<ExecutionRow | undefined> {
    this.failIfAsked('requestCancel');
    const stored = this.executions.get(executionId);
    if (!stored || stored.row.tenantId !== tenantId) return undefined;
    if (UNFINISHED_STATUSES.includes(stored.row.status as ExecutionStatus)) {
      stored.row.cancelRequestedAt ??= new Date(this.now());
    }
    return clone(stored.row);
  }

  private free(row: ExecutionRow, owner: string): boolean {
    return row.leaseOwner === null || row.leaseOwner === owner || this.lapsed(row);
  }

  async claim(executionId: string, owner: string, ttlMs: number): Promise<ClaimedExecution | null> {
    this.failIfAsked('claim');
    const stored = this.executions.get(executionId);
    if (!stored) return null;
    const { row } = stored;
    if (!UNFINISHED_STATUSES.includes(row.status as ExecutionStatus) || !this.free(row, owner)) return null;
    const running = row.status === 'RUNNING';
    const resumed = running && (row.leaseOwner !== null || stored.steps.some((s) => s.status === 'RUNNING'));
    const takenOver = running && row.leaseOwner !== null && row.leaseOwner !== owner;
    const wakeDue = row.wakeAt !== null && row.wakeAt.getTime() <= this.now();
    row.leaseOwner = owner;
    row.leaseEpoch += 1;
    row.leaseExpiresAt = new Date(this.now() + ttlMs);
    if (takenOver) row.resumes += 1;
    return {
      execution: clone(row),
      steps: clone(stored.steps.map((step) => ({ ...step, records: step.records ?? step.result }))),
      lease: { owner, epoch: row.leaseEpoch },
      resumed,
      wakeDue,
    };
  }

  async renew(executionId: string, lease: LeaseHold, ttlMs: number): Promise<LeaseState> {
    this.failIfAsked('renew');
    const stored = this.executions.get(executionId);
    if (!stored || !this.holds(stored.row, lease)) return { held: false, cancelRequested: false };
    stored.row.leaseExpiresAt = new Date(this.now() + ttlMs);
    return { held: true, cancelRequested: stored.row.cancelRequestedAt !== null };
  }

  async release(executionId: string, lease: LeaseHold): Promise<void> {
    this.failIfAsked('release');
    const stored = this.executions.get(executionId);
    if (stored && this.holds(stored.row, lease)) Object.assign(stored.row, { leaseOwner: null, leaseExpiresAt: null });
  }

  async listClaimable(owner: string, limit: number): Promise<{ id: string; tenantId: string }[]> {
    this.failIfAsked('listClaimable');
    return [...this.executions.values()]
      .map((stored) => stored.row)
      .filter((row) =>
        row.status === 'WAITING'
          ? this.free(row, owner) && (row.cancelRequestedAt !== null || (row.wakeAt?.getTime() ?? Infinity) < this.now())
          : (row.status === 'QUEUED' || row.status === 'RUNNING') && this.free(row, owner),
      )
      .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime())
      .slice(0, limit)
      .map((row) => ({ id: row.id, tenantId: row.tenantId }));
  }
}
