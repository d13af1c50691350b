import OpenAI from 'openai';
import { z } from 'zod';
import type { AgentName, LlmConfig } from '../config.js';
import type { Logger } from '../logger.js';
import { inSpan } from '../observability/spans.js';

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

export type AgentErrorCode = 'AGENT_NOT_CONFIGURED' | 'AGENT_FAILED' | 'AGENT_OUTPUT_INVALID';

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
  signal?: AbortSignal;
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

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * An abort for lack of time (AbortSignal.timeout's TimeoutError) is the agent's failure to answer in time;
 * an abort for any other reason (a cancel) is the caller's, and rejects with that reason unchanged.
 */
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

/**
 * The one way agents reach a model: the official openai SDK against OpenAI or any compatible
 * server, JSON-schema structured output validated with zod, and retries we control
 * (429, 5xx, timeouts; Retry-After honoured up to 30 s; other 4xx never).
 */
export class LlmClient {
  private readonly client: OpenAI | undefined;

  constructor(
    private readonly config: LlmConfig,
    private readonly logger: Logger,
    private readonly onModelCall?: ModelCallObserver,
  ) {
    this.client = LlmClient.isConfigured(config)
      ? new OpenAI({
          apiKey: config.apiKey ?? 'not-needed',
          baseURL: config.baseUrl,
          timeout: config.timeoutMs,
          maxRetries: 0,
        })
      : undefined;
  }

  static isConfigured(config: LlmConfig): boolean {
    return Boolean(config.apiKey || config.baseUrl);
  }

  get configured(): boolean {
    return this.client !== undefined;
  }

  /** Asks for JSON that fits the schema; one more round, told what was wrong, if the first answer does not fit. */
  async completeStructured<T>(request: StructuredRequest<T>): Promise<StructuredAnswer<T>> {
    const client = this.client;
    if (!client) {
      throw new AgentError(
        'AGENT_NOT_CONFIGURED',
        `the ${request.agent} agent needs a model: set OPENAI_API_KEY (OpenAI) or OPENAI_BASE_URL (an OpenAI-compatible server)`,
        false,
      );
    }
    const jsonSchema = z.toJSONSchema(request.schema, { target: 'draft-7' }) as Record<string, unknown>;
    const messages = [...request.messages];
    let usage = NO_USAGE;
    for (let round = 0; round < 2; round++) {
      let completion;
      try {
        completion = await this.createWithRetries(client, request, messages, jsonSchema);
      } catch (error) {
        // Tokens of an earlier round were spent; they stay counted when a later round fails.
        if (error instanceof AgentError) throw new AgentError(error.code, error.message, error.retryable, usage, { cause: error });
        throw error;
      }
      usage = addUsage(usage, usageOf(completion));
      const content = completion.choices[0]?.message?.content ?? '';
      let parsed: unknown;
      let problem: string;
      try {
        parsed = JSON.parse(content);
        const result = request.schema.safeParse(parsed);
        if (result.success) return { value: result.data, usage };
        problem = describeIssues(result.error);
      } catch {
        problem = 'the answer was not valid JSON';
      }
      this.logger.warn({ agent: request.agent, round, problem }, 'model answer did not fit the schema');
      messages.push(
        { role: 'assistant', content },
        {
          role: 'user',
          content: `Your answer did not fit the required JSON schema (${problem}). Answer again with only a JSON object that fits the schema.`,
        },
      );
      if (round === 1) {
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

  /** One request to the model, in a span of its own, counted by agent and model. */
  private createOnce(
    client: OpenAI,
    request: StructuredRequest<unknown>,
    model: string,
    messages: ChatMessage[],
    jsonSchema: Record<string, unknown>,
  ): Promise<OpenAI.Chat.Completions.ChatCompletion> {
    const attributes = () => ({ 'gen_ai.operation.name': 'chat', 'gen_ai.request.model': model, 'stepcast.agent': request.agent });
    return inSpan('stepcast.model_call', { client: true, attributes }, async (span) => {
      let completion;
      try {
        completion = await client.chat.completions.create(
          {
            model,
            messages,
            response_format: {
              type: 'json_schema',
              json_schema: { name: request.schemaName, schema: jsonSchema, strict: true },
            },
          },
          { signal: request.signal },
        );
      } catch (error) {
        // A cancel (the execution or step was cancelled, the service is stopping) is not the model's failure; running
        // out of the step's time is.
        const cancelled = request.signal?.aborted === true && !isTimeoutAbort(request.signal.reason);
        this.onModelCall?.(request.agent, model, cancelled ? 'cancelled' : 'error');
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

  private async createWithRetries(
    client: OpenAI,
    request: StructuredRequest<unknown>,
    messages: ChatMessage[],
    jsonSchema: Record<string, unknown>,
  ): Promise<OpenAI.Chat.Completions.ChatCompletion> {
    const model = this.config.models[request.agent];
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.createOnce(client, request, model, messages, jsonSchema);
      } catch (error) {
        const status = error instanceof OpenAI.APIError ? error.status : undefined;
        const timedOut = error instanceof OpenAI.APIConnectionTimeoutError;
        const connectionFailed = error instanceof OpenAI.APIConnectionError;
        const retryable = timedOut || connectionFailed || isRetryableStatus(status);
        if (request.signal?.aborted) {
          if (!isTimeoutAbort(request.signal.reason)) throw request.signal.reason;
          throw new AgentError('AGENT_FAILED', 'the step ran out of time while waiting for the model', true, NO_USAGE, {
            cause: error,
          });
        }
        if (!retryable || attempt >= this.config.maxRetries) {
          const reason = timedOut
            ? `timed out after ${this.config.timeoutMs} ms`
            : status !== undefined
              ? `answered HTTP ${status}`
              : 'could not be reached';
          throw new AgentError(
            'AGENT_FAILED',
            `the model server ${reason}${retryable ? ` (after ${attempt + 1} attempts)` : ''}`,
            retryable,
            NO_USAGE,
            { cause: error },
          );
        }
        const delay = retryDelayMs(attempt, error instanceof OpenAI.APIError ? error.headers : undefined);
        this.logger.warn({ agent: request.agent, model, attempt: attempt + 1, status, delay }, 'retrying the model');
        try {
          await sleep(delay, request.signal);
        } catch (reason) {
          if (!isTimeoutAbort(reason)) throw reason;
          throw new AgentError('AGENT_FAILED', 'the step ran out of time while waiting to retry the model', true);
        }
      }
    }
  }
}
