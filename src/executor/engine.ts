import { AgentError, addUsage, NO_USAGE } from '../agents/llm-client.js';
import { ApiCallError } from '../api/api-caller.js';
import { SandboxError } from '../sandbox/errors.js';
import type { ExecutionRow, StepSnapshot, StoredPlanStep, StoredStepError, StoredTokenUsage, TenantRow } from '../db/tables.js';
import { heapBytesOf } from '../heap-bytes.js';
import { withLogContext, type Logger } from '../logger.js';
import { inSpan } from '../observability/spans.js';
import { context as otelContext, SpanStatusCode, type Context } from '@opentelemetry/api';
import { RunStoppedError, StepCancelledError, StepFailure, toStoredStepError } from './errors.js';
import { ExecutionMemory } from './execution-memory.js';
import type { TenantRateLimits } from './rate-limiter.js';
import { capRecords } from './records.js';
import { applyStepChange, snapshotOf, type StepChange } from './step-snapshots.js';
import type { StepKind, StepUpdate } from './step-update.js';
import type { StepUpdateBus } from './step-update-bus.js';
import { stepTimeBoundMs, type EarlierStep, type JsonRecord, type StepHandler, type StepOutcome } from './steps/step-handler.js';
import {
  ExecutionNotRunnableError,
  type ClaimedExecution,
  type ExecutionStore,
  type LeaseHold,
  type LeaseProvider,
  type StoredStep,
  type TenantAdmission,
  type TenantDirectory,
  type Transition,
} from './store.js';

export interface EngineSettings {
  rowCap: number;
  resultMaxBytes: number;
  /** What one execution may hold in memory at once (STEPCAST_EXECUTION_MAX_BYTES), as heap cost. */
  executionMaxBytes: number;
  /** A step's sample: its first sampleSize records, as long as they fit in this many bytes of JSON. */
  sampleMaxBytes: number;
  /** STEP_PROGRESS updates a step may publish, and the characters of each message. */
  maxProgressUpdates: number;
  maxProgressChars: number;
  /** How long a lease holds without renewal (STEPCAST_LEASE_TTL_MS); it is renewed three times as often. */
  leaseTtlMs: number;
  /** How many times an execution may be continued after an interruption before it fails INTERRUPTED. */
  maxResumes: number;
  /** One agent call's time limit (STEPCAST_AGENT_TIMEOUT_MS) and the SQL agent's repair rounds: with stepTimeoutMs, a step's overall bound. */
  agentTimeoutMs: number;
  sqlRepairRounds: number;
  /**
   * A SQL step whose plan gives its statement begins while its start commits (Run.beginsEarly). Off where the store
   * and the tenants' statements share one connection (PGlite): the commit would wait for the statement, and the step
   * before's end would be published only once the next step's statement had run.
   */
  beginSqlStepsEarly: boolean;
}

export interface EngineDependencies {
  store: ExecutionStore;
  leases: LeaseProvider;
  bus: StepUpdateBus;
  handlers: Record<StepKind, StepHandler>;
  tenants: TenantDirectory;
  /** The tenants' budgets: every agent call of a step takes one model call. */
  rateLimits: TenantRateLimits;
  logger: Logger;
  settings: EngineSettings;
  /** This process, as the owner of the leases it takes. */
  workerId: string;
  /** The store (the database) cannot be reached: the run stops, and is continued once it answers again. */
  isUnavailable(error: unknown): boolean;
  /** Admission under a tenant's cluster-wide cap (runNextOfTenant); only a cluster's workers need it. */
  admission?: TenantAdmission;
}

/** The first sampleSize records, as long as they fit: samples travel in every prompt and event. */
function sampleOf(records: readonly JsonRecord[], sampleSize: number, maxBytes: number): JsonRecord[] {
  return capRecords(records.slice(0, sampleSize), maxBytes).kept;
}

/** The sql or code an agent wrote for the step; a step that came with its own keeps it in the plan only. */
function writtenArtefact(planStep: StoredPlanStep, artefact: { sql?: string; code?: string }): StepChange {
  if (planStep.kind === 'SQL') return planStep.sql === null && artefact.sql !== undefined ? { sql: artefact.sql } : {};
  return planStep.code === null && artefact.code !== undefined ? { code: artefact.code } : {};
}

/**
 * The error says the database cannot be reached. A failure of another service on the way (the model server,
 * the tenant's API, the sandbox) never is, whatever socket error it carries: the step fails as usual.
 */
function causedByUnavailability(deps: EngineDependencies, error: unknown): boolean {
  const chain: unknown[] = [];
  for (let cause = error; cause !== undefined && cause !== null && chain.length < 8; cause = (cause as { cause?: unknown }).cause) {
    if (cause instanceof AgentError || cause instanceof ApiCallError || cause instanceof SandboxError) return false;
    chain.push(cause);
  }
  return chain.some((cause) => deps.isUnavailable(cause));
}

/**
 * Times one step may stop its run because its own statement met an unreachable database, in this process, before
 * the error counts as the step's: a statement that a DBA terminates, or that crashes the server, each time it
 * runs must not be run for ever.
 */
const MAX_OUTAGE_PAUSES_PER_STEP = 5;

const FAILURE_WRITE_DELAYS_MS = [0, 200, 1_000, 5_000];
/** Retries of a transition while the database cannot be reached: from 250 ms, doubling, at most 5 s apart. */
const COMMIT_RETRY_FIRST_MS = 250;
const COMMIT_RETRY_MAX_MS = 5_000;

const CANCELLED_ERROR: StoredStepError = { code: 'CANCELLED', message: 'the execution was cancelled', retryable: false };

/**
 * Runs executions as a step machine: a worker claims an execution's lease, continues from its committed
 * state (the steps that succeeded are not run again), commits each step's outcome, and lets the lease go
 * when the execution finishes or waits for a person. A run that stops (a crash, a shutdown, an outage, a
 * lost lease) leaves the execution for the next holder of its lease.
 */
export class Engine {
  private readonly runs = new Map<string, { controller: AbortController; done: Promise<void> }>();
  /** How often each step (`executionId:index`) stopped its run on an outage, in this process. */
  private readonly outagePauses = new Map<string, number>();
  /** Per tenant, the admission under way in this process (runNextOfTenant), which the next one waits for. */
  private readonly admitting = new Map<string, Promise<void>>();

  constructor(private readonly deps: EngineDependencies) {}

  /** Continues the execution from its committed state if its lease can be taken; does nothing otherwise. */
  run(executionId: string): Promise<void> {
    const active = this.runs.get(executionId);
    if (active) return active.done;
    const { deps } = this;
    return this.start(executionId, async () => {
      try {
        return await deps.leases.claim(executionId, deps.workerId, deps.settings.leaseTtlMs);
      } catch (error) {
        if (!causedByUnavailability(deps, error)) throw error;
        deps.logger.warn({ err: error, executionId }, 'cannot claim the execution while the database is unavailable; it is taken again later');
        return null;
      }
    });
  }

  /**
   * Claims the tenant's next execution under its cap across the cluster (TenantAdmission) and runs it: the run once
   * claimed, or what the admission answered ('at-capacity', or null when the tenant has nothing to take).
   */
  runNextOfTenant(tenantId: string, maxRunning: number): Promise<{ executionId: string; done: Promise<void> } | 'at-capacity' | null> {
    // One admission of a tenant at a time in this process: each one's run is registered before the next one reads
    // which leases of this worker are runs here (a lease of its own that no run holds is work to take up again).
    const previous = this.admitting.get(tenantId);
    const turn = previous ? previous.then(() => this.admitNext(tenantId, maxRunning)) : this.admitNext(tenantId, maxRunning);
    const settled = turn.then(
      () => undefined,
      () => undefined,
    );
    this.admitting.set(tenantId, settled);
    void settled.then(() => {
      if (this.admitting.get(tenantId) === settled) this.admitting.delete(tenantId);
    });
    return turn;
  }

  private async admitNext(
    tenantId: string,
    maxRunning: number,
  ): Promise<{ executionId: string; done: Promise<void> } | 'at-capacity' | null> {
    const { deps } = this;
    if (!deps.admission) throw new Error('runNextOfTenant needs a TenantAdmission');
    const claim = await deps.admission.claimNextOfTenant(tenantId, deps.workerId, deps.settings.leaseTtlMs, {
      maxRunning,
      runningHere: this.runningIds(),
    });
    if (claim === null || claim === 'at-capacity') return claim;
    const executionId = claim.execution.id;
    // Started here meanwhile (a cancel's run): the newer claim fences the older run's commits, so this one goes on.
    return { executionId, done: this.start(executionId, () => Promise.resolve(claim)) };
  }

  private start(executionId: string, claim: () => Promise<ClaimedExecution | null>): Promise<void> {
    const controller = new AbortController();
    const entry = { controller, done: Promise.resolve() };
    entry.done = this.claimAndDrive(executionId, claim, controller).finally(() => {
      if (this.runs.get(executionId) === entry) this.runs.delete(executionId);
    });
    this.runs.set(executionId, entry);
    return entry.done;
  }

  private async claimAndDrive(
    executionId: string,
    claimLease: () => Promise<ClaimedExecution | null>,
    controller: AbortController,
  ): Promise<void> {
    const { deps } = this;
    const claim = await claimLease();
    if (!claim) return;
    const { execution } = claim;
    const pauses = {
      count: (index: number) => this.outagePauses.get(`${executionId}:${index}`) ?? 0,
      add: (index: number) => this.outagePauses.set(`${executionId}:${index}`, (this.outagePauses.get(`${executionId}:${index}`) ?? 0) + 1),
    };
    const run = new Run(deps, claim, controller, pauses);
    await withLogContext({ correlationId: execution.correlationId, executionId, tenantId: execution.tenantId }, () =>
      inSpan('stepcast.execution', { attributes: () => ({ 'stepcast.execution.resumed': claim.resumed }) }, async (span) => {
        await run.drive();
        span.setAttribute('stepcast.execution.status', run.executionStatusNow);
      }),
    );
    if (run.finished) for (const key of this.outagePauses.keys()) if (key.startsWith(`${executionId}:`)) this.outagePauses.delete(key);
  }

  /** The executions this process runs now. */
  runningIds(): string[] {
    return [...this.runs.keys()];
  }

  /** Whether this process runs the execution now. */
  isRunning(executionId: string): boolean {
    return this.runs.has(executionId);
  }

  /** Stops the step this process runs for the execution, which then ends CANCELLED; false when it runs none here. */
  cancelRun(executionId: string): boolean {
    const active = this.runs.get(executionId);
    if (!active) return false;
    active.controller.abort(new StepCancelledError());
    return true;
  }

  /** Waits up to timeoutMs for the execution's run in this process to end. */
  async waitForRun(executionId: string, timeoutMs: number): Promise<void> {
    const active = this.runs.get(executionId);
    if (active) await settleWithin([active.done], timeoutMs);
  }

  /**
   * Stops every run in this process without recording anything more, lets their leases go so that the
   * next start (or another worker) continues them at once, and waits up to timeoutMs for them to unwind.
   */
  async stopRuns(timeoutMs: number): Promise<void> {
    for (const { controller } of this.runs.values()) controller.abort(new RunStoppedError('shutdown'));
    await settleWithin(
      [...this.runs.values()].map((run) => run.done),
      timeoutMs,
    );
  }
}

async function settleWithin(promises: Promise<unknown>[], timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.allSettled(promises),
    new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs))),
  ]);
  clearTimeout(timer);
}

type StepEnd = 'next' | 'ended';

/** A change a run commits: a transition, with the step it changes named by index (the run knows its state). */
type RunChange = Omit<Transition, 'lease' | 'step' | 'expectSequence'> & { index?: number; step?: StepChange };

const noop = () => undefined;

const ENDED_STEP: ReadonlySet<string> = new Set(['SUCCEEDED', 'FAILED', 'SKIPPED', 'CANCELLED']);

/** A pending step starts: RUNNING, first attempt. */
const startOf = (step: StoredStep): RunChange => ({
  type: 'STEP_STARTED',
  index: step.index,
  step: { status: 'RUNNING', startedAt: new Date(), attempts: 1 },
});

/**
 * A step that began while its start was still committing (with the step before it's success): its statement runs
 * meanwhile, and nothing of it is committed or published until the start is. `abandon` stops it when the start does
 * not commit.
 */
interface EarlyStart {
  committed: Promise<unknown>;
  abandon: AbortController;
}

/** One worker's run of one execution, from the state it claimed to the end or to a stop. */
class Run {
  private readonly execution: ExecutionRow;
  private readonly lease: LeaseHold;
  private readonly steps: StoredStep[];
  private readonly states = new Map<number, StepSnapshot>();
  private readonly memory: ExecutionMemory;
  private readonly earlier: EarlierStep[] = [];
  private finalResult: unknown[] | null = null;
  private usage: StoredTokenUsage | null;
  private renewTimer: NodeJS.Timeout | undefined;
  private tenant: TenantRow | undefined;
  /** The execution's last sequence and status as this run committed them (the next commit expects them). */
  private lastSequence: number;
  private executionStatus: string;
  /** Transitions that commit with the next one (the execution's start commits with its first step's). */
  private readonly deferred: RunChange[] = [];
  /** Steps begun while their start commits (by index), each awaited by the loop when it comes to the step. */
  private readonly early = new Map<number, Promise<StepEnd>>();
  /** The run's trace context, under which each step's span starts (an early step's too). */
  private traceContext: Context | undefined;
  /** Tries of a commit that met an unreachable database (and were made again): a step begun early tells by it whether its start rode an outage out. */
  private outageRetries = 0;

  constructor(
    private readonly deps: EngineDependencies,
    private readonly claim: ClaimedExecution,
    private readonly controller: AbortController,
    private readonly outagePauses: { count(index: number): number; add(index: number): void },
  ) {
    this.execution = claim.execution;
    this.lease = claim.lease;
    this.steps = claim.steps;
    this.usage = claim.execution.usage;
    this.lastSequence = claim.execution.lastSequence;
    this.executionStatus = claim.execution.status;
    this.memory = new ExecutionMemory(deps.settings.executionMaxBytes);
    for (const step of claim.steps) {
      this.states.set(step.index, snapshotOf(step));
      if (step.status === 'SUCCEEDED') this.keepForLaterSteps(step);
    }
  }

  /** What later steps get from a step that succeeded in an earlier run, rebuilt from the store. */
  private keepForLaterSteps(step: StoredStep): void {
    const records = (step.records ?? []) as JsonRecord[];
    const heapBytes = heapBytesOf(records);
    // The records fitted when the step ran; they are counted, not refused, when a run continues.
    this.memory.adjust(Math.min(heapBytes, this.memory.remaining));
    this.earlier.push({
      index: step.index,
      kind: step.kind,
      queryContext: step.queryContext,
      entity: step.entity,
      recordCount: step.recordCount ?? records.length,
      sample: (step.sample ?? []) as JsonRecord[],
      records,
      columns: step.columns ?? [],
      heapBytes,
    });
    this.finalResult = step.result;
  }

  private get signal(): AbortSignal {
    return this.controller.signal;
  }

  async drive(): Promise<void> {
    const { deps } = this;
    this.traceContext = otelContext.active();
    this.startRenewing();
    try {
      await this.continue();
    } catch (error) {
      await this.stopped(error);
    } finally {
      clearInterval(this.renewTimer);
      // Nothing of a step begun early outlives its run (each is awaited on every path; this is the last guard).
      await Promise.allSettled(this.early.values());
    }
    // A run stopped at shutdown lets its lease go, so the next start resumes it at once; one that stopped on a
    // WAITING execution (claimed for a timeout or a cancel it could not record) lets it go too, so that a
    // decision or the next look for work can take it. A lost lease is not this run's to let go.
    const reason: unknown = this.signal.reason;
    const shutdown = reason instanceof RunStoppedError && reason.why === 'shutdown';
    const leaseLost = reason instanceof RunStoppedError && reason.why === 'lease lost';
    if (shutdown || (this.executionStatus === 'WAITING' && !leaseLost)) {
      await deps.leases.release(this.execution.id, this.lease).catch((error: unknown) => {
        deps.logger.warn({ err: error }, 'could not let the lease go; it lapses on its own');
      });
    }
  }

  /** The run cannot go on: a stop leaves the execution to the lease's next holder; anything else fails it. */
  private async stopped(error: unknown): Promise<void> {
    const { logger } = this.deps;
    if (error instanceof ExecutionNotRunnableError) {
      logger.warn('the lease of this execution was taken over (or it finished elsewhere); this run stops');
    } else if (error instanceof RunStoppedError) {
      logger.info({ why: error.why }, 'run stopped; the execution continues from its last committed step');
    } else if (causedByUnavailability(this.deps, error)) {
      logger.warn({ err: error }, 'the database is unavailable; the execution continues from its last committed step once it is back');
    } else {
      logger.error({ err: error }, 'execution crashed; marking it FAILED');
      await this.failAll({
        code: 'INTERNAL',
        message: `the execution stopped on an unexpected error; the server log has the details under correlation id ${this.execution.correlationId}`,
        retryable: true,
      });
    }
  }

  /**
   * Renews the lease while the run goes on; a lost lease or a cancel stops the running step. A holder that
   * cannot renew for most of a lease stops too: by then another worker may take the execution, and two
   * runs of one step must not overlap (commits are fenced, a program's calls are not).
   */
  private startRenewing(): void {
    const { deps } = this;
    const ttl = deps.settings.leaseTtlMs;
    const every = Math.max(50, Math.floor(ttl / 3));
    let renewedAt = performance.now();
    let failing = false;
    this.renewTimer = setInterval(() => {
      deps.leases.renew(this.execution.id, this.lease, ttl).then(
        (state) => {
          failing = false;
          renewedAt = performance.now();
          if (!state.held) this.controller.abort(new RunStoppedError('lease lost'));
          else if (state.cancelRequested) this.controller.abort(new StepCancelledError());
        },
        (error: unknown) => {
          // Said once per outage, not at every renewal.
          if (!failing) deps.logger.warn({ err: error }, 'could not renew the lease; trying again');
          failing = true;
          if (performance.now() - renewedAt > ttl * 0.8) this.controller.abort(new RunStoppedError('lease lost', { cause: error }));
        },
      );
    }, every);
    this.renewTimer.unref();
    // A stopped run renews no more, even if its step ignores the abort and keeps running.
    this.signal.addEventListener('abort', () => {
      if (this.signal.reason instanceof RunStoppedError) clearInterval(this.renewTimer);
    });
  }

  /**
   * Commits one transition under the lease (or several in a row, in one statement), then publishes them; a cancel
   * it reports stops the run. A transition deferred earlier (the execution's start) goes first, in the same commit.
   * When the database cannot be reached the commit is tried again until it answers (an outcome already computed is
   * not thrown away): it expects the last sequence this run wrote, so a try whose answer was lost never commits twice.
   */
  private async commit(...changes: RunChange[]): Promise<StepUpdate> {
    const all = [...this.deferred.splice(0), ...changes];
    // Each step change applies to the step as the changes before it in the batch leave it.
    const states = new Map<number, StepSnapshot>();
    const transitions = all.map(({ index, step, ...rest }, i): Transition => {
      const before = index === undefined ? undefined : (states.get(index) ?? this.states.get(index)!);
      if (before && index !== undefined) states.set(index, applyStepChange(before, step ?? {}));
      return {
        ...rest,
        ...(i === 0 ? { lease: this.lease, expectSequence: this.lastSequence } : {}),
        step: before && { before, change: step ?? {} },
      };
    });
    for (let delayMs = COMMIT_RETRY_FIRST_MS; ; delayMs = Math.min(delayMs * 2, COMMIT_RETRY_MAX_MS)) {
      try {
        const { updates, cancelRequested } = await this.deps.store.recordTransition(this.execution.id, transitions);
        for (const update of updates) {
          this.lastSequence = update.sequence;
          this.executionStatus = update.status;
          if (update.step) this.states.set(update.step.index, update.step);
          this.deps.bus.publish(update);
        }
        if (cancelRequested && !this.signal.aborted) this.controller.abort(new StepCancelledError());
        return updates.at(-1)!;
      } catch (error) {
        if (!causedByUnavailability(this.deps, error)) throw error;
        if (this.signal.reason instanceof RunStoppedError) throw this.signal.reason;
        this.outageRetries += 1;
        this.deps.logger.warn({ err: error, type: all[0]!.type, retryInMs: delayMs }, 'cannot record the transition yet; trying again');
        await new Promise((resolve) => setTimeout(resolve, delayMs));
      }
    }
  }

  /**
   * What commits with a step's success so that the next step does not cost a commit of its own: the next step's
   * start, or the execution's success after the last step. Nothing when the next step needs a commit of its own
   * (it waits for approval, was rejected) or the run was asked to stop.
   */
  private followOn(after: StoredStep, finalResult: unknown[]): RunChange | undefined {
    if (this.signal.aborted) return undefined;
    const next = this.steps.find((step) => step.index > after.index && !ENDED_STEP.has(this.status(step.index)));
    if (!next) {
      return {
        type: 'EXECUTION_SUCCEEDED',
        releaseLease: true,
        execution: { status: 'SUCCEEDED', finalResult, finishedAt: new Date() },
      };
    }
    const state = this.states.get(next.index)!;
    if (state.status !== 'PENDING' || (next.approval && state.decision === null) || state.decision === 'REJECTED') return undefined;
    return startOf(next);
  }

  /** The execution's status as this run last committed it. */
  get executionStatusNow(): string {
    return this.executionStatus;
  }

  /** The execution ended (or was found ended) in this run. */
  get finished(): boolean {
    return this.executionStatus === 'SUCCEEDED' || this.executionStatus === 'FAILED' || this.executionStatus === 'CANCELLED';
  }

  private status(index: number): string {
    return this.states.get(index)!.status;
  }

  /** Throws the reason the run was stopped for, unless it is a cancel (handled as a step boundary). */
  private throwIfStopped(): void {
    if (this.signal.aborted && !(this.signal.reason instanceof StepCancelledError)) throw this.signal.reason;
  }

  private get cancelRequested(): boolean {
    return this.signal.reason instanceof StepCancelledError || this.execution.cancelRequestedAt !== null;
  }

  private async continue(): Promise<void> {
    const { deps, execution } = this;
    const { settings, logger } = deps;
    this.throwIfStopped();
    if (this.cancelRequested) return this.cancel();
    if (execution.status === 'QUEUED') {
      // Committed with whatever comes next (the first step's start), in one statement.
      this.deferred.push({ type: 'EXECUTION_STARTED', from: ['QUEUED'], execution: { status: 'RUNNING', startedAt: new Date() } });
      logger.info({ steps: this.steps.length }, 'execution started');
    } else if (this.claim.resumed) {
      if (execution.resumes > settings.maxResumes) {
        this.throwIfStopped();
        return this.failAll({
          code: 'INTERRUPTED',
          message: `the execution was interrupted ${execution.resumes} times, more than STEPCAST_MAX_RESUMES (${settings.maxResumes}) allows; a step that stops the server would otherwise run forever`,
          retryable: false,
        });
      }
      if ((await this.resume()) === 'ended') return;
    } else if (execution.status === 'WAITING') {
      if ((await this.approvalTimedOut()) === 'ended') return;
    }
    for (const step of this.steps) {
      // Begun while its start committed: it runs to its end (a cancel or a stop included) on its own.
      const early = this.early.get(step.index);
      if (early) {
        this.early.delete(step.index);
        if ((await early) === 'ended') return;
        continue;
      }
      this.throwIfStopped();
      if (this.signal.aborted) return this.cancel();
      const status = this.status(step.index);
      if (ENDED_STEP.has(status)) continue;
      if (status === 'WAITING') return this.letGo('still waiting for approval');
      if (status === 'PENDING') {
        const state = this.states.get(step.index)!;
        if (step.approval && state.decision === null) return this.waitForApproval(step);
        if (state.decision === 'REJECTED') {
          const end = await this.failStep(step, {
            code: 'REJECTED',
            message: `step ${step.index} was rejected by ${state.decidedBy ?? 'a person'}${state.decisionComment ? `: ${state.decisionComment}` : ''}`,
            retryable: false,
          });
          if (end === 'ended') return;
          continue;
        }
        await this.commit(startOf(step));
      }
      if ((await this.runStepInSpan(step)) === 'ended') return;
    }
    // The last step's success committed the execution's too, unless a stop kept it apart.
    if (this.executionStatus === 'SUCCEEDED') {
      logger.info('execution succeeded');
      return;
    }
    // A cancel that came once every step had ended is too late: the execution succeeded.
    await this.commit({
      type: 'EXECUTION_SUCCEEDED',
      releaseLease: true,
      execution: { status: 'SUCCEEDED', finalResult: this.finalResult, finishedAt: new Date() },
    });
    logger.info('execution succeeded');
  }

  /**
   * Continues after an interruption: the step that was running runs again (attempts + 1), unless it is an API
   * step whose program made a call that is not safe to repeat, which fails INTERRUPTED.
   */
  private async resume(): Promise<StepEnd> {
    const { execution, deps } = this;
    const running = this.steps.find((step) => this.status(step.index) === 'RUNNING');
    const message = `continued after an interruption (${execution.resumes} of at most ${deps.settings.maxResumes})`;
    if (!running) {
      await this.commit({ type: 'EXECUTION_RESUMED', message });
      deps.logger.info({ resumes: execution.resumes }, 'execution resumed between steps');
      return 'next';
    }
    const state = this.states.get(running.index)!;
    if (state.unsafeCalls) {
      await this.commit({ type: 'EXECUTION_RESUMED', message });
      return this.failStep(running, {
        code: 'INTERRUPTED',
        message: `the server stopped while step ${running.index} ran, after its program made a call that is not safe to repeat (not a GET, and not declared idempotent in the tenant's API catalog), so it is not run again`,
        retryable: false,
      });
    }
    await this.commit({
      type: 'EXECUTION_RESUMED',
      message,
      index: running.index,
      step: { attempts: state.attempts + 1, startedAt: new Date() },
    });
    deps.logger.info({ resumes: execution.resumes, stepIndex: running.index }, 'execution resumed; running the interrupted step again');
    return 'next';
  }

  /** A WAITING execution claimed because its approval may have timed out. */
  private async approvalTimedOut(): Promise<StepEnd | 'waiting'> {
    const waiting = this.steps.find((step) => this.status(step.index) === 'WAITING');
    if (!waiting || !this.claim.wakeDue) return 'waiting';
    return this.failStep(
      waiting,
      {
        code: 'APPROVAL_TIMEOUT',
        message: `step ${waiting.index} waited for approval longer than its approvalTimeoutMs (${this.planStep(waiting).approvalTimeoutMs} ms)`,
        retryable: false,
      },
      { from: ['WAITING'], execution: { status: 'RUNNING', wakeInMs: null } },
    );
  }

  private planStep(step: StoredStep): StoredPlanStep {
    return this.execution.plan.steps[step.index - 1]!;
  }

  /** Stops before the step: the execution WAITs for a person, holding no lease, slot or connection. */
  private async waitForApproval(step: StoredStep): Promise<void> {
    const timeoutMs = this.planStep(step).approvalTimeoutMs ?? null;
    await this.commit({
      type: 'STEP_WAITING',
      index: step.index,
      releaseLease: true,
      step: { status: 'WAITING' },
      execution: { status: 'WAITING', wakeInMs: timeoutMs },
    });
    this.deps.logger.info({ stepIndex: step.index, approvalTimeoutMs: timeoutMs }, 'execution waits for approval');
  }

  /** Lets the lease go without a change (a WAITING execution claimed before its time). */
  private async letGo(why: string): Promise<void> {
    await this.deps.leases.release(this.execution.id, this.lease);
    this.deps.logger.debug({ why }, 'lease let go');
  }

  private runStepInSpan(step: StoredStep, early?: EarlyStart): Promise<StepEnd> {
    const attributes = () => ({ 'stepcast.step.index': step.index, 'stepcast.step.kind': step.kind });
    // A child of the run's span, not of the step that began it early.
    return otelContext.with(this.traceContext ?? otelContext.active(), () =>
      inSpan('stepcast.step', { attributes }, async (span) => {
        const end = await this.runStep(step, early);
        if (span.isRecording()) {
          const status = this.status(step.index);
          span.setAttribute('stepcast.step.status', status);
          if (status === 'FAILED') span.setStatus({ code: SpanStatusCode.ERROR, message: this.states.get(step.index)!.error?.code });
        }
        return end;
      }),
    );
  }

  /**
   * A step that may begin while its start commits: a SQL step whose statement the plan gives. It only reads, so a
   * statement whose start then does not commit (a lost lease, a stop) has changed nothing; a step whose agent writes
   * its SQL waits, since a model call is spent for good.
   */
  private beginsEarly(step: StoredStep): boolean {
    const planStep = this.planStep(step);
    return this.deps.settings.beginSqlStepsEarly && planStep.kind === 'SQL' && Boolean(planStep.sql);
  }

  /** Begins `step` while `committed` (its start) is in flight; the loop awaits it. Returns how to abandon it. */
  private beginEarly(step: StoredStep, committed: Promise<unknown>): (reason: unknown) => Promise<void> {
    const begun: EarlyStart = { committed, abandon: new AbortController() };
    const run = this.runStepInSpan(step, begun);
    run.catch(noop);
    this.early.set(step.index, run);
    return async (reason) => {
      begun.abandon.abort(reason);
      this.early.delete(step.index);
      await run.catch(noop);
    };
  }

  private async runStep(step: StoredStep, early?: EarlyStart): Promise<StepEnd> {
    const { deps, execution } = this;
    const { logger, settings } = deps;
    const planStep = this.planStep(step);
    // Read once the start has committed (an early step is still PENDING in this run's state before that).
    const priorAttempts = () => this.states.get(step.index)!.attempts - 1;
    let stepUsage: StoredTokenUsage | null = null;
    const recordUsage = (usage: StoredTokenUsage) => {
      stepUsage = addUsage(stepUsage ?? NO_USAGE, usage);
      this.usage = addUsage(this.usage ?? NO_USAGE, usage);
    };
    // Progress is written one update at a time; messages that arrive while one is being written wait, and only
    // the newest of them is written next, so a program that reports in a tight loop costs a few rows, not one each.
    let progressUpdates = 0;
    // Whether the step's start committed: nothing of the step, its progress included, is written before that, nor at
    // all when it did not (a step begun early whose start failed).
    const started: Promise<boolean> = early ? early.committed.then(() => true, () => false) : Promise.resolve(true);
    let progressWritten: Promise<void> = started.then(noop);
    let newestMessage: string | undefined;
    const reportProgress = (message: string) => {
      const writeQueued = newestMessage !== undefined;
      newestMessage = message.slice(0, settings.maxProgressChars);
      if (writeQueued) return;
      progressWritten = progressWritten
        .then(async () => {
          const text = newestMessage!;
          newestMessage = undefined;
          if (!(await started) || ++progressUpdates > settings.maxProgressUpdates || this.signal.aborted) return;
          await this.commit({ type: 'STEP_PROGRESS', message: text, index: step.index, step: {} });
        })
        .catch((error: unknown) => logger.warn({ err: error, stepIndex: step.index }, 'progress update lost'));
    };
    // stepTimeoutMs limits each statement or program; the model's time has its own limit, and this bounds the whole.
    const boundMs = stepTimeBoundMs(planStep, {
      stepTimeoutMs: execution.options.stepTimeoutMs,
      agentTimeoutMs: settings.agentTimeoutMs,
      sqlRepairRounds: settings.sqlRepairRounds,
    });
    const signal = AbortSignal.any([this.signal, AbortSignal.timeout(boundMs), ...(early ? [early.abandon.signal] : [])]);
    const deadline = Date.now() + boundMs;
    // Before the start's commit can have met an outage: it was sent just now, and an answer takes a turn of the loop.
    const outageRetriesBefore = this.outageRetries;
    const stepMemory = this.memory.forStep(step.index);
    let outcome: StepOutcome;
    try {
      // Read once per run, not once per step: a tenant's row does not change under a running execution.
      this.tenant ??= await deps.tenants.findTenant(execution.tenantId);
      const tenant = this.tenant;
      if (!tenant) throw new Error(`tenant ${execution.tenantId} does not exist`);
      const handler = deps.handlers[step.kind];
      const attempt = (signal: AbortSignal, deadline: number) =>
        withLogContext({ stepIndex: step.index }, () =>
          handler({
            tenant,
            planQuery: execution.plan.query,
            index: step.index,
            step: planStep,
            earlier: this.earlier,
            timeoutMs: execution.options.stepTimeoutMs,
            rowCap: settings.rowCap,
            sampleSize: execution.options.sampleSize,
            recordUsage,
            takeModelCall: () => deps.rateLimits.take(tenant.id, ['modelCalls']),
            reportProgress,
            beforeUnsafeCall: () => this.markUnsafeCalls(step),
            signal,
            deadline,
            memory: stepMemory,
          }),
        );
      try {
        outcome = await attempt(signal, deadline);
      } catch (error) {
        // Begun early, it met an unreachable database that its start's commit rode out (tried again until it answered):
        // once the start has committed, the step runs again, with its whole time, as one begun after its start would have
        // run. An outage its start did not meet is the step's own, as for any step (below).
        if (!early || signal.aborted || !causedByUnavailability(deps, error)) throw error;
        if (!(await started) || this.signal.aborted || this.outageRetries === outageRetriesBefore) throw error;
        stepMemory.discard();
        outcome = await attempt(AbortSignal.any([this.signal, AbortSignal.timeout(boundMs)]), Date.now() + boundMs);
      }
      // Nothing of a step is recorded before its start.
      await early?.committed;
      await progressWritten;
      // A cancel or a stop that came while the step finished wins: its outcome is not recorded.
      if (this.signal.aborted) throw this.signal.reason;
    } catch (error) {
      // A failed step keeps nothing for later steps.
      stepMemory.discard();
      await progressWritten;
      // A step whose start did not commit ends here, with nothing recorded: the run stops on the start's failure.
      await early?.committed;
      if (this.signal.aborted) {
        if (!(this.signal.reason instanceof StepCancelledError)) throw this.signal.reason;
        await this.cancel();
        return 'ended';
      }
      if (causedByUnavailability(deps, error) && this.outagePauses.count(step.index) < MAX_OUTAGE_PAUSES_PER_STEP) {
        this.outagePauses.add(step.index);
        throw new RunStoppedError('database unavailable', { cause: error });
      }
      const stepError = toStoredStepError(error, execution.correlationId);
      if (error instanceof StepFailure) logger.warn({ stepIndex: step.index, error: stepError }, 'step failed');
      else logger.error({ stepIndex: step.index, err: error }, 'step failed unexpectedly');
      const artefact = error instanceof StepFailure ? error.artefact : {};
      return this.failStep(step, stepError, {
        step: {
          ...writtenArtefact(planStep, artefact),
          attempts: priorAttempts() + (artefact.attempts ?? 1),
          logs: artefact.logs ?? null,
          usage: stepUsage,
        },
      });
    }
    const capped = capRecords(outcome.records, settings.resultMaxBytes);
    const sample = sampleOf(outcome.records, execution.options.sampleSize, settings.sampleMaxBytes);
    const succeeded: RunChange = {
      type: 'STEP_SUCCEEDED',
      index: step.index,
      execution: { successfulStepsDelta: 1, usage: this.usage },
      step: {
        status: 'SUCCEEDED',
        ...writtenArtefact(planStep, outcome),
        recordCount: outcome.records.length,
        columns: outcome.columns,
        sample,
        result: capped.kept,
        // Every record, for a run that continues after a crash; `result` already holds them when none was cut.
        records: capped.truncated ? outcome.records : null,
        truncated: outcome.truncated || capped.truncated,
        attempts: priorAttempts() + outcome.attempts,
        usage: stepUsage,
        logs: outcome.logs ?? null,
        finishedAt: new Date(),
      },
    };
    // After the step's end is stamped, so that what follows it (the next start, the execution's end) is never earlier.
    const followOn = this.followOn(step, capped.kept);
    // Before the commit: a next step begun early reads these records.
    this.earlier.push({
      index: step.index,
      kind: step.kind,
      queryContext: step.queryContext,
      entity: step.entity,
      recordCount: outcome.records.length,
      sample,
      records: outcome.records,
      columns: outcome.columns,
      heapBytes: stepMemory.takenBytes,
    });
    const committing = followOn ? this.commit(succeeded, followOn) : this.commit(succeeded);
    const next = followOn?.type === 'STEP_STARTED' ? this.steps.find((later) => later.index === followOn.index) : undefined;
    // Not when the commit carries every record of the step (its result was cut): the records' JSON would stay in memory
    // beside the next step's read.
    // The next step's statement goes out while its start commits: the commit's round trip and the statement's overlap.
    const abandon = next && !capped.truncated && this.beginsEarly(next) ? this.beginEarly(next, committing) : undefined;
    try {
      await committing;
    } catch (error) {
      await abandon?.(error);
      throw error;
    }
    logger.info({ stepIndex: step.index, recordCount: outcome.records.length }, 'step succeeded');
    this.finalResult = capped.kept;
    return 'next';
  }

  /** Records, before the call is made, that the step's program makes a call that is not safe to repeat. */
  private async markUnsafeCalls(step: StoredStep): Promise<void> {
    // Every such call, not only the first: each one is a check that this run still holds the lease.
    try {
      await this.deps.store.markUnsafeCalls(this.execution.id, this.lease, step.index);
    } catch (error) {
      // The call is not made; the run stops (and is resumed) rather than the step failing for it.
      if (error instanceof ExecutionNotRunnableError) this.controller.abort(new RunStoppedError('lease lost', { cause: error }));
      else if (causedByUnavailability(this.deps, error)) this.controller.abort(new RunStoppedError('database unavailable', { cause: error }));
      throw error;
    }
    this.states.set(step.index, { ...this.states.get(step.index)!, unsafeCalls: true });
  }

  /** The step fails; a critical one ends the execution (the rest are skipped). */
  private async failStep(
    step: StoredStep,
    error: StoredStepError,
    extra: { step?: StepChange; from?: Transition['from']; execution?: Transition['execution'] } = {},
  ): Promise<StepEnd> {
    await this.commit({
      type: 'STEP_FAILED',
      index: step.index,
      from: extra.from,
      execution: { failedStepsDelta: 1, usage: this.usage, ...extra.execution },
      step: { status: 'FAILED', error, finishedAt: new Date(), ...extra.step },
    });
    if (!step.critical) return 'next';
    await this.skipRemaining();
    await this.commit({
      type: 'EXECUTION_FAILED',
      releaseLease: true,
      execution: { status: 'FAILED', error, finalResult: this.finalResult, finishedAt: new Date() },
    });
    this.deps.logger.info({ failedStep: step.index }, 'execution failed');
    return 'ended';
  }

  private async skipRemaining(): Promise<void> {
    for (const step of this.steps) {
      if (this.status(step.index) !== 'PENDING') continue;
      await this.commit({ type: 'STEP_SKIPPED', index: step.index, step: { status: 'SKIPPED', finishedAt: new Date() } });
    }
  }

  /** The running (or waiting) step becomes CANCELLED, the rest SKIPPED, then EXECUTION_CANCELLED. */
  private async cancel(): Promise<void> {
    for (const step of this.steps) {
      const status = this.status(step.index);
      if (status !== 'RUNNING' && status !== 'WAITING') continue;
      await this.commit({
        type: 'STEP_CANCELLED',
        index: step.index,
        step: { status: 'CANCELLED', error: CANCELLED_ERROR, finishedAt: new Date() },
      });
    }
    await this.skipRemaining();
    await this.commit({
      type: 'EXECUTION_CANCELLED',
      releaseLease: true,
      execution: { status: 'CANCELLED', error: CANCELLED_ERROR, finalResult: this.finalResult, finishedAt: new Date() },
    });
    this.deps.logger.info('execution cancelled');
  }

  /**
   * Ends an execution that cannot go on: the running step fails, the rest are skipped. Retried a few
   * times, since the store may be what failed; a lease that was taken over ends the attempt.
   */
  private async failAll(error: StoredStepError): Promise<void> {
    for (const delay of FAILURE_WRITE_DELAYS_MS) {
      await new Promise((resolve) => setTimeout(resolve, delay));
      try {
        for (const step of this.steps) {
          const status = this.status(step.index);
          if (status !== 'RUNNING' && status !== 'WAITING') continue;
          await this.commit({
            type: 'STEP_FAILED',
            index: step.index,
            execution: { failedStepsDelta: 1 },
            step: { status: 'FAILED', error, attempts: Math.max(this.states.get(step.index)!.attempts, 1), finishedAt: new Date() },
          });
        }
        await this.skipRemaining();
        await this.commit({
          type: 'EXECUTION_FAILED',
          releaseLease: true,
          execution: { status: 'FAILED', error, finalResult: this.finalResult, finishedAt: new Date() },
        });
        return;
      } catch (writeError) {
        if (writeError instanceof ExecutionNotRunnableError || writeError instanceof RunStoppedError) return;
        this.deps.logger.error({ err: writeError }, 'could not record the failure of the execution; trying again');
      }
    }
  }
}
