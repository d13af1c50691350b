import { setMaxListeners } from 'node:events';
import { eq } from 'drizzle-orm';
import { AgentError, type LlmClient } from '../agents/llm-client.js';
import { planQuery as planWithModel } from '../agents/planner.js';
import { describeCatalog, type ApiOperation } from '../api/catalog.js';
import type { Config, InputLimits, SandboxConfig, TenantLimits } from '../config.js';
import type { Database } from '../db/client.js';
import {
  tenants,
  type ExecutionRow,
  type StepResultRow,
  type StoredPlan,
  type StoredTokenUsage,
  type TenantRow,
} from '../db/tables.js';
import type { Logger } from '../logger.js';
import { createInProcessDispatcher, type Dispatcher } from './dispatcher.js';
import { failInterruptedExecution, runExecution, type EngineDependencies } from './engine.js';
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
import { createTenantRateLimiter, type TenantRateLimiter } from './rate-limiter.js';
import type { StepUpdate } from './step-update.js';
import { createInProcessStepUpdateBus, type StepUpdateBus } from './step-update-bus.js';
import { streamStepUpdates, type StreamAccess, type StreamDenied } from './step-update-stream.js';
import { createApiStepHandler } from './steps/api.js';
import { createSqlStepHandler } from './steps/sql.js';
import { ExecutionStore, type ExecutionPage, type ExecutionPageRequest } from './store.js';
import { TenantKnowledge } from './tenant-knowledge.js';
import type { SecretBox } from '../auth/secrets.js';

export type ExecutorSettings = Config['executor'] & {
  sqlRepairRounds: number;
  sandbox: SandboxConfig;
  tenantLimits: TenantLimits;
  inputLimits: InputLimits;
};

const STREAM_CLOSE_TIMEOUT_MS = 2_000;

/** A per-tenant token bucket, and what a refusal tells the client it may do again after the wait. */
interface TenantBudget {
  name: 'executions' | 'model calls';
  limiter: TenantRateLimiter;
  action: string;
}

function describeApiCatalog(operations: ApiOperation[] | null): string | null {
  return operations && operations.length > 0 ? describeCatalog(operations) : null;
}

/** A question for the planner must pass the same checks as a plan's query (PlanValidationError). */
function checkQuery(query: string, limits: InputLimits): void {
  const problems = queryProblems(query, limits);
  if (problems.length > 0) throw new PlanValidationError(problems);
}

/** The executor's whole surface: what the GraphQL layer (or any other front end) may ask of it. */
export class Executor {
  private readonly store: ExecutionStore;
  private readonly bus: StepUpdateBus;
  private readonly dispatcher: Dispatcher;
  private readonly engine: EngineDependencies;
  private readonly shutdownController = new AbortController();
  private readonly openStreams = new Set<Promise<void>>();
  private readonly knowledge: TenantKnowledge;
  private readonly llm: LlmClient;
  private readonly executionBudget: TenantBudget;
  private readonly modelCallBudget: TenantBudget;
  private readonly idempotency: IdempotentSubmits;

  constructor(
    private readonly database: Database,
    private readonly settings: ExecutorSettings,
    private readonly logger: Logger,
    llm: LlmClient,
    secrets: SecretBox,
  ) {
    this.knowledge = new TenantKnowledge(database, secrets);
    this.llm = llm;
    this.executionBudget = {
      name: 'executions',
      limiter: createTenantRateLimiter({
        ratePerMinute: settings.tenantLimits.ratePerMinute,
        burst: settings.tenantLimits.burst,
      }),
      action: 'start another execution',
    };
    this.modelCallBudget = {
      name: 'model calls',
      limiter: createTenantRateLimiter({
        ratePerMinute: settings.tenantLimits.modelCallsPerMinute,
        burst: settings.tenantLimits.modelCallsBurst,
      }),
      action: 'call a model again (planQuery, executeQuery, agent steps)',
    };
    // Every open stepUpdates stream listens for shutdown on this one signal.
    setMaxListeners(0, this.shutdownController.signal);
    this.store = new ExecutionStore(database.db);
    this.idempotency = new IdempotentSubmits(
      database.db,
      { ttlMs: settings.idempotencyTtlMs, plannerMaxMs: settings.plannerMaxMs },
      (tenantId, executionId) => this.store.findExecution(tenantId, executionId),
      logger,
      this.shutdownController.signal,
    );
    this.bus = createInProcessStepUpdateBus();
    this.engine = {
      store: this.store,
      acquireLease: (executionId) => database.acquireExecutionLease(executionId),
      bus: this.bus,
      handlers: {
        SQL: createSqlStepHandler({
          database,
          knowledge: this.knowledge,
          llm,
          repairRounds: settings.sqlRepairRounds,
          maxSqlChars: settings.inputLimits.maxSqlChars,
          limits: {
            rowMaxBytes: settings.rowMaxBytes,
            readMaxBytes: settings.stepMaxBytes,
            workMemMb: settings.sqlWorkMemMb,
            tempFileLimitMb: settings.sqlTempFileLimitMb,
          },
        }),
        API: createApiStepHandler({ knowledge: this.knowledge, llm, sandbox: settings.sandbox }),
      },
      findTenant: (tenantId) => this.findTenant(tenantId),
      modelCalls: this.modelCallBudget.limiter,
      logger,
      settings: {
        rowCap: settings.rowCap,
        resultMaxBytes: settings.resultMaxBytes,
        executionMaxBytes: settings.executionMaxBytes,
        sampleMaxBytes: settings.sampleMaxBytes,
        maxProgressUpdates: settings.sandbox.maxProgressReports,
        maxProgressChars: settings.sandbox.maxProgressChars,
      },
    };
    this.dispatcher = createInProcessDispatcher({
      concurrency: settings.maxConcurrentExecutions,
      perTenantConcurrency: settings.tenantLimits.maxConcurrentExecutions,
      runExecution: (executionId) => runExecution(this.engine, executionId),
      logger,
    });
  }

  /**
   * Marks executions cut off by a stopped process as FAILED (INTERRUPTED) and queues the ones never
   * started. A RUNNING execution whose lease another live process holds is that process's to finish.
   */
  async recover(): Promise<void> {
    for (const execution of await this.store.listUnfinished('RUNNING')) {
      const lease = await this.database.acquireExecutionLease(execution.id);
      if (!lease) continue;
      try {
        await failInterruptedExecution(this.engine, execution);
      } finally {
        await lease.release();
      }
    }
    for (const execution of await this.store.listUnfinished('QUEUED')) {
      this.dispatcher.enqueue(execution.id, execution.tenantId);
    }
  }

  async findTenant(tenantId: string): Promise<TenantRow | undefined> {
    const [row] = await this.database.db.select().from(tenants).where(eq(tenants.id, tenantId));
    return row;
  }

  /**
   * Validates the plan, takes one of the tenant's execution tokens (RateLimitedError when there is
   * none), and stores it as a QUEUED execution for the dispatcher. Bad input spends no token. With an
   * idempotency key already used, it answers with that key's execution and takes no token (src/executor/idempotency.ts).
   */
  async submitPlan(tenantId: string, plan: PlanInput, options?: ExecuteOptionsInput | null): Promise<ExecutionRow> {
    const validated = validatePlan(plan, options, this.planDefaults());
    const submitted = await this.idempotency.submit(tenantId, validated.idempotencyKey, planRequest(validated, options), {
      spendTokens: () => this.takeTokens(tenantId, [this.executionBudget]),
      create: (claim) => this.store.createExecution(tenantId, validated, { claim }),
    });
    if ('replayed' in submitted) return submitted.replayed;
    const { execution } = submitted.created;
    this.logger.info(
      { correlationId: execution.correlationId, executionId: execution.id, tenantId, steps: execution.totalSteps },
      'execution queued',
    );
    this.dispatcher.enqueue(execution.id, tenantId);
    return execution;
  }

  /**
   * Takes one token from each budget, or none: when any is empty, RateLimitedError with the longest wait.
   * Per process: each replica keeps its own buckets.
   */
  private takeTokens(tenantId: string, budgets: readonly TenantBudget[]): void {
    let refused: { budget: TenantBudget; retryAfterSeconds: number } | undefined;
    for (const budget of budgets) {
      const decision = budget.limiter.peek(tenantId);
      if (!decision.allowed && decision.retryAfterSeconds > (refused?.retryAfterSeconds ?? 0)) {
        refused = { budget, retryAfterSeconds: decision.retryAfterSeconds };
      }
    }
    if (refused) {
      const { budget, retryAfterSeconds } = refused;
      this.logger.info({ tenantId, budget: budget.name, retryAfterSeconds }, 'request refused: tenant rate limit');
      throw new RateLimitedError(retryAfterSeconds, budget.action);
    }
    for (const budget of budgets) budget.limiter.take(tenantId);
  }

  /** What asking the planner takes: a model call, when there is a model to call (else the planner says so). */
  private plannerBudgets(): TenantBudget[] {
    return this.llm.configured ? [this.modelCallBudget] : [];
  }

  /**
   * Asks the planner for a plan answering the query, checked like a client's plan; stores nothing.
   * It takes one of the tenant's model calls once the question passes its checks.
   */
  async planQuery(tenantId: string, query: string): Promise<StoredPlan> {
    checkQuery(query, this.settings.inputLimits);
    this.takeTokens(tenantId, this.plannerBudgets());
    return (await this.planWithUsage(tenantId, query)).plan;
  }

  /** Asks the planner; the query must have passed checkQuery. */
  private async planWithUsage(tenantId: string, query: string): Promise<{ plan: StoredPlan; usage: StoredTokenUsage }> {
    const tenant = await this.findTenant(tenantId);
    if (!tenant) throw new Error(`tenant ${tenantId} does not exist`);
    const answer = await planWithModel(this.llm, {
      query,
      dataSchema: await this.knowledge.dataSchema(tenant),
      apiCatalog: describeApiCatalog(this.knowledge.apiCatalog(tenant)),
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
      spendTokens: () => this.takeTokens(tenantId, [this.executionBudget, ...this.plannerBudgets()]),
      create: async (claim) => {
        const { plan, usage } = await this.planWithUsage(tenantId, query);
        return this.store.createExecution(tenantId, { ...validatedOptions, plan }, { plannerUsage: usage, claim });
      },
    });
    if ('replayed' in submitted) return submitted.replayed;
    const { execution, planCreated } = submitted.created;
    if (planCreated) this.bus.publish(planCreated);
    this.logger.info(
      { correlationId: execution.correlationId, executionId: execution.id, tenantId, steps: execution.totalSteps },
      'planned execution queued',
    );
    this.dispatcher.enqueue(execution.id, tenantId);
    return execution;
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

  listSteps(tenantId: string, executionId: string): Promise<StepResultRow[]> {
    return this.store.listSteps(executionId, tenantId);
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
    let closed!: () => void;
    const streamClosed = new Promise<void>((resolve) => (closed = resolve));
    this.openStreams.add(streamClosed);
    return streamStepUpdates({
      store: this.store,
      bus: this.bus,
      executionId,
      afterSequence,
      shutdown: this.shutdownController.signal,
      access,
      onClose: () => {
        this.openStreams.delete(streamClosed);
        closed();
      },
    });
  }

  /** stepUpdates streams open right now (one per subscription). */
  get openStreamCount(): number {
    return this.openStreams.size;
  }

  /** Ends open subscriptions and waits for running executions; any still running are found at the next start. */
  async stop(graceMs: number): Promise<void> {
    const unfinished = await this.dispatcher.stop(graceMs);
    this.shutdownController.abort();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.openStreams]),
      new Promise((resolve) => (timer = setTimeout(resolve, STREAM_CLOSE_TIMEOUT_MS))),
    ]);
    clearTimeout(timer);
    if (unfinished.length > 0) {
      this.logger.warn({ executionIds: unfinished }, 'executions still running at shutdown; the next start marks them INTERRUPTED');
    }
  }
}
