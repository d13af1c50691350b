import type { Config } from '../src/config.js';
import type { TokenUsage } from './client.js';
import type { QuestionResult } from './harness.js';
import { DIFFICULTIES, KINDS } from './questions.js';

export interface Summary {
  questions: number;
  /** Questions with a gold answer to compare with (a gold SQL that fails leaves its question out of every rate). */
  scored: number;
  correct: number;
  /** correct / scored, from 0 to 1. */
  accuracy: number;
  correctWithExtraColumns: number;
  accuracyWithExtraColumns: number;
  /** Questions whose execution gave no answer (a step failed, the service refused the question). */
  noAnswer: number;
  guardRejections: number;
  guardRejectionsOfCorrect: number;
  /** Refused statements not checked against the gold answer (not on the answering step, not runnable as it was, not safe to run, or logged cut short). */
  guardRejectionsUnchecked: number;
  repairRounds: number;
  tokens: TokenUsage;
  latencyMs: { total: number; mean: number; p50: number; p95: number; max: number };
}

export interface ReportSummary {
  total: Summary;
  byKind: Record<string, Summary>;
  byDifficulty: Record<string, Summary>;
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export function summarize(results: readonly QuestionResult[]): Summary {
  const scored = results.filter((result) => result.verdict !== 'gold-failed');
  const latencies = scored.map((result) => result.latencyMs).sort((a, b) => a - b);
  const total = latencies.reduce((sum, latency) => sum + latency, 0);
  const sum = (pick: (result: QuestionResult) => number) => scored.reduce((acc, result) => acc + pick(result), 0);
  const correct = scored.filter((result) => result.correct).length;
  const correctWithExtraColumns = scored.filter((result) => result.correctWithExtraColumns).length;
  return {
    questions: results.length,
    scored: scored.length,
    correct,
    accuracy: scored.length ? correct / scored.length : 0,
    correctWithExtraColumns,
    accuracyWithExtraColumns: scored.length ? correctWithExtraColumns / scored.length : 0,
    noAnswer: scored.filter((result) => result.verdict === 'no-answer').length,
    guardRejections: sum((result) => result.guardRejections),
    guardRejectionsOfCorrect: sum((result) => result.guardRejectionsOfCorrect),
    guardRejectionsUnchecked: sum((result) => result.refused.filter((refused) => refused.wouldHaveBeen === 'unchecked').length),
    repairRounds: sum((result) => result.repairRounds),
    tokens: {
      promptTokens: sum((result) => result.tokens.promptTokens),
      completionTokens: sum((result) => result.tokens.completionTokens),
      totalTokens: sum((result) => result.tokens.totalTokens),
    },
    latencyMs: {
      total: Math.round(total),
      mean: latencies.length ? Math.round(total / latencies.length) : 0,
      p50: Math.round(percentile(latencies, 50)),
      p95: Math.round(percentile(latencies, 95)),
      max: Math.round(latencies.at(-1) ?? 0),
    },
  };
}

export function summarizeAll(results: readonly QuestionResult[]): ReportSummary {
  const present = <T extends string>(values: readonly T[], of: (result: QuestionResult) => T) =>
    Object.fromEntries(
      values
        .filter((value) => results.some((result) => of(result) === value))
        .map((value) => [value, summarize(results.filter((result) => of(result) === value))]),
    );
  return {
    total: summarize(results),
    byKind: present(KINDS, (result) => result.kind),
    byDifficulty: present(DIFFICULTIES, (result) => result.difficulty),
  };
}

const VERDICT_LABELS: Record<QuestionResult['verdict'], string> = {
  match: 'ok',
  'match-with-extra-columns': 'ok+cols',
  mismatch: 'wrong',
  'no-answer': 'failed',
  'gold-failed': 'no gold',
};

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

function percent(fraction: number): string {
  return `${(fraction * 100).toFixed(1)} %`;
}

function formatTable(header: string[], rows: string[][], rightAligned: ReadonlySet<number>): string {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => (rightAligned.has(column) ? cell.padStart(widths[column]!) : cell.padEnd(widths[column]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

/** The per-question table and the totals, as printed to stdout. */
export function formatReport(results: readonly QuestionResult[], summary: ReportSummary): string {
  const questionRows = results.map((result) => [
    result.id,
    result.kind,
    result.difficulty,
    VERDICT_LABELS[result.verdict],
    `${result.guardRejections} (${result.guardRejectionsOfCorrect})`,
    String(result.repairRounds),
    String(result.tokens.totalTokens),
    seconds(result.latencyMs),
    result.correct ? '' : result.reason.slice(0, 100),
  ]);
  const questions = formatTable(
    ['question', 'kind', 'difficulty', 'result', 'refused (correct)', 'repairs', 'tokens', 'latency', 'why'],
    questionRows,
    new Set([4, 5, 6, 7]),
  );
  const summaryRow = (label: string, s: Summary) => [
    label,
    String(s.scored),
    `${percent(s.accuracy)} (${s.correct})`,
    `${percent(s.accuracyWithExtraColumns)} (${s.correctWithExtraColumns})`,
    `${s.guardRejections} (${s.guardRejectionsOfCorrect})`,
    String(s.repairRounds),
    `${s.tokens.promptTokens}/${s.tokens.completionTokens}/${s.tokens.totalTokens}`,
    `${seconds(s.latencyMs.p50)} / ${seconds(s.latencyMs.p95)} / ${seconds(s.latencyMs.mean)}`,
  ];
  const totals = formatTable(
    ['', 'questions', 'accuracy', 'with extra columns', 'refused (correct)', 'repairs', 'tokens prompt/completion/total', 'latency p50 / p95 / mean'],
    [
      ...Object.entries(summary.byKind).map(([kind, s]) => summaryRow(kind, s)),
      ...Object.entries(summary.byDifficulty).map(([difficulty, s]) => summaryRow(difficulty, s)),
      summaryRow('total', summary.total),
    ],
    new Set([1, 2, 3, 4, 5, 6, 7]),
  );
  return `${questions}\n\n${totals}\n`;
}

const SECRET_NAME = /(KEY|SECRET|PASSWORD|_TOKEN)$/;
const MODEL_SETTING = /^STEPCAST_(.*_)?(MODEL|LLM|AGENT|REPAIR|TEMPERATURE|TOKENS|OUTPUT)(_|$)/;

/** What the report says of the model: its names, its server's host and the settings that shape its answers (no secrets). */
export function describeModel(config: Config, env: NodeJS.ProcessEnv) {
  const { apiKey: _apiKey, baseUrl, ...settings } = config.llm;
  return {
    models: config.llm.models,
    baseUrlHost: baseUrl ? new URL(baseUrl).host : 'api.openai.com',
    settings,
    environment: Object.fromEntries(
      Object.entries(env)
        .filter(([name]) => MODEL_SETTING.test(name) && !SECRET_NAME.test(name) && !name.startsWith('STEPCAST_TENANT_'))
        .sort(([a], [b]) => (a < b ? -1 : 1)),
    ),
  };
}
