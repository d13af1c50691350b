// npm run eval: asks the question set of eval/questions.json of the configured model, through a stepcast service
// started in this process on a database of its own, and prints per question and in total: execution accuracy,
// statements the guard refused (and of those, the ones that were right), repair rounds, tokens and latency.
// The table goes to stdout, progress to stderr, and everything to a JSON report for comparing models.
import { writeFile } from 'node:fs/promises';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { ConfigError } from '../src/config.js';
import { evaluate } from './harness.js';
import {
  DEFAULT_QUESTIONS_FILE,
  DIFFICULTIES,
  KINDS,
  loadQuestions,
  QuestionFileError,
  selectQuestions,
  type Difficulty,
  type Question,
  type QuestionKind,
} from './questions.js';
import { describeModel, formatReport, summarizeAll } from './report.js';
import { EvalSetupError, startEvalService } from './service.js';

const EXIT_RAN = 0;
const EXIT_COULD_NOT_RUN = 1;
const EXIT_USAGE = 64;
/** A run stopped by a signal exits as a shell reports a process that signal ended: 128 + its number. */
const EXIT_STOPPED = { SIGINT: 130, SIGTERM: 143 } as const;
type StopSignal = keyof typeof EXIT_STOPPED;

/**
 * The first SIGINT (Ctrl-C) or SIGTERM: no more questions are asked, and the evaluation's database and directory
 * are removed before the process exits. A second signal finds Node's own handler again, and ends it at once.
 */
function stopOnSignal() {
  const controller = new AbortController();
  let stop!: (signal: StopSignal) => void;
  const stopped = new Promise<StopSignal>((resolve) => (stop = resolve));
  const onSignal = (signal: StopSignal) => {
    dispose();
    process.stderr.write(`${signal}: stopping; removing the evaluation's database first (${signal} again stops at once)\n`);
    controller.abort();
    stop(signal);
  };
  const dispose = () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return { signal: controller.signal, stopped, dispose };
}

interface RunOptions {
  questions?: string;
  ids?: string[];
  difficulty?: Difficulty[];
  kind?: QuestionKind[];
  limit?: number;
  concurrency: number;
  report: string;
  log?: string;
  stepTimeoutMs: number;
  databaseUrl?: string;
}

function wholeNumber(min: number, max: number) {
  return (value: string) => {
    const number = Number(value);
    if (!Number.isInteger(number) || number < min || number > max) throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}`);
    return number;
  };
}

function listOf<T extends string>(allowed: readonly T[]) {
  return (value: string) => {
    const items = value.split(',').map((item) => item.trim()).filter(Boolean);
    const wrong = items.filter((item) => !allowed.includes(item as T));
    if (wrong.length > 0) throw new InvalidArgumentError(`expected some of ${allowed.join(', ')}; got ${wrong.join(', ')}`);
    return items as T[];
  };
}

function isPostgresUrl(value: string): boolean {
  return URL.canParse(value) && ['postgres:', 'postgresql:'].includes(new URL(value).protocol);
}

function commandLine(env: NodeJS.ProcessEnv): Command {
  return new Command('npm run eval --')
    .description('Evaluate the configured model on the question set, through a stepcast service of its own')
    .option('--questions <file>', 'the question set (default: eval/questions.json)')
    .option('--ids <ids>', 'only these questions (comma-separated ids)', (value: string) => value.split(',').map((id) => id.trim()).filter(Boolean))
    .option('--difficulty <levels>', `only these difficulties (${DIFFICULTIES.join(', ')})`, listOf(DIFFICULTIES))
    .option('--kind <kinds>', `only these kinds (${KINDS.join(', ')})`, listOf(KINDS))
    .option('--limit <n>', 'at most this many questions (the first that pass the filters)', wholeNumber(1, 100_000))
    .option('--concurrency <n>', 'questions asked at once', wholeNumber(1, 32), 1)
    .option('--report <file>', 'where the JSON report goes (EVAL_REPORT)', env.EVAL_REPORT ?? 'eval-report.json')
    .option('--log <file>', "where the service's JSON log lines go (none by default)")
    .option('--step-timeout-ms <ms>', "each step's stepTimeoutMs: the time its statement may run (the model's time is STEPCAST_AGENT_TIMEOUT_MS)", wholeNumber(100, 3_600_000), 120_000)
    .option('--database-url <url>', "a PostgreSQL server to make the evaluation's own database on (EVAL_DATABASE_URL); PGlite when unset", env.EVAL_DATABASE_URL)
    .exitOverride()
    .configureOutput({ writeOut: (text) => process.stdout.write(text), writeErr: (text) => process.stderr.write(text) });
}

async function runEval(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  let options: RunOptions;
  try {
    options = commandLine(env).parse(argv, { from: 'user' }).opts<RunOptions>();
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? EXIT_RAN : EXIT_USAGE;
    throw error;
  }
  if (options.databaseUrl !== undefined && !isPostgresUrl(options.databaseUrl)) {
    process.stderr.write('error: --database-url (EVAL_DATABASE_URL) must be a postgres:// or postgresql:// URL\n');
    return EXIT_USAGE;
  }
  let questions;
  try {
    questions = selectQuestions(await loadQuestions(options.questions ?? DEFAULT_QUESTIONS_FILE), {
      ids: options.ids,
      difficulties: options.difficulty,
      kinds: options.kind,
      limit: options.limit,
    });
  } catch (error) {
    if (!(error instanceof QuestionFileError)) throw error;
    process.stderr.write(`error: ${error.message}\n`);
    return EXIT_USAGE;
  }
  if (questions.length === 0) {
    process.stderr.write('error: no question passes the filters\n');
    return EXIT_USAGE;
  }

  const stop = stopOnSignal();
  try {
    return await evaluateAndReport(options, questions, env, stop);
  } finally {
    stop.dispose();
  }
}

async function evaluateAndReport(
  options: RunOptions,
  questions: Question[],
  env: NodeJS.ProcessEnv,
  stop: ReturnType<typeof stopOnSignal>,
): Promise<number> {
  let service;
  try {
    service = await startEvalService({
      env,
      concurrency: options.concurrency,
      stepTimeoutMs: options.stepTimeoutMs,
      databaseUrl: options.databaseUrl,
      logFile: options.log,
    });
  } catch (error) {
    if (!(error instanceof EvalSetupError || error instanceof ConfigError)) throw error;
    process.stderr.write(`error: ${error.message}\n`);
    return EXIT_COULD_NOT_RUN;
  }
  const model = describeModel(service.config, env);
  process.stderr.write(
    `evaluating ${questions.length} question(s) on ${model.models.sql} (planner ${model.models.planner}) at ${model.baseUrlHost}, on ${service.backend}\n`,
  );
  const startedAt = new Date();
  const evaluation = evaluate({
    url: service.url,
    questions,
    concurrency: options.concurrency,
    stepTimeoutMs: options.stepTimeoutMs,
    hooks: service.hooks,
    signal: stop.signal,
    onResult: (result, done, total) =>
      process.stderr.write(`[${done}/${total}] ${result.id} ${result.verdict} in ${(result.latencyMs / 1000).toFixed(1)} s\n`),
  });
  let outcome;
  try {
    outcome = await Promise.race([evaluation.then((results) => ({ results })), stop.stopped.then((signal) => ({ signal }))]);
  } finally {
    await service.close();
  }
  if ('signal' in outcome) {
    // The questions still being asked fail against the closed service; nothing waits for them.
    evaluation.catch(() => undefined);
    return EXIT_STOPPED[outcome.signal];
  }
  const { results } = outcome;
  const summary = summarizeAll(results);
  process.stdout.write(formatReport(results, summary));
  const report = {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    model,
    run: {
      backend: service.backend,
      demoUsers: service.config.demo.users,
      concurrency: options.concurrency,
      stepTimeoutMs: options.stepTimeoutMs,
      questions: options.questions ?? 'eval/questions.json',
      filter: { ids: options.ids ?? null, difficulty: options.difficulty ?? null, kind: options.kind ?? null, limit: options.limit ?? null },
    },
    summary,
    questions: results,
  };
  await writeFile(options.report, `${JSON.stringify(report, null, 2)}\n`);
  process.stderr.write(`report: ${options.report}\n`);
  const goldFailed = results.filter((result) => result.verdict === 'gold-failed');
  if (goldFailed.length > 0) {
    process.stderr.write(`error: the gold SQL of ${goldFailed.map((result) => result.id).join(', ')} failed; those questions were not scored\n`);
    return EXIT_COULD_NOT_RUN;
  }
  return EXIT_RAN;
}

runEval(process.argv.slice(2), process.env).then(
  (code) => {
    // Stopped by a signal: what was being asked when it came is abandoned, and may still hold the event loop.
    if (Object.values(EXIT_STOPPED).includes(code as never)) process.exit(code);
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = EXIT_COULD_NOT_RUN;
  },
);
