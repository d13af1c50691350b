import { graphql } from './generated/gql.js';

export const CliStepFields = graphql(`
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
`);

export const CliExecutionFields = graphql(`
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
`);

export const CliExecutePlanMutation = graphql(`
  mutation CliExecutePlan($plan: PlanInput!, $options: ExecuteOptions) {
    executePlan(plan: $plan, options: $options) {
      ...CliExecutionFields
    }
  }
`);

export const CliExecuteQueryMutation = graphql(`
  mutation CliExecuteQuery($query: String!, $options: ExecuteOptions) {
    executeQuery(query: $query, options: $options) {
      ...CliExecutionFields
    }
  }
`);

export const CliExecutionQuery = graphql(`
  query CliExecution($id: ID!) {
    execution(id: $id) {
      ...CliExecutionFields
    }
  }
`);

export const CliShowExecutionQuery = graphql(`
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
`);

export const CliExecutionsQuery = graphql(`
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
`);

export const CliCancelExecutionMutation = graphql(`
  mutation CliCancelExecution($id: ID!) {
    cancelExecution(id: $id) {
      ...CliExecutionFields
    }
  }
`);

export const CliApproveStepMutation = graphql(`
  mutation CliApproveStep($executionId: ID!, $index: Int!, $comment: String) {
    approveStep(executionId: $executionId, index: $index, comment: $comment) {
      ...CliExecutionFields
    }
  }
`);

export const CliRejectStepMutation = graphql(`
  mutation CliRejectStep($executionId: ID!, $index: Int!, $comment: String) {
    rejectStep(executionId: $executionId, index: $index, comment: $comment) {
      ...CliExecutionFields
    }
  }
`);

export const CliStepUpdatesSubscription = graphql(`
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
`);
