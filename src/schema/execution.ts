import type { StoredPlan, StoredPlanStep } from '../db/tables.js';
import type { ExecutionDetails, ExecutionSummary } from '../executor/store.js';
import type { GraphQLContext } from './context.js';
import type { ExecutionStatus, StepKind } from '../executor/step-update.js';
import { builder } from './builder.js';
import { decodeCursor, encodeCursor, isStorableDate, isUuid } from './cursor.js';
import { ExecutionStatusEnum, StepKindEnum } from './enums.js';
import { badUserInput, notFound, toGraphQLError } from './errors.js';
import { StepErrorRef, StepResultRef, TokenUsageRef } from './step-result.js';

const PlanStepRef = builder.objectRef<StoredPlanStep>('PlanStep').implement({
  description: 'One step of a plan, as submitted.',
  fields: (t) => ({
    kind: t.field({ type: StepKindEnum, resolve: (step) => step.kind as StepKind }),
    queryContext: t.exposeString('queryContext'),
    entity: t.exposeString('entity', { nullable: true }),
    reasoning: t.exposeString('reasoning', { nullable: true }),
    critical: t.exposeBoolean('critical'),
    sql: t.exposeString('sql', { nullable: true }),
    code: t.exposeString('code', { nullable: true }),
  }),
});

export const PlanRef = builder.objectRef<StoredPlan>('Plan').implement({
  description: 'The question, the reasoning behind the plan, and its ordered steps.',
  fields: (t) => ({
    query: t.exposeString('query'),
    reasoning: t.exposeString('reasoning', { nullable: true }),
    steps: t.field({ type: [PlanStepRef], resolve: (plan) => plan.steps }),
  }),
});

/**
 * An execution as read: whole (one execution, a mutation's answer), or as a history page lists it, without its plan
 * and final result, which are then read for the page's executions that ask for them, in one read.
 */
export type ExecutionView = ExecutionSummary & Partial<ExecutionDetails>;

/**
 * An execution as an update tells of it (StepUpdate.execution): its id, and its status and last sequence just after
 * that update. A selection of only these stays free of reads, so a live update keeps the shared fast path
 * (shared-event-execution.ts); any other field reads the execution as it is now, through the request's batch loader,
 * on every update: the cost limit prices it so (query-cost.ts, perEvent).
 */
export interface ExecutionAsOfUpdate {
  id: string;
  status: ExecutionStatus;
  lastSequence: number;
  asOfUpdate: true;
}

export type ExecutionSource = ExecutionView | ExecutionAsOfUpdate;

const isAsOfUpdate = (execution: ExecutionSource): execution is ExecutionAsOfUpdate => 'asOfUpdate' in execution;

async function summaryOf(execution: ExecutionAsOfUpdate, context: GraphQLContext): Promise<ExecutionView> {
  const summary = await context.loadExecution(execution.id);
  if (!summary) throw notFound(`execution ${execution.id} was not found`);
  return summary;
}

/** A field read from the execution's summary: at hand, or (an update's execution) read first. */
function fromSummary<T>(read: (execution: ExecutionView) => T) {
  return (execution: ExecutionSource, _args: object, context: GraphQLContext): T | Promise<T> =>
    isAsOfUpdate(execution) ? summaryOf(execution, context).then(read) : read(execution);
}

async function detailsOf(execution: ExecutionSource, context: GraphQLContext): Promise<ExecutionDetails> {
  if ('plan' in execution && execution.plan !== undefined) return { plan: execution.plan, finalResult: execution.finalResult ?? null };
  const details = await context.loadExecutionDetails(execution.id);
  if (!details) throw notFound(`execution ${execution.id} was not found`);
  return details;
}

export const ExecutionRef = builder.objectRef<ExecutionSource>('Execution').implement({
  description: 'One run of a plan.',
  interfaces: [builder.nodeInterfaceRef()],
  fields: (t) => ({
    id: t.id({
      description: "The execution's UUID: what execution(id:), stepUpdates and the mutations take, and its global id for node(id).",
      resolve: (execution) => execution.id,
    }),
    correlationId: t.string({
      description: "The client's correlation id, or a generated one; it tags every log line, event and row of the run.",
      resolve: fromSummary((execution) => execution.correlationId),
    }),
    status: t.field({ type: ExecutionStatusEnum, resolve: (execution) => execution.status as ExecutionStatus }),
    plan: t.field({ type: PlanRef, resolve: async (execution, _args, context) => (await detailsOf(execution, context)).plan }),
    steps: t.field({
      type: [StepResultRef],
      // Batched: the steps of every execution of a page are one read (context.loadSteps).
      resolve: (execution, _args, context) => context.loadSteps(execution.id),
    }),
    totalSteps: t.int({ resolve: fromSummary((execution) => execution.totalSteps) }),
    successfulSteps: t.int({ resolve: fromSummary((execution) => execution.successfulSteps) }),
    failedSteps: t.int({ resolve: fromSummary((execution) => execution.failedSteps) }),
    finalResult: t.field({
      type: 'JSON',
      nullable: true,
      description: 'The result of the last step that succeeded.',
      resolve: async (execution, _args, context) => (await detailsOf(execution, context)).finalResult,
    }),
    error: t.field({
      type: StepErrorRef,
      nullable: true,
      description: 'Why the execution failed: the error of the critical step that stopped it.',
      resolve: fromSummary((execution) => execution.error),
    }),
    usage: t.field({
      type: TokenUsageRef,
      nullable: true,
      description: 'Tokens spent by all steps so far; null when no agent was asked.',
      resolve: fromSummary((execution) => execution.usage),
    }),
    createdAt: t.field({ type: 'DateTime', resolve: fromSummary((execution) => execution.createdAt) }),
    startedAt: t.field({ type: 'DateTime', nullable: true, resolve: fromSummary((execution) => execution.startedAt) }),
    finishedAt: t.field({ type: 'DateTime', nullable: true, resolve: fromSummary((execution) => execution.finishedAt) }),
    durationMs: t.int({
      nullable: true,
      resolve: fromSummary((execution) =>
        execution.startedAt && execution.finishedAt ? execution.finishedAt.getTime() - execution.startedAt.getTime() : null,
      ),
    }),
    resumes: t.int({
      description: 'How many times the execution was continued after the server running it stopped (a crash, an outage).',
      resolve: fromSummary((execution) => execution.resumes),
    }),
    cancelRequestedAt: t.field({
      type: 'DateTime',
      nullable: true,
      description: 'When cancelExecution was accepted.',
      resolve: fromSummary((execution) => execution.cancelRequestedAt),
    }),
    lastSequence: t.exposeInt('lastSequence', {
      description:
        "Sequence of the latest StepUpdate (on an update's execution: that update's); pass it as afterSequence to follow on from here.",
    }),
  }),
});

const ExecutionEdgeRef = builder.objectRef<ExecutionView>('ExecutionEdge').implement({
  fields: (t) => ({
    cursor: t.string({ resolve: (execution) => encodeCursor(execution) }),
    node: t.field({ type: ExecutionRef, resolve: (execution) => execution }),
  }),
});

interface PageInfo {
  hasNextPage: boolean;
  endCursor: string | null;
}

const PageInfoRef = builder.objectRef<PageInfo>('PageInfo').implement({
  fields: (t) => ({
    hasNextPage: t.exposeBoolean('hasNextPage'),
    endCursor: t.exposeString('endCursor', { nullable: true }),
  }),
});

const ExecutionConnectionRef = builder
  .objectRef<{ executions: ExecutionView[]; pageInfo: PageInfo }>('ExecutionConnection')
  .implement({
    description: 'A page of executions, newest first.',
    fields: (t) => ({
      edges: t.field({ type: [ExecutionEdgeRef], resolve: (page) => page.executions }),
      pageInfo: t.field({ type: PageInfoRef, resolve: (page) => page.pageInfo }),
    }),
  });

const ExecutionFilterInput = builder.inputType('ExecutionFilter', {
  fields: (t) => ({
    status: t.field({ type: [ExecutionStatusEnum], description: 'Any of these statuses.' }),
    correlationId: t.string(),
    createdAfter: t.field({ type: 'DateTime' }),
    createdBefore: t.field({ type: 'DateTime' }),
  }),
});

/** executions(first): its default and its largest value. */
export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 100;

builder.queryType({
  fields: (t) => ({
    execution: t.field({
      type: ExecutionRef,
      nullable: true,
      description:
        "One execution of your tenant. An id that does not exist, or is another tenant's, answers null with a NOT_FOUND error.",
      args: { id: t.arg.id({ required: true }) },
      resolve: async (_root, { id }, context) => {
        const execution = isUuid(String(id)) ? await context.executor.findExecution(context.tenantId, String(id)) : undefined;
        if (!execution) throw notFound(`execution ${String(id)} was not found`);
        return execution;
      },
    }),
    executions: t.field({
      type: ExecutionConnectionRef,
      description: 'Execution history, newest first, keyset-paginated.',
      args: {
        first: t.arg.int({ description: `Page size, 1 to ${MAX_PAGE_SIZE}; default ${DEFAULT_PAGE_SIZE}.` }),
        after: t.arg.string({ description: 'endCursor of the previous page.' }),
        filter: t.arg({ type: ExecutionFilterInput }),
      },
      resolve: async (_root, args, context) => {
        const first = args.first ?? DEFAULT_PAGE_SIZE;
        if (first < 1 || first > MAX_PAGE_SIZE) throw badUserInput(`first must be between 1 and ${MAX_PAGE_SIZE}`);
        for (const bound of ['createdAfter', 'createdBefore'] as const) {
          const date = args.filter?.[bound];
          if (date && !isStorableDate(date)) throw badUserInput(`filter.${bound} must be a date in the years 0001 to 9999`);
        }
        const page = await context.executor.listExecutions(context.tenantId, {
          first,
          after: args.after ? decodeCursor(args.after) : null,
          filter: args.filter
            ? {
                status: args.filter.status as ExecutionStatus[] | null | undefined,
                correlationId: args.filter.correlationId,
                createdAfter: args.filter.createdAfter,
                createdBefore: args.filter.createdBefore,
              }
            : null,
        }).catch((error: unknown) => {
          throw toGraphQLError(error);
        });
        const last = page.executions.at(-1);
        return {
          executions: page.executions,
          pageInfo: { hasNextPage: page.hasNextPage, endCursor: last ? encodeCursor(last) : null },
        };
      },
    }),
  }),
});
