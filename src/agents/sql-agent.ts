import { z } from 'zod';
import { describeSqlRules } from '../guard/sql-guard.js';
import { describeDataSchema, describeStepRelations, describeStepTask, type EarlierStepSummary } from './prompt-context.js';
import type { DataSchema } from '../db/introspect.js';
import type { LlmClient, StructuredAnswer } from './llm-client.js';

export const SqlAnswerSchema = z.strictObject({
  sql: z.string().min(1).describe('One PostgreSQL SELECT statement, without a trailing semicolon'),
  explanation: z.string().describe('One or two sentences on how the statement answers the step'),
});
export type SqlAnswer = z.infer<typeof SqlAnswerSchema>;

/** One statement that was tried for the step and refused, with the refusal as the guard or the database worded it. */
export interface SqlAttempt {
  sql: string;
  /** The exact error: the guard's rejection ("SQL rejected: ...") or the database's message. */
  error: string;
  /** Who refused it: the guard before it ran, or the database. */
  refusedBy?: 'guard' | 'database';
  /** The database's SQLSTATE (e.g. 42703), detail and hint, when it gave them. */
  sqlState?: string;
  detail?: string;
  hint?: string;
  /** Where in `sql` the database placed the error: a 1-based character position. */
  position?: number;
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
  /** The longest statement the guard accepts (STEPCAST_MAX_SQL_CHARS), told to the agent. */
  maxSqlChars?: number;
  /** The longest description of the tables, in characters (default DEFAULT_SCHEMA_CHARS). */
  maxSchemaChars?: number;
  signal?: AbortSignal;
}

/** A failed statement longer than this is shown cut in a repair round (its error says what was wrong). */
const MAX_QUOTED_SQL_CHARS = 4_000;
const ERROR_CONTEXT_CHARS = 80;

function systemPrompt(maxSqlChars: number | undefined): string {
  return `You write one read-only PostgreSQL SELECT statement for one step of a data question.
A guard parses the statement with PostgreSQL's own parser and refuses, before it runs, anything its rules do not allow;
then it runs in a read-only transaction with a time limit and a row cap.
The guard's rules:
${describeSqlRules({ maxSqlChars }).map((rule) => `- ${rule}`).join('\n')}
Writing the statement:
- Use only the columns listed for each table and step_N relation. Join on the keys listed: "a.x -> b.y" means a.x references b.y.
- Compare a column with the values listed for it, spelled exactly as listed (case matters).
- PostgreSQL, not another dialect: x::date or date_trunc('day', x) (no DATE(x)); extract(year FROM x) (no YEAR(x));
  coalesce (no ifnull or nvl); now() - interval '30 days' (no DATE_SUB or DATEDIFF); || or concat for text; ILIKE for case-insensitive matching.
- Name every computed column with AS, and give every output column a distinct name. Order the rows when the order matters.
- Return what the step asks for, with the ids a later step may join on.
Answer with a JSON object {"sql": "...", "explanation": "..."}.`;
}

function quoteSql(sql: string): string {
  if (sql.length <= MAX_QUOTED_SQL_CHARS) return sql;
  return `${sql.slice(0, MAX_QUOTED_SQL_CHARS)}\n… (${sql.length - MAX_QUOTED_SQL_CHARS} more characters)`;
}

/** The line of the statement where the error is, with a caret under its position. */
function pointAt(sql: string, position: number): string | null {
  const characters = [...sql];
  if (!Number.isInteger(position) || position < 1 || position > characters.length) return null;
  const offset = characters.slice(0, position - 1).join('').length;
  const lineStart = sql.lastIndexOf('\n', offset - 1) + 1;
  const lineEnd = sql.indexOf('\n', offset) === -1 ? sql.length : sql.indexOf('\n', offset);
  const start = Math.max(lineStart, offset - ERROR_CONTEXT_CHARS);
  const end = Math.min(lineEnd, offset + ERROR_CONTEXT_CHARS);
  const line = sql.slice(start, end);
  return `${line}\n${' '.repeat([...sql.slice(start, offset)].length)}^`;
}

function describeAttempt(attempt: SqlAttempt, number: number): string {
  const by = attempt.refusedBy === 'guard' ? ' (the guard refused it; it did not run)' : attempt.refusedBy === 'database' ? ' (the database refused it)' : '';
  const lines = [`Attempt ${number} failed${by}.`, `SQL:\n${quoteSql(attempt.sql)}`, `Error: ${attempt.error}`];
  if (attempt.sqlState) lines.push(`SQLSTATE: ${attempt.sqlState}`);
  if (attempt.detail) lines.push(`Detail: ${attempt.detail}`);
  if (attempt.hint) lines.push(`Hint: ${attempt.hint}`);
  const here = attempt.position === undefined ? null : pointAt(attempt.sql, attempt.position);
  if (here) lines.push(`At character ${attempt.position}:\n${here}`);
  return lines.join('\n');
}

export async function writeSql(llm: LlmClient, request: SqlAgentRequest): Promise<StructuredAnswer<SqlAnswer>> {
  const repairs = request.failedAttempts.map((attempt, i) => describeAttempt(attempt, i + 1)).join('\n\n');
  const tables = describeDataSchema(request.dataSchema, {
    maxChars: request.maxSchemaChars,
    focus: [request.task.entity, request.task.queryContext, request.task.reasoning, request.planQuery],
  });
  const user = [
    `The user's question: ${request.planQuery}`,
    `This is step ${request.index}.`,
    describeStepTask(request.task),
    `Tables (name (~rows): column type, "not null", the values of columns with few; then keys):\n${tables}`,
    `Earlier steps, readable as relations step_N (FROM step_1, JOIN step_1 s ON ...); only the columns listed exist:\n${describeStepRelations(request.earlier)}`,
    repairs ? `${repairs}\n\nWrite a corrected statement that avoids this error.` : null,
  ]
    .filter((part) => part !== null)
    .join('\n\n');
  return llm.completeStructured({
    agent: 'sql',
    schemaName: 'sql_step',
    schema: SqlAnswerSchema,
    messages: [
      { role: 'system', content: systemPrompt(request.maxSqlChars) },
      { role: 'user', content: user },
    ],
    signal: request.signal,
  });
}
