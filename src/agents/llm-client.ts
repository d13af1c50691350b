import { randomUUID } from 'node:crypto';
import OpenAI from 'openai';
import { z } from 'zod';
import type { AgentName, LlmConfig } from '../config.js';
import type { Logger } from '../logger.js';
import { inSpan } from '../observability/spans.js';
import { describeRefusal, normalizeErrorBody, refusalOf, refusesMaxTokens, type StructuredOutputMode } from './model-server-errors.js';

export type { StructuredOutputMode } from './model-server-errors.js';

export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

export const NO_USAGE: TokenUsage = { promptTokens: 0, completionTokens: 0, totalTokens: 0 };

export function addUsage(a: TokenUsage, b: TokenUsage): TokenUsage {
  return {
    promptTokens: a.promptTokens + b.promptTokens,
    completionTokens: a.completionTokens + b.completionTokens,
    totalTokens: a.totalTokens + b.totalTokens,
  };
}

export type AgentErrorCode = 'AGENT_NOT_CONFIGURED' | 'AGENT_FAILED' | 'AGENT_TIMEOUT' | 'AGENT_OUTPUT_INVALID';

/** An agent could not produce its answer; `retryable` says whether asking again later may work. */
export class AgentError extends Error {
  override name = 'AgentError';
  constructor(
    readonly code: AgentErrorCode,
    message: string,
    readonly retryable: boolean,
    readonly usage: TokenUsage = NO_USAGE,
    options: { cause?: unknown } = {},
  ) {
    super(message, options);
  }
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface StructuredRequest<T> {
  agent: AgentName;
  messages: ChatMessage[];
  schemaName: string;
  schema: z.ZodType<T>;
  /** The caller's stop (a cancel, or its own deadline); the call also has its own time limit. */
  signal?: AbortSignal;
  /**
   * The most the whole call may take, every request, retry and the corrective round included. Default: the agent's
   * budget (STEPCAST_AGENT_TIMEOUT_MS; STEPCAST_PLANNER_TIMEOUT_MS for the planner).
   */
  timeoutMs?: number;
}

export interface StructuredAnswer<T> {
  value: T;
  usage: TokenUsage;
}

/** How a request to the model ended: answered, failed (HTTP error, unreachable, timed out), or cancelled by its caller. */
export type ModelCallOutcome = 'ok' | 'error' | 'cancelled';
/** Told of every request to the model (metrics): how it ended, and the tokens it used when it was answered. */
export type ModelCallObserver = (agent: AgentName, model: string, outcome: ModelCallOutcome, usage?: TokenUsage) => void;

const MAX_RETRY_AFTER_MS = 30_000;
/**
 * How long auto keeps what it learnt a model's server refuses. Then the first kind is asked again, once: a
 * server upgraded or restarted with other flags (llama.cpp's --jinja) is used as it is now, and one that still
 * refuses costs a refused request an hour.
 */
const RELEARN_AFTER_MS = 60 * 60_000;
/** In auto mode, what is tried after a server refused the one before, in order. */
const FALLBACK_ORDER: readonly StructuredOutputMode[] = ['json_schema', 'json_object', 'tools'];

function isRetryableStatus(status: number | undefined): boolean {
  return status === 429 || (status !== undefined && status >= 500);
}

function retryDelayMs(attempt: number, headers: Headers | undefined): number {
  const retryAfterMs = Number(headers?.get('retry-after-ms'));
  if (Number.isFinite(retryAfterMs) && retryAfterMs >= 0 && headers?.has('retry-after-ms')) {
    return Math.min(retryAfterMs, MAX_RETRY_AFTER_MS);
  }
  const retryAfter = headers?.get('retry-after');
  if (retryAfter) {
    const seconds = Number(retryAfter);
    const ms = Number.isFinite(seconds) ? seconds * 1000 : Date.parse(retryAfter) - Date.now();
    // A date already past means "now".
    if (Number.isFinite(ms)) return Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS);
  }
  const backoff = Math.min(500 * 2 ** attempt, 8_000);
  return backoff * (0.75 + Math.random() * 0.25);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** An abort for lack of time (AbortSignal.timeout's TimeoutError), as a step's deadline aborts. */
function isTimeoutAbort(reason: unknown): boolean {
  return reason instanceof Error && reason.name === 'TimeoutError';
}

function usageOf(completion: OpenAI.Chat.Completions.ChatCompletion): TokenUsage {
  const usage = completion.usage;
  return {
    promptTokens: usage?.prompt_tokens ?? 0,
    completionTokens: usage?.completion_tokens ?? 0,
    totalTokens: usage?.total_tokens ?? (usage?.prompt_tokens ?? 0) + (usage?.completion_tokens ?? 0),
  };
}

function describeIssues(error: z.ZodError): string {
  return error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`).join('; ');
}

/** The model server's error bodies, whatever their shape, become OpenAI's `{error: {message}}`, so the SDK's errors carry their text. */
const fetchWithErrorMessages: typeof fetch = async (input, init) => {
  const response = await fetch(input, init);
  if (response.ok) return response;
  const headers = new Headers(response.headers);
  headers.delete('content-length');
  headers.delete('content-encoding');
  headers.set('content-type', 'application/json');
  return new Response(normalizeErrorBody(await response.text()), { status: response.status, statusText: response.statusText, headers });
};

/** What the model answered: the text of its message, or the arguments of its tool call. */
interface ModelAnswer {
  content: string;
  toolCall?: { id: string; name: string; arguments: string };
  /** The server stopped at the output token limit. */
  cut: boolean;
}

function answerOf(completion: OpenAI.Chat.Completions.ChatCompletion): ModelAnswer {
  const choice = completion.choices[0];
  const message = choice?.message;
  const cut = choice?.finish_reason === 'length';
  const call = message?.tool_calls?.find((candidate) => candidate.type === 'function');
  if (call) {
    // Some servers send the arguments as an object rather than as JSON text.
    const args: unknown = call.function.arguments;
    const text = typeof args === 'string' ? args : JSON.stringify(args ?? {});
    return { content: text, toolCall: { id: call.id || `call_${randomUUID().slice(0, 8)}`, name: call.function.name, arguments: text }, cut };
  }
  return { content: message?.content ?? '', cut };
}

/** The JSON of an answer, also when a model without a server-side constraint wraps it in a code fence or a sentence. */
function parseJson(text: string): unknown {
  const trimmed = text.trim();
  try {
    return JSON.parse(trimmed);
  } catch {
    const fenced = /^```(?:json)?\s*([\s\S]*?)\s*```$/i.exec(trimmed)?.[1];
    const start = (fenced ?? trimmed).indexOf('{');
    const end = (fenced ?? trimmed).lastIndexOf('}');
    if (start < 0 || end <= start) throw new SyntaxError('no JSON object');
    return JSON.parse((fenced ?? trimmed).slice(start, end + 1));
  }
}

/** An answer that did not fit, and why: the next round shows both to the model. */
interface Correction {
  answer: ModelAnswer;
  problem: string;
}

/**
 * The server refused the way the request asked for structured output (not the request as a whole): the mode
 * itself, or (`of: 'schema'`) only the strict schema the request carried.
 */
class OutputRefusedError extends Error {
  override name = 'OutputRefusedError';
  constructor(
    readonly mode: StructuredOutputMode,
    readonly of: 'mode' | 'schema',
    readonly status: number,
    readonly serverMessage: string,
  ) {
    super(`the model server refused ${of === 'schema' ? 'the schema of ' : ''}structured output as ${mode}: HTTP ${status} ${serverMessage}`);
  }
}

/** The reason a call's own time limit aborts its requests with; a caller's signal never carries it. */
class AgentBudgetSpent extends Error {
  override name = 'AgentBudgetSpent';
}

/** One agent call's time: its own limit, joined to the caller's signal. */
class CallClock {
  readonly deadline: number;
  readonly signal: AbortSignal;
  private readonly budget = new AbortController();
  private readonly timer: NodeJS.Timeout;

  constructor(
    readonly limitMs: number,
    readonly caller: AbortSignal | undefined,
  ) {
    this.deadline = Date.now() + limitMs;
    this.timer = setTimeout(() => this.budget.abort(new AgentBudgetSpent(`no answer within ${limitMs} ms`)), limitMs);
    this.signal = caller ? AbortSignal.any([caller, this.budget.signal]) : this.budget.signal;
  }

  get remainingMs(): number {
    return Math.max(1, this.deadline - Date.now());
  }

  /** The caller stopped the call (a cancel, not its own deadline): not the model's failure. */
  get cancelledByCaller(): boolean {
    return this.caller?.aborted === true && !isTimeoutAbort(this.caller.reason);
  }

  dispose(): void {
    clearTimeout(this.timer);
  }
}

/**
 * The one way agents reach a model: the official openai SDK against OpenAI or any compatible server.
 * Structured output as a strict JSON schema, JSON mode with the schema in the prompt, or a forced tool call
 * (STEPCAST_LLM_OUTPUT; auto falls back once per model when a server refuses one), every answer validated with
 * zod. Each call has a time limit of its own; retries are ours (429, 5xx, a lost connection; Retry-After
 * honoured up to 30 s; other 4xx never), and a request that ran out of time is never retried.
 */
export class LlmClient {
  private readonly client: OpenAI | undefined;
  /** Base URL and model of the models that refused max_tokens: they are sent max_completion_tokens. */
  private readonly wantsMaxCompletionTokens = new Set<string>();
  /** What auto mode learnt each model's server refuses: the mode it asks in now, per base URL and model, until when. */
  private readonly learntModes = new Map<string, { mode: StructuredOutputMode; until: number }>();

  constructor(
    private readonly config: LlmConfig,
    private readonly logger: Logger,
    private readonly onModelCall?: ModelCallObserver,
  ) {
    this.client = LlmClient.isConfigured(config)
      ? new OpenAI({
          apiKey: config.apiKey ?? 'not-needed',
          baseURL: config.baseUrl,
          maxRetries: 0,
          fetch: fetchWithErrorMessages,
        })
      : undefined;
  }

  static isConfigured(config: LlmConfig): boolean {
    return Boolean(config.apiKey || config.baseUrl);
  }

  get configured(): boolean {
    return this.client !== undefined;
  }

  /** The way structured output is asked of this model now: the setting, or in auto mode what its server accepted. */
  outputModeOf(agent: AgentName): StructuredOutputMode {
    if (this.config.output !== 'auto') return this.config.output;
    return this.learntModeOf(this.modelKey(this.config.models[agent]));
  }

  /** What auto learnt of this base URL and model, while it holds (RELEARN_AFTER_MS); json_schema before or after. */
  private learntModeOf(key: string): StructuredOutputMode {
    const learnt = this.learntModes.get(key);
    return learnt && Date.now() < learnt.until ? learnt.mode : 'json_schema';
  }

  /**
   * Asks for JSON that fits the schema; one more round, told what was wrong, if the first answer does not fit.
   * The whole call, retries and that round included, ends within its time limit (AGENT_TIMEOUT).
   */
  async completeStructured<T>(request: StructuredRequest<T>): Promise<StructuredAnswer<T>> {
    const client = this.client;
    if (!client) {
      throw new AgentError(
        'AGENT_NOT_CONFIGURED',
        `the ${request.agent} agent needs a model: set OPENAI_API_KEY (OpenAI) or OPENAI_BASE_URL (an OpenAI-compatible server)`,
        false,
      );
    }
    const limitMs = request.timeoutMs ?? (request.agent === 'planner' ? this.config.plannerTimeoutMs : this.config.agentTimeoutMs);
    const clock = new CallClock(limitMs, request.signal);
    try {
      return await this.answer(client, request, clock);
    } finally {
      clock.dispose();
    }
  }

  private async answer<T>(client: OpenAI, request: StructuredRequest<T>, clock: CallClock): Promise<StructuredAnswer<T>> {
    const model = this.config.models[request.agent];
    const jsonSchema = z.toJSONSchema(request.schema, { target: 'draft-7' }) as Record<string, unknown>;
    const corrections: Correction[] = [];
    let mode = this.outputModeOf(request.agent);
    let usage = NO_USAGE;
    for (let round = 0; round < 2; ) {
      let completion;
      try {
        completion = await this.createWithRetries(client, request, model, this.bodyFor(mode, request, model, jsonSchema, corrections), mode, clock);
      } catch (error) {
        if (error instanceof OutputRefusedError) {
          mode = this.fallBack(request.agent, model, error);
          continue;
        }
        // Tokens of an earlier round were spent; they stay counted when a later round fails.
        if (error instanceof AgentError) throw new AgentError(error.code, error.message, error.retryable, usage, { cause: error });
        throw error;
      }
      usage = addUsage(usage, usageOf(completion));
      const answer = answerOf(completion);
      let problem: string;
      try {
        const result = request.schema.safeParse(parseJson(answer.content));
        if (result.success) return { value: result.data, usage };
        problem = describeIssues(result.error);
      } catch {
        problem = answer.cut
          ? `the answer was cut off at the output token limit (STEPCAST_${request.agent.toUpperCase()}_MAX_TOKENS or STEPCAST_MAX_TOKENS) before its JSON was complete`
          : 'the answer was not valid JSON';
      }
      this.logger.warn({ agent: request.agent, round, mode, problem }, 'model answer did not fit the schema');
      corrections.push({ answer, problem });
      round += 1;
      if (round === 2) {
        throw new AgentError(
          'AGENT_OUTPUT_INVALID',
          `the ${request.agent} agent's model answered twice with output that does not fit the schema: ${problem}`,
          false,
          usage,
        );
      }
    }
    throw new Error('unreachable');
  }

  /** After a refusal: the next mode in auto (remembered for this model from now on), else the call fails. */
  private fallBack(agent: AgentName, model: string, refusal: OutputRefusedError): StructuredOutputMode {
    const next = FALLBACK_ORDER[FALLBACK_ORDER.indexOf(refusal.mode) + 1];
    if (this.config.output !== 'auto') {
      throw new AgentError(
        'AGENT_FAILED',
        `${refusal.message}; STEPCAST_LLM_OUTPUT=${refusal.mode} asks only for that (auto tries json_schema, json_object and tools in turn)`,
        false,
        NO_USAGE,
        { cause: refusal },
      );
    }
    if (!next) {
      throw new AgentError(
        'AGENT_FAILED',
        `the model server refused every kind of structured output (json_schema, json_object, tools); the last refusal: HTTP ${refusal.status} ${refusal.serverMessage}`,
        false,
        NO_USAGE,
        { cause: refusal },
      );
    }
    const details = { agent, model, refused: refusal.mode, next, status: refusal.status, serverMessage: refusal.serverMessage };
    // The server takes json_schema, only not this schema: other schemas of this model still ask in it.
    if (refusal.of === 'schema') {
      this.logger.warn(details, 'the model server refused the strict schema of this call; asking this call in the next kind');
      return next;
    }
    const key = this.modelKey(model);
    // Concurrent calls may learn the same refusal: the mode only ever moves on.
    const learnt = this.learntModeOf(key);
    if (FALLBACK_ORDER.indexOf(next) > FALLBACK_ORDER.indexOf(learnt)) this.learntModes.set(key, { mode: next, until: Date.now() + RELEARN_AFTER_MS });
    this.logger.warn(details, 'the model server refused this kind of structured output; asking this model in the next kind from now on');
    return next;
  }

  private modelKey(model: string): string {
    return `${this.config.baseUrl ?? 'https://api.openai.com/v1'}\n${model}`;
  }

  /** The request for one round in one mode: the prompt, what came of earlier rounds, and how the answer must come. */
  private bodyFor(
    mode: StructuredOutputMode,
    request: StructuredRequest<unknown>,
    model: string,
    jsonSchema: Record<string, unknown>,
    corrections: Correction[],
  ): OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming {
    const { $schema: _dialect, ...schema } = jsonSchema;
    const sampling = this.config.sampling[request.agent];
    const body: OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming = { model, messages: [] };
    if (sampling.temperature !== undefined) body.temperature = sampling.temperature;
    // OpenAI's newer models take only max_completion_tokens; the compatible servers (Ollama's above all) read
    // max_tokens. Behind a base URL (Azure, a gateway, api.openai.com set explicitly), a model that refuses
    // max_tokens says so, and is sent max_completion_tokens from then on.
    if (sampling.maxTokens !== undefined) {
      if (this.config.baseUrl === undefined || this.wantsMaxCompletionTokens.has(this.modelKey(model))) body.max_completion_tokens = sampling.maxTokens;
      else body.max_tokens = sampling.maxTokens;
    }
    let instruction: string | undefined;
    if (mode === 'json_schema') {
      body.response_format = { type: 'json_schema', json_schema: { name: request.schemaName, schema: strictSchemaOf(jsonSchema), strict: true } };
    } else if (mode === 'json_object') {
      body.response_format = { type: 'json_object' };
      instruction = `Answer with only a JSON object, and no other text, that fits this JSON schema:\n${JSON.stringify(schema)}`;
    } else {
      body.tools = [{ type: 'function', function: { name: request.schemaName, description: 'Gives your answer.', parameters: schema } }];
      body.tool_choice = { type: 'function', function: { name: request.schemaName } };
      instruction = `Answer by calling the function ${request.schemaName}: its arguments are your answer, a JSON object that fits its parameters.`;
    }
    body.messages = [...withInstruction(request.messages, instruction), ...corrections.flatMap((correction) => correctionMessages(correction, mode))];
    return body;
  }

  /** One request to the model, in a span of its own, counted by agent and model. */
  private createOnce(
    client: OpenAI,
    request: StructuredRequest<unknown>,
    model: string,
    body: OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming,
    clock: CallClock,
  ): Promise<OpenAI.Chat.Completions.ChatCompletion> {
    const attributes = () => ({ 'gen_ai.operation.name': 'chat', 'gen_ai.request.model': model, 'stepcast.agent': request.agent });
    return inSpan('stepcast.model_call', { client: true, attributes }, async (span) => {
      let completion;
      try {
        // The SDK's own timeout stays past the call's: the call's signal ends the request, and closes its connection.
        completion = await client.chat.completions.create(body, { signal: clock.signal, timeout: clock.remainingMs + 1_000 });
      } catch (error) {
        this.onModelCall?.(request.agent, model, clock.cancelledByCaller ? 'cancelled' : 'error');
        throw error;
      }
      const usage = usageOf(completion);
      this.onModelCall?.(request.agent, model, 'ok', usage);
      if (span.isRecording()) {
        span.setAttributes({
          'gen_ai.usage.input_tokens': usage.promptTokens,
          'gen_ai.usage.output_tokens': usage.completionTokens,
        });
      }
      return completion;
    });
  }

  /** Why the call stopped when its signal did: out of its own time (or its step's) is AGENT_TIMEOUT; a cancel passes through. */
  private stopped(request: StructuredRequest<unknown>, clock: CallClock, cause: unknown): unknown {
    if (clock.cancelledByCaller) return clock.caller!.reason;
    const ownLimit = !clock.caller?.aborted;
    const setting =
      request.timeoutMs !== undefined ? 'its time limit' : request.agent === 'planner' ? 'STEPCAST_PLANNER_TIMEOUT_MS' : 'STEPCAST_AGENT_TIMEOUT_MS';
    return new AgentError(
      'AGENT_TIMEOUT',
      ownLimit
        ? `the ${request.agent} agent's model did not answer within ${clock.limitMs} ms (${setting}); the request was abandoned, not retried`
        : `the step ran out of time while waiting for the ${request.agent} agent's model`,
      true,
      NO_USAGE,
      { cause },
    );
  }

  private async createWithRetries(
    client: OpenAI,
    request: StructuredRequest<unknown>,
    model: string,
    body: OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming,
    mode: StructuredOutputMode,
    clock: CallClock,
  ): Promise<OpenAI.Chat.Completions.ChatCompletion> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.createOnce(client, request, model, body, clock);
      } catch (error) {
        // Out of time, the abandoned request was aborted (its connection closed) and is never retried: the
        // server may still be generating it.
        if (clock.signal.aborted) throw this.stopped(request, clock, error);
        if (body.max_tokens != null && error instanceof OpenAI.APIError && refusesMaxTokens(error)) {
          this.wantsMaxCompletionTokens.add(this.modelKey(model));
          const { max_tokens: maxTokens, ...rest } = body;
          body = { ...rest, max_completion_tokens: maxTokens };
          this.logger.warn({ agent: request.agent, model }, 'the model refused max_tokens; sending it max_completion_tokens from now on');
          // Asked again at once, and not as a retry: once, as the body no longer has max_tokens.
          attempt -= 1;
          continue;
        }
        if (error instanceof OpenAI.APIConnectionTimeoutError) throw this.stopped(request, clock, error);
        const status = error instanceof OpenAI.APIError ? error.status : undefined;
        if (error instanceof OpenAI.APIError && error.status !== undefined) {
          const refused = refusalOf(mode, error);
          if (refused) throw new OutputRefusedError(mode, refused, error.status, describeRefusal(error));
        }
        const connectionFailed = error instanceof OpenAI.APIConnectionError;
        const retryable = connectionFailed || isRetryableStatus(status);
        const reason = status !== undefined ? `answered HTTP ${status}` : 'could not be reached';
        if (!retryable || attempt >= this.config.maxRetries) {
          const detail = error instanceof OpenAI.APIError && status !== undefined ? `: ${describeRefusal(error)}` : '';
          throw new AgentError(
            'AGENT_FAILED',
            `the model server ${reason}${retryable ? ` (after ${attempt + 1} attempts)` : ''}${detail}`,
            retryable,
            NO_USAGE,
            { cause: error },
          );
        }
        const delay = retryDelayMs(attempt, error instanceof OpenAI.APIError ? error.headers : undefined);
        if (delay >= clock.deadline - Date.now()) {
          throw new AgentError(
            'AGENT_FAILED',
            `the model server ${reason}, and waiting ${Math.round(delay)} ms to ask again would pass the ${request.agent} agent's time limit`,
            true,
            NO_USAGE,
            { cause: error },
          );
        }
        this.logger.warn({ agent: request.agent, model, attempt: attempt + 1, status, delay }, 'retrying the model');
        try {
          await sleep(delay, clock.signal);
        } catch (reason) {
          throw this.stopped(request, clock, reason);
        }
      }
    }
  }
}

/**
 * Keywords zod writes that OpenAI's strict mode refuses ("'minLength' is not permitted", 400 invalid_json_schema)
 * rather than enforcing. They are left out of the strict schema; zod still checks them on every answer, and an
 * answer that breaks one gets the corrective round.
 */
const NOT_IN_STRICT_MODE: ReadonlySet<string> = new Set(['minLength', 'maxLength']);

/** The schema as strict mode takes it: the same, without the keywords it refuses, at any depth. */
function strictSchemaOf(schema: unknown): Record<string, unknown> {
  const strip = (node: unknown, keyword: string | undefined): unknown => {
    // Under enum, const, default or examples a value is data; under `properties` the keys are property names (a
    // property may be called minLength).
    if (keyword === 'enum' || keyword === 'const' || keyword === 'default' || keyword === 'examples') return node;
    if (Array.isArray(node)) return node.map((item) => strip(item, undefined));
    if (typeof node !== 'object' || node === null) return node;
    return Object.fromEntries(
      Object.entries(node)
        .filter(([key]) => keyword === 'properties' || !NOT_IN_STRICT_MODE.has(key))
        .map(([key, value]) => [key, strip(value, key)]),
    );
  };
  return strip(schema, undefined) as Record<string, unknown>;
}

/** The prompt's first system message, with what the mode asks of the answer's form after it. */
function withInstruction(messages: ChatMessage[], instruction: string | undefined): OpenAI.Chat.Completions.ChatCompletionMessageParam[] {
  if (instruction === undefined) return messages.map((message) => ({ ...message }));
  const first = messages.findIndex((message) => message.role === 'system');
  // Some chat templates take one system message, and only first.
  if (first < 0) return [{ role: 'system', content: instruction }, ...messages.map((message) => ({ ...message }))];
  return messages.map((message, i) => (i === first ? { role: 'system', content: `${message.content}\n\n${instruction}` } : { ...message }));
}

/** An answer that did not fit and what was wrong with it, as the conversation of the next round shows them. */
function correctionMessages({ answer, problem }: Correction, mode: StructuredOutputMode): OpenAI.Chat.Completions.ChatCompletionMessageParam[] {
  // A tool call must be followed by its tool message; the correction is that message.
  if (answer.toolCall && mode === 'tools') {
    const { id, name, arguments: args } = answer.toolCall;
    return [
      { role: 'assistant', content: null, tool_calls: [{ id, type: 'function', function: { name, arguments: args } }] },
      {
        role: 'tool',
        tool_call_id: id,
        content: `Your answer did not fit the required JSON schema (${problem}). Call ${name} again with arguments that fit the schema.`,
      },
    ];
  }
  return [
    { role: 'assistant', content: answer.content },
    {
      role: 'user',
      content: `Your answer did not fit the required JSON schema (${problem}). Answer again with only a JSON object that fits the schema.`,
    },
  ];
}
