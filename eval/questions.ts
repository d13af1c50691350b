import { readFile } from 'node:fs/promises';
import { z } from 'zod';

export const DIFFICULTIES = ['easy', 'medium', 'hard'] as const;
/** sql: one SQL step the agent writes; two-step: two, the second reading step_1; end-to-end: executeQuery plans and runs. */
export const KINDS = ['sql', 'two-step', 'end-to-end'] as const;

export type Difficulty = (typeof DIFFICULTIES)[number];
export type QuestionKind = (typeof KINDS)[number];

const base = {
  id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'letters, digits, "_" or "-"'),
  difficulty: z.enum(DIFFICULTIES),
  /** The plan's query (sql, two-step) or executeQuery's question (end-to-end), in plain words. */
  question: z.string().min(1),
  /** SQL over the demo tables whose result is the right answer (for two-step: the answer of step 2). */
  gold: z.string().min(1),
  /** The question asks for an order: rows are compared in order. */
  ordered: z.boolean().default(false),
};

const QuestionSchema = z.discriminatedUnion('kind', [
  z.strictObject({ ...base, kind: z.literal('sql') }),
  z.strictObject({ ...base, kind: z.literal('end-to-end') }),
  z.strictObject({
    ...base,
    kind: z.literal('two-step'),
    /** Each step's queryContext; the second reads the first as step_1. */
    steps: z.tuple([z.string().min(1), z.string().min(1)]),
  }),
]);

export type Question = z.infer<typeof QuestionSchema>;

const QuestionFileSchema = z.strictObject({ questions: z.array(QuestionSchema).min(1) }).superRefine((file, context) => {
  const seen = new Set<string>();
  for (const question of file.questions) {
    if (seen.has(question.id)) context.addIssue({ code: 'custom', message: `the id ${question.id} appears twice` });
    seen.add(question.id);
  }
});

export const DEFAULT_QUESTIONS_FILE = new URL('./questions.json', import.meta.url);

export class QuestionFileError extends Error {
  override name = 'QuestionFileError';
}

export async function loadQuestions(file: string | URL = DEFAULT_QUESTIONS_FILE): Promise<Question[]> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch (error) {
    throw new QuestionFileError(`cannot read the questions from ${String(file)}: ${(error as Error).message}`, { cause: error });
  }
  const result = QuestionFileSchema.safeParse(parsed);
  if (!result.success) {
    const issues = result.error.issues.map((issue) => `${issue.path.join('.') || '(file)'}: ${issue.message}`).join('; ');
    throw new QuestionFileError(`the questions in ${String(file)} do not fit the format: ${issues}`);
  }
  return result.data.questions;
}

export interface QuestionFilter {
  ids?: readonly string[];
  difficulties?: readonly Difficulty[];
  kinds?: readonly QuestionKind[];
  limit?: number;
}

/** The questions a run asks, in file order: those that pass every filter given, then the first `limit`. */
export function selectQuestions(questions: readonly Question[], filter: QuestionFilter): Question[] {
  const unknown = filter.ids?.filter((id) => !questions.some((question) => question.id === id)) ?? [];
  if (unknown.length > 0) throw new QuestionFileError(`no question has the id ${unknown.join(', ')}`);
  const selected = questions.filter(
    (question) =>
      (!filter.ids || filter.ids.includes(question.id)) &&
      (!filter.difficulties || filter.difficulties.includes(question.difficulty)) &&
      (!filter.kinds || filter.kinds.includes(question.kind)),
  );
  return filter.limit === undefined ? selected : selected.slice(0, filter.limit);
}
