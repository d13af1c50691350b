import type { ExecutionRow, StepResultRow, StoredTokenUsage, TenantRow } from '../db/tables.js';
import { withLogContext, type Logger } from '../logger.js';
import { StepFailure, toStoredStepError } from './errors.js';
import { capRecords } from './records.js';
import type { StepKind } from './step-update.js';
import type { StepUpdateBus } from './step-update-bus.js';
import type { EarlierStep, JsonRecord, StepHandler } from './steps/step-handler.js';
import type { ExecutionStore, Transition } from './store.js';

export interface EngineSettings {
  rowCap: number;
  resultMaxBytes: number;
}

export interface EngineDependencies {
  store: ExecutionStore;
  bus: StepUpdateBus;
  handlers: Record<StepKind, StepHandler>;
  findTenant: (tenantId: string) => Promise<TenantRow | undefined>;
  logger: Logger;
  settings: EngineSettings;
}

/** Writes one transition and, only once it has committed, publishes it. */
async function transition(deps: EngineDependencies, executionId: string, change: Transition): Promise<void> {
  const update = await deps.store.recordTransition(executionId, change);
  deps.bus.publish(update);
}

function addUsage(total: StoredTokenUsage | null, more: StoredTokenUsage): StoredTokenUsage {
  return {
    promptTokens: (total?.promptTokens ?? 0) + more.promptTokens,
    completionTokens: (total?.completionTokens ?? 0) + more.completionTokens,
    totalTokens: (total?.totalTokens ?? 0) + more.totalTokens,
  };
}

function sampleOf(records: readonly JsonRecord[], sampleSize: number): JsonRecord[] {
  return records.slice(0, sampleSize);
}

async function skipRemaining(deps: EngineDependencies, execution: ExecutionRow, steps: StepResultRow[]) {
  for (const step of steps) {
    if (step.status !== 'PENDING') continue;
    await transition(deps, execution.id, {
      type: 'STEP_SKIPPED',
      step: { index: step.index, change: { status: 'SKIPPED', finishedAt: new Date() } },
    });
  }
}

/** Runs a QUEUED execution's steps strictly in order, recording and publishing every change. */
export async function runExecution(deps: EngineDependencies, executionId: string): Promise<void> {
  const execution = await deps.store.loadExecution(executionId);
  if (!execution || execution.status !== 'QUEUED') return;
  await withLogContext(
    { correlationId: execution.correlationId, executionId, tenantId: execution.tenantId },
    () => runSteps(deps, execution),
  );
}

async function runSteps(deps: EngineDependencies, execution: ExecutionRow): Promise<void> {
  const { logger } = deps;
  const tenant = await deps.findTenant(execution.tenantId);
  const steps = await deps.store.listSteps(execution.id);
  logger.info({ steps: steps.length }, 'execution started');
  await transition(deps, execution.id, {
    type: 'EXECUTION_STARTED',
    execution: { status: 'RUNNING', startedAt: new Date() },
  });

  const earlier: EarlierStep[] = [];
  let finalResult: unknown[] | null = null;
  let executionUsage = execution.usage;
  for (const [position, step] of steps.entries()) {
    const planStep = execution.plan.steps[step.index - 1]!;
    const startedAt = new Date();
    let stepUsage: StoredTokenUsage | null = null;
    const recordUsage = (usage: StoredTokenUsage) => {
      stepUsage = addUsage(stepUsage, usage);
      executionUsage = addUsage(executionUsage, usage);
    };
    await transition(deps, execution.id, {
      type: 'STEP_STARTED',
      step: { index: step.index, change: { status: 'RUNNING', startedAt } },
    });
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
          rowCap: deps.settings.rowCap,
          sampleSize: execution.options.sampleSize,
          recordUsage,
        }),
      );
      const capped = capRecords(outcome.records, deps.settings.resultMaxBytes);
      const sample = sampleOf(outcome.records, execution.options.sampleSize);
      await transition(deps, execution.id, {
        type: 'STEP_SUCCEEDED',
        execution: { successfulStepsDelta: 1, usage: executionUsage },
        step: {
          index: step.index,
          change: {
            status: 'SUCCEEDED',
            sql: outcome.sql ?? step.sql,
            code: outcome.code ?? step.code,
            recordCount: outcome.records.length,
            columns: outcome.columns,
            sample,
            result: capped.kept,
            truncated: outcome.truncated || capped.truncated,
            attempts: outcome.attempts,
            usage: stepUsage,
            finishedAt: new Date(),
          },
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
      });
      finalResult = capped.kept;
    } catch (error) {
      const stepError = toStoredStepError(error, execution.correlationId);
      if (error instanceof StepFailure) logger.warn({ stepIndex: step.index, error: stepError }, 'step failed');
      else logger.error({ stepIndex: step.index, err: error }, 'step failed unexpectedly');
      const artefact = error instanceof StepFailure ? error.artefact : {};
      await transition(deps, execution.id, {
        type: 'STEP_FAILED',
        execution: { failedStepsDelta: 1, usage: executionUsage },
        step: {
          index: step.index,
          change: {
            status: 'FAILED',
            error: stepError,
            sql: artefact.sql ?? step.sql,
            code: artefact.code ?? step.code,
            attempts: artefact.attempts ?? 1,
            usage: stepUsage,
            finishedAt: new Date(),
          },
        },
      });
      if (step.critical) {
        await skipRemaining(deps, execution, steps.slice(position + 1));
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

/** Executions cut off by a crash or kill: the step that was running fails, the rest are skipped. */
export async function failInterruptedExecution(deps: EngineDependencies, execution: ExecutionRow): Promise<void> {
  await withLogContext({ correlationId: execution.correlationId, executionId: execution.id }, async () => {
    const steps = await deps.store.listSteps(execution.id);
    const error = {
      code: 'INTERRUPTED',
      message: 'the server stopped while this execution was running',
      retryable: true,
    };
    for (const step of steps.filter((s) => s.status === 'RUNNING')) {
      await transition(deps, execution.id, {
        type: 'STEP_FAILED',
        execution: { failedStepsDelta: 1 },
        step: { index: step.index, change: { status: 'FAILED', error, finishedAt: new Date() } },
      });
    }
    await skipRemaining(deps, execution, steps);
    await transition(deps, execution.id, {
      type: 'EXECUTION_FAILED',
      execution: { status: 'FAILED', error, finishedAt: new Date() },
    });
    deps.logger.warn('execution was interrupted by a restart and is marked FAILED');
  });
}
