import { builder } from './builder.js';
import { StepKindEnum } from './enums.js';
import { isUuid } from './cursor.js';
import { badUserInput, clientGone, notFound, toGraphQLError } from './errors.js';
import { ExecutionRef, PlanRef } from './execution.js';
import { followClientSignal, type GraphQLContext } from './context.js';

/** Who decided, as stored on the step: the API key or JWT subject, never a secret. */
function decidedBy(context: GraphQLContext): string {
  const { principal } = context;
  if (principal.kind === 'api-key') return `api-key:${principal.keyId}`;
  if (principal.kind === 'jwt') return `jwt:${principal.subject ?? 'no subject'}`;
  return 'anonymous';
}

function executionIdOf(id: string | number): string {
  const text = String(id);
  if (!isUuid(text)) throw notFound(`execution ${text} was not found`);
  return text;
}

const StepInput = builder.inputType('StepInput', {
  description: 'One step. With sql (SQL) or code (API) it runs as written; without, its agent writes it.',
  fields: (t) => ({
    kind: t.field({ type: StepKindEnum, required: true }),
    queryContext: t.string({ required: true, description: 'What the step must find, in plain words.' }),
    entity: t.string({ description: 'The table or API resource the step is about.' }),
    reasoning: t.string(),
    critical: t.boolean({ defaultValue: true, description: 'When true, a failure stops the plan.' }),
    sql: t.string({ description: 'Read-only SQL over your tables and step_1, step_2, ... (earlier steps).' }),
    code: t.string(),
    approval: t.boolean({
      defaultValue: false,
      description:
        'When true, the execution stops before this step (status WAITING, a STEP_WAITING update) until approveStep or rejectStep.',
    }),
    approvalTimeoutMs: t.int({
      description: 'How long the step may wait for a decision before it fails APPROVAL_TIMEOUT (1000 to 604800000); no limit when absent.',
    }),
  }),
});

const PlanInput = builder.inputType('PlanInput', {
  fields: (t) => ({
    query: t.string({ required: true, description: 'The question the plan answers.' }),
    reasoning: t.string(),
    steps: t.field({ type: [StepInput], required: true }),
  }),
});

const ExecuteOptions = builder.inputType('ExecuteOptions', {
  fields: (t) => ({
    correlationId: t.string({ description: 'Tags every log line, event and row of the run; generated when absent.' }),
    sampleSize: t.int({ description: 'Records of each step passed on as its sample, 0 to 100; default 3.' }),
    stepTimeoutMs: t.int({
      description:
        "Time limit of each step's SQL statement or program in milliseconds, counted from when it starts; default 10000. The time an agent takes to write it has its own limit (STEPCAST_AGENT_TIMEOUT_MS).",
    }),
    idempotencyKey: t.string({
      description:
        'Submits the request once: the same key with the same request (plan or query, and options) answers with the execution it made, for STEPCAST_IDEMPOTENCY_TTL_HOURS (24), without running it again or counting against your rate. 1 to 200 characters. The same key with another request answers IDEMPOTENCY_CONFLICT; while the first executeQuery with the key is still planning, a retry waits for its execution, or answers IDEMPOTENCY_KEY_IN_USE (retryable, extensions.retryAfter) if it fails.',
    }),
  }),
});

builder.mutationType({
  fields: (t) => ({
    executePlan: t.field({
      type: ExecutionRef,
      description:
        'Stores the plan as a new execution and returns it at once; follow it with stepUpdates. Past your rate, answers RATE_LIMITED with extensions.retryAfter (seconds).',
      args: {
        plan: t.arg({ type: PlanInput, required: true }),
        options: t.arg({ type: ExecuteOptions }),
      },
      resolve: async (_root, { plan, options }, context) => {
        try {
          return await context.executor.submitPlan(context.tenantId, plan, options);
        } catch (error) {
          throw toGraphQLError(error);
        }
      },
    }),
    executeQuery: t.field({
      type: ExecutionRef,
      description:
        'Asks the planner for a plan answering the question, then executes it. The plan is the first update (PLAN_CREATED). Counts against the same rate as executePlan and takes one of your model calls (RATE_LIMITED with extensions.retryAfter when either is used up); each step an agent writes takes another. A request may select one planQuery or executeQuery (TOO_MANY_MODEL_CALLS).',
      args: {
        query: t.arg.string({ required: true, description: 'The question, in plain words.' }),
        options: t.arg({ type: ExecuteOptions }),
      },
      resolve: async (_root, { query, options }, context) => {
        try {
          return await context.executor.executeQuery(context.tenantId, query, options);
        } catch (error) {
          throw toGraphQLError(error);
        }
      },
    }),
    cancelExecution: t.field({
      type: ExecutionRef,
      description:
        'Cancels an execution of yours. QUEUED and WAITING ones end CANCELLED at once; for a RUNNING one the running step is stopped (its SQL statement cancelled on the server, its program interrupted, its API and model calls aborted), it becomes CANCELLED, the rest SKIPPED, then EXECUTION_CANCELLED. The request is stored first: a restart honours it. A finished execution is returned unchanged; an unknown id answers NOT_FOUND.',
      args: { id: t.arg.id({ required: true }) },
      resolve: async (_root, { id }, context) => {
        try {
          return await context.executor.cancelExecution(context.tenantId, executionIdOf(id));
        } catch (error) {
          throw toGraphQLError(error);
        }
      },
    }),
    approveStep: t.field({
      type: ExecutionRef,
      description:
        'Lets the step the execution is WAITING before run. Who approved, when and the comment are stored on the step. BAD_USER_INPUT when that step is not waiting.',
      args: {
        executionId: t.arg.id({ required: true }),
        index: t.arg.int({ required: true, description: '1-based position of the waiting step.' }),
        comment: t.arg.string({ description: 'Why, in plain words (up to 2000 characters).' }),
      },
      resolve: async (_root, args, context) => decide(context, args, true),
    }),
    rejectStep: t.field({
      type: ExecutionRef,
      description:
        'Fails the step the execution is WAITING before with REJECTED (a critical step then fails the execution, as any failure would). Who rejected, when and the comment are stored on the step.',
      args: {
        executionId: t.arg.id({ required: true }),
        index: t.arg.int({ required: true, description: '1-based position of the waiting step.' }),
        comment: t.arg.string({ description: 'Why, in plain words (up to 2000 characters).' }),
      },
      resolve: async (_root, args, context) => decide(context, args, false),
    }),
  }),
});

const MAX_COMMENT_CHARS = 2_000;

async function decide(
  context: GraphQLContext,
  args: { executionId: string | number; index: number; comment?: string | null },
  approve: boolean,
) {
  const comment = args.comment ?? null;
  if (comment !== null && (comment.length > MAX_COMMENT_CHARS || comment.includes('\u0000'))) {
    throw badUserInput(`comment must be at most ${MAX_COMMENT_CHARS} characters, without NUL characters`);
  }
  try {
    return await context.executor.decideStep(context.tenantId, {
      executionId: executionIdOf(args.executionId),
      index: args.index,
      approve,
      comment,
      decidedBy: decidedBy(context),
    });
  } catch (error) {
    throw toGraphQLError(error);
  }
}

builder.queryField('planQuery', (t) =>
  t.field({
    type: PlanRef,
    description:
      'Asks the planner for a plan answering the question, checked like a client plan; runs nothing, stores nothing. Takes one of your model calls (RATE_LIMITED with extensions.retryAfter when they are used up). A request may select one planQuery or executeQuery (TOO_MANY_MODEL_CALLS).',
    args: { query: t.arg.string({ required: true, description: 'The question, in plain words.' }) },
    resolve: async (_root, { query }, context) => {
      // A plan nobody waits for any more is not worth the model's time: on a server with one slot, it holds up
      // every other request. Followed, not used as it is (see GraphQLContext.signal).
      const clientGoneSignal = context.signal ? followClientSignal(context.signal) : undefined;
      try {
        return await context.executor.planQuery(context.tenantId, query, clientGoneSignal);
      } catch (error) {
        if (clientGoneSignal?.aborted) throw clientGone();
        throw toGraphQLError(error);
      }
    },
  }),
);
