import { z } from 'zod';
import { describeEarlierSteps, describeStepTask, type EarlierStepSummary } from './prompt-context.js';
import type { LlmClient, StructuredAnswer } from './llm-client.js';

export const ApiCodeAnswerSchema = z.strictObject({
  code: z.string().min(1).describe('The body of an async JavaScript function that returns the records as JSON'),
  explanation: z.string().describe('One or two sentences on what the program does'),
});
export type ApiCodeAnswer = z.infer<typeof ApiCodeAnswerSchema>;

/** The program's limits the agent is told of (the sandbox's settings); each is left out of the prompt when unset. */
export interface ApiProgramLimits {
  /** API requests per step, every page of a paginated call counted (STEPCAST_API_MAX_REQUESTS). */
  maxRequests?: number;
  /** Requests in flight at once (STEPCAST_API_MAX_CONCURRENT_REQUESTS). */
  maxConcurrentRequests?: number;
  /** Pages one `paginate: true` call follows (STEPCAST_API_MAX_PAGES). */
  maxPages?: number;
}

function systemPrompt({ maxRequests, maxConcurrentRequests = 5, maxPages }: ApiProgramLimits): string {
  return `You write a short JavaScript program for one step of a data question. It runs in a sandbox.
The program is the BODY of an async function: use await, and end with return <records>.
Available inside, and nothing else (no fetch, no require, no timers, no Node APIs):
- steps[i].records: the full records of the earlier steps listed below, as arrays of objects (the list says which step each steps[i] is).
- await api.call(operationId, params): calls one operation of the tenant API listed below and returns its parsed JSON
  (the "returns" shape). params holds the operation's path and query parameters by name; any other name is refused.
- Pagination: only an operation marked "paginated" takes paginate: true. api.call then follows its pages${maxPages === undefined ? '' : ` (at most ${maxPages})`} and
  returns { data: [the items of all pages], pages, nextCursor }, where nextCursor is null once every page was read.
  Never pass paginate to an operation marked "not paginated": the call is refused. Call it once per item instead (e.g. per id).
- progress(message): reports progress to whoever watches the run.
- console.log(...): kept in the step's logs.
An API error (an HTTP 404, say) rejects api.call with an error whose code is API_CALL_FAILED; catch it where a missing item is expected.
Return an array of flat JSON objects, one per record, with the fields the step asks for and the ids a later step may join on.
Call the API as few times as the task needs${maxRequests === undefined ? '' : ` (at most ${maxRequests} requests per step, every page counted)`};
run independent calls in parallel with Promise.all (at most ${maxConcurrentRequests} run at once).
Answer with a JSON object {"code": "...", "explanation": "..."}.`;
}

export interface ApiCodeRequest {
  planQuery: string;
  index: number;
  task: { queryContext: string; entity: string | null; reasoning: string | null };
  /** The operations the program may call, as describeCatalog writes them. */
  catalog: string;
  earlier: EarlierStepSummary[];
  limits?: ApiProgramLimits;
  signal?: AbortSignal;
}

export async function writeApiCode(llm: LlmClient, request: ApiCodeRequest): Promise<StructuredAnswer<ApiCodeAnswer>> {
  const user = [
    `The user's question: ${request.planQuery}`,
    `This is step ${request.index}.`,
    describeStepTask(request.task),
    `API operations (operationId METHOD path (parameters) — summary; what it returns; whether it paginates):\n${request.catalog}`,
    `Earlier steps, readable as steps[i].records:\n${describeEarlierSteps(request.earlier)}`,
  ].join('\n\n');
  return llm.completeStructured({
    agent: 'api',
    schemaName: 'api_step',
    schema: ApiCodeAnswerSchema,
    messages: [
      { role: 'system', content: systemPrompt(request.limits ?? {}) },
      { role: 'user', content: user },
    ],
    signal: request.signal,
  });
}
