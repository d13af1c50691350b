import { addUsage, NO_USAGE } from '../agents/llm-client.js';
import type { ExecutionLease } from '../db/client.js';
import type {
  ExecutionRow,
  StepResultRow,
  StepSnapshot,
  StoredPlanStep,
  StoredStepError,
  StoredTokenUsage,
  TenantRow,
} from '../db/tables.js';
import { withLogContext, type Logger } from '../logger.js';
import { StepFailure, toStoredStepError } from './errors.js';
import { ExecutionMemory } from './execution-memory.js';
import type { TenantRateLimiter } from './rate-limiter.js';
import { capRecords } from './records.js';
import { snapshotOf, type StepChange } from './step-snapshots.js';
import type { StepKind, StepUpdate } from './step-update.js';
import type { StepUpdateBus } from './step-update-bus.js';
import type { EarlierStep, JsonRecord, StepHandler } from './steps/step-handler.js';
import { ExecutionNotRunnableError, type ExecutionStore, type Transition } from './store.js';

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
}

export interface EngineDependencies {
  store: ExecutionStore;
  acquireLease: (executionId: string) => Promise<ExecutionLease | null>;
  bus: StepUpdateBus;
  handlers: Record<StepKind, StepHandler>;
  findTenant: (tenantId: string) => Promise<TenantRow | undefined>;
  /** The tenants' model-call budget: every agent call of a step takes one. */
  modelCalls: TenantRateLimiter;
  logger: Logger;
  settings: EngineSettings;
}

/** Writes one transition and, only once it has committed, publishes it. */
async function transition(deps: EngineDependencies, executionId: string, change: Transition): Promise<StepUpdate> {
  const update = await deps.store.recordTransition(executionId, change);
  deps.bus.publish(update);
  return update;
}

/** The steps of a running execution as they stand, so that each transition can publish its step whole. */
class StepStates {
  private readonly states: Map<number, StepSnapshot>;

  constructor(steps: readonly StepResultRow[]) {
    this.states = new Map(steps.map((step) => [step.index, snapshotOf(step)]));
  }

  /** Records a change to a step, then keeps the step as the update shows it. */
  async change(deps: EngineDependencies, executionId: string, index: number, change: Omit<Transition, 'step'> & { step: StepChange }) {
    const { step, ...rest } = change;
    const update = await transition(deps, executionId, { ...rest, step: { before: this.states.get(index)!, change: step } });
    this.states.set(index, update.step!);
  }
}

/** The first sampleSize records, as long as they fit: samples travel in every prompt and event. */
function sampleOf(records: readonly JsonRecord[], sampleSize: number, maxBytes: number): JsonRecord[] {
  return capRecords(records.slice(0, sampleSize), maxBytes).kept;
}

async function skipRemaining(deps: EngineDependencies, executionId: string, states: StepStates, steps: StepResultRow[]) {
  for (const step of steps) {
    if (step.status !== 'PENDING') continue;
    await states.change(deps, executionId, step.index, {
      type: 'STEP_SKIPPED',
      step: { status: 'SKIPPED', finishedAt: new Date() },
    });
  }
}

/**
 * Runs a QUEUED execution's steps strictly in order, recording and publishing every change.
 * It first takes the execution's lease, then claims it (QUEUED to RUNNING, in the same transaction
 * as EXECUTION_STARTED), so two processes can never run the same execution.
 */
export async function runExecution(deps: EngineDependencies, executionId: string): Promise<void> {
  const execution = await deps.store.loadExecution(executionId);
  if (!execution || execution.status !== 'QUEUED') return;
  const lease = await deps.acquireLease(executionId);
  if (!lease) return;
  try {
    await withLogContext({ correlationId: execution.correlationId, executionId, tenantId: execution.tenantId }, async () => {
      try {
        await transition(deps, executionId, {
          type: 'EXECUTION_STARTED',
          from: ['QUEUED'],
          execution: { status: 'RUNNING', startedAt: new Date() },
        });
      } catch (error) {
        if (error instanceof ExecutionNotRunnableError) return;
        throw error;
      }
      try {
        await runSteps(deps, execution);
      } catch (error) {
        deps.logger.error({ err: error }, 'execution crashed; marking it FAILED');
        await failUnfinishedExecution(deps, execution, {
          code: 'INTERNAL',
          message: `the execution stopped on an unexpected error; the server log has the details under correlation id ${execution.correlationId}`,
          retryable: true,
        });
      }
    });
  } finally {
    await lease.release();
  }
}

async function runSteps(deps: EngineDependencies, execution: ExecutionRow): Promise<void> {
  const { logger, settings } = deps;
  const tenant = await deps.findTenant(execution.tenantId);
  const steps = await deps.store.listSteps(execution.id);
  const states = new StepStates(steps);
  logger.info({ steps: steps.length }, 'execution started');

  const memory = new ExecutionMemory(settings.executionMaxBytes);
  const earlier: EarlierStep[] = [];
  let finalResult: unknown[] | null = null;
  let executionUsage = execution.usage;
  for (const [position, step] of steps.entries()) {
    const planStep = execution.plan.steps[step.index - 1]!;
    const startedAt = new Date();
    let stepUsage: StoredTokenUsage | null = null;
    const recordUsage = (usage: StoredTokenUsage) => {
      stepUsage = addUsage(stepUsage ?? NO_USAGE, usage);
      executionUsage = addUsage(executionUsage ?? NO_USAGE, usage);
    };
    // Progress is written one update at a time; messages that arrive while one is being written wait, and only
    // the newest of them is written next, so a program that reports in a tight loop costs a few rows, not one each.
    let progressUpdates = 0;
    let progressWritten: Promise<void> = Promise.resolve();
    let newestMessage: string | undefined;
    const reportProgress = (message: string) => {
      const writeQueued = newestMessage !== undefined;
      newestMessage = message.slice(0, settings.maxProgressChars);
      if (writeQueued) return;
      progressWritten = progressWritten
        .then(async () => {
          const text = newestMessage!;
          newestMessage = undefined;
          if (++progressUpdates > settings.maxProgressUpdates) return;
          await states.change(deps, execution.id, step.index, { type: 'STEP_PROGRESS', message: text, step: {} });
        })
        .catch((error: unknown) => logger.warn({ err: error, stepIndex: step.index }, 'progress update lost'));
    };
    const stepTimeout = AbortSignal.timeout(execution.options.stepTimeoutMs);
    const deadline = Date.now() + execution.options.stepTimeoutMs;
    const stepMemory = memory.forStep(step.index);
    await states.change(deps, execution.id, step.index, { type: 'STEP_STARTED', step: { status: 'RUNNING', startedAt } });
    try {
      if (!tenant) throw new Error(`tenant ${execution.tenantId} does not exist`);
      const handler = deps.handlers[step.kind];
      const outcome = await withLogContext({ stepIndex: step.index }, () =>
        handler({
          tenant,
          planQuery: execution.plan.query,
          index: step.index,
          step: planStep,
          earlier,
          timeoutMs: execution.options.stepTimeoutMs,
          rowCap: settings.rowCap,
          sampleSize: execution.options.sampleSize,
          recordUsage,
          takeModelCall: () => deps.modelCalls.take(tenant.id),
          reportProgress,
          signal: stepTimeout,
          deadline,
          memory: stepMemory,
        }),
      );
      await progressWritten;
      const capped = capRecords(outcome.records, settings.resultMaxBytes);
      const sample = sampleOf(outcome.records, execution.options.sampleSize, settings.sampleMaxBytes);
      await states.change(deps, execution.id, step.index, {
        type: 'STEP_SUCCEEDED',
        execution: { successfulStepsDelta: 1, usage: executionUsage },
        step: {
          status: 'SUCCEEDED',
          ...writtenArtefact(planStep, outcome),
          recordCount: outcome.records.length,
          columns: outcome.columns,
          sample,
          result: capped.kept,
          truncated: outcome.truncated || capped.truncated,
          attempts: outcome.attempts,
          usage: stepUsage,
          logs: outcome.logs ?? null,
          finishedAt: new Date(),
        },
      });
      logger.info({ stepIndex: step.index, recordCount: outcome.records.length }, 'step succeeded');
      earlier.push({
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
      finalResult = capped.kept;
    } catch (error) {
      // A failed step keeps nothing for later steps.
      stepMemory.discard();
      const stepError = toStoredStepError(error, execution.correlationId);
      if (error instanceof StepFailure) logger.warn({ stepIndex: step.index, error: stepError }, 'step failed');
      else logger.error({ stepIndex: step.index, err: error }, 'step failed unexpectedly');
      await progressWritten;
      const artefact = error instanceof StepFailure ? error.artefact : {};
      await states.change(deps, execution.id, step.index, {
        type: 'STEP_FAILED',
        execution: { failedStepsDelta: 1, usage: executionUsage },
        step: {
          status: 'FAILED',
          error: stepError,
          ...writtenArtefact(planStep, artefact),
          attempts: artefact.attempts ?? 1,
          logs: artefact.logs ?? null,
          usage: stepUsage,
          finishedAt: new Date(),
        },
      });
      if (step.critical) {
        await skipRemaining(deps, execution.id, states, steps.slice(position + 1));
        await transition(deps, execution.id, {
          type: 'EXECUTION_FAILED',
          execution: { status: 'FAILED', error: stepError, finalResult, finishedAt: new Date() },
        });
        logger.info({ failedStep: step.index }, 'execution failed');
        return;
      }
    }
  }
  await transition(deps, execution.id, {
    type: 'EXECUTION_SUCCEEDED',
    execution: { status: 'SUCCEEDED', finalResult, finishedAt: new Date() },
  });
  logger.info('execution succeeded');
}

/** The sql or code an agent wrote for the step; a step that came with its own keeps it in the plan only. */
function writtenArtefact(planStep: StoredPlanStep, artefact: { sql?: string; code?: string }): StepChange {
  if (planStep.kind === 'SQL') return planStep.sql === null && artefact.sql !== undefined ? { sql: artefact.sql } : {};
  return planStep.code === null && artefact.code !== undefined ? { code: artefact.code } : {};
}

const FAILURE_WRITE_DELAYS_MS = [0, 200, 1_000, 5_000];

/**
 * Ends an execution that cannot go on: the step that was running fails, the rest are skipped, and
 * finalResult keeps the last step that succeeded. Retried a few times, since the store may be
 * what failed; an execution another run already finished is left as it is.
 */
export async function failUnfinishedExecution(
  deps: EngineDependencies,
  execution: ExecutionRow,
  error: StoredStepError,
): Promise<void> {
  for (const delay of FAILURE_WRITE_DELAYS_MS) {
    await new Promise((resolve) => setTimeout(resolve, delay));
    try {
      const steps = await deps.store.listSteps(execution.id);
      const states = new StepStates(steps);
      for (const step of steps.filter((s) => s.status === 'RUNNING')) {
        await states.change(deps, execution.id, step.index, {
          type: 'STEP_FAILED',
          execution: { failedStepsDelta: 1 },
          step: { status: 'FAILED', error, attempts: Math.max(step.attempts, 1), finishedAt: new Date() },
        });
      }
      await skipRemaining(deps, execution.id, states, steps);
      const lastSucceeded = steps.filter((s) => s.status === 'SUCCEEDED').at(-1);
      await transition(deps, execution.id, {
        type: 'EXECUTION_FAILED',
        execution: { status: 'FAILED', error, finalResult: lastSucceeded?.result ?? null, finishedAt: new Date() },
      });
      return;
    } catch (writeError) {
      if (writeError instanceof ExecutionNotRunnableError) return;
      deps.logger.error({ err: writeError }, 'could not record the failure of the execution; trying again');
    }
  }
}

/** Executions cut off by a crash or kill, found RUNNING at start with nobody holding their lease. */
export async function failInterruptedExecution(deps: EngineDependencies, execution: ExecutionRow): Promise<void> {
  await withLogContext({ correlationId: execution.correlationId, executionId: execution.id }, async () => {
    await failUnfinishedExecution(deps, execution, {
      code: 'INTERRUPTED',
      message: 'the server stopped while this execution was running',
      retryable: true,
    });
    deps.logger.warn('execution was interrupted by a restart and is marked FAILED');
  });
}
