import { z } from 'zod';
import { describeDataSchema, describeEarlierSteps, describeStepTask, type EarlierStepSummary } from './prompt-context.js';
import type { DataSchema } from '../db/introspect.js';
import type { LlmClient, StructuredAnswer } from './llm-client.js';

export const SqlAnswerSchema = z.strictObject({
  sql: z.string().min(1).describe('One PostgreSQL SELECT statement, without a trailing semicolon'),
  explanation: z.string().describe('One or two sentences on how the statement answers the step'),
});
export type SqlAnswer = z.infer<typeof SqlAnswerSchema>;

export interface SqlAttempt {
  sql: string;
  error: string;
}

export interface SqlAgentRequest {
  planQuery: string;
  index: number;
  task: { queryContext: string; entity: string | null; reasoning: string | null };
  dataSchema: DataSchema;
  /** Earlier steps the statement may read as step_N (SQL relations with these columns). */
  earlier: EarlierStepSummary[];
  /** Earlier tries at this step and why each failed, for a repair round. */
  failedAttempts: SqlAttempt[];
  signal?: AbortSignal;
}

const SYSTEM_PROMPT = `You write one read-only PostgreSQL SELECT statement for one step of a data question.
Rules:
- Exactly one SELECT (WITH ... SELECT is fine). No INSERT/UPDATE/DELETE, no DDL, no SET, no semicolons, no $1 parameters.
- Use only the tables listed, unqualified, and the relations step_1, step_2, ... of earlier steps that are listed.
- Use only ordinary functions (aggregates, window, string, math, date/time, json). No pg_* functions, no system catalogs.
- Cast only to boolean, integer, numeric, real, double precision, text, varchar, char, date/time, interval, uuid, json, jsonb or bytea types. Call functions as f(x), never as x.f. No system columns (xmin, ctid, ...).
- Name every computed column with AS. Order the rows when the order matters.
Answer with a JSON object {"sql": "...", "explanation": "..."}.`;

export async function writeSql(llm: LlmClient, request: SqlAgentRequest): Promise<StructuredAnswer<SqlAnswer>> {
  const repairs = request.failedAttempts
    .map((attempt, i) => `Attempt ${i + 1} failed.\nSQL:\n${attempt.sql}\nError: ${attempt.error}`)
    .join('\n\n');
  const user = [
    `The user's question: ${request.planQuery}`,
    `This is step ${request.index}.`,
    describeStepTask(request.task),
    `Tables:\n${describeDataSchema(request.dataSchema)}`,
    `Earlier steps, readable as step_N:\n${describeEarlierSteps(request.earlier)}`,
    repairs ? `${repairs}\n\nWrite a corrected statement.` : null,
  ]
    .filter((part) => part !== null)
    .join('\n\n');
  return llm.completeStructured({
    agent: 'sql',
    schemaName: 'sql_step',
    schema: SqlAnswerSchema,
    messages: [
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: user },
    ],
    signal: request.signal,
  });
}
