import { z } from 'zod';
import type { DataSchema } from '../db/introspect.js';
import type { LlmClient, StructuredAnswer } from './llm-client.js';
import { describeDataSchema } from './prompt-context.js';

export const PlanAnswerSchema = z.strictObject({
  reasoning: z.string().describe('Why these steps answer the question'),
  steps: z
    .array(
      z.strictObject({
        kind: z.enum(['SQL', 'API']),
        queryContext: z.string().describe('What the step must find, in plain words'),
        entity: z.string().nullable().describe('The table or API resource the step is about'),
        reasoning: z.string().nullable(),
        critical: z.boolean().describe('Whether the plan must stop if this step fails'),
      }),
    )
    .min(1),
});
export type PlanAnswer = z.infer<typeof PlanAnswerSchema>;

const SYSTEM_PROMPT = `You turn a question about a tenant's data into a short plan of ordered steps.
- A SQL step reads the tenant's tables (listed below) with one read-only SELECT; later SQL steps can join earlier steps' records.
- An API step runs a short program that calls the tenant's HTTP API (operations listed below), using earlier steps' records.
- Prefer SQL when the tables hold the answer; use API steps for what only the API has.
- Each step says in plain words what it must find (queryContext); another agent writes its SQL or program.
- Use as few steps as the question needs (at most 10). Mark a step critical unless the plan can answer without it.
Answer with a JSON object {"reasoning": "...", "steps": [...]}.`;

export interface PlanRequest {
  query: string;
  dataSchema: DataSchema;
  /** The tenant API's operations, one per line; null when the tenant has no API. */
  apiCatalog: string | null;
  signal?: AbortSignal;
}

export async function planQuery(llm: LlmClient, request: PlanRequest): Promise<StructuredAnswer<PlanAnswer>> {
  const user = [
    `Question: ${request.query}`,
    `Tables:\n${describeDataSchema(request.dataSchema)}`,
    `API operations:\n${request.apiCatalog ?? '(this tenant has no API: use SQL steps only)'}`,
  ].join('\n\n');
  return llm.completeStructured({
    agent: 'planner',
    schemaName: 'plan',
    schema: PlanAnswerSchema,
    messages: [
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: user },
    ],
    signal: request.signal,
  });
}
