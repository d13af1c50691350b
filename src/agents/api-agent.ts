import { z } from 'zod';
import { describeEarlierSteps, describeStepTask, type EarlierStepSummary } from './prompt-context.js';
import type { LlmClient, StructuredAnswer } from './llm-client.js';

export const ApiCodeAnswerSchema = z.strictObject({
  code: z.string().min(1).describe('The body of an async JavaScript function that returns the records as JSON'),
  explanation: z.string().describe('One or two sentences on what the program does'),
});
export type ApiCodeAnswer = z.infer<typeof ApiCodeAnswerSchema>;

const SYSTEM_PROMPT = `You write a short JavaScript program for one step of a data question. It runs in a sandbox.
The program is the BODY of an async function: use await, and end with return <records>.
Available inside, and nothing else (no fetch, no require, no timers, no Node APIs):
- steps[i].records: the full records of earlier step i+1 (steps[0] is step 1), as arrays of objects.
- await api.call(operationId, params): calls one operation of the tenant API listed below and returns its parsed JSON.
  params holds the path and query parameters by name. Pass paginate: true to follow the pages of a
  paginated operation; the result is then { data: [...all items], pages, nextCursor }.
- progress(message): reports progress to whoever watches the run.
- console.log(...): kept in the step's logs.
Return an array of flat JSON objects (one per record). Call the API as few times as the task needs;
run independent calls in parallel with Promise.all (at most 5 run at once).
Answer with a JSON object {"code": "...", "explanation": "..."}.`;

export interface ApiCodeRequest {
  planQuery: string;
  index: number;
  task: { queryContext: string; entity: string | null; reasoning: string | null };
  catalog: string;
  earlier: EarlierStepSummary[];
  signal?: AbortSignal;
}

export async function writeApiCode(llm: LlmClient, request: ApiCodeRequest): Promise<StructuredAnswer<ApiCodeAnswer>> {
  const user = [
    `The user's question: ${request.planQuery}`,
    `This is step ${request.index}.`,
    describeStepTask(request.task),
    `API operations (operationId METHOD path (parameters) — summary):\n${request.catalog}`,
    `Earlier steps (steps[i] is step i+1):\n${describeEarlierSteps(request.earlier)}`,
  ].join('\n\n');
  return llm.completeStructured({
    agent: 'api',
    schemaName: 'api_step',
    schema: ApiCodeAnswerSchema,
    messages: [
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: user },
    ],
    signal: request.signal,
  });
}
