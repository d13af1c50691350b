import { AgentError, type LlmClient, type StructuredAnswer } from '../../agents/llm-client.js';
import type { StoredColumn, StoredPlanStep, StoredTokenUsage, TenantRow } from '../../db/tables.js';
import { cancelOf, StepFailure } from '../errors.js';
import type { StepMemory } from '../execution-memory.js';
import type { RateDecision } from '../rate-limiter.js';

export type JsonRecord = Record<string, unknown>;

/** What a later step knows of an earlier one: the sample for prompts, the full records to run on. */
export interface EarlierStep {
  index: number;
  kind: StoredPlanStep['kind'];
  queryContext: string;
  entity: string | null;
  recordCount: number;
  sample: JsonRecord[];
  records: JsonRecord[];
  columns: StoredColumn[];
  /** What the records cost on the heap (they count against the execution's memory budget). */
  heapBytes: number;
}

export interface StepContext {
  tenant: TenantRow;
  planQuery: string;
  index: number;
  step: StoredPlanStep;
  /** Earlier steps that succeeded, in order. */
  earlier: EarlierStep[];
  /** The step's stepTimeoutMs: the most its statement or program may run, each attempt (the model's time is not in it). */
  timeoutMs: number;
  rowCap: number;
  sampleSize: number;
  /** Adds tokens an agent spent on this step; counted even when the step then fails. */
  recordUsage(usage: StoredTokenUsage): void;
  /** Takes one of the tenant's model calls (STEPCAST_TENANT_MODEL_CALLS_*) for one agent call. */
  takeModelCall(): Promise<RateDecision>;
  /** Publishes a STEP_PROGRESS update, in order, before the step's outcome; reports made while one is being stored are coalesced into the newest. */
  reportProgress(message: string): void;
  /**
   * Called before the step's program makes a call that is not safe to repeat (not a GET, and not declared
   * idempotent in the tenant's catalog); resolves once that is stored, so a crash after it does not run the
   * step again.
   */
  beforeUnsafeCall?(): Promise<void>;
  /**
   * Aborted when the step must stop: its execution was cancelled (a StepCancelledError reason, which the handler
   * then rejects with), or the step passed its overall bound (a TimeoutError reason; see stepTimeBoundMs). The
   * statement, the program, its API calls and the agents' model calls all stop with it.
   */
  signal: AbortSignal;
  /** When the step's overall bound passes (ms since the epoch); no statement or program runs past it. */
  deadline: number;
  /** The step's account of its execution's memory budget: what it reads and makes is taken from it. */
  memory: StepMemory;
}

export interface StepOutcome {
  sql?: string;
  code?: string;
  records: JsonRecord[];
  columns: StoredColumn[];
  /** True when the step produced more than it could return (a row cap, for example). */
  truncated: boolean;
  attempts: number;
  logs?: string[];
}

export type StepHandler = (context: StepContext) => Promise<StepOutcome>;

/**
 * A handler whose step was cancelled rejects with the cancel (the signal's StepCancelledError), whatever
 * the abort made of its work below (a cancelled statement, a terminated program, an aborted model call) and
 * even if the work finished as the cancel came: the engine stops the step either way. The cancel keeps
 * what the step had got to (its SQL or code, its attempts).
 */
export function stoppedByCancel(handler: StepHandler): StepHandler {
  return async (context) => {
    let outcome: StepOutcome;
    try {
      outcome = await handler(context);
    } catch (error) {
      const cancel = cancelOf(context.signal);
      if (!cancel) throw error;
      if (error instanceof StepFailure && error !== cancel) cancel.artefact = { ...error.artefact, ...cancel.artefact };
      throw cancel;
    }
    const cancel = cancelOf(context.signal);
    if (cancel) {
      cancel.artefact = { sql: outcome.sql, code: outcome.code, attempts: outcome.attempts, logs: outcome.logs, ...cancel.artefact };
      throw cancel;
    }
    return outcome;
  };
}

/**
 * The time limit of a statement or program starting now: the step's timeoutMs, and never past its overall
 * bound; at least 1 ms so that a limit set from it is still a limit.
 */
export function workTimeoutMs(context: Pick<StepContext, 'deadline' | 'timeoutMs'>): number {
  return Math.max(1, Math.min(context.timeoutMs, context.deadline - Date.now()));
}

export interface StepTimeLimits {
  /** The statement's or program's limit per attempt (the execution's stepTimeoutMs). */
  stepTimeoutMs: number;
  /** One agent call's limit (STEPCAST_AGENT_TIMEOUT_MS). */
  agentTimeoutMs: number;
  /** Rewrites the SQL agent may make after a rejected or failing statement (STEPCAST_SQL_REPAIR_ROUNDS). */
  sqlRepairRounds: number;
}

/**
 * The longest a step may take in all: each attempt is an agent call (when the step has no sql or code) and a
 * run of what it wrote, and a SQL step written by its agent has 1 + sqlRepairRounds attempts. The model's time
 * and the statement's have limits of their own; this bound is what no step passes, whatever happens inside it.
 */
export function stepTimeBoundMs(step: Pick<StoredPlanStep, 'kind' | 'sql' | 'code'>, limits: StepTimeLimits): number {
  const written = Boolean(step.kind === 'SQL' ? step.sql : step.code);
  if (written) return limits.stepTimeoutMs;
  const attempts = step.kind === 'SQL' ? 1 + limits.sqlRepairRounds : 1;
  return attempts * (limits.agentTimeoutMs + limits.stepTimeoutMs);
}

/**
 * Asks an agent for a step's missing artefact (its sql or code), counting the tokens spent whether
 * the answer comes or not. Without a configured model the step fails AGENT_NOT_CONFIGURED; when the
 * tenant has no model call left, MODEL_RATE_LIMITED, and the model is not asked. One call takes one
 * model call, whatever retries or corrective round it makes inside.
 */
export async function askAgent<T>(
  llm: LlmClient,
  context: Pick<StepContext, 'index' | 'recordUsage' | 'takeModelCall'>,
  artefact: { field: 'sql' | 'code'; agent: string },
  ask: () => Promise<StructuredAnswer<T>>,
): Promise<T> {
  if (!llm.configured) {
    throw new StepFailure(
      'AGENT_NOT_CONFIGURED',
      `step ${context.index} has no ${artefact.field}, and no ${artefact.agent} is configured to write it: set OPENAI_API_KEY (OpenAI) or OPENAI_BASE_URL (an OpenAI-compatible server), or give the step its ${artefact.field}`,
    );
  }
  const modelCall = await context.takeModelCall();
  if (!modelCall.allowed) {
    throw new StepFailure(
      'MODEL_RATE_LIMITED',
      `step ${context.index} needs the ${artefact.agent} to write its ${artefact.field}, and this tenant has used up its model calls for now (STEPCAST_TENANT_MODEL_CALLS_PER_MINUTE, STEPCAST_TENANT_MODEL_CALLS_BURST); the next one is available in ${modelCall.retryAfterSeconds} s`,
      { retryable: true },
    );
  }
  try {
    const answer = await ask();
    context.recordUsage(answer.usage);
    return answer.value;
  } catch (error) {
    if (error instanceof AgentError) context.recordUsage(error.usage);
    throw error;
  }
}
