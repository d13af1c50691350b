import { setMaxListeners } from 'node:events';
import { AgentError, type LlmClient } from '../agents/llm-client.js';
import { planQuery as planWithModel } from '../agents/planner.js';
import { describeCatalog, type ApiOperation } from '../api/catalog.js';
import type { Config, InputLimits, SandboxConfig, TenantLimits } from '../config.js';
import type { ExecutionRow, StepRow, StepState, StoredPlan, StoredTokenUsage, TenantRow } from '../db/tables.js';
import type { Logger } from '../logger.js';
import type { Dispatcher, EnqueueInTransaction } from './dispatcher.js';
import { Engine } from './engine.js';
import { ExecutionNotFoundError, InvalidArgumentError, PlanValidationError, RateLimitedError } from './errors.js';
import { IdempotentSubmits, planRequest, queryRequest } from './idempotency.js';
import {
  correlationIdProblems,
  queryProblems,
  validateExecuteOptions,
  validatePlan,
  type ExecuteOptionsInput,
  type PlanDefaults,
  type PlanInput,
} from './plan.js';
import { createMemoryTenantLimits, rateLimitSettings, type BudgetName, type TenantRateLimits } from './rate-limiter.js';
import { isFinished, type ExecutionStatus, type StepKind, type StepUpdate } from './step-update.js';
import type { StepUpdateBus } from './step-update-bus.js';
import { streamStepUpdates, type StreamAccess, type StreamDenied } from './step-update-stream.js';
import type { StepHandler } from './steps/step-handler.js';
import { snapshotOf } from './step-snapshots.js';
import {
  ExecutionNotRunnableError,
  type ExecutionDetails,
  type ExecutionPage,
  type ExecutionPageRequest,
  type ExecutionStore,
  type ExecutionSummary,
  type StepKey,
  type LeaseProvider,
  type TenantAdmission,
  type TenantDirectory,
} from './store.js';
import type { TenantKnowledge } from './tenant-knowledge.js';

export type ExecutorSettings = Config['executor'] & {
  sqlRepairRounds: number;
  /** One agent call's time limit (STEPCAST_AGENT_TIMEOUT_MS), for the bound on a step's whole time. */
  agentTimeoutMs: number;
  sandbox: SandboxConfig;
  tenantLimits: TenantLimits;
  inputLimits: InputLimits;
  /** See EngineSettings.beginSqlStepsEarly; on where the tenants' statements have connections of their own. */
  beginSqlStepsEarly?: boolean;
};

const STREAM_CLOSE_TIMEOUT_MS = 2_000;
/** Executions (on a cluster's worker, tenants) taken up per look for work; the rest are found by the next look. */
const RECOVERY_BATCH = 500;

/** What a refusal by each budget tells the client it may do again after the wait. */
const BUDGET_ACTIONS: Record<BudgetName, string> = {
  executions: 'start another execution',
  modelCalls: 'call a model again (planQuery, executeQuery, agent steps)',
};

function describeApiCatalog(operations: ApiOperation[] | null): string | null {
  return operations && operations.length > 0 ? describeCatalog(operations) : null;
}

/** A question for the planner must pass the same checks as a plan's query (PlanValidationError). */
function checkQuery(query: string, limits: InputLimits): void {
  const problems = queryProblems(query, limits);
  if (problems.length > 0) throw new PlanValidationError(problems);
}

/** What the composition root (src/app.ts) hands the executor: storage, bus, dispatcher and step handlers. */
export interface ExecutorDependencies {
  store: ExecutionStore;
  leases: LeaseProvider;
  tenants: TenantDirectory;
  bus: StepUpdateBus;
  handlers: Record<StepKind, StepHandler>;
  /** Builds the dispatcher that decides when each queued execution runs; it is handed the engine's run, and the engine. */
  dispatcher: (run: (executionId: string) => Promise<void>, engine: Engine) => Dispatcher;
  /** Admission under a tenant's cap across a cluster's workers (the cluster dispatcher's). */
  admission?: TenantAdmission;
  /** What the planner is told of a tenant (its data schema and API catalog). */
  knowledge: TenantKnowledge;
  llm: LlmClient;
  settings: ExecutorSettings;
  /**
   * The tenants' budgets (executions, model calls). Default: this process's own token buckets, from
   * settings.tenantLimits; a cluster passes one shared by its processes (createRedisTenantLimits).
   */
  rateLimits?: TenantRateLimits;
  logger: Logger;
  /** This process, as the owner of the leases it takes (unique per process). */
  workerId: string;
  /** The store cannot be reached (the database is down): runs stop and are continued later. */
  isUnavailable(error: unknown): boolean;
  /** Builds what settles idempotency keys (src/executor/idempotency.ts), given what it needs of the executor. */
  idempotency(executor: {
    findExecution: (tenantId: string, executionId: string) => Promise<ExecutionRow | undefined>;
    logger: Logger;
    shutdown: AbortSignal;
  }): IdempotentSubmits;
}

/** How long a cancel waits for the run it stopped to record the end, so that it can answer CANCELLED. */
const CANCEL_WAIT_MS = 2_000;
/** How often a cancel reads the execution while another process of a cluster ends it. */
const CANCEL_POLL_MS = 50;
/** How long a shutdown waits for runs it stopped to unwind after the grace period. */
const STOP_RUNS_WAIT_MS = 2_000;

/** The executor's whole surface: what the GraphQL layer (or any other front end) may ask of it. */
export class Executor {
  private readonly store: ExecutionStore;
  private readonly leases: LeaseProvider;
  private readonly bus: StepUpdateBus;
  private readonly dispatcher: Dispatcher;
  private readonly engine: Engine;
  private readonly shutdownController = new AbortController();
  /** One entry per open stepUpdates stream; `drained` is called once the last closes (stop() waits for it). */
  private readonly openStreams = { entries: new Set<object>(), drained: undefined as (() => void) | undefined };
  private readonly knowledge: TenantKnowledge;
  private readonly llm: LlmClient;
  private readonly settings: ExecutorSettings;
  private readonly logger: Logger;
  private readonly tenants: TenantDirectory;
  private readonly admission: TenantAdmission | undefined;
  /** This process, as the owner of the leases it takes. */
  readonly workerId: string;
  private readonly rateLimits: TenantRateLimits;
  private sweeper: NodeJS.Timeout | undefined;
  private sweepFailing = false;
  private stopped = false;
  private readonly idempotency: IdempotentSubmits;

  constructor(deps: ExecutorDependencies) {
    const { settings, logger } = deps;
    this.store = deps.store;
    this.leases = deps.leases;
    this.bus = deps.bus;
    this.knowledge = deps.knowledge;
    this.llm = deps.llm;
    this.settings = settings;
    this.logger = logger;
    this.tenants = deps.tenants;
    this.admission = deps.admission;
    this.workerId = deps.workerId;
    this.rateLimits = deps.rateLimits ?? createMemoryTenantLimits(rateLimitSettings(settings.tenantLimits));
    // Every open stepUpdates stream listens for shutdown on this one signal.
    setMaxListeners(0, this.shutdownController.signal);
    this.idempotency = deps.idempotency({
      findExecution: (tenantId, executionId) => this.store.findExecution(tenantId, executionId),
      logger,
      shutdown: this.shutdownController.signal,
    });
    this.engine = new Engine({
      store: deps.store,
      leases: deps.leases,
      bus: deps.bus,
      handlers: deps.handlers,
      tenants: deps.tenants,
      rateLimits: this.rateLimits,
      logger,
      workerId: deps.workerId,
      isUnavailable: deps.isUnavailable,
      ...(deps.admission ? { admission: deps.admission } : {}),
      settings: {
        rowCap: settings.rowCap,
        resultMaxBytes: settings.resultMaxBytes,
        executionMaxBytes: settings.executionMaxBytes,
        sampleMaxBytes: settings.sampleMaxBytes,
        maxProgressUpdates: settings.sandbox.maxProgressReports,
        maxProgressChars: settings.sandbox.maxProgressChars,
        leaseTtlMs: settings.leaseTtlMs,
        maxResumes: settings.maxResumes,
        agentTimeoutMs: settings.agentTimeoutMs,
        sqlRepairRounds: settings.sqlRepairRounds,
        beginSqlStepsEarly: settings.beginSqlStepsEarly ?? false,
      },
    });
    this.dispatcher = deps.dispatcher((executionId) => this.engine.run(executionId), this.engine);
  }

  /** A new execution to its worker: stored with its job when the queue is durable (enqueueInTransaction), so none more. */
  private enqueueStored(executionId: string, tenantId: string): void {
    this.dispatcher.enqueue(executionId, tenantId, { withJob: this.dispatcher.enqueueInTransaction !== undefined });
  }

  /**
   * Queues every execution a worker should take now: QUEUED ones, RUNNING ones whose holder stopped
   * renewing their lease (a crash: they resume from their last committed step), and WAITING ones whose
   * approval timed out or that were cancelled.
   */
  async recover(): Promise<void> {
    if (this.admission && this.dispatcher.offer) {
      // A cluster's worker admits by tenant: each tenant with work gets its turn, not only the tenants of the oldest
      // executions (a tenant at its cap may have any number of those waiting).
      const tenants = await this.admission.listTenantsWithWork(this.workerId, RECOVERY_BATCH, this.engine.runningIds());
      for (const { tenantId, ...work } of tenants) this.dispatcher.offer(tenantId, work);
      return;
    }
    for (const execution of await this.leases.listClaimable(this.workerId, RECOVERY_BATCH)) {
      // This worker's own running executions are listed too (their lease is its own): they are not work to take.
      if (!this.engine.isRunning(execution.id)) this.dispatcher.enqueue(execution.id, execution.tenantId);
    }
  }

  /**
   * Recovers now (throwing when that fails, so that the caller can try again), then keeps looking for work
   * that lapsed leases or timers free, every STEPCAST_RECOVERY_INTERVAL_MS.
   */
  async start(): Promise<void> {
    if (this.sweeper || this.stopped) return;
    await this.recover();
    const every = this.settings.recoveryIntervalMs;
    if (every === 0) return;
    this.sweeper = setInterval(() => {
      this.recover().then(
        () => {
          if (this.sweepFailing) this.logger.info('the store answers again; continuing executions');
          this.sweepFailing = false;
        },
        (error: unknown) => {
          if (!this.sweepFailing) this.logger.warn({ err: error }, 'cannot look for executions to continue; trying again');
          this.sweepFailing = true;
        },
      );
    }, every);
    this.sweeper.unref();
  }

  findTenant(tenantId: string): Promise<TenantRow | undefined> {
    return this.tenants.findTenant(tenantId);
  }

  /**
   * Validates the plan, takes one of the tenant's execution tokens (RateLimitedError when there is
   * none), and stores it as a QUEUED execution for the dispatcher. Bad input spends no token. With an
   * idempotency key already used, it answers with that key's execution and takes no token (src/executor/idempotency.ts).
   */
  async submitPlan(tenantId: string, plan: PlanInput, options?: ExecuteOptionsInput | null): Promise<ExecutionRow> {
    const validated = validatePlan(plan, options, this.planDefaults());
    const submitted = await this.idempotency.submit(tenantId, validated.idempotencyKey, planRequest(validated, options), {
      spendTokens: () => this.takeTokens(tenantId, ['executions']),
      create: (claim) => this.store.createExecution(tenantId, validated, { claim, ...this.enqueueing() }),
    });
    if ('replayed' in submitted) return submitted.replayed;
    const { execution } = submitted.created;
    this.logger.info(
      { correlationId: execution.correlationId, executionId: execution.id, tenantId, steps: execution.totalSteps },
      'execution queued',
    );
    this.enqueueStored(execution.id, tenantId);
    return execution;
  }

  /**
   * Takes one token from each budget, or none: when any is empty, RateLimitedError with the longest wait.
   * Per process or per cluster, as the rate limits given to the executor count.
   */
  private async takeTokens(tenantId: string, budgets: readonly BudgetName[]): Promise<void> {
    if (budgets.length === 0) return;
    const decision = await this.rateLimits.take(tenantId, budgets);
    if (decision.allowed) return;
    const { budget, retryAfterSeconds } = decision;
    this.logger.info({ tenantId, budget, retryAfterSeconds }, 'request refused: tenant rate limit');
    throw new RateLimitedError(retryAfterSeconds, BUDGET_ACTIONS[budget]);
  }

  /** What asking the planner takes: a model call, when there is a model to call (else the planner says so). */
  private plannerBudgets(): BudgetName[] {
    return this.llm.configured ? ['modelCalls'] : [];
  }

  /**
   * Asks the planner for a plan answering the query, checked like a client's plan; stores nothing.
   * It takes one of the tenant's model calls once the question passes its checks.
   */
  async planQuery(tenantId: string, query: string, signal?: AbortSignal): Promise<StoredPlan> {
    checkQuery(query, this.settings.inputLimits);
    await this.takeTokens(tenantId, this.plannerBudgets());
    return (await this.planWithUsage(tenantId, query, signal)).plan;
  }

  /** Asks the planner; the query must have passed checkQuery. `signal` stops it (its client went away). */
  private async planWithUsage(tenantId: string, query: string, signal?: AbortSignal): Promise<{ plan: StoredPlan; usage: StoredTokenUsage }> {
    const tenant = await this.findTenant(tenantId);
    if (!tenant) throw new Error(`tenant ${tenantId} does not exist`);
    const answer = await planWithModel(this.llm, {
      query,
      dataSchema: await this.knowledge.promptDataSchema(tenant),
      apiCatalog: describeApiCatalog(this.knowledge.apiCatalog(tenant)),
      signal,
    });
    try {
      return { plan: validatePlan({ query, ...answer.value }, {}, this.planDefaults()).plan, usage: answer.usage };
    } catch (error) {
      if (!(error instanceof PlanValidationError)) throw error;
      throw new AgentError('AGENT_OUTPUT_INVALID', `the planner wrote a plan that cannot run: ${error.message}`, false);
    }
  }

  /**
   * Plans the query, then executes the plan; the plan is the execution's first update (PLAN_CREATED).
   * It takes an execution token, like executePlan, and a model call, both or neither, from the moment the
   * question passes its checks (planning costs model tokens even when the planner's answer cannot run).
   * With an idempotency key, the planner runs once per key: a second request waits for the first's execution.
   */
  async executeQuery(tenantId: string, query: string, options?: ExecuteOptionsInput | null): Promise<ExecutionRow> {
    const validatedOptions = validateExecuteOptions(options, this.planDefaults());
    checkQuery(query, this.settings.inputLimits);
    const { idempotencyKey } = validatedOptions;
    const submitted = await this.idempotency.submitPlanned(tenantId, idempotencyKey, queryRequest(query, validatedOptions, options), {
      spendTokens: () => this.takeTokens(tenantId, ['executions', ...this.plannerBudgets()]),
      create: async (claim) => {
        const { plan, usage } = await this.planWithUsage(tenantId, query);
        return this.store.createExecution(tenantId, { ...validatedOptions, plan }, { plannerUsage: usage, claim, ...this.enqueueing() });
      },
    });
    if ('replayed' in submitted) return submitted.replayed;
    const { execution, planCreated } = submitted.created;
    if (planCreated) this.bus.publish(planCreated);
    this.logger.info(
      { correlationId: execution.correlationId, executionId: execution.id, tenantId, steps: execution.totalSteps },
      'planned execution queued',
    );
    this.enqueueStored(execution.id, tenantId);
    return execution;
  }

  /** A durable queue's job is stored with the execution, in its transaction. */
  private enqueueing(): { enqueue?: EnqueueInTransaction } {
    const enqueue = this.dispatcher.enqueueInTransaction;
    return enqueue ? { enqueue } : {};
  }

  private planDefaults(): PlanDefaults {
    return {
      sampleSize: this.settings.defaultSampleSize,
      stepTimeoutMs: Math.min(this.settings.stepTimeoutMs, this.settings.maxStepTimeoutMs),
      maxStepTimeoutMs: this.settings.maxStepTimeoutMs,
      limits: this.settings.inputLimits,
    };
  }

  findExecution(tenantId: string, executionId: string): Promise<ExecutionRow | undefined> {
    return this.store.findExecution(tenantId, executionId);
  }

  /** A page of the tenant's history; InvalidArgumentError for a correlationId filter no run could carry. */
  async listExecutions(tenantId: string, request: ExecutionPageRequest): Promise<ExecutionPage> {
    // An empty correlationId filters nothing; any other must be one a run could carry.
    const correlationId = request.filter?.correlationId;
    const problems = correlationId ? correlationIdProblems('filter.correlationId', correlationId, this.settings.inputLimits) : [];
    if (problems.length > 0) throw new InvalidArgumentError(problems.join('; '));
    return this.store.listExecutions(tenantId, request);
  }

  listSteps(tenantId: string, executionId: string): Promise<StepRow[]> {
    return this.store.listSteps(executionId, tenantId);
  }

  /** The steps of many executions of the tenant, each execution's in index order (one read of the store). */
  listExecutionDetails(tenantId: string, executionIds: readonly string[]): Promise<Map<string, ExecutionDetails>> {
    return this.store.listExecutionDetails(tenantId, executionIds);
  }

  /** Some of the tenant's executions, without plan and final result (one read of the store). */
  listExecutionSummaries(tenantId: string, executionIds: readonly string[]): Promise<Map<string, ExecutionSummary>> {
    return this.store.listExecutionSummaries(tenantId, executionIds);
  }

  async listStepsOfExecutions(tenantId: string, executionIds: readonly string[]): Promise<Map<string, StepRow[]>> {
    const byExecution = new Map<string, StepRow[]>(executionIds.map((id) => [id, []]));
    for (const step of await this.store.listStepsOfExecutions(tenantId, executionIds)) byExecution.get(step.executionId)?.push(step);
    return byExecution;
  }

  /** Some of the tenant's steps, by execution and index, without records and result (one read of the store). */
  findSteps(tenantId: string, steps: readonly StepKey[]): Promise<StepState[]> {
    return this.store.findSteps(tenantId, steps);
  }

  findStepResult(tenantId: string, executionId: string, index: number): Promise<unknown[] | null> {
    return this.store.findStepResult(tenantId, executionId, index);
  }

  async stepUpdates(
    access: StreamAccess,
    executionId: string,
    afterSequence: number,
  ): Promise<AsyncIterable<StepUpdate | StreamDenied>> {
    const execution = await this.store.findExecution(access.tenantId, executionId);
    if (!execution) throw new ExecutionNotFoundError(executionId);
    if (afterSequence > execution.lastSequence) {
      throw new InvalidArgumentError(
        `afterSequence ${afterSequence} is beyond the last update of this execution (${execution.lastSequence})`,
      );
    }
    // A plain entry, not a promise and its resolver per stream: a thousand idle streams are held at once.
    const entry = {};
    const openStreams = this.openStreams;
    openStreams.entries.add(entry);
    return streamStepUpdates({
      store: this.store,
      bus: this.bus,
      executionId,
      afterSequence,
      shutdown: this.shutdownController.signal,
      access,
      readBefore: { status: execution.status, lastSequence: execution.lastSequence },
      // A shorthand method: tsx names a `key: () => …` function with Object.defineProperty, at ~250 bytes per stream.
      onClose() {
        openStreams.entries.delete(entry);
        if (openStreams.entries.size === 0) openStreams.drained?.();
      },
    });
  }

  /** Executions this process runs now. */
  get runningExecutionCount(): number {
    return this.engine.runningIds().length;
  }

  /** stepUpdates streams open right now (one per subscription). */
  get openStreamCount(): number {
    return this.openStreams.entries.size;
  }

  /**
   * Cancels an unfinished execution of the tenant: a QUEUED or WAITING one ends CANCELLED at once; the running
   * step of a RUNNING one is stopped, and the run records the end. The request is stored first, so a holder
   * that crashes honours it after its restart. A finished execution is returned as it is.
   */
  async cancelExecution(tenantId: string, executionId: string): Promise<ExecutionRow> {
    const requested = await this.store.requestCancel(tenantId, executionId);
    if (!requested) throw new ExecutionNotFoundError(executionId);
    if (isFinished(requested.status as ExecutionStatus)) return requested;
    this.logger.info({ correlationId: requested.correlationId, executionId, tenantId }, 'cancel requested');
    if (this.stopped) return requested;
    // Runs here stop at once; one nobody runs is claimed and ended now, without waiting for a slot. A run in
    // another process sees the request at its next transition or lease renewal.
    const deadline = Date.now() + CANCEL_WAIT_MS;
    if (!this.engine.cancelRun(executionId)) {
      // Run by another process of a cluster: that worker is told at once, and ends it.
      this.dispatcher.cancelElsewhere?.(executionId);
      void this.engine.run(executionId);
    }
    await this.engine.waitForRun(executionId, CANCEL_WAIT_MS);
    let current = await this.store.findExecution(tenantId, executionId);
    if (this.dispatcher.cancelElsewhere) current = await this.untilFinished(tenantId, executionId, current, deadline);
    // A run that was letting the execution go (it had just started to wait for approval) did not end it: this does.
    if (current && (current.status === 'QUEUED' || current.status === 'WAITING') && !this.engine.isRunning(executionId)) {
      void this.engine.run(executionId);
      await this.engine.waitForRun(executionId, Math.max(0, deadline - Date.now()));
      current = await this.store.findExecution(tenantId, executionId);
    }
    return current ?? requested;
  }

  /** Reads the execution until it has finished (another process records the end), or the deadline passes. */
  private async untilFinished(
    tenantId: string,
    executionId: string,
    current: ExecutionRow | undefined,
    deadline: number,
  ): Promise<ExecutionRow | undefined> {
    while (current && !isFinished(current.status as ExecutionStatus) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, CANCEL_POLL_MS));
      current = await this.store.findExecution(tenantId, executionId);
    }
    return current;
  }

  /** A person lets the WAITING step run (APPROVED) or fails it (REJECTED); the decision is stored on the step. */
  async decideStep(
    tenantId: string,
    decision: { executionId: string; index: number; approve: boolean; comment: string | null; decidedBy: string },
  ): Promise<ExecutionRow> {
    const { executionId, index } = decision;
    const execution = await this.store.findExecution(tenantId, executionId);
    if (!execution) throw new ExecutionNotFoundError(executionId);
    const step = (await this.store.listSteps(executionId, tenantId)).find((s) => s.index === index);
    if (!step || execution.status !== 'WAITING' || step.status !== 'WAITING') {
      throw new InvalidArgumentError(
        `step ${index} of execution ${executionId} is not waiting for approval (the execution is ${execution.status}${step ? `, the step ${step.status}` : ', and has no such step'})`,
      );
    }
    try {
      const { update } = await this.store.recordTransition(executionId, {
        type: decision.approve ? 'STEP_APPROVED' : 'STEP_REJECTED',
        from: ['WAITING'],
        execution: { status: 'RUNNING', wakeInMs: null },
        step: {
          before: snapshotOf(step),
          change: {
            status: 'PENDING',
            decision: decision.approve ? 'APPROVED' : 'REJECTED',
            decidedBy: decision.decidedBy,
            decidedAt: new Date(),
            decisionComment: decision.comment,
          },
        },
      });
      this.bus.publish(update);
    } catch (error) {
      if (!(error instanceof ExecutionNotRunnableError)) throw error;
      throw new InvalidArgumentError(`step ${index} of execution ${executionId} is no longer waiting for approval`);
    }
    this.logger.info(
      { correlationId: execution.correlationId, executionId, tenantId, stepIndex: index, approved: decision.approve },
      'approval decided',
    );
    this.dispatcher.enqueue(executionId, tenantId);
    return (await this.store.findExecution(tenantId, executionId))!;
  }

  /**
   * Ends open subscriptions, waits up to graceMs for running executions, then stops the rest without
   * recording anything more: their leases are let go, and the next start (or another worker) continues them.
   */
  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweeper);
    const unfinished = await this.dispatcher.stop(graceMs);
    if (unfinished.length > 0) {
      this.logger.warn({ executionIds: unfinished }, 'executions still running at shutdown; they continue at the next start');
    }
    // Also the runs a cancel started outside the dispatcher.
    await this.engine.stopRuns(STOP_RUNS_WAIT_MS);
    this.shutdownController.abort();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((resolve) => {
        if (this.openStreams.entries.size === 0) resolve();
        else this.openStreams.drained = resolve;
      }),
      new Promise((resolve) => (timer = setTimeout(resolve, STREAM_CLOSE_TIMEOUT_MS))),
    ]);
    clearTimeout(timer);
  }
}
