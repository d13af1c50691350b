import { graphql } from '../generated/gql.js';

export const StepResultFields = graphql(`
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
`);

export const ExecutePlanMutation = graphql(`
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
`);

export const ExecutionQuery = graphql(`
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
`);

export const ExecutionsQuery = graphql(`
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
`);

export const ExecutionsWithStepsQuery = graphql(`
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
`);

export const ExecutionsWithPlansQuery = graphql(`
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
`);

export const StepUpdatesSubscription = graphql(`
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
`);

export const PlanQueryQuery = graphql(`
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
`);

export const ExecuteQueryMutation = graphql(`
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
`);

export const CancelExecutionMutation = graphql(`
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
`);

export const ApproveStepMutation = graphql(`
  mutation ApproveStep($executionId: ID!, $index: Int!, $comment: String) {
    approveStep(executionId: $executionId, index: $index, comment: $comment) {
      id
      status
    }
  }
`);

export const RejectStepMutation = graphql(`
  mutation RejectStep($executionId: ID!, $index: Int!, $comment: String) {
    rejectStep(executionId: $executionId, index: $index, comment: $comment) {
      id
      status
    }
  }
`);

export const DurableExecutionQuery = graphql(`
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
`);

export const WaitingUpdatesSubscription = graphql(`
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
`);
