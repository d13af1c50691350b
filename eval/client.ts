// What the evaluation asks of the service, through its public GraphQL API over HTTP (Server-Sent Events to follow).

export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

export interface StepView {
  index: number;
  kind: 'SQL' | 'API';
  status: string;
  queryContext: string;
  sql: string | null;
  attempts: number;
  recordCount: number | null;
  truncated: boolean;
  columns: { name: string; type: string }[] | null;
  result: unknown;
  usage: TokenUsage | null;
  error: { code: string; message: string } | null;
}

export interface ExecutionView {
  id: string;
  status: string;
  usage: TokenUsage | null;
  error: { code: string; message: string } | null;
  steps: StepView[];
}

export interface StepInput {
  kind: 'SQL';
  queryContext: string;
  sql?: string;
  critical?: boolean;
}

export interface PlanInput {
  query: string;
  steps: StepInput[];
}

export interface ExecuteOptions {
  stepTimeoutMs?: number;
  correlationId?: string;
}

/** The service answered a request with a GraphQL error (or not at all); `code` is its extensions.code. */
export class ServiceRequestError extends Error {
  override name = 'ServiceRequestError';
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

const EXECUTION_FIELDS = `
  id status usage { promptTokens completionTokens totalTokens } error { code message }
  steps {
    index kind status queryContext sql attempts recordCount truncated columns { name type } result
    usage { promptTokens completionTokens totalTokens } error { code message }
  }`;

const EXECUTE_PLAN = `mutation EvalExecutePlan($plan: PlanInput!, $options: ExecuteOptions) { executePlan(plan: $plan, options: $options) { id } }`;
const EXECUTE_QUERY = `mutation EvalExecuteQuery($query: String!, $options: ExecuteOptions) { executeQuery(query: $query, options: $options) { id } }`;
const READ_EXECUTION = `query EvalExecution($id: ID!) { execution(id: $id) { ${EXECUTION_FIELDS} } }`;
const FOLLOW = `subscription EvalFollow($id: ID!) { stepUpdates(executionId: $id) { type } }`;
const TERMINAL_UPDATES = new Set(['EXECUTION_SUCCEEDED', 'EXECUTION_FAILED', 'EXECUTION_CANCELLED']);

interface GraphQLAnswer<T> {
  data?: T | null;
  errors?: { message: string; extensions?: { code?: string } }[];
}

async function graphql<T>(url: string, query: string, variables: Record<string, unknown>): Promise<T> {
  let response: Response;
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
      body: JSON.stringify({ query, variables }),
    });
  } catch (error) {
    throw new ServiceRequestError(`the service could not be reached: ${(error as Error).message}`, 'UNREACHABLE');
  }
  const answer = (await response.json()) as GraphQLAnswer<T>;
  const error = answer.errors?.[0];
  if (error || !answer.data) {
    throw new ServiceRequestError(error?.message ?? `HTTP ${response.status} without data`, error?.extensions?.code ?? 'UNKNOWN');
  }
  return answer.data;
}

export async function executePlan(url: string, plan: PlanInput, options: ExecuteOptions): Promise<string> {
  const data = await graphql<{ executePlan: { id: string } }>(url, EXECUTE_PLAN, { plan, options });
  return data.executePlan.id;
}

export async function executeQuery(url: string, query: string, options: ExecuteOptions): Promise<string> {
  const data = await graphql<{ executeQuery: { id: string } }>(url, EXECUTE_QUERY, { query, options });
  return data.executeQuery.id;
}

export async function readExecution(url: string, id: string): Promise<ExecutionView> {
  const data = await graphql<{ execution: ExecutionView }>(url, READ_EXECUTION, { id });
  return data.execution;
}

/** Follows the execution's updates (stored, then live) until its terminal one, and returns that update's type. */
export async function waitForEnd(url: string, id: string): Promise<string> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify({ query: FOLLOW, variables: { id } }),
  });
  if (!response.ok || !response.body) throw new ServiceRequestError(`stepUpdates answered HTTP ${response.status}`, 'UNKNOWN');
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new ServiceRequestError(`the updates of execution ${id} ended before its terminal update`, 'STREAM_ENDED');
      buffer += value;
      let boundary;
      while ((boundary = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, boundary);
        buffer = buffer.slice(boundary + 2);
        const data = block
          .split('\n')
          .filter((line) => line.startsWith('data:'))
          .map((line) => line.slice(5).trimStart())
          .join('\n');
        if (!data) continue;
        const update = JSON.parse(data) as GraphQLAnswer<{ stepUpdates: { type: string } }>;
        if (update.errors?.[0]) {
          throw new ServiceRequestError(update.errors[0].message, update.errors[0].extensions?.code ?? 'UNKNOWN');
        }
        const type = update.data?.stepUpdates.type;
        if (type && TERMINAL_UPDATES.has(type)) return type;
      }
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}
