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
    "\n  query Node($id: ID!) {\n    node(id: $id) {\n      __typename\n      id\n      ... on Execution {\n        status\n        correlationId\n        totalSteps\n        plan {\n          query\n        }\n        finalResult\n        steps {\n          id\n        }\n      }\n      ... on StepResult {\n        index\n        stepStatus: status\n        recordCount\n        sample\n      }\n    }\n  }\n": typeof types.NodeDocument,
    "\n  query Nodes($ids: [ID!]!) {\n    nodes(ids: $ids) {\n      __typename\n      id\n    }\n  }\n": typeof types.NodesDocument,
    "\n  query StepResultNode($id: ID!) {\n    node(id: $id) {\n      id\n      ... on StepResult {\n        result\n      }\n    }\n  }\n": typeof types.StepResultNodeDocument,
    "\n  query ExecutionWithStepIds($id: ID!) {\n    execution(id: $id) {\n      id\n      status\n      steps {\n        id\n        index\n        status\n      }\n    }\n  }\n": typeof types.ExecutionWithStepIdsDocument,
    "\n  subscription FollowRun($executionId: ID!, $afterSequence: Int) {\n    stepUpdates(executionId: $executionId, afterSequence: $afterSequence) {\n      id\n      sequence\n      type\n      execution {\n        id\n        status\n        lastSequence\n      }\n      step {\n        id\n        index\n        status\n        recordCount\n      }\n    }\n  }\n": typeof types.FollowRunDocument,
    "\n  subscription UpdateWithExecutionFields($executionId: ID!) {\n    stepUpdates(executionId: $executionId) {\n      sequence\n      execution {\n        id\n        status\n        correlationId\n        totalSteps\n        plan {\n          query\n        }\n      }\n    }\n  }\n": typeof types.UpdateWithExecutionFieldsDocument,
    "\n  fragment StepResultFields on StepResult {\n    index\n    kind\n    status\n    queryContext\n    entity\n    critical\n    sql\n    code\n    logs\n    recordCount\n    sample\n    truncated\n    attempts\n    startedAt\n    finishedAt\n    durationMs\n    usage {\n      promptTokens\n      completionTokens\n      totalTokens\n    }\n    columns {\n      name\n      type\n    }\n    error {\n      code\n      message\n      retryable\n    }\n  }\n": typeof types.StepResultFieldsFragmentDoc,
    "\n  mutation ExecutePlan($plan: PlanInput!, $options: ExecuteOptions) {\n    executePlan(plan: $plan, options: $options) {\n      id\n      correlationId\n      status\n      totalSteps\n      lastSequence\n      createdAt\n    }\n  }\n": typeof types.ExecutePlanDocument,
    "\n  query Execution($id: ID!) {\n    execution(id: $id) {\n      id\n      correlationId\n      status\n      totalSteps\n      successfulSteps\n      failedSteps\n      finalResult\n      lastSequence\n      createdAt\n      startedAt\n      finishedAt\n      durationMs\n      usage {\n        promptTokens\n        completionTokens\n        totalTokens\n      }\n      error {\n        code\n        message\n        retryable\n      }\n      plan {\n        query\n        steps {\n          kind\n          queryContext\n          critical\n          sql\n        }\n      }\n      steps {\n        ...StepResultFields\n        result\n      }\n    }\n  }\n": typeof types.ExecutionDocument,
    "\n  query Executions($first: Int, $after: String, $filter: ExecutionFilter) {\n    executions(first: $first, after: $after, filter: $filter) {\n      edges {\n        cursor\n        node {\n          id\n          status\n          correlationId\n          createdAt\n        }\n      }\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n    }\n  }\n": typeof types.ExecutionsDocument,
    "\n  query ExecutionsWithSteps($first: Int) {\n    executions(first: $first) {\n      edges {\n        node {\n          id\n          steps {\n            index\n            status\n            sql\n            result\n          }\n        }\n      }\n    }\n  }\n": typeof types.ExecutionsWithStepsDocument,
    "\n  query ExecutionsWithPlans($first: Int) {\n    executions(first: $first) {\n      edges {\n        node {\n          id\n          plan {\n            query\n            steps {\n              sql\n            }\n          }\n          finalResult\n        }\n      }\n    }\n  }\n": typeof types.ExecutionsWithPlansDocument,
    "\n  subscription StepUpdates($executionId: ID!, $afterSequence: Int) {\n    stepUpdates(executionId: $executionId, afterSequence: $afterSequence) {\n      executionId\n      sequence\n      type\n      at\n      status\n      message\n      step {\n        ...StepResultFields\n      }\n    }\n  }\n": typeof types.StepUpdatesDocument,
    "\n  query PlanQuery($query: String!) {\n    planQuery(query: $query) {\n      query\n      reasoning\n      steps {\n        kind\n        queryContext\n        entity\n        reasoning\n        critical\n        sql\n        code\n      }\n    }\n  }\n": typeof types.PlanQueryDocument,
    "\n  mutation ExecuteQuery($query: String!, $options: ExecuteOptions) {\n    executeQuery(query: $query, options: $options) {\n      id\n      status\n      correlationId\n      lastSequence\n      plan {\n        reasoning\n        steps {\n          kind\n          queryContext\n          critical\n        }\n      }\n    }\n  }\n": typeof types.ExecuteQueryDocument,
    "\n  mutation CancelExecution($id: ID!) {\n    cancelExecution(id: $id) {\n      id\n      status\n      cancelRequestedAt\n      error {\n        code\n      }\n    }\n  }\n": typeof types.CancelExecutionDocument,
    "\n  mutation ApproveStep($executionId: ID!, $index: Int!, $comment: String) {\n    approveStep(executionId: $executionId, index: $index, comment: $comment) {\n      id\n      status\n    }\n  }\n": typeof types.ApproveStepDocument,
    "\n  mutation RejectStep($executionId: ID!, $index: Int!, $comment: String) {\n    rejectStep(executionId: $executionId, index: $index, comment: $comment) {\n      id\n      status\n    }\n  }\n": typeof types.RejectStepDocument,
    "\n  query DurableExecution($id: ID!) {\n    execution(id: $id) {\n      id\n      status\n      resumes\n      cancelRequestedAt\n      lastSequence\n      error {\n        code\n        message\n      }\n      steps {\n        index\n        status\n        attempts\n        approval\n        decision\n        decidedBy\n        decidedAt\n        decisionComment\n        recordCount\n        error {\n          code\n          message\n        }\n      }\n    }\n  }\n": typeof types.DurableExecutionDocument,
    "\n  subscription WaitingUpdates($executionId: ID!, $afterSequence: Int) {\n    stepUpdates(executionId: $executionId, afterSequence: $afterSequence) {\n      sequence\n      type\n      status\n      step {\n        index\n        status\n        attempts\n      }\n      findings {\n        index\n        recordCount\n        sample\n      }\n    }\n  }\n": typeof types.WaitingUpdatesDocument,
};
const documents: Documents = {
    "\n  query Node($id: ID!) {\n    node(id: $id) {\n      __typename\n      id\n      ... on Execution {\n        status\n        correlationId\n        totalSteps\n        plan {\n          query\n        }\n        finalResult\n        steps {\n          id\n        }\n      }\n      ... on StepResult {\n        index\n        stepStatus: status\n        recordCount\n        sample\n      }\n    }\n  }\n": types.NodeDocument,
    "\n  query Nodes($ids: [ID!]!) {\n    nodes(ids: $ids) {\n      __typename\n      id\n    }\n  }\n": types.NodesDocument,
    "\n  query StepResultNode($id: ID!) {\n    node(id: $id) {\n      id\n      ... on StepResult {\n        result\n      }\n    }\n  }\n": types.StepResultNodeDocument,
    "\n  query ExecutionWithStepIds($id: ID!) {\n    execution(id: $id) {\n      id\n      status\n      steps {\n        id\n        index\n        status\n      }\n    }\n  }\n": types.ExecutionWithStepIdsDocument,
    "\n  subscription FollowRun($executionId: ID!, $afterSequence: Int) {\n    stepUpdates(executionId: $executionId, afterSequence: $afterSequence) {\n      id\n      sequence\n      type\n      execution {\n        id\n        status\n        lastSequence\n      }\n      step {\n        id\n        index\n        status\n        recordCount\n      }\n    }\n  }\n": types.FollowRunDocument,
    "\n  subscription UpdateWithExecutionFields($executionId: ID!) {\n    stepUpdates(executionId: $executionId) {\n      sequence\n      execution {\n        id\n        status\n        correlationId\n        totalSteps\n        plan {\n          query\n        }\n      }\n    }\n  }\n": types.UpdateWithExecutionFieldsDocument,
    "\n  fragment StepResultFields on StepResult {\n    index\n    kind\n    status\n    queryContext\n    entity\n    critical\n    sql\n    code\n    logs\n    recordCount\n    sample\n    truncated\n    attempts\n    startedAt\n    finishedAt\n    durationMs\n    usage {\n      promptTokens\n      completionTokens\n      totalTokens\n    }\n    columns {\n      name\n      type\n    }\n    error {\n      code\n      message\n      retryable\n    }\n  }\n": types.StepResultFieldsFragmentDoc,
    "\n  mutation ExecutePlan($plan: PlanInput!, $options: ExecuteOptions) {\n    executePlan(plan: $plan, options: $options) {\n      id\n      correlationId\n      status\n      totalSteps\n      lastSequence\n      createdAt\n    }\n  }\n": types.ExecutePlanDocument,
    "\n  query Execution($id: ID!) {\n    execution(id: $id) {\n      id\n      correlationId\n      status\n      totalSteps\n      successfulSteps\n      failedSteps\n      finalResult\n      lastSequence\n      createdAt\n      startedAt\n      finishedAt\n      durationMs\n      usage {\n        promptTokens\n        completionTokens\n        totalTokens\n      }\n      error {\n        code\n        message\n        retryable\n      }\n      plan {\n        query\n        steps {\n          kind\n          queryContext\n          critical\n          sql\n        }\n      }\n      steps {\n        ...StepResultFields\n        result\n      }\n    }\n  }\n": types.ExecutionDocument,
    "\n  query Executions($first: Int, $after: String, $filter: ExecutionFilter) {\n    executions(first: $first, after: $after, filter: $filter) {\n      edges {\n        cursor\n        node {\n          id\n          status\n          correlationId\n          createdAt\n        }\n      }\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n    }\n  }\n": types.ExecutionsDocument,
    "\n  query ExecutionsWithSteps($first: Int) {\n    executions(first: $first) {\n      edges {\n        node {\n          id\n          steps {\n            index\n            status\n            sql\n            result\n          }\n        }\n      }\n    }\n  }\n": types.ExecutionsWithStepsDocument,
    "\n  query ExecutionsWithPlans($first: Int) {\n    executions(first: $first) {\n      edges {\n        node {\n          id\n          plan {\n            query\n            steps {\n              sql\n            }\n          }\n          finalResult\n        }\n      }\n    }\n  }\n": types.ExecutionsWithPlansDocument,
    "\n  subscription StepUpdates($executionId: ID!, $afterSequence: Int) {\n    stepUpdates(executionId: $executionId, afterSequence: $afterSequence) {\n      executionId\n      sequence\n      type\n      at\n      status\n      message\n      step {\n        ...StepResultFields\n      }\n    }\n  }\n": types.StepUpdatesDocument,
    "\n  query PlanQuery($query: String!) {\n    planQuery(query: $query) {\n      query\n      reasoning\n      steps {\n        kind\n        queryContext\n        entity\n        reasoning\n        critical\n        sql\n        code\n      }\n    }\n  }\n": types.PlanQueryDocument,
    "\n  mutation ExecuteQuery($query: String!, $options: ExecuteOptions) {\n    executeQuery(query: $query, options: $options) {\n      id\n      status\n      correlationId\n      lastSequence\n      plan {\n        reasoning\n        steps {\n          kind\n          queryContext\n          critical\n        }\n      }\n    }\n  }\n": types.ExecuteQueryDocument,
    "\n  mutation CancelExecution($id: ID!) {\n    cancelExecution(id: $id) {\n      id\n      status\n      cancelRequestedAt\n      error {\n        code\n      }\n    }\n  }\n": types.CancelExecutionDocument,
    "\n  mutation ApproveStep($executionId: ID!, $index: Int!, $comment: String) {\n    approveStep(executionId: $executionId, index: $index, comment: $comment) {\n      id\n      status\n    }\n  }\n": types.ApproveStepDocument,
    "\n  mutation RejectStep($executionId: ID!, $index: Int!, $comment: String) {\n    rejectStep(executionId: $executionId, index: $index, comment: $comment) {\n      id\n      status\n    }\n  }\n": types.RejectStepDocument,
    "\n  query DurableExecution($id: ID!) {\n    execution(id: $id) {\n      id\n      status\n      resumes\n      cancelRequestedAt\n      lastSequence\n      error {\n        code\n        message\n      }\n      steps {\n        index\n        status\n        attempts\n        approval\n        decision\n        decidedBy\n        decidedAt\n        decisionComment\n        recordCount\n        error {\n          code\n          message\n        }\n      }\n    }\n  }\n": types.DurableExecutionDocument,
    "\n  subscription WaitingUpdates($executionId: ID!, $afterSequence: Int) {\n    stepUpdates(executionId: $executionId, afterSequence: $afterSequence) {\n      sequence\n      type\n      status\n      step {\n        index\n        status\n        attempts\n      }\n      findings {\n        index\n        recordCount\n        sample\n      }\n    }\n  }\n": types.WaitingUpdatesDocument,
};

/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query Node($id: ID!) {\n    node(id: $id) {\n      __typename\n      id\n      ... on Execution {\n        status\n        correlationId\n        totalSteps\n        plan {\n          query\n        }\n        finalResult\n        steps {\n          id\n        }\n      }\n      ... on StepResult {\n        index\n        stepStatus: status\n        recordCount\n        sample\n      }\n    }\n  }\n"): typeof import('./graphql.js').NodeDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query Nodes($ids: [ID!]!) {\n    nodes(ids: $ids) {\n      __typename\n      id\n    }\n  }\n"): typeof import('./graphql.js').NodesDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query StepResultNode($id: ID!) {\n    node(id: $id) {\n      id\n      ... on StepResult {\n        result\n      }\n    }\n  }\n"): typeof import('./graphql.js').StepResultNodeDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query ExecutionWithStepIds($id: ID!) {\n    execution(id: $id) {\n      id\n      status\n      steps {\n        id\n        index\n        status\n      }\n    }\n  }\n"): typeof import('./graphql.js').ExecutionWithStepIdsDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  subscription FollowRun($executionId: ID!, $afterSequence: Int) {\n    stepUpdates(executionId: $executionId, afterSequence: $afterSequence) {\n      id\n      sequence\n      type\n      execution {\n        id\n        status\n        lastSequence\n      }\n      step {\n        id\n        index\n        status\n        recordCount\n      }\n    }\n  }\n"): typeof import('./graphql.js').FollowRunDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  subscription UpdateWithExecutionFields($executionId: ID!) {\n    stepUpdates(executionId: $executionId) {\n      sequence\n      execution {\n        id\n        status\n        correlationId\n        totalSteps\n        plan {\n          query\n        }\n      }\n    }\n  }\n"): typeof import('./graphql.js').UpdateWithExecutionFieldsDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  fragment StepResultFields on StepResult {\n    index\n    kind\n    status\n    queryContext\n    entity\n    critical\n    sql\n    code\n    logs\n    recordCount\n    sample\n    truncated\n    attempts\n    startedAt\n    finishedAt\n    durationMs\n    usage {\n      promptTokens\n      completionTokens\n      totalTokens\n    }\n    columns {\n      name\n      type\n    }\n    error {\n      code\n      message\n      retryable\n    }\n  }\n"): typeof import('./graphql.js').StepResultFieldsFragmentDoc;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation ExecutePlan($plan: PlanInput!, $options: ExecuteOptions) {\n    executePlan(plan: $plan, options: $options) {\n      id\n      correlationId\n      status\n      totalSteps\n      lastSequence\n      createdAt\n    }\n  }\n"): typeof import('./graphql.js').ExecutePlanDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query Execution($id: ID!) {\n    execution(id: $id) {\n      id\n      correlationId\n      status\n      totalSteps\n      successfulSteps\n      failedSteps\n      finalResult\n      lastSequence\n      createdAt\n      startedAt\n      finishedAt\n      durationMs\n      usage {\n        promptTokens\n        completionTokens\n        totalTokens\n      }\n      error {\n        code\n        message\n        retryable\n      }\n      plan {\n        query\n        steps {\n          kind\n          queryContext\n          critical\n          sql\n        }\n      }\n      steps {\n        ...StepResultFields\n        result\n      }\n    }\n  }\n"): typeof import('./graphql.js').ExecutionDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query Executions($first: Int, $after: String, $filter: ExecutionFilter) {\n    executions(first: $first, after: $after, filter: $filter) {\n      edges {\n        cursor\n        node {\n          id\n          status\n          correlationId\n          createdAt\n        }\n      }\n      pageInfo {\n        hasNextPage\n        endCursor\n      }\n    }\n  }\n"): typeof import('./graphql.js').ExecutionsDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query ExecutionsWithSteps($first: Int) {\n    executions(first: $first) {\n      edges {\n        node {\n          id\n          steps {\n            index\n            status\n            sql\n            result\n          }\n        }\n      }\n    }\n  }\n"): typeof import('./graphql.js').ExecutionsWithStepsDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query ExecutionsWithPlans($first: Int) {\n    executions(first: $first) {\n      edges {\n        node {\n          id\n          plan {\n            query\n            steps {\n              sql\n            }\n          }\n          finalResult\n        }\n      }\n    }\n  }\n"): typeof import('./graphql.js').ExecutionsWithPlansDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  subscription StepUpdates($executionId: ID!, $afterSequence: Int) {\n    stepUpdates(executionId: $executionId, afterSequence: $afterSequence) {\n      executionId\n      sequence\n      type\n      at\n      status\n      message\n      step {\n        ...StepResultFields\n      }\n    }\n  }\n"): typeof import('./graphql.js').StepUpdatesDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query PlanQuery($query: String!) {\n    planQuery(query: $query) {\n      query\n      reasoning\n      steps {\n        kind\n        queryContext\n        entity\n        reasoning\n        critical\n        sql\n        code\n      }\n    }\n  }\n"): typeof import('./graphql.js').PlanQueryDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation ExecuteQuery($query: String!, $options: ExecuteOptions) {\n    executeQuery(query: $query, options: $options) {\n      id\n      status\n      correlationId\n      lastSequence\n      plan {\n        reasoning\n        steps {\n          kind\n          queryContext\n          critical\n        }\n      }\n    }\n  }\n"): typeof import('./graphql.js').ExecuteQueryDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation CancelExecution($id: ID!) {\n    cancelExecution(id: $id) {\n      id\n      status\n      cancelRequestedAt\n      error {\n        code\n      }\n    }\n  }\n"): typeof import('./graphql.js').CancelExecutionDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation ApproveStep($executionId: ID!, $index: Int!, $comment: String) {\n    approveStep(executionId: $executionId, index: $index, comment: $comment) {\n      id\n      status\n    }\n  }\n"): typeof import('./graphql.js').ApproveStepDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  mutation RejectStep($executionId: ID!, $index: Int!, $comment: String) {\n    rejectStep(executionId: $executionId, index: $index, comment: $comment) {\n      id\n      status\n    }\n  }\n"): typeof import('./graphql.js').RejectStepDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  query DurableExecution($id: ID!) {\n    execution(id: $id) {\n      id\n      status\n      resumes\n      cancelRequestedAt\n      lastSequence\n      error {\n        code\n        message\n      }\n      steps {\n        index\n        status\n        attempts\n        approval\n        decision\n        decidedBy\n        decidedAt\n        decisionComment\n        recordCount\n        error {\n          code\n          message\n        }\n      }\n    }\n  }\n"): typeof import('./graphql.js').DurableExecutionDocument;
/**
 * The graphql function is used to parse GraphQL queries into a document that can be used by GraphQL clients.
 */
export function graphql(source: "\n  subscription WaitingUpdates($executionId: ID!, $afterSequence: Int) {\n    stepUpdates(executionId: $executionId, afterSequence: $afterSequence) {\n      sequence\n      type\n      status\n      step {\n        index\n        status\n        attempts\n      }\n      findings {\n        index\n        recordCount\n        sample\n      }\n    }\n  }\n"): typeof import('./graphql.js').WaitingUpdatesDocument;


export function graphql(source: string) {
  return (documents as any)[source] ?? {};
}
