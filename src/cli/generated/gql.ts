/* eslint-disable */
import * as types from './graphql.js';



/**
 * Map of all GraphQL operations in the project.
 *
 * This map has several performance disadvantages:
 * 1. It is not tree-shakeable, so it will include all operations in the project.
 * 2. It is not minifiable, so the string of a GraphQL query will be multiple times inside the bundle.
 * 3. It does not support dead code elimination, so it will add unused operations.
 *
 * Therefore it is highly recommended to use the babel or swc plugin for production.
 * Learn more about it here: https://the-guild.dev/graphql/codegen/plugins/presets/preset-client#reducing-bundle-size
 */
type Documents = {
    "\n  fragment CliStepFields on StepResult {\n    index\n    kind\n    status\n    queryContext\n    entity\n    recordCount\n    durationMs\n    approval\n    decision\n    decidedBy\n    decisionComment\n    error {\n      code\n      message\n      retryable\n    }\n  }\n": typeof types.CliStepFieldsFragmentDoc,
    "\n  fragment CliExecutionFields on Execution {\n    id\n    correlationId\n    status\n    totalSteps\n    successfulSteps\n    failedSteps\n    lastSequence\n    createdAt\n    finishedAt\n    durationMs\n    usage {\n      totalTokens\n    }\n    error {\n      code\n      message\n    }\n    plan {\n      query\n      steps {\n        kind\n        queryContext\n      }\n    }\n  }\n": typeof types.CliExecutionFieldsFragmentDoc,
    "\n  mutation CliExecutePlan($plan: PlanInput!, $options: ExecuteOptions) {\n    executePlan(plan: $plan, options: $options) {\n      ...CliExecutionFields\n    }\n  }\n": typeof types.CliExecutePlanDocument,
    "\n  mutation CliExecuteQuery($query: String!, $options: ExecuteOptions) {\n    executeQuery(query: $query, options: $options) {\n      ...CliExecutionFields\n    }\n  }\n": typeof types.CliExecuteQueryDocument,
    "\n  query CliExecution($id: ID!) {\n    execution(id: $id) {\n      ...CliExecutionFields\n    }\n  }\n": typeof types.CliExecutionDocument,
    "\n  query CliShowExecution($id: ID!) {\n    execution(id: $id) {\n      ...CliExecutionFields\n      startedAt\n      resumes\n      cancelRequestedAt\n      plan {\n        reasoning\n      }\n      steps {\n        ...CliStepFields\n        sql\n        code\n        logs\n        attempts\n        truncated\n        sample\n        decidedAt\n        usage {\n          totalTokens\n        }\n      }\n    }\n  }\n": typeof types.CliShowExecutionDocument,
    "\n  query CliExecutions($first: Int, $after: String, $filter: ExecutionFilter) {\n    executions(first: $first, after: $after, filter: $filter) {\n      edges {\n        cursor\n        node {\n          id\n          correlationId\n          status\n          createdAt\n          durationMs\n          totalSteps\n          successfulSteps\n          failedSteps\n          plan {\n            query\n          }\n          error {\n            code\n            message\n          }\n        }\n      }\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n    }\n  }\n": typeof types.CliExecutionsDocument,
    "\n  mutation CliCancelExecution($id: ID!) {\n    cancelExecution(id: $id) {\n      ...CliExecutionFields\n    }\n  }\n": typeof types.CliCancelExecutionDocument,
    "\n  mutation CliApproveStep($executionId: ID!, $index: Int!, $comment: String) {\n    approveStep(executionId: $executionId, index: $index, comment: $comment) {\n      ...CliExecutionFields\n    }\n  }\n": typeof types.CliApproveStepDocument,
    "\n  mutation CliRejectStep($executionId: ID!, $index: Int!, $comment: String) {\n    rejectStep(executionId: $executionId, index: $index, comment: $comment) {\n      ...CliExecutionFields\n    }\n  }\n": typeof types.CliRejectStepDocument,
    "\n  subscription CliStepUpdates($executionId: ID!, $afterSequence: Int) {\n    stepUpdates(executionId: $executionId, afterSequence: $afterSequence) {\n      executionId\n      sequence\n      type\n      status\n      at\n      message\n      step {\n        ...CliStepFields\n      }\n    }\n  }\n": typeof types.CliStepUpdatesDocument,
};
const documents: Documents = {
    "\n  fragment CliStepFields on StepResult {\n    index\n    kind\n    status\n    queryContext\n    entity\n    recordCount\n    durationMs\n    approval\n    decision\n    decidedBy\n    decisionComment\n    error {\n      code\n      message\n      retryable\n    }\n  }\n": types.CliStepFieldsFragmentDoc,
    "\n  fragment CliExecutionFields on Execution {\n    id\n    correlationId\n    status\n    totalSteps\n    successfulSteps\n    failedSteps\n    lastSequence\n    createdAt\n    finishedAt\n    durationMs\n    usage {\n      totalTokens\n    }\n    error {\n      code\n      message\n    }\n    plan {\n      query\n      steps {\n        kind\n        queryContext\n      }\n    }\n  }\n": types.CliExecutionFieldsFragmentDoc,
    "\n  mutation CliExecutePlan($plan: PlanInput!, $options: ExecuteOptions) {\n    executePlan(plan: $plan, options: $options) {\n      ...CliExecutionFields\n    }\n  }\n": types.CliExecutePlanDocument,
    "\n  mutation CliExecuteQuery($query: String!, $options: ExecuteOptions) {\n    executeQuery(query: $query, options: $options) {\n      ...CliExecutionFields\n    }\n  }\n": types.CliExecuteQueryDocument,
    "\n  query CliExecution($id: ID!) {\n    execution(id: $id) {\n      ...CliExecutionFields\n    }\n  }\n": types.CliExecutionDocument,
    "\n  query CliShowExecution($id: ID!) {\n    execution(id: $id) {\n      ...CliExecutionFields\n      startedAt\n      resumes\n      cancelRequestedAt\n      plan {\n        reasoning\n      }\n      steps {\n        ...CliStepFields\n        sql\n        code\n        logs\n        attempts\n        truncated\n        sample\n        decidedAt\n        usage {\n          totalTokens\n        }\n      }\n    }\n  }\n": types.CliShowExecutionDocument,
    "\n  query CliExecutions($first: Int, $after: String, $filter: ExecutionFilter) {\n    executions(first: $first, after: $after, filter: $filter) {\n      edges {\n        cursor\n        node {\n          id\n          correlationId\n          status\n          createdAt\n          durationMs\n          totalSteps\n          successfulSteps\n          failedSteps\n          plan {\n            query\n          }\n          error {\n            code\n            message\n          }\n        }\n      }\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n    }\n  }\n": types.CliExecutionsDocument,
    "\n  mutation CliCancelExecution($id: ID!) {\n    cancelExecution(id: $id) {\n      ...CliExecutionFields\n    }\n  }\n": types.CliCancelExecutionDocument,
    "\n  mutation CliApproveStep($executionId: ID!, $index: Int!, $comment: String) {\n    approveStep(executionId: $executionId, index: $index, comment: $comment) {\n      ...CliExecutionFields\n    }\n  }\n": types.CliApproveStepDocument,
    "\n  mutation CliRejectStep($executionId: ID!, $index: Int!, $comment: String) {\n    rejectStep(executionId: $executionId, index: $index, comment: $comment) {\n      ...CliExecutionFields\n    }\n  }\n": types.CliRejectStepDocument,
    "\n  subscription CliStepUpdates($executionId: ID!, $afterSequence: Int) {\n    stepUpdates(executionId: $executionId, afterSequence: $afterSequence) {\n      executionId\n      sequence\n      type\n      status\n      at\n      message\n      step {\n        ...CliStepFields\n      }\n    }\n  }\n": types.CliStepUpdatesDocument,
};

/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  fragment CliStepFields on StepResult {\n    index\n    kind\n    status\n    queryContext\n    entity\n    recordCount\n    durationMs\n    approval\n    decision\n    decidedBy\n    decisionComment\n    error {\n      code\n      message\n      retryable\n    }\n  }\n"): typeof import('./graphql.js').CliStepFieldsFragmentDoc;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  fragment CliExecutionFields on Execution {\n    id\n    correlationId\n    status\n    totalSteps\n    successfulSteps\n    failedSteps\n    lastSequence\n    createdAt\n    finishedAt\n    durationMs\n    usage {\n      totalTokens\n    }\n    error {\n      code\n      message\n    }\n    plan {\n      query\n      steps {\n        kind\n        queryContext\n      }\n    }\n  }\n"): typeof import('./graphql.js').CliExecutionFieldsFragmentDoc;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation CliExecutePlan($plan: PlanInput!, $options: ExecuteOptions) {\n    executePlan(plan: $plan, options: $options) {\n      ...CliExecutionFields\n    }\n  }\n"): typeof import('./graphql.js').CliExecutePlanDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation CliExecuteQuery($query: String!, $options: ExecuteOptions) {\n    executeQuery(query: $query, options: $options) {\n      ...CliExecutionFields\n    }\n  }\n"): typeof import('./graphql.js').CliExecuteQueryDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query CliExecution($id: ID!) {\n    execution(id: $id) {\n      ...CliExecutionFields\n    }\n  }\n"): typeof import('./graphql.js').CliExecutionDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query CliShowExecution($id: ID!) {\n    execution(id: $id) {\n      ...CliExecutionFields\n      startedAt\n      resumes\n      cancelRequestedAt\n      plan {\n        reasoning\n      }\n      steps {\n        ...CliStepFields\n        sql\n        code\n        logs\n        attempts\n        truncated\n        sample\n        decidedAt\n        usage {\n          totalTokens\n        }\n      }\n    }\n  }\n"): typeof import('./graphql.js').CliShowExecutionDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query CliExecutions($first: Int, $after: String, $filter: ExecutionFilter) {\n    executions(first: $first, after: $after, filter: $filter) {\n      edges {\n        cursor\n        node {\n          id\n          correlationId\n          status\n          createdAt\n          durationMs\n          totalSteps\n          successfulSteps\n          failedSteps\n          plan {\n            query\n          }\n          error {\n            code\n            message\n          }\n        }\n      }\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n    }\n  }\n"): typeof import('./graphql.js').CliExecutionsDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation CliCancelExecution($id: ID!) {\n    cancelExecution(id: $id) {\n      ...CliExecutionFields\n    }\n  }\n"): typeof import('./graphql.js').CliCancelExecutionDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation CliApproveStep($executionId: ID!, $index: Int!, $comment: String) {\n    approveStep(executionId: $executionId, index: $index, comment: $comment) {\n      ...CliExecutionFields\n    }\n  }\n"): typeof import('./graphql.js').CliApproveStepDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation CliRejectStep($executionId: ID!, $index: Int!, $comment: String) {\n    rejectStep(executionId: $executionId, index: $index, comment: $comment) {\n      ...CliExecutionFields\n    }\n  }\n"): typeof import('./graphql.js').CliRejectStepDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  subscription CliStepUpdates($executionId: ID!, $afterSequence: Int) {\n    stepUpdates(executionId: $executionId, afterSequence: $afterSequence) {\n      executionId\n      sequence\n      type\n      status\n      at\n      message\n      step {\n        ...CliStepFields\n      }\n    }\n  }\n"): typeof import('./graphql.js').CliStepUpdatesDocument;


export function graphql(source: string) {
  return (documents as any)[source] ?? {};
}
