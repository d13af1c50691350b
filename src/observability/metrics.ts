import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ModelCallOutcome, TokenUsage } from '../agents/llm-client.js';
import type { AgentName } from '../config.js';
import { STEP_KINDS, type StepUpdate } from '../executor/step-update.js';
import { SANDBOX_REFUSAL_CODES } from '../sandbox/errors.js';

/** What the gauges read when Prometheus scrapes: nothing is counted on the hot path for them. */
export interface ScrapedSources {
  /** Unfinished executions in the whole database, by status; undefined when it does not answer in time. */
  unfinishedExecutions(): Promise<ReadonlyMap<string, number> | undefined>;
  /** Executions this process runs now. */
  runningInProcess(): number;
  /** stepUpdates subscriptions open on this process, graphql-ws and SSE together. */
  openSubscriptions(): number;
  /** graphql-ws sockets open on this process. */
  openSockets(): number;
}

const UNFINISHED_STATUSES = ['QUEUED', 'RUNNING', 'WAITING'] as const;
const STEP_END_TYPES: ReadonlySet<string> = new Set(['STEP_SUCCEEDED', 'STEP_FAILED', 'STEP_SKIPPED', 'STEP_CANCELLED']);
const EXECUTION_END_TYPES: ReadonlySet<string> = new Set(['EXECUTION_SUCCEEDED', 'EXECUTION_FAILED', 'EXECUTION_CANCELLED']);

/** From 10 ms (a small SQL step) to 5 minutes (a step that waits for a slow model several times). */
const STEP_SECONDS_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
/** A transition is one statement: from half a millisecond (PGlite, idle) to seconds (a database in trouble). */
const COMMIT_SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/**
 * prom-client's default metrics (CPU, memory, heap, GC, event loop lag), registered once per process: they start a GC
 * PerformanceObserver and an event-loop-delay monitor that prom-client gives no way to stop, and they describe the
 * process, not a service. Every service's registry takes these same metric objects.
 */
let processMetrics: Registry | undefined;
function processRegistry(): Registry {
  if (!processMetrics) {
    processMetrics = new Registry();
    collectDefaultMetrics({ register: processMetrics });
  }
  return processMetrics;
}

/**
 * The service's metrics, in a registry of its own (two services in one process do not share counters; they share the
 * process's default metrics). No label takes a tenant id, an execution id or anything a client writes: every label has
 * a fixed, small set of values.
 */
export class StepcastMetrics {
  /** The process's default metrics and this service's own (yoga's plugin registers its metrics here too). */
  readonly registry: Registry;
  private readonly executionsStarted: Counter;
  private readonly executionsFinished: Counter<'status'>;
  private readonly stepsStarted: Counter<'kind'>;
  private readonly stepsFinished: Counter<'kind' | 'status'>;
  private readonly stepSeconds: Histogram<'kind'>;
  private readonly commitSeconds: Histogram;
  private readonly modelCalls: Counter<'agent' | 'model' | 'outcome'>;
  private readonly modelTokens: Counter<'agent' | 'model' | 'type'>;
  private readonly sqlRejected: Counter<'reason'>;
  private readonly sandboxRefused: Counter<'code'>;

  constructor(sources: ScrapedSources) {
    this.registry = Registry.merge([processRegistry(), new Registry()]);
    const registers = [this.registry];
    this.executionsStarted = new Counter({
      name: 'stepcast_executions_started_total',
      help: 'Executions this process started running (their first step began).',
      registers,
    });
    this.executionsFinished = new Counter({
      name: 'stepcast_executions_finished_total',
      help: 'Executions this process recorded as finished, by final status.',
      labelNames: ['status'],
      registers,
    });
    this.stepsStarted = new Counter({
      name: 'stepcast_steps_started_total',
      help: 'Steps this process started, by kind (a step continued after a resume is not started again).',
      labelNames: ['kind'],
      registers,
    });
    this.stepsFinished = new Counter({
      name: 'stepcast_steps_finished_total',
      help: 'Steps this process recorded as ended, by kind and status (SUCCEEDED, FAILED, SKIPPED, CANCELLED).',
      labelNames: ['kind', 'status'],
      registers,
    });
    this.stepSeconds = new Histogram({
      name: 'stepcast_step_duration_seconds',
      help: 'Time from a step starting to it succeeding or failing, by kind.',
      labelNames: ['kind'],
      buckets: STEP_SECONDS_BUCKETS,
      registers,
    });
    this.commitSeconds = new Histogram({
      name: 'stepcast_transition_commit_seconds',
      help: 'Time to commit one transition (a step or execution change and its events) to the database.',
      buckets: COMMIT_SECONDS_BUCKETS,
      registers,
    });
    this.modelCalls = new Counter({
      name: 'stepcast_model_calls_total',
      help: 'Requests to the model, by agent, model and outcome (ok, error, cancelled); each retry is a request.',
      labelNames: ['agent', 'model', 'outcome'],
      registers,
    });
    this.modelTokens = new Counter({
      name: 'stepcast_model_tokens_total',
      help: 'Tokens the model reported using, by agent, model and type (prompt, completion).',
      labelNames: ['agent', 'model', 'type'],
      registers,
    });
    this.sqlRejected = new Counter({
      name: 'stepcast_sql_guard_refusals_total',
      help: 'Statements the SQL guard refused, by reason.',
      labelNames: ['reason'],
      registers,
    });
    this.sandboxRefused = new Counter({
      name: 'stepcast_sandbox_refusals_total',
      help: 'Programs the sandbox or its host stopped for a limit or a forbidden call, by code (not errors of the program, failures of the API, or cancels).',
      labelNames: ['code'],
      registers,
    });
    // Every known series from the start, at zero: rate() and alerts see a series before its first event.
    for (const status of ['SUCCEEDED', 'FAILED', 'CANCELLED']) this.executionsFinished.inc({ status }, 0);
    for (const code of SANDBOX_REFUSAL_CODES) this.sandboxRefused.inc({ code }, 0);
    for (const kind of STEP_KINDS) {
      this.stepsStarted.inc({ kind }, 0);
      this.stepSeconds.zero({ kind });
      for (const status of ['SUCCEEDED', 'FAILED', 'SKIPPED', 'CANCELLED']) this.stepsFinished.inc({ kind, status }, 0);
    }
    new Gauge({
      name: 'stepcast_executions',
      help: 'Unfinished executions in the whole database, by status (the same from every process: aggregate with max).',
      labelNames: ['status'],
      registers,
      async collect() {
        this.reset();
        const counts = await sources.unfinishedExecutions();
        // No answer in time: no series, rather than zeros that read as an idle service.
        if (!counts) return;
        for (const status of UNFINISHED_STATUSES) this.set({ status }, counts.get(status) ?? 0);
      },
    });
    new Gauge({
      name: 'stepcast_executions_running_in_process',
      help: 'Executions this process runs now.',
      registers,
      collect() {
        this.set(sources.runningInProcess());
      },
    });
    new Gauge({
      name: 'stepcast_subscriptions_open',
      help: 'stepUpdates subscriptions open on this process, over graphql-ws and SSE.',
      registers,
      collect() {
        this.set(sources.openSubscriptions());
      },
    });
    new Gauge({
      name: 'stepcast_websockets_open',
      help: 'graphql-ws sockets open on this process.',
      registers,
      collect() {
        this.set(sources.openSockets());
      },
    });
  }

  /** The store committed a transition: counts what it changed, and how long the commit took. */
  readonly transitionCommitted = (updates: readonly StepUpdate[], seconds: number): void => {
    this.commitSeconds.observe(seconds);
    for (const update of updates) {
      const { type, step } = update;
      if (type === 'EXECUTION_STARTED') this.executionsStarted.inc();
      else if (EXECUTION_END_TYPES.has(type)) this.executionsFinished.inc({ status: update.status });
      else if (type === 'STEP_STARTED' && step) this.stepsStarted.inc({ kind: step.kind });
      else if (STEP_END_TYPES.has(type) && step) {
        this.stepsFinished.inc({ kind: step.kind, status: step.status });
        if ((step.status === 'SUCCEEDED' || step.status === 'FAILED') && step.startedAt && step.finishedAt) {
          this.stepSeconds.observe({ kind: step.kind }, (Date.parse(step.finishedAt) - Date.parse(step.startedAt)) / 1000);
        }
      }
    }
  };

  readonly modelCalled = (agent: AgentName, model: string, outcome: ModelCallOutcome, usage?: TokenUsage): void => {
    this.modelCalls.inc({ agent, model, outcome });
    if (!usage) return;
    this.modelTokens.inc({ agent, model, type: 'prompt' }, usage.promptTokens);
    this.modelTokens.inc({ agent, model, type: 'completion' }, usage.completionTokens);
  };

  readonly sqlRefused = (reason: string): void => {
    this.sqlRejected.inc({ reason });
  };

  /** A program failed with this code: counted when it is a refusal (SANDBOX_REFUSAL_CODES), so the label stays bounded. */
  readonly sandboxStopped = (code: string): void => {
    if (SANDBOX_REFUSAL_CODES.has(code)) this.sandboxRefused.inc({ code });
  };
}
