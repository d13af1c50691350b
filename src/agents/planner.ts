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
Other agents write each step's SQL or program from the step's queryContext: you write neither.
Kinds of step:
- SQL: one read-only PostgreSQL SELECT over the tenant's tables (listed below, with their keys and the values of columns that have few).
- API: a short JavaScript program that calls the tenant's HTTP API (operations listed below); a program an agent writes may only call GET operations.
Prefer SQL when the tables hold the answer, in as few steps as it takes: one SQL step with joins beats several. Use API steps for what only the API has.
How steps pass data on:
- Steps run in order. A later step gets the records of the earlier steps that succeeded, and nothing else.
- A later SQL step reads step N's records as the relation step_N, and can join it with the tables (JOIN step_1 s ON s.user_id = u.id).
- A later API step's program reads them as steps[i].records (for example, to call an operation once per id of step 1).
- So a step's queryContext says what it must return for the steps after it ("the ids and emails of suspended users"),
  and a later step's queryContext names the step it builds on ("the applications of the users of step 1").
- The last step's records are the answer the user sees: the last step must produce the answer itself.
- Use as few steps as the question needs (at most 10). Mark a step critical unless the plan can answer without it: a failed
  critical step stops the plan, and no later step can read a failed step's records.
- entity is the table or API resource the step is mainly about.
Answer with a JSON object {"reasoning": "...", "steps": [...]}.`;

export interface PlanRequest {
  query: string;
  dataSchema: DataSchema;
  /** The tenant API's operations, as describeCatalog writes them; null when the tenant has no API. */
  apiCatalog: string | null;
  /** The longest description of the tables, in characters (default DEFAULT_SCHEMA_CHARS). */
  maxSchemaChars?: number;
  signal?: AbortSignal;
}

export async function planQuery(llm: LlmClient, request: PlanRequest): Promise<StructuredAnswer<PlanAnswer>> {
  const user = [
    `Question: ${request.query}`,
    `Tables (name (~rows): column type, "not null", the values of columns with few; then keys, "a.x -> b.y" meaning a.x references b.y):\n${describeDataSchema(request.dataSchema, { maxChars: request.maxSchemaChars, focus: [request.query] })}`,
    `API operations (operationId METHOD path (parameters) — summary; what it returns; whether it paginates):\n${request.apiCatalog ?? '(this tenant has no API: use SQL steps only)'}`,
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
