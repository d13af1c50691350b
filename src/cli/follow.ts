import { followUpdates, request, type Connection } from './client.js';
import { ExitCode, type ExitCodeValue } from './exit-codes.js';
import type { CliExecutionFieldsFragment, CliStepUpdatesSubscription, ExecutionStatus } from './generated/graphql.js';
import { CliExecutionQuery, CliStepUpdatesSubscription as StepUpdates } from './operations.js';
import { formatDuration, Spinner, styleFor, truncate, type Style } from './render.js';

export type StepUpdate = CliStepUpdatesSubscription['stepUpdates'];
type Step = NonNullable<StepUpdate['step']>;

export interface Terminal {
  out: NodeJS.WritableStream & { isTTY?: boolean };
  err: NodeJS.WritableStream & { isTTY?: boolean };
  env: NodeJS.ProcessEnv;
}

const FINAL_STATUSES: ReadonlySet<ExecutionStatus> = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);
const FINAL_UPDATE_TYPES: ReadonlySet<StepUpdate['type']> = new Set(['EXECUTION_SUCCEEDED', 'EXECUTION_FAILED', 'EXECUTION_CANCELLED']);

/** SUCCEEDED 0, FAILED 1, CANCELLED 2. */
export function exitCodeOf(status: ExecutionStatus): ExitCodeValue {
  if (status === 'SUCCEEDED') return ExitCode.ok;
  if (status === 'CANCELLED') return ExitCode.cancelled;
  return ExitCode.failed;
}

export function statusColour(style: Style, status: string): (text: string) => string {
  if (status === 'SUCCEEDED') return style.green;
  if (status === 'FAILED' || status === 'CANCELLED') return style.red;
  if (status === 'WAITING' || status === 'SKIPPED') return style.yellow;
  return (text) => text;
}

/** "step 2/3 SQL their groups (groups)" */
export function stepLabel(step: Pick<Step, 'index' | 'kind' | 'queryContext' | 'entity'>, totalSteps: number): string {
  const about = step.entity ? `${truncate(step.queryContext, 48)} (${step.entity})` : truncate(step.queryContext, 60);
  return `step ${step.index}/${totalSteps} ${step.kind} ${about}`;
}

/** The line printed when a step ends: status, record count, duration, error in red with its code. */
function stepEndLine(style: Style, step: Step, totalSteps: number): string {
  const parts = [stepLabel(step, totalSteps), statusColour(style, step.status)(step.status)];
  if (step.recordCount !== null) parts.push(`${step.recordCount} ${step.recordCount === 1 ? 'record' : 'records'}`);
  if (step.durationMs !== null) parts.push(formatDuration(step.durationMs));
  let line = parts.join('  ');
  if (step.error) line += `\n    ${style.red(`${step.error.code}: ${truncate(step.error.message, 160)}`)}`;
  return line;
}

export function summaryLine(style: Style, execution: CliExecutionFieldsFragment): string {
  const status = statusColour(style, execution.status)(style.bold(execution.status));
  const parts = [`${status}`];
  if (execution.durationMs !== null) parts.push(`in ${formatDuration(execution.durationMs)}`);
  let line = `${parts.join(' ')}: ${execution.successfulSteps} of ${execution.totalSteps} steps succeeded`;
  if (execution.failedSteps > 0) line += `, ${execution.failedSteps} failed`;
  if (execution.usage) line += `, ${execution.usage.totalTokens} tokens`;
  if (execution.error) line += `\n${style.red(`${execution.error.code}: ${truncate(execution.error.message, 160)}`)}`;
  return line;
}

export interface FollowRequest {
  execution: CliExecutionFieldsFragment;
  afterSequence: number;
  json: boolean;
}

/**
 * Prints an execution's updates as they come (one line per step, or one JSON object per update
 * with --json) until its last one, then a summary; returns the exit code of its final status.
 * Ctrl-C detaches: the execution goes on, and the message says how to re-attach.
 */
export async function followExecution(terminal: Terminal, connection: Connection, { execution, afterSequence, json }: FollowRequest): Promise<ExitCodeValue> {
  const style = styleFor(terminal.out, terminal.env);
  const errStyle = styleFor(terminal.err, terminal.env);
  const spinner = !json && terminal.out.isTTY ? new Spinner(terminal.out) : undefined;
  const { id, totalSteps } = execution;
  let lastSequence = afterSequence;
  let running: Step | undefined;

  const print = (text: string) => {
    spinner?.stop();
    terminal.out.write(`${text}\n`);
    if (running && spinner) spinner.start(stepLabel(running, totalSteps));
  };

  const onUpdate = (update: StepUpdate) => {
    lastSequence = update.sequence;
    if (json) {
      terminal.out.write(`${JSON.stringify(update)}\n`);
      return;
    }
    const step = update.step;
    switch (update.type) {
      case 'STEP_STARTED':
        running = step ?? undefined;
        if (step && spinner) spinner.start(stepLabel(step, totalSteps));
        break;
      case 'STEP_PROGRESS':
        if (step && spinner) spinner.update(`${stepLabel(step, totalSteps)} ${style.dim(truncate(update.message ?? '', 60))}`);
        break;
      case 'STEP_SUCCEEDED':
      case 'STEP_FAILED':
      case 'STEP_CANCELLED':
      case 'STEP_SKIPPED':
        if (step && running?.index === step.index) running = undefined;
        if (step) print(stepEndLine(style, step, totalSteps));
        break;
      case 'STEP_WAITING':
        if (step) {
          print(
            `${stepLabel(step, totalSteps)}  ${style.yellow('WAITING')} for approval: ` +
              `npx stepcast approve ${id} ${step.index}   or   npx stepcast reject ${id} ${step.index}`,
          );
        }
        break;
      case 'STEP_APPROVED':
      case 'STEP_REJECTED':
        if (step) {
          const by = step.decidedBy ? ` by ${step.decidedBy}` : '';
          const comment = step.decisionComment ? `: ${truncate(step.decisionComment, 80)}` : '';
          print(`step ${step.index}/${totalSteps} ${update.type === 'STEP_APPROVED' ? 'approved' : style.red('rejected')}${by}${comment}`);
        }
        break;
      case 'EXECUTION_RESUMED':
        print(style.dim(`resumed by another server${step ? ` at step ${step.index}` : ''}`));
        break;
      default:
        break;
    }
  };

  const detach = () => {
    spinner?.stop();
    terminal.err.write(
      `detached from ${id} after update ${lastSequence}; it goes on. Re-attach with:\n` +
        `  npx stepcast watch ${id} --after ${lastSequence}\n`,
    );
    process.exit(ExitCode.detached);
  };
  // A finished execution followed from its last update on has nothing more to send.
  const nothingToFollow = FINAL_STATUSES.has(execution.status) && afterSequence >= execution.lastSequence;
  process.once('SIGINT', detach);
  try {
    if (!nothingToFollow) {
      await followUpdates(connection, {
      document: StepUpdates,
      executionId: id,
      afterSequence,
      isFinal: (update) => FINAL_UPDATE_TYPES.has(update.type),
      onUpdate,
      onReconnecting: (attempt, delayMs, reason) => {
        spinner?.stop();
        terminal.err.write(`${errStyle.yellow('connection lost')} (${reason}); reconnecting in ${formatDuration(delayMs)} after update ${lastSequence} (attempt ${attempt})\n`);
        if (running && spinner) spinner.start(stepLabel(running, totalSteps));
      },
      });
    }
  } finally {
    process.removeListener('SIGINT', detach);
    spinner?.stop();
  }
  const final = (await request(connection, CliExecutionQuery, { id })).execution;
  if (!final) throw new Error(`execution ${id} vanished`);
  if (!json) terminal.out.write(`${summaryLine(style, final)}\n`);
  if (!FINAL_STATUSES.has(final.status)) return ExitCode.unreachable;
  return exitCodeOf(final.status);
}
