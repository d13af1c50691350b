import { performance } from 'node:perf_hooks';
import {
  executePlan,
  executeQuery,
  readExecution,
  ServiceRequestError,
  waitForEnd,
  type ExecutionView,
  type PlanInput,
  type StepView,
  type TokenUsage,
} from './client.js';
import { compareResults, resultSetOf, type ResultSet, type Verdict } from './compare.js';
import type { Difficulty, Question, QuestionKind } from './questions.js';

/** An agent-written statement that failed, as the service logged it ('agent-written statement failed'). */
export interface FailedAttempt {
  stepIndex: number;
  attempt: number;
  /** Its SQL, or the start of it when it was longer than the service logs (see sqlChars). */
  sql: string;
  /** The length of the whole statement, when `sql` is only its start. */
  sqlChars?: number;
  code: string;
  message: string;
}

/** A step's records and columns, as a later step reads them as step_N. */
export interface EarlierRecords {
  index: number;
  columns: { name: string; type: string }[];
  records: Record<string, unknown>[];
}

/** What the evaluation needs of the service besides its API: see service.ts. */
export interface EvaluationHooks {
  /** The agent-written statements of this execution that failed, in order. */
  failedAttempts(executionId: string): FailedAttempt[];
  /**
   * Runs a statement the guard refused as the tenant's statements run (read-only, the tenant's role), with the
   * earlier steps as step_N; throws RefusedStatementNotRun for one it must not run.
   */
  runRefusedStatement(sql: string, earlier: EarlierRecords[]): Promise<ResultSet>;
}

/** runRefusedStatement does not run this statement: what it would do is not safe to find out (see service.ts). */
export class RefusedStatementNotRun extends Error {
  override name = 'RefusedStatementNotRun';
}

/** What became of a statement the guard refused, had it run: its result equals the gold answer's or not. */
export type RefusedOutcome = 'correct' | 'wrong' | 'unchecked';

export interface RefusedStatement {
  step: number;
  attempt: number;
  sql: string;
  reason: string;
  wouldHaveBeen: RefusedOutcome;
  /** Why it would have been wrong, or why it was not checked. */
  note: string;
}

export type QuestionVerdict = Verdict | 'no-answer' | 'gold-failed';

export interface QuestionResult {
  id: string;
  kind: QuestionKind;
  difficulty: Difficulty;
  ordered: boolean;
  question: string;
  verdict: QuestionVerdict;
  /** The answer equals the gold answer, with the same number of columns. */
  correct: boolean;
  /** The answer holds the gold answer's columns and rows, and may have more columns. */
  correctWithExtraColumns: boolean;
  reason: string;
  executionId: string | null;
  status: string | null;
  error: { code: string; message: string } | null;
  steps: { index: number; kind: string; status: string; sql: string | null; attempts: number; errorCode: string | null; recordCount: number | null }[];
  /** Attempts beyond the first, over every step (each is one repair round of the SQL agent). */
  repairRounds: number;
  guardRejections: number;
  /** Statements the guard refused whose result, run anyway, equals the gold answer. */
  guardRejectionsOfCorrect: number;
  refused: RefusedStatement[];
  tokens: TokenUsage;
  /** From the submit to the execution's terminal update. */
  latencyMs: number;
  /** Two-step questions: whether the last statement of step 2 reads step_1. */
  readsStep1?: boolean;
}

export interface GoldAnswer {
  result: ResultSet;
  recordCount: number;
}

const NO_TOKENS: TokenUsage = { promptTokens: 0, completionTokens: 0, totalTokens: 0 };

/** The plan the service runs for a sql or two-step question: steps without SQL, which the SQL agent writes. */
export function planOf(question: Question): PlanInput {
  const contexts = question.kind === 'two-step' ? question.steps : [question.question];
  return { query: question.question, steps: contexts.map((queryContext) => ({ kind: 'SQL', queryContext })) };
}

function recordsOf(step: StepView): Record<string, unknown>[] {
  return Array.isArray(step.result) ? (step.result as Record<string, unknown>[]) : [];
}

function resultOf(step: StepView): ResultSet {
  const records = recordsOf(step);
  const columns = step.columns?.map((column) => column.name) ?? Object.keys(records[0] ?? {});
  return resultSetOf(columns, records);
}

/** Gold answers per plan: a plan holds at most this many steps (STEPCAST_PLAN_MAX_STEPS, 50 by default). */
const GOLDS_PER_PLAN = 50;

/**
 * Runs the gold SQL through the service, so that it passes the same guard and conversions as the model's: one
 * plan of non-critical steps, one per question, for each 50 questions. Each answer, or why there is none.
 */
export async function runGolds(url: string, questions: readonly Question[], stepTimeoutMs: number): Promise<Map<string, GoldAnswer | Error>> {
  const golds = new Map<string, GoldAnswer | Error>();
  for (let first = 0; first < questions.length; first += GOLDS_PER_PLAN) {
    const batch = questions.slice(first, first + GOLDS_PER_PLAN);
    const id = await executePlan(
      url,
      {
        query: 'gold answers',
        steps: batch.map((question) => ({ kind: 'SQL', queryContext: `gold answer of ${question.id}`, sql: question.gold, critical: false })),
      },
      { stepTimeoutMs },
    );
    await waitForEnd(url, id);
    const { steps } = await readExecution(url, id);
    batch.forEach((question, i) => {
      const step = steps[i]!;
      if (step.status !== 'SUCCEEDED') golds.set(question.id, new Error(`the gold SQL failed: ${step.error?.code} ${step.error?.message}`));
      else if (step.truncated) golds.set(question.id, new Error(`the gold answer was truncated at ${step.recordCount} records`));
      else golds.set(question.id, { result: resultOf(step), recordCount: step.recordCount ?? 0 });
    });
  }
  return golds;
}

async function judgeRefused(
  attempt: FailedAttempt,
  execution: ExecutionView,
  answerStep: number,
  gold: GoldAnswer,
  question: Question,
  hooks: EvaluationHooks,
): Promise<RefusedStatement> {
  const refused = { step: attempt.stepIndex, attempt: attempt.attempt, sql: attempt.sql, reason: attempt.message };
  if (attempt.stepIndex !== answerStep) {
    return { ...refused, wouldHaveBeen: 'unchecked', note: 'not the step that answers; only that step has a gold answer' };
  }
  if (attempt.sqlChars !== undefined) {
    return { ...refused, wouldHaveBeen: 'unchecked', note: `the log keeps the first ${attempt.sql.length} of its ${attempt.sqlChars} characters: not run` };
  }
  const earlierSteps = execution.steps.filter((step) => step.index < attempt.stepIndex);
  const unusable = earlierSteps.find((step) => step.status !== 'SUCCEEDED' || step.truncated);
  if (unusable) {
    return { ...refused, wouldHaveBeen: 'unchecked', note: `step ${unusable.index}'s records are not all in its stored result` };
  }
  const earlier = earlierSteps.map((step) => ({ index: step.index, columns: step.columns ?? [], records: recordsOf(step) }));
  try {
    const result = await hooks.runRefusedStatement(attempt.sql, earlier);
    const comparison = compareResults(gold.result, result, { ordered: question.ordered });
    return comparison.verdict === 'match'
      ? { ...refused, wouldHaveBeen: 'correct', note: comparison.reason }
      : { ...refused, wouldHaveBeen: 'wrong', note: comparison.reason };
  } catch (error) {
    if (error instanceof RefusedStatementNotRun) return { ...refused, wouldHaveBeen: 'unchecked', note: error.message };
    return { ...refused, wouldHaveBeen: 'wrong', note: `it fails when run: ${(error as Error).message}` };
  }
}

function baseResult(question: Question): QuestionResult {
  return {
    id: question.id,
    kind: question.kind,
    difficulty: question.difficulty,
    ordered: question.ordered,
    question: question.question,
    verdict: 'no-answer',
    correct: false,
    correctWithExtraColumns: false,
    reason: '',
    executionId: null,
    status: null,
    error: null,
    steps: [],
    repairRounds: 0,
    guardRejections: 0,
    guardRejectionsOfCorrect: 0,
    refused: [],
    tokens: NO_TOKENS,
    latencyMs: 0,
  };
}

export async function askQuestion(
  url: string,
  question: Question,
  gold: GoldAnswer,
  { stepTimeoutMs, hooks }: { stepTimeoutMs: number; hooks: EvaluationHooks },
): Promise<QuestionResult> {
  const result = baseResult(question);
  const options = { stepTimeoutMs, correlationId: `eval-${question.id}-${Date.now()}` };
  const started = performance.now();
  let executionId: string;
  try {
    executionId =
      question.kind === 'end-to-end' ? await executeQuery(url, question.question, options) : await executePlan(url, planOf(question), options);
    await waitForEnd(url, executionId);
  } catch (error) {
    if (!(error instanceof ServiceRequestError)) throw error;
    result.latencyMs = performance.now() - started;
    result.error = { code: error.code, message: error.message };
    result.reason = `the service refused the question: ${error.code} ${error.message}`;
    return result;
  }
  result.latencyMs = performance.now() - started;
  const execution = await readExecution(url, executionId);
  result.executionId = execution.id;
  result.status = execution.status;
  result.error = execution.error;
  result.tokens = execution.usage ?? NO_TOKENS;
  result.steps = execution.steps.map((step) => ({
    index: step.index,
    kind: step.kind,
    status: step.status,
    sql: step.sql,
    attempts: step.attempts,
    errorCode: step.error?.code ?? null,
    recordCount: step.recordCount,
  }));
  result.repairRounds = execution.steps.reduce((rounds, step) => rounds + Math.max(0, step.attempts - 1), 0);
  if (question.kind === 'two-step' && execution.steps[1]?.sql) result.readsStep1 = /\bstep_1\b/i.test(execution.steps[1].sql);

  const answerStep = execution.steps.at(-1);
  const rejected = hooks.failedAttempts(execution.id).filter((attempt) => attempt.code === 'SQL_REJECTED');
  result.refused = await Promise.all(rejected.map((attempt) => judgeRefused(attempt, execution, answerStep?.index ?? 0, gold, question, hooks)));
  result.guardRejections = result.refused.length;
  result.guardRejectionsOfCorrect = result.refused.filter((refused) => refused.wouldHaveBeen === 'correct').length;

  if (!answerStep || answerStep.status !== 'SUCCEEDED') {
    const failed = execution.steps.find((step) => step.error) ?? answerStep;
    result.reason = failed?.error
      ? `step ${failed.index} ${failed.status}: ${failed.error.code} ${failed.error.message}`
      : `the execution ended ${execution.status}`;
    return result;
  }
  if (answerStep.truncated) {
    result.verdict = 'mismatch';
    result.reason = `the answer was truncated (${answerStep.recordCount} records; the gold answer has ${gold.recordCount})`;
    return result;
  }
  const comparison = compareResults(gold.result, resultOf(answerStep), { ordered: question.ordered });
  result.verdict = comparison.verdict;
  result.reason = comparison.reason;
  result.correct = comparison.verdict === 'match';
  result.correctWithExtraColumns = comparison.verdict !== 'mismatch';
  return result;
}

/** Runs `work` over `items`, at most `concurrency` at once; results in the order of the items. Once `signal` aborts, starts no more. */
export async function inPool<T, R>(
  items: readonly T[],
  concurrency: number,
  work: (item: T, index: number) => Promise<R>,
  signal?: AbortSignal,
): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length && !signal?.aborted) {
      const index = next++;
      results[index] = await work(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker));
  return results;
}

export interface EvaluationOptions {
  url: string;
  questions: readonly Question[];
  concurrency: number;
  stepTimeoutMs: number;
  hooks: EvaluationHooks;
  /** Told of each question's result as it comes (progress). */
  onResult?: (result: QuestionResult, done: number, total: number) => void;
  /** Once aborted, no more questions are asked (the run is being stopped). */
  signal?: AbortSignal;
}

/** The gold answers first (no model), then every question against the model. */
export async function evaluate({ url, questions, concurrency, stepTimeoutMs, hooks, onResult, signal }: EvaluationOptions): Promise<QuestionResult[]> {
  const golds = await runGolds(url, questions, stepTimeoutMs);
  let done = 0;
  return inPool(questions, concurrency, async (question) => {
    const gold = golds.get(question.id)!;
    const result =
      gold instanceof Error
        ? { ...baseResult(question), verdict: 'gold-failed' as const, reason: gold.message }
        : await askQuestion(url, question, gold, { stepTimeoutMs, hooks });
    onResult?.(result, ++done, questions.length);
    return result;
  }, signal);
}
