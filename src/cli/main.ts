import { readFile } from 'node:fs/promises';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { connectionTo, request, type Connection } from './client.js';
import { CliError, ExitCode, UsageError, type ExitCodeValue } from './exit-codes.js';
import { followExecution, statusColour, stepLabel, summaryLine, type Terminal } from './follow.js';
import type { CliExecutionFieldsFragment, ExecuteOptions, ExecutionStatus } from './generated/graphql.js';
import {
  CliApproveStepMutation,
  CliCancelExecutionMutation,
  CliExecutePlanMutation,
  CliExecuteQueryMutation,
  CliExecutionQuery,
  CliExecutionsQuery,
  CliRejectStepMutation,
  CliShowExecutionQuery,
} from './operations.js';
import { formatDuration, recordsTable, styleFor, table, truncate } from './render.js';

const EXECUTION_STATUSES: readonly ExecutionStatus[] = ['QUEUED', 'RUNNING', 'WAITING', 'SUCCEEDED', 'FAILED', 'CANCELLED'];

interface GlobalOptions {
  url: string;
  key?: string;
  json?: boolean;
}

interface SubmitOptions {
  detach?: boolean;
  correlationId?: string;
  idempotencyKey?: string;
  sampleSize?: number;
  stepTimeoutMs?: number;
}

function positiveInteger(value: string): number {
  const number = Number(value);
  if (!Number.isInteger(number) || number < 0) throw new InvalidArgumentError('expected a whole number');
  return number;
}

function addSubmitOptions(command: Command): Command {
  return command
    .option('-d, --detach', 'print the execution id and return at once, without following it')
    .option('--correlation-id <id>', 'tags every log line, event and row of the run')
    .option('--idempotency-key <key>', 'submit once: the same key and request answer with the same execution')
    .option('--sample-size <n>', 'records of each step passed on as its sample (0 to 100)', positiveInteger)
    .option('--step-timeout-ms <ms>', "time limit of each step's statement or program in milliseconds (the model's time is not in it)", positiveInteger);
}

function executeOptionsOf(options: SubmitOptions): ExecuteOptions | undefined {
  const executeOptions: ExecuteOptions = {};
  if (options.correlationId !== undefined) executeOptions.correlationId = options.correlationId;
  if (options.idempotencyKey !== undefined) executeOptions.idempotencyKey = options.idempotencyKey;
  if (options.sampleSize !== undefined) executeOptions.sampleSize = options.sampleSize;
  if (options.stepTimeoutMs !== undefined) executeOptions.stepTimeoutMs = options.stepTimeoutMs;
  return Object.keys(executeOptions).length > 0 ? executeOptions : undefined;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/** A plan file: the PlanInput itself ({ query, steps }), or { plan, options }. */
async function readPlan(file: string, stdin: NodeJS.ReadableStream): Promise<{ plan: unknown; options?: ExecuteOptions }> {
  let text: string;
  try {
    text = file === '-' ? await readAll(stdin) : await readFile(file, 'utf8');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (error as Error).message;
    throw new UsageError(`cannot read plan ${file}: ${reason}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new UsageError(`plan ${file === '-' ? 'from stdin' : file} is not JSON: ${(error as Error).message}`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new UsageError(`plan ${file === '-' ? 'from stdin' : file} must be an object with query and steps`);
  }
  const wrapped = parsed as { plan?: unknown; options?: ExecuteOptions };
  if (wrapped.plan && typeof wrapped.plan === 'object') return { plan: wrapped.plan, options: wrapped.options };
  return { plan: parsed };
}

/** The stepcast command line; resolves with the exit code. */
export async function main(argv: string[], terminal: Terminal, stdin: NodeJS.ReadableStream = process.stdin): Promise<number> {
  const { out } = terminal;
  const style = styleFor(out, terminal.env);
  let exitCode: ExitCodeValue = ExitCode.ok;
  const write = (text: string) => out.write(`${text}\n`);

  const program = new Command('stepcast')
    .description('Run plans on a stepcast server and follow them live.')
    .version(await packageVersion())
    .addOption(new Option('--url <url>', 'the stepcast server').env('STEPCAST_URL').default('http://localhost:4000'))
    .addOption(new Option('--key <key>', 'API key or JWT, sent as a Bearer credential').env('STEPCAST_API_KEY'))
    .option('--json', 'machine-readable output (one JSON object per update when following)')
    .exitOverride()
    .configureOutput({ writeOut: (text) => out.write(text), writeErr: (text) => terminal.err.write(text) });

  const globals = (command: Command) => {
    const options = command.optsWithGlobals<GlobalOptions>();
    return { connection: connectionTo(options.url, options.key), json: options.json === true };
  };

  const submitted = async (connection: Connection, json: boolean, execution: CliExecutionFieldsFragment, detach: boolean | undefined) => {
    if (detach) {
      write(json ? JSON.stringify(execution) : execution.id);
      return;
    }
    if (!json) write(`execution ${execution.id} ${style.dim(`(correlation ${execution.correlationId})`)}: ${truncate(execution.plan.query, 80)}`);
    exitCode = await followExecution(terminal, connection, { execution, afterSequence: 0, json });
  };

  addSubmitOptions(
    program
      .command('run')
      .description('submit a plan (a JSON file, or - for stdin) and follow it live')
      .argument('<file>', 'the plan: { "query": ..., "steps": [...] }, or - to read it from stdin'),
  ).action(async (file: string, options: SubmitOptions, command: Command) => {
    const { connection, json } = globals(command);
    const { plan, options: fileOptions } = await readPlan(file, stdin);
    const executeOptions = { ...fileOptions, ...executeOptionsOf(options) };
    const { executePlan } = await request(connection, CliExecutePlanMutation, {
      plan: plan as never,
      options: Object.keys(executeOptions).length > 0 ? executeOptions : undefined,
    });
    await submitted(connection, json, executePlan, options.detach);
  });

  addSubmitOptions(
    program
      .command('ask')
      .description('ask a question: the planner writes a plan, stepcast runs it, the CLI follows it')
      .argument('<question...>', 'the question, in plain words'),
  ).action(async (words: string[], options: SubmitOptions, command: Command) => {
    const { connection, json } = globals(command);
    const { executeQuery } = await request(connection, CliExecuteQueryMutation, {
      query: words.join(' '),
      options: executeOptionsOf(options),
    });
    if (!json && !options.detach) {
      write(`planned ${executeQuery.totalSteps} ${executeQuery.totalSteps === 1 ? 'step' : 'steps'}:`);
      executeQuery.plan.steps.forEach((step, i) => write(`  ${i + 1}. ${step.kind} ${truncate(step.queryContext, 100)}`));
    }
    await submitted(connection, json, executeQuery, options.detach);
  });

  program
    .command('watch')
    .description('follow an execution, running or finished, from the start or after an update')
    .argument('<id>', 'execution id')
    .option('--after <sequence>', 'start after this update (the last sequence you saw)', positiveInteger, 0)
    .action(async (id: string, options: { after: number }, command: Command) => {
      const { connection, json } = globals(command);
      const { execution } = await request(connection, CliExecutionQuery, { id });
      if (!execution) throw new UsageError(`no execution ${id}`);
      if (!json) write(`execution ${execution.id} ${style.dim(`(correlation ${execution.correlationId})`)}: ${truncate(execution.plan.query, 80)}`);
      exitCode = await followExecution(terminal, connection, { execution, afterSequence: options.after, json });
    });

  program
    .command('ls')
    .description('execution history, newest first, a page at a time')
    .option('--status <statuses>', `only these statuses, comma-separated (${EXECUTION_STATUSES.join(', ')})`, (value: string) => {
      const statuses = value.split(',').map((status) => status.trim().toUpperCase());
      const wrong = statuses.find((status) => !EXECUTION_STATUSES.includes(status as ExecutionStatus));
      if (wrong !== undefined) throw new InvalidArgumentError(`unknown status ${wrong}; one of ${EXECUTION_STATUSES.join(', ')}`);
      return statuses as ExecutionStatus[];
    })
    .option('--correlation-id <id>', 'only the execution(s) with this correlation id')
    .option('--created-after <time>', 'only executions created after this ISO 8601 time')
    .option('--created-before <time>', 'only executions created before this ISO 8601 time')
    .option('--first <n>', 'page size, 1 to 100', positiveInteger, 20)
    .option('--after <cursor>', 'the page after this cursor (printed at the end of the previous page)')
    .action(async (options: { status?: ExecutionStatus[]; correlationId?: string; createdAfter?: string; createdBefore?: string; first: number; after?: string }, command: Command) => {
      const { connection, json } = globals(command);
      const filter = {
        ...(options.status ? { status: options.status } : {}),
        ...(options.correlationId !== undefined ? { correlationId: options.correlationId } : {}),
        ...(options.createdAfter !== undefined ? { createdAfter: options.createdAfter } : {}),
        ...(options.createdBefore !== undefined ? { createdBefore: options.createdBefore } : {}),
      };
      const { executions } = await request(connection, CliExecutionsQuery, {
        first: options.first,
        after: options.after,
        filter: Object.keys(filter).length > 0 ? filter : undefined,
      });
      const nodes = executions.edges.map((edge) => edge.node);
      if (json) {
        write(JSON.stringify({ executions: nodes, pageInfo: executions.pageInfo }));
        return;
      }
      if (nodes.length === 0) write('no executions');
      else {
        const rows = nodes.map((node) => [
          node.id,
          node.status,
          node.createdAt,
          formatDuration(node.durationMs),
          `${node.successfulSteps}/${node.totalSteps}`,
          truncate(node.plan.query, 50),
        ]);
        write(table(['ID', 'STATUS', 'CREATED', 'DURATION', 'STEPS', 'QUERY'], rows));
      }
      if (executions.pageInfo.hasNextPage && executions.pageInfo.endCursor) {
        write(style.dim(`next page: npx stepcast ls --after ${executions.pageInfo.endCursor}`));
      }
    });

  program
    .command('show')
    .description('one execution: its steps, their SQL or code, samples as tables')
    .argument('<id>', 'execution id')
    .action(async (id: string, _options: unknown, command: Command) => {
      const { connection, json } = globals(command);
      const { execution } = await request(connection, CliShowExecutionQuery, { id });
      if (!execution) throw new UsageError(`no execution ${id}`);
      if (json) {
        write(JSON.stringify(execution));
        return;
      }
      write(`execution ${execution.id} ${style.dim(`(correlation ${execution.correlationId})`)}`);
      write(`query: ${execution.plan.query}`);
      if (execution.plan.reasoning) write(`reasoning: ${execution.plan.reasoning}`);
      write(`created ${execution.createdAt}${execution.finishedAt ? `, finished ${execution.finishedAt}` : ''}${execution.resumes > 0 ? `, resumed ${execution.resumes} times` : ''}`);
      write(summaryLine(style, execution));
      for (const step of execution.steps) {
        const parts = [stepLabel(step, execution.totalSteps), statusColour(style, step.status)(step.status)];
        if (step.recordCount !== null) parts.push(`${step.recordCount} records${step.truncated ? ' (truncated)' : ''}`);
        if (step.durationMs !== null) parts.push(formatDuration(step.durationMs));
        if (step.attempts > 1) parts.push(`${step.attempts} attempts`);
        if (step.usage) parts.push(`${step.usage.totalTokens} tokens`);
        write('');
        write(parts.join('  '));
        const artefact = step.sql ?? step.code;
        if (artefact) {
          write(`  ${step.sql ? 'SQL' : 'code'}:`);
          for (const line of artefact.split('\n')) write(`    ${line}`);
        }
        if (step.decision) write(`  ${step.decision.toLowerCase()} by ${step.decidedBy ?? 'unknown'}${step.decisionComment ? `: ${step.decisionComment}` : ''}`);
        if (step.error) write(`  ${style.red(`${step.error.code}: ${step.error.message}`)}`);
        if (step.logs?.length) {
          write('  logs:');
          for (const line of step.logs) write(`    ${line}`);
        }
        if (Array.isArray(step.sample)) {
          write(`  sample (${step.sample.length} of ${step.recordCount ?? step.sample.length} records):`);
          write(recordsTable(step.sample, '    '));
        }
      }
    });

  program
    .command('cancel')
    .description('cancel an execution (a running step is stopped, the rest skipped)')
    .argument('<id>', 'execution id')
    .action(async (id: string, _options: unknown, command: Command) => {
      const { connection, json } = globals(command);
      const { cancelExecution } = await request(connection, CliCancelExecutionMutation, { id });
      if (json) write(JSON.stringify(cancelExecution));
      else if (cancelExecution.status === 'CANCELLED') write(`${id} ${style.red('CANCELLED')}`);
      else write(`${id} is ${cancelExecution.status}${['SUCCEEDED', 'FAILED'].includes(cancelExecution.status) ? ' (already finished)' : '; the cancel is stored and stops it'}`);
    });

  for (const decision of ['approve', 'reject'] as const) {
    program
      .command(decision)
      .description(decision === 'approve' ? 'let a waiting step run' : 'fail a waiting step with REJECTED')
      .argument('<id>', 'execution id')
      .argument('<step>', 'position of the waiting step (1-based)', positiveInteger)
      .option('--comment <text>', 'why, in plain words (stored on the step)')
      .action(async (id: string, index: number, options: { comment?: string }, command: Command) => {
        const { connection, json } = globals(command);
        const variables = { executionId: id, index, comment: options.comment };
        const execution =
          decision === 'approve'
            ? (await request(connection, CliApproveStepMutation, variables)).approveStep
            : (await request(connection, CliRejectStepMutation, variables)).rejectStep;
        if (json) write(JSON.stringify(execution));
        else write(`${decision === 'approve' ? 'approved' : 'rejected'} step ${index} of ${id}; the execution is ${execution.status}`);
      });
  }

  try {
    await program.parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.exitCode === 0) return ExitCode.ok;
      return ExitCode.usage;
    }
    if (error instanceof CliError) {
      terminal.err.write(`${styleFor(terminal.err, terminal.env).red('error:')} ${error.message}\n`);
      return error.exitCode;
    }
    terminal.err.write(`error: ${(error as Error).stack ?? String(error)}\n`);
    return ExitCode.internal;
  }
}

async function packageVersion(): Promise<string> {
  const text = await readFile(new URL('../../package.json', import.meta.url), 'utf8');
  return (JSON.parse(text) as { version: string }).version;
}
