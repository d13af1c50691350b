/* eslint-disable */
/** Internal type. DO NOT USE DIRECTLY. */
type Exact<T extends { [key: string]: unknown }> = { [K in keyof T]: T[K] };
/** Internal type. DO NOT USE DIRECTLY. */
export type Incremental<T> = T | { [P in keyof T]?: P extends ' $fragmentName' | '__typename' ? T[P] : never };
import type { DocumentTypeDecoration } from '@graphql-typed-document-node/core';
export type ExecuteOptions = {
  /** Tags every log line, event and row of the run; generated when absent. */
  correlationId?: string | null | undefined;
  /** Submits the request once: the same key with the same request (plan or query, and options) answers with the execution it made, for STEPCAST_IDEMPOTENCY_TTL_HOURS (24), without running it again or counting against your rate. 1 to 200 characters. The same key with another request answers IDEMPOTENCY_CONFLICT; while the first executeQuery with the key is still planning, a retry waits for its execution, or answers IDEMPOTENCY_KEY_IN_USE (retryable, extensions.retryAfter) if it fails. */
  idempotencyKey?: string | null | undefined;
  /** Records of each step passed on as its sample, 0 to 100; default 3. */
  sampleSize?: number | null | undefined;
  /** Time limit of each step's SQL statement or program in milliseconds, counted from when it starts; default 10000. The time an agent takes to write it has its own limit (STEPCAST_AGENT_TIMEOUT_MS). */
  stepTimeoutMs?: number | null | undefined;
};

export type ExecutionFilter = {
  correlationId?: string | null | undefined;
  createdAfter?: string | null | undefined;
  createdBefore?: string | null | undefined;
  /** Any of these statuses. */
  status?: Array<ExecutionStatus> | null | undefined;
};

/** Where an execution is in its life: QUEUED, then RUNNING (WAITING while an approval step waits for a person), then SUCCEEDED, FAILED or CANCELLED. */
export type ExecutionStatus =
  | 'CANCELLED'
  | 'FAILED'
  | 'QUEUED'
  | 'RUNNING'
  | 'SUCCEEDED'
  | 'WAITING';

export type PlanInput = {
  /** The question the plan answers. */
  query: string;
  reasoning?: string | null | undefined;
  steps: Array<StepInput>;
};

/** One step. With sql (SQL) or code (API) it runs as written; without, its agent writes it. */
export type StepInput = {
  /** When true, the execution stops before this step (status WAITING, a STEP_WAITING update) until approveStep or rejectStep. */
  approval?: boolean | null | undefined;
  /** How long the step may wait for a decision before it fails APPROVAL_TIMEOUT (1000 to 604800000); no limit when absent. */
  approvalTimeoutMs?: number | null | undefined;
  code?: string | null | undefined;
  /** When true, a failure stops the plan. */
  critical?: boolean | null | undefined;
  /** The table or API resource the step is about. */
  entity?: string | null | undefined;
  kind: StepKind;
  /** What the step must find, in plain words. */
  queryContext: string;
  reasoning?: string | null | undefined;
  /** Read-only SQL over your tables and step_1, step_2, ... (earlier steps). */
  sql?: string | null | undefined;
};

/** SQL: read-only SQL over the tenant data. API: a short program calling the tenant HTTP API. */
export type StepKind =
  | 'API'
  | 'SQL';

/** SKIPPED: an earlier critical step failed (or the execution was cancelled), so this one never ran. WAITING: an approval step waiting for approveStep or rejectStep. */
export type StepStatus =
  | 'CANCELLED'
  | 'FAILED'
  | 'PENDING'
  | 'RUNNING'
  | 'SKIPPED'
  | 'SUCCEEDED'
  | 'WAITING';

/** What happened in one StepUpdate. The EXECUTION_SUCCEEDED/FAILED/CANCELLED update is the last. EXECUTION_RESUMED: a server continued the execution after the one running it stopped; its step is the one run again. */
export type StepUpdateType =
  | 'EXECUTION_CANCELLED'
  | 'EXECUTION_FAILED'
  | 'EXECUTION_RESUMED'
  | 'EXECUTION_STARTED'
  | 'EXECUTION_SUCCEEDED'
  | 'PLAN_CREATED'
  | 'STEP_APPROVED'
  | 'STEP_CANCELLED'
  | 'STEP_FAILED'
  | 'STEP_PROGRESS'
  | 'STEP_REJECTED'
  | 'STEP_SKIPPED'
  | 'STEP_STARTED'
  | 'STEP_SUCCEEDED'
  | 'STEP_WAITING';

export type CliStepFieldsFragment = { index: number, kind: StepKind, status: StepStatus, queryContext: string, entity: string | null, recordCount: number | null, durationMs: number | null, approval: boolean, decision: string | null, decidedBy: string | null, decisionComment: string | null, error: { code: string, message: string, retryable: boolean } | null };

export type CliExecutionFieldsFragment = { id: string, correlationId: string, status: ExecutionStatus, totalSteps: number, successfulSteps: number, failedSteps: number, lastSequence: number, createdAt: string, finishedAt: string | null, durationMs: number | null, usage: { totalTokens: number } | null, error: { code: string, message: string } | null, plan: { query: string, steps: Array<{ kind: StepKind, queryContext: string }> } };

export type CliExecutePlanMutationVariables = Exact<{
  plan: PlanInput;
  options?: ExecuteOptions | null | undefined;
}>;


export type CliExecutePlanMutation = { executePlan: { id: string, correlationId: string, status: ExecutionStatus, totalSteps: number, successfulSteps: number, failedSteps: number, lastSequence: number, createdAt: string, finishedAt: string | null, durationMs: number | null, usage: { totalTokens: number } | null, error: { code: string, message: string } | null, plan: { query: string, steps: Array<{ kind: StepKind, queryContext: string }> } } };

export type CliExecuteQueryMutationVariables = Exact<{
  query: string;
  options?: ExecuteOptions | null | undefined;
}>;


export type CliExecuteQueryMutation = { executeQuery: { id: string, correlationId: string, status: ExecutionStatus, totalSteps: number, successfulSteps: number, failedSteps: number, lastSequence: number, createdAt: string, finishedAt: string | null, durationMs: number | null, usage: { totalTokens: number } | null, error: { code: string, message: string } | null, plan: { query: string, steps: Array<{ kind: StepKind, queryContext: string }> } } };

export type CliExecutionQueryVariables = Exact<{
  id: string | number;
}>;


export type CliExecutionQuery = { execution: { id: string, correlationId: string, status: ExecutionStatus, totalSteps: number, successfulSteps: number, failedSteps: number, lastSequence: number, createdAt: string, finishedAt: string | null, durationMs: number | null, usage: { totalTokens: number } | null, error: { code: string, message: string } | null, plan: { query: string, steps: Array<{ kind: StepKind, queryContext: string }> } } | null };

export type CliShowExecutionQueryVariables = Exact<{
  id: string | number;
}>;


export type CliShowExecutionQuery = { execution: { startedAt: string | null, resumes: number, cancelRequestedAt: string | null, id: string, correlationId: string, status: ExecutionStatus, totalSteps: number, successfulSteps: number, failedSteps: number, lastSequence: number, createdAt: string, finishedAt: string | null, durationMs: number | null, plan: { reasoning: string | null, query: string, steps: Array<{ kind: StepKind, queryContext: string }> }, steps: Array<{ sql: string | null, code: string | null, logs: Array<string> | null, attempts: number, truncated: boolean, sample: unknown, decidedAt: string | null, index: number, kind: StepKind, status: StepStatus, queryContext: string, entity: string | null, recordCount: number | null, durationMs: number | null, approval: boolean, decision: string | null, decidedBy: string | null, decisionComment: string | null, usage: { totalTokens: number } | null, error: { code: string, message: string, retryable: boolean } | null }>, usage: { totalTokens: number } | null, error: { code: string, message: string } | null } | null };

export type CliExecutionsQueryVariables = Exact<{
  first?: number | null | undefined;
  after?: string | null | undefined;
  filter?: ExecutionFilter | null | undefined;
}>;


export type CliExecutionsQuery = { executions: { edges: Array<{ cursor: string, node: { id: string, correlationId: string, status: ExecutionStatus, createdAt: string, durationMs: number | null, totalSteps: number, successfulSteps: number, failedSteps: number, plan: { query: string }, error: { code: string, message: string } | null } }>, pageInfo: { hasNextPage: boolean, endCursor: string | null } } };

export type CliCancelExecutionMutationVariables = Exact<{
  id: string | number;
}>;


export type CliCancelExecutionMutation = { cancelExecution: { id: string, correlationId: string, status: ExecutionStatus, totalSteps: number, successfulSteps: number, failedSteps: number, lastSequence: number, createdAt: string, finishedAt: string | null, durationMs: number | null, usage: { totalTokens: number } | null, error: { code: string, message: string } | null, plan: { query: string, steps: Array<{ kind: StepKind, queryContext: string }> } } };

export type CliApproveStepMutationVariables = Exact<{
  executionId: string | number;
  index: number;
  comment?: string | null | undefined;
}>;


export type CliApproveStepMutation = { approveStep: { id: string, correlationId: string, status: ExecutionStatus, totalSteps: number, successfulSteps: number, failedSteps: number, lastSequence: number, createdAt: string, finishedAt: string | null, durationMs: number | null, usage: { totalTokens: number } | null, error: { code: string, message: string } | null, plan: { query: string, steps: Array<{ kind: StepKind, queryContext: string }> } } };

export type CliRejectStepMutationVariables = Exact<{
  executionId: string | number;
  index: number;
  comment?: string | null | undefined;
}>;


export type CliRejectStepMutation = { rejectStep: { id: string, correlationId: string, status: ExecutionStatus, totalSteps: number, successfulSteps: number, failedSteps: number, lastSequence: number, createdAt: string, finishedAt: string | null, durationMs: number | null, usage: { totalTokens: number } | null, error: { code: string, message: string } | null, plan: { query: string, steps: Array<{ kind: StepKind, queryContext: string }> } } };

export type CliStepUpdatesSubscriptionVariables = Exact<{
  executionId: string | number;
  afterSequence?: number | null | undefined;
}>;


export type CliStepUpdatesSubscription = { stepUpdates: { executionId: string, sequence: number, type: StepUpdateType, status: ExecutionStatus, at: string, message: string | null, step: { index: number, kind: StepKind, status: StepStatus, queryContext: string, entity: string | null, recordCount: number | null, durationMs: number | null, approval: boolean, decision: string | null, decidedBy: string | null, decisionComment: string | null, error: { code: string, message: string, retryable: boolean } | null } | null } };

export class TypedDocumentString<TResult, TVariables>
  extends String
  implements DocumentTypeDecoration<TResult, TVariables>
{
  __apiType?: NonNullable<DocumentTypeDecoration<TResult, TVariables>['__apiType']>;
  private value: string;
  public __meta__?: Record<string, any> | undefined;

  constructor(value: string, __meta__?: Record<string, any> | undefined) {
    super(value);
    this.value = value;
    this.__meta__ = __meta__;
  }

  override toString(): string & DocumentTypeDecoration<TResult, TVariables> {
    return this.value;
  }
}
export const CliStepFieldsFragmentDoc = new TypedDocumentString(`
    fragment CliStepFields on StepResult {
  index
  kind
  status
  queryContext
  entity
  recordCount
  durationMs
  approval
  decision
  decidedBy
  decisionComment
  error {
    code
    message
    retryable
  }
}
    `, {"fragmentName":"CliStepFields"}) as unknown as TypedDocumentString<CliStepFieldsFragment, unknown>;
export const CliExecutionFieldsFragmentDoc = new TypedDocumentString(`
    fragment CliExecutionFields on Execution {
  id
  correlationId
  status
  totalSteps
  successfulSteps
  failedSteps
  lastSequence
  createdAt
  finishedAt
  durationMs
  usage {
    totalTokens
  }
  error {
    code
    message
  }
  plan {
    query
    steps {
      kind
      queryContext
    }
  }
}
    `, {"fragmentName":"CliExecutionFields"}) as unknown as TypedDocumentString<CliExecutionFieldsFragment, unknown>;
export const CliExecutePlanDocument = new TypedDocumentString(`
    mutation CliExecutePlan($plan: PlanInput!, $options: ExecuteOptions) {
  executePlan(plan: $plan, options: $options) {
    ...CliExecutionFields
  }
}
    fragment CliExecutionFields on Execution {
  id
  correlationId
  status
  totalSteps
  successfulSteps
  failedSteps
  lastSequence
  createdAt
  finishedAt
  durationMs
  usage {
    totalTokens
  }
  error {
    code
    message
  }
  plan {
    query
    steps {
      kind
      queryContext
    }
  }
}`) as unknown as TypedDocumentString<CliExecutePlanMutation, CliExecutePlanMutationVariables>;
export const CliExecuteQueryDocument = new TypedDocumentString(`
    mutation CliExecuteQuery($query: String!, $options: ExecuteOptions) {
  executeQuery(query: $query, options: $options) {
    ...CliExecutionFields
  }
}
    fragment CliExecutionFields on Execution {
  id
  correlationId
  status
  totalSteps
  successfulSteps
  failedSteps
  lastSequence
  createdAt
  finishedAt
  durationMs
  usage {
    totalTokens
  }
  error {
    code
    message
  }
  plan {
    query
    steps {
      kind
      queryContext
    }
  }
}`) as unknown as TypedDocumentString<CliExecuteQueryMutation, CliExecuteQueryMutationVariables>;
export const CliExecutionDocument = new TypedDocumentString(`
    query CliExecution($id: ID!) {
  execution(id: $id) {
    ...CliExecutionFields
  }
}
    fragment CliExecutionFields on Execution {
  id
  correlationId
  status
  totalSteps
  successfulSteps
  failedSteps
  lastSequence
  createdAt
  finishedAt
  durationMs
  usage {
    totalTokens
  }
  error {
    code
    message
  }
  plan {
    query
    steps {
      kind
      queryContext
    }
  }
}`) as unknown as TypedDocumentString<CliExecutionQuery, CliExecutionQueryVariables>;
export const CliShowExecutionDocument = new TypedDocumentString(`
    query CliShowExecution($id: ID!) {
  execution(id: $id) {
    ...CliExecutionFields
    startedAt
    resumes
    cancelRequestedAt
    plan {
      reasoning
    }
    steps {
      ...CliStepFields
      sql
      code
      logs
      attempts
      truncated
      sample
      decidedAt
      usage {
        totalTokens
      }
    }
  }
}
    fragment CliStepFields on StepResult {
  index
  kind
  status
  queryContext
  entity
  recordCount
  durationMs
  approval
  decision
  decidedBy
  decisionComment
  error {
    code
    message
    retryable
  }
}
fragment CliExecutionFields on Execution {
  id
  correlationId
  status
  totalSteps
  successfulSteps
  failedSteps
  lastSequence
  createdAt
  finishedAt
  durationMs
  usage {
    totalTokens
  }
  error {
    code
    message
  }
  plan {
    query
    steps {
      kind
      queryContext
    }
  }
}`) as unknown as TypedDocumentString<CliShowExecutionQuery, CliShowExecutionQueryVariables>;
export const CliExecutionsDocument = new TypedDocumentString(`
    query CliExecutions($first: Int, $after: String, $filter: ExecutionFilter) {
  executions(first: $first, after: $after, filter: $filter) {
    edges {
      cursor
      node {
        id
        correlationId
        status
        createdAt
        durationMs
        totalSteps
        successfulSteps
        failedSteps
        plan {
          query
        }
        error {
          code
          message
        }
      }
    }
    pageInfo {
      hasNextPage
      endCursor
    }
  }
}
    `) as unknown as TypedDocumentString<CliExecutionsQuery, CliExecutionsQueryVariables>;
export const CliCancelExecutionDocument = new TypedDocumentString(`
    mutation CliCancelExecution($id: ID!) {
  cancelExecution(id: $id) {
    ...CliExecutionFields
  }
}
    fragment CliExecutionFields on Execution {
  id
  correlationId
  status
  totalSteps
  successfulSteps
  failedSteps
  lastSequence
  createdAt
  finishedAt
  durationMs
  usage {
    totalTokens
  }
  error {
    code
    message
  }
  plan {
    query
    steps {
      kind
      queryContext
    }
  }
}`) as unknown as TypedDocumentString<CliCancelExecutionMutation, CliCancelExecutionMutationVariables>;
export const CliApproveStepDocument = new TypedDocumentString(`
    mutation CliApproveStep($executionId: ID!, $index: Int!, $comment: String) {
  approveStep(executionId: $executionId, index: $index, comment: $comment) {
    ...CliExecutionFields
  }
}
    fragment CliExecutionFields on Execution {
  id
  correlationId
  status
  totalSteps
  successfulSteps
  failedSteps
  lastSequence
  createdAt
  finishedAt
  durationMs
  usage {
    totalTokens
  }
  error {
    code
    message
  }
  plan {
    query
    steps {
      kind
      queryContext
    }
  }
}`) as unknown as TypedDocumentString<CliApproveStepMutation, CliApproveStepMutationVariables>;
export const CliRejectStepDocument = new TypedDocumentString(`
    mutation CliRejectStep($executionId: ID!, $index: Int!, $comment: String) {
  rejectStep(executionId: $executionId, index: $index, comment: $comment) {
    ...CliExecutionFields
  }
}
    fragment CliExecutionFields on Execution {
  id
  correlationId
  status
  totalSteps
  successfulSteps
  failedSteps
  lastSequence
  createdAt
  finishedAt
  durationMs
  usage {
    totalTokens
  }
  error {
    code
    message
  }
  plan {
    query
    steps {
      kind
      queryContext
    }
  }
}`) as unknown as TypedDocumentString<CliRejectStepMutation, CliRejectStepMutationVariables>;
export const CliStepUpdatesDocument = new TypedDocumentString(`
    subscription CliStepUpdates($executionId: ID!, $afterSequence: Int) {
  stepUpdates(executionId: $executionId, afterSequence: $afterSequence) {
    executionId
    sequence
    type
    status
    at
    message
    step {
      ...CliStepFields
    }
  }
}
    fragment CliStepFields on StepResult {
  index
  kind
  status
  queryContext
  entity
  recordCount
  durationMs
  approval
  decision
  decidedBy
  decisionComment
  error {
    code
    message
    retryable
  }
}`) as unknown as TypedDocumentString<CliStepUpdatesSubscription, CliStepUpdatesSubscriptionVariables>;