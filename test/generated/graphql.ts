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

export type NodeQueryVariables = Exact<{
  id: string | number;
}>;


export type NodeQuery = { node:
    | { __typename: 'Execution', status: ExecutionStatus, correlationId: string, totalSteps: number, finalResult: unknown, id: string, plan: { query: string }, steps: Array<{ id: string }> }
    | { __typename: 'StepResult', index: number, recordCount: number | null, sample: unknown, id: string, stepStatus: StepStatus }
   | null };

export type NodesQueryVariables = Exact<{
  ids: Array<string | number> | string | number;
}>;


export type NodesQuery = { nodes: Array<
    | { __typename: 'Execution', id: string }
    | { __typename: 'StepResult', id: string }
   | null> };

export type StepResultNodeQueryVariables = Exact<{
  id: string | number;
}>;


export type StepResultNodeQuery = { node:
    | { id: string }
    | { result: unknown, id: string }
   | null };

export type ExecutionWithStepIdsQueryVariables = Exact<{
  id: string | number;
}>;


export type ExecutionWithStepIdsQuery = { execution: { id: string, status: ExecutionStatus, steps: Array<{ id: string, index: number, status: StepStatus }> } | null };

export type FollowRunSubscriptionVariables = Exact<{
  executionId: string | number;
  afterSequence?: number | null | undefined;
}>;


export type FollowRunSubscription = { stepUpdates: { id: string, sequence: number, type: StepUpdateType, execution: { id: string, status: ExecutionStatus, lastSequence: number }, step: { id: string, index: number, status: StepStatus, recordCount: number | null } | null } };

export type UpdateWithExecutionFieldsSubscriptionVariables = Exact<{
  executionId: string | number;
}>;


export type UpdateWithExecutionFieldsSubscription = { stepUpdates: { sequence: number, execution: { id: string, status: ExecutionStatus, correlationId: string, totalSteps: number, plan: { query: string } } } };

export type StepResultFieldsFragment = { index: number, kind: StepKind, status: StepStatus, queryContext: string, entity: string | null, critical: boolean, sql: string | null, code: string | null, logs: Array<string> | null, recordCount: number | null, sample: unknown, truncated: boolean, attempts: number, startedAt: string | null, finishedAt: string | null, durationMs: number | null, usage: { promptTokens: number, completionTokens: number, totalTokens: number } | null, columns: Array<{ name: string, type: string }> | null, error: { code: string, message: string, retryable: boolean } | null };

export type ExecutePlanMutationVariables = Exact<{
  plan: PlanInput;
  options?: ExecuteOptions | null | undefined;
}>;


export type ExecutePlanMutation = { executePlan: { id: string, correlationId: string, status: ExecutionStatus, totalSteps: number, lastSequence: number, createdAt: string } };

export type ExecutionQueryVariables = Exact<{
  id: string | number;
}>;


export type ExecutionQuery = { execution: { id: string, correlationId: string, status: ExecutionStatus, totalSteps: number, successfulSteps: number, failedSteps: number, finalResult: unknown, lastSequence: number, createdAt: string, startedAt: string | null, finishedAt: string | null, durationMs: number | null, usage: { promptTokens: number, completionTokens: number, totalTokens: number } | null, error: { code: string, message: string, retryable: boolean } | null, plan: { query: string, steps: Array<{ kind: StepKind, queryContext: string, critical: boolean, sql: string | null }> }, steps: Array<{ result: unknown, index: number, kind: StepKind, status: StepStatus, queryContext: string, entity: string | null, critical: boolean, sql: string | null, code: string | null, logs: Array<string> | null, recordCount: number | null, sample: unknown, truncated: boolean, attempts: number, startedAt: string | null, finishedAt: string | null, durationMs: number | null, usage: { promptTokens: number, completionTokens: number, totalTokens: number } | null, columns: Array<{ name: string, type: string }> | null, error: { code: string, message: string, retryable: boolean } | null }> } | null };

export type ExecutionsQueryVariables = Exact<{
  first?: number | null | undefined;
  after?: string | null | undefined;
  filter?: ExecutionFilter | null | undefined;
}>;


export type ExecutionsQuery = { executions: { edges: Array<{ cursor: string, node: { id: string, status: ExecutionStatus, correlationId: string, createdAt: string } }>, pageInfo: { hasNextPage: boolean, endCursor: string | null } } };

export type ExecutionsWithStepsQueryVariables = Exact<{
  first?: number | null | undefined;
}>;


export type ExecutionsWithStepsQuery = { executions: { edges: Array<{ node: { id: string, steps: Array<{ index: number, status: StepStatus, sql: string | null, result: unknown }> } }> } };

export type ExecutionsWithPlansQueryVariables = Exact<{
  first?: number | null | undefined;
}>;


export type ExecutionsWithPlansQuery = { executions: { edges: Array<{ node: { id: string, finalResult: unknown, plan: { query: string, steps: Array<{ sql: string | null }> } } }> } };

export type StepUpdatesSubscriptionVariables = Exact<{
  executionId: string | number;
  afterSequence?: number | null | undefined;
}>;


export type StepUpdatesSubscription = { stepUpdates: { executionId: string, sequence: number, type: StepUpdateType, at: string, status: ExecutionStatus, message: string | null, step: { index: number, kind: StepKind, status: StepStatus, queryContext: string, entity: string | null, critical: boolean, sql: string | null, code: string | null, logs: Array<string> | null, recordCount: number | null, sample: unknown, truncated: boolean, attempts: number, startedAt: string | null, finishedAt: string | null, durationMs: number | null, usage: { promptTokens: number, completionTokens: number, totalTokens: number } | null, columns: Array<{ name: string, type: string }> | null, error: { code: string, message: string, retryable: boolean } | null } | null } };

export type PlanQueryQueryVariables = Exact<{
  query: string;
}>;


export type PlanQueryQuery = { planQuery: { query: string, reasoning: string | null, steps: Array<{ kind: StepKind, queryContext: string, entity: string | null, reasoning: string | null, critical: boolean, sql: string | null, code: string | null }> } };

export type ExecuteQueryMutationVariables = Exact<{
  query: string;
  options?: ExecuteOptions | null | undefined;
}>;


export type ExecuteQueryMutation = { executeQuery: { id: string, status: ExecutionStatus, correlationId: string, lastSequence: number, plan: { reasoning: string | null, steps: Array<{ kind: StepKind, queryContext: string, critical: boolean }> } } };

export type CancelExecutionMutationVariables = Exact<{
  id: string | number;
}>;


export type CancelExecutionMutation = { cancelExecution: { id: string, status: ExecutionStatus, cancelRequestedAt: string | null, error: { code: string } | null } };

export type ApproveStepMutationVariables = Exact<{
  executionId: string | number;
  index: number;
  comment?: string | null | undefined;
}>;


export type ApproveStepMutation = { approveStep: { id: string, status: ExecutionStatus } };

export type RejectStepMutationVariables = Exact<{
  executionId: string | number;
  index: number;
  comment?: string | null | undefined;
}>;


export type RejectStepMutation = { rejectStep: { id: string, status: ExecutionStatus } };

export type DurableExecutionQueryVariables = Exact<{
  id: string | number;
}>;


export type DurableExecutionQuery = { execution: { id: string, status: ExecutionStatus, resumes: number, cancelRequestedAt: string | null, lastSequence: number, error: { code: string, message: string } | null, steps: Array<{ index: number, status: StepStatus, attempts: number, approval: boolean, decision: string | null, decidedBy: string | null, decidedAt: string | null, decisionComment: string | null, recordCount: number | null, error: { code: string, message: string } | null }> } | null };

export type WaitingUpdatesSubscriptionVariables = Exact<{
  executionId: string | number;
  afterSequence?: number | null | undefined;
}>;


export type WaitingUpdatesSubscription = { stepUpdates: { sequence: number, type: StepUpdateType, status: ExecutionStatus, step: { index: number, status: StepStatus, attempts: number } | null, findings: Array<{ index: number, recordCount: number | null, sample: unknown }> | null } };

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
export const StepResultFieldsFragmentDoc = new TypedDocumentString(`
    fragment StepResultFields on StepResult {
  index
  kind
  status
  queryContext
  entity
  critical
  sql
  code
  logs
  recordCount
  sample
  truncated
  attempts
  startedAt
  finishedAt
  durationMs
  usage {
    promptTokens
    completionTokens
    totalTokens
  }
  columns {
    name
    type
  }
  error {
    code
    message
    retryable
  }
}
    `, {"fragmentName":"StepResultFields"}) as unknown as TypedDocumentString<StepResultFieldsFragment, unknown>;
export const NodeDocument = new TypedDocumentString(`
    query Node($id: ID!) {
  node(id: $id) {
    __typename
    id
    ... on Execution {
      status
      correlationId
      totalSteps
      plan {
        query
      }
      finalResult
      steps {
        id
      }
    }
    ... on StepResult {
      index
      stepStatus: status
      recordCount
      sample
    }
  }
}
    `) as unknown as TypedDocumentString<NodeQuery, NodeQueryVariables>;
export const NodesDocument = new TypedDocumentString(`
    query Nodes($ids: [ID!]!) {
  nodes(ids: $ids) {
    __typename
    id
  }
}
    `) as unknown as TypedDocumentString<NodesQuery, NodesQueryVariables>;
export const StepResultNodeDocument = new TypedDocumentString(`
    query StepResultNode($id: ID!) {
  node(id: $id) {
    id
    ... on StepResult {
      result
    }
  }
}
    `) as unknown as TypedDocumentString<StepResultNodeQuery, StepResultNodeQueryVariables>;
export const ExecutionWithStepIdsDocument = new TypedDocumentString(`
    query ExecutionWithStepIds($id: ID!) {
  execution(id: $id) {
    id
    status
    steps {
      id
      index
      status
    }
  }
}
    `) as unknown as TypedDocumentString<ExecutionWithStepIdsQuery, ExecutionWithStepIdsQueryVariables>;
export const FollowRunDocument = new TypedDocumentString(`
    subscription FollowRun($executionId: ID!, $afterSequence: Int) {
  stepUpdates(executionId: $executionId, afterSequence: $afterSequence) {
    id
    sequence
    type
    execution {
      id
      status
      lastSequence
    }
    step {
      id
      index
      status
      recordCount
    }
  }
}
    `) as unknown as TypedDocumentString<FollowRunSubscription, FollowRunSubscriptionVariables>;
export const UpdateWithExecutionFieldsDocument = new TypedDocumentString(`
    subscription UpdateWithExecutionFields($executionId: ID!) {
  stepUpdates(executionId: $executionId) {
    sequence
    execution {
      id
      status
      correlationId
      totalSteps
      plan {
        query
      }
    }
  }
}
    `) as unknown as TypedDocumentString<UpdateWithExecutionFieldsSubscription, UpdateWithExecutionFieldsSubscriptionVariables>;
export const ExecutePlanDocument = new TypedDocumentString(`
    mutation ExecutePlan($plan: PlanInput!, $options: ExecuteOptions) {
  executePlan(plan: $plan, options: $options) {
    id
    correlationId
    status
    totalSteps
    lastSequence
    createdAt
  }
}
    `) as unknown as TypedDocumentString<ExecutePlanMutation, ExecutePlanMutationVariables>;
export const ExecutionDocument = new TypedDocumentString(`
    query Execution($id: ID!) {
  execution(id: $id) {
    id
    correlationId
    status
    totalSteps
    successfulSteps
    failedSteps
    finalResult
    lastSequence
    createdAt
    startedAt
    finishedAt
    durationMs
    usage {
      promptTokens
      completionTokens
      totalTokens
    }
    error {
      code
      message
      retryable
    }
    plan {
      query
      steps {
        kind
        queryContext
        critical
        sql
      }
    }
    steps {
      ...StepResultFields
      result
    }
  }
}
    fragment StepResultFields on StepResult {
  index
  kind
  status
  queryContext
  entity
  critical
  sql
  code
  logs
  recordCount
  sample
  truncated
  attempts
  startedAt
  finishedAt
  durationMs
  usage {
    promptTokens
    completionTokens
    totalTokens
  }
  columns {
    name
    type
  }
  error {
    code
    message
    retryable
  }
}`) as unknown as TypedDocumentString<ExecutionQuery, ExecutionQueryVariables>;
export const ExecutionsDocument = new TypedDocumentString(`
    query Executions($first: Int, $after: String, $filter: ExecutionFilter) {
  executions(first: $first, after: $after, filter: $filter) {
    edges {
      cursor
      node {
        id
        status
        correlationId
        createdAt
      }
    }
    pageInfo {
      hasNextPage
      endCursor
    }
  }
}
    `) as unknown as TypedDocumentString<ExecutionsQuery, ExecutionsQueryVariables>;
export const ExecutionsWithStepsDocument = new TypedDocumentString(`
    query ExecutionsWithSteps($first: Int) {
  executions(first: $first) {
    edges {
      node {
        id
        steps {
          index
          status
          sql
          result
        }
      }
    }
  }
}
    `) as unknown as TypedDocumentString<ExecutionsWithStepsQuery, ExecutionsWithStepsQueryVariables>;
export const ExecutionsWithPlansDocument = new TypedDocumentString(`
    query ExecutionsWithPlans($first: Int) {
  executions(first: $first) {
    edges {
      node {
        id
        plan {
          query
          steps {
            sql
          }
        }
        finalResult
      }
    }
  }
}
    `) as unknown as TypedDocumentString<ExecutionsWithPlansQuery, ExecutionsWithPlansQueryVariables>;
export const StepUpdatesDocument = new TypedDocumentString(`
    subscription StepUpdates($executionId: ID!, $afterSequence: Int) {
  stepUpdates(executionId: $executionId, afterSequence: $afterSequence) {
    executionId
    sequence
    type
    at
    status
    message
    step {
      ...StepResultFields
    }
  }
}
    fragment StepResultFields on StepResult {
  index
  kind
  status
  queryContext
  entity
  critical
  sql
  code
  logs
  recordCount
  sample
  truncated
  attempts
  startedAt
  finishedAt
  durationMs
  usage {
    promptTokens
    completionTokens
    totalTokens
  }
  columns {
    name
    type
  }
  error {
    code
    message
    retryable
  }
}`) as unknown as TypedDocumentString<StepUpdatesSubscription, StepUpdatesSubscriptionVariables>;
export const PlanQueryDocument = new TypedDocumentString(`
    query PlanQuery($query: String!) {
  planQuery(query: $query) {
    query
    reasoning
    steps {
      kind
      queryContext
      entity
      reasoning
      critical
      sql
      code
    }
  }
}
    `) as unknown as TypedDocumentString<PlanQueryQuery, PlanQueryQueryVariables>;
export const ExecuteQueryDocument = new TypedDocumentString(`
    mutation ExecuteQuery($query: String!, $options: ExecuteOptions) {
  executeQuery(query: $query, options: $options) {
    id
    status
    correlationId
    lastSequence
    plan {
      reasoning
      steps {
        kind
        queryContext
        critical
      }
    }
  }
}
    `) as unknown as TypedDocumentString<ExecuteQueryMutation, ExecuteQueryMutationVariables>;
export const CancelExecutionDocument = new TypedDocumentString(`
    mutation CancelExecution($id: ID!) {
  cancelExecution(id: $id) {
    id
    status
    cancelRequestedAt
    error {
      code
    }
  }
}
    `) as unknown as TypedDocumentString<CancelExecutionMutation, CancelExecutionMutationVariables>;
export const ApproveStepDocument = new TypedDocumentString(`
    mutation ApproveStep($executionId: ID!, $index: Int!, $comment: String) {
  approveStep(executionId: $executionId, index: $index, comment: $comment) {
    id
    status
  }
}
    `) as unknown as TypedDocumentString<ApproveStepMutation, ApproveStepMutationVariables>;
export const RejectStepDocument = new TypedDocumentString(`
    mutation RejectStep($executionId: ID!, $index: Int!, $comment: String) {
  rejectStep(executionId: $executionId, index: $index, comment: $comment) {
    id
    status
  }
}
    `) as unknown as TypedDocumentString<RejectStepMutation, RejectStepMutationVariables>;
export const DurableExecutionDocument = new TypedDocumentString(`
    query DurableExecution($id: ID!) {
  execution(id: $id) {
    id
    status
    resumes
    cancelRequestedAt
    lastSequence
    error {
      code
      message
    }
    steps {
      index
      status
      attempts
      approval
      decision
      decidedBy
      decidedAt
      decisionComment
      recordCount
      error {
        code
        message
      }
    }
  }
}
    `) as unknown as TypedDocumentString<DurableExecutionQuery, DurableExecutionQueryVariables>;
export const WaitingUpdatesDocument = new TypedDocumentString(`
    subscription WaitingUpdates($executionId: ID!, $afterSequence: Int) {
  stepUpdates(executionId: $executionId, afterSequence: $afterSequence) {
    sequence
    type
    status
    step {
      index
      status
      attempts
    }
    findings {
      index
      recordCount
      sample
    }
  }
}
    `) as unknown as TypedDocumentString<WaitingUpdatesSubscription, WaitingUpdatesSubscriptionVariables>;