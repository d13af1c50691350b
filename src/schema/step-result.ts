import type { StepRow, StepSnapshot, StepState, StoredColumn, StoredStepError, StoredTokenUsage } from '../db/tables.js';
import type { StepKind, StepStatus } from '../executor/step-update.js';
import { builder } from './builder.js';
import { StepKindEnum, StepStatusEnum } from './enums.js';
import { stepId } from './global-ids.js';

/**
 * A step as stored (step_results), as stored without its result (node(id)), or as it was when an event happened (a
 * snapshot in step_events).
 */
export type StepResultSource = StepRow | StepState | StepSnapshot;

export const StepErrorRef = builder.objectRef<StoredStepError>('StepError').implement({
  description: 'Why a step or an execution failed.',
  fields: (t) => ({
    code: t.exposeString('code', {
      description:
        'Machine-readable, e.g. SQL_REJECTED, SQL_ERROR, STEP_TIMEOUT, AGENT_NOT_CONFIGURED, AGENT_FAILED, AGENT_TIMEOUT, SANDBOX_TIMEOUT, API_CALL_REFUSED, INTERRUPTED, INTERNAL (the README lists them all).',
    }),
    message: t.exposeString('message'),
    retryable: t.exposeBoolean('retryable', { description: 'Whether running the step again may succeed.' }),
  }),
});

export const TokenUsageRef = builder.objectRef<StoredTokenUsage>('TokenUsage').implement({
  description: 'Tokens the agents spent talking to the model.',
  fields: (t) => ({
    promptTokens: t.exposeInt('promptTokens'),
    completionTokens: t.exposeInt('completionTokens'),
    totalTokens: t.exposeInt('totalTokens'),
  }),
});

export const StepColumnRef = builder.objectRef<StoredColumn>('StepColumn').implement({
  description: 'A column of the records a step produced, with the Postgres type later steps see in step_N.',
  fields: (t) => ({
    name: t.exposeString('name'),
    type: t.exposeString('type'),
  }),
});

const toDate = (value: Date | string | null): Date | null => (value === null ? null : new Date(value));

export const StepResultRef = builder.objectRef<StepResultSource>('StepResult').implement({
  description: 'What one step of an execution produced, or has produced so far.',
  interfaces: [builder.nodeInterfaceRef()],
  fields: (t) => ({
    id: t.id({
      description: "`<execution id>:step:<index>`: the same in queries, in replayed and in live updates (an update's step is this step as it was then).",
      resolve: (step) => stepId(step.executionId, step.index),
    }),
    index: t.exposeInt('index', { description: '1-based position of the step in the plan.' }),
    kind: t.field({ type: StepKindEnum, resolve: (step) => step.kind as StepKind }),
    status: t.field({ type: StepStatusEnum, resolve: (step) => step.status as StepStatus }),
    queryContext: t.exposeString('queryContext'),
    entity: t.exposeString('entity', { nullable: true }),
    reasoning: t.exposeString('reasoning', { nullable: true }),
    critical: t.exposeBoolean('critical', { description: 'When true, a failure of this step stops the plan.' }),
    sql: t.exposeString('sql', { nullable: true, description: 'The SQL that ran (SQL steps).' }),
    code: t.exposeString('code', { nullable: true, description: 'The program that ran (API steps).' }),
    recordCount: t.exposeInt('recordCount', {
      nullable: true,
      description: 'How many records the step returned (after the row cap).',
    }),
    columns: t.field({
      type: [StepColumnRef],
      nullable: true,
      resolve: (step) => step.columns,
    }),
    sample: t.field({
      type: 'JSON',
      nullable: true,
      description: 'The first sampleSize records, as later steps and agents see them.',
      resolve: (step) => step.sample,
    }),
    result: t.field({
      type: 'JSON',
      nullable: true,
      description: 'The records, capped in size; `truncated` says whether anything was left out.',
      resolve: (step, _args, context) => {
        if ('result' in step) return step.result;
        // A step read without its result (node(id)) has one only once it succeeded (the engine stores it then).
        // A snapshot (an update's step, as it was then) before the step succeeded had no records yet: the stored ones
        // came later. A succeeded step's records never change after, so the stored ones are what it had then.
        if (step.status !== 'SUCCEEDED') return null;
        return context.executor.findStepResult(context.tenantId, step.executionId, step.index);
      },
    }),
    truncated: t.exposeBoolean('truncated', {
      description: 'True when the row cap or the result size cap left records out.',
    }),
    error: t.field({ type: StepErrorRef, nullable: true, resolve: (step) => step.error }),
    attempts: t.exposeInt('attempts', {
      description: 'How many SQL statements or programs the step tried (agent repair rounds count).',
    }),
    usage: t.field({
      type: TokenUsageRef,
      nullable: true,
      description: 'Tokens spent on this step; null when no agent was asked.',
      resolve: (step) => step.usage,
    }),
    logs: t.exposeStringList('logs', {
      nullable: true,
      description: "What the step's program wrote with console.log (API steps).",
    }),
    approval: t.exposeBoolean('approval', { description: 'The step waits for approveStep or rejectStep before it runs.' }),
    decision: t.exposeString('decision', {
      nullable: true,
      description: "APPROVED or REJECTED: a person's decision on an approval step; null until one is made.",
    }),
    decidedBy: t.exposeString('decidedBy', {
      nullable: true,
      description: 'Who decided: api-key:<key id>, jwt:<subject>, or anonymous (authentication off).',
    }),
    decidedAt: t.field({ type: 'DateTime', nullable: true, resolve: (step) => toDate(step.decidedAt) }),
    decisionComment: t.exposeString('decisionComment', { nullable: true }),
    startedAt: t.field({ type: 'DateTime', nullable: true, resolve: (step) => toDate(step.startedAt) }),
    finishedAt: t.field({ type: 'DateTime', nullable: true, resolve: (step) => toDate(step.finishedAt) }),
    durationMs: t.int({
      nullable: true,
      resolve: (step) =>
        step.startedAt && step.finishedAt
          ? new Date(step.finishedAt).getTime() - new Date(step.startedAt).getTime()
          : null,
    }),
  }),
});
