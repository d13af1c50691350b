import type { APIError } from 'openai';

/** The ways an agent can ask a server for structured output. */
export type StructuredOutputMode = 'json_schema' | 'json_object' | 'tools';

const MAX_MESSAGE_CHARS = 2_000;

/**
 * Model servers answer errors in shapes of their own: OpenAI, Ollama, llama.cpp and recent vLLM
 * `{"error": {"message": …}}`, older vLLM `{"object": "error", "message": …}` at the top, FastAPI-based
 * servers `{"detail": …}`, some a bare string or plain text. Written as OpenAI's, the SDK's error keeps the
 * server's message in all of them.
 */
export function normalizeErrorBody(text: string): string {
  if (text.trim() === '') return text;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return JSON.stringify({ error: { message: text.slice(0, MAX_MESSAGE_CHARS) } });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return JSON.stringify({ error: { message: (typeof parsed === 'string' ? parsed : text).slice(0, MAX_MESSAGE_CHARS) } });
  }
  const body = parsed as Record<string, unknown>;
  const error = body.error;
  if (typeof error === 'object' && error !== null && typeof (error as Record<string, unknown>).message === 'string') return text;
  if (typeof error === 'string') return JSON.stringify({ error: { message: error } });
  if (typeof body.message === 'string') {
    const { object: _object, ...rest } = body;
    return JSON.stringify({ error: rest });
  }
  if (body.detail !== undefined) {
    return JSON.stringify({ error: { message: typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail) } });
  }
  return JSON.stringify({ error: { message: text.slice(0, MAX_MESSAGE_CHARS) } });
}

/** The server's own words of an error response. */
export function describeRefusal(error: APIError): string {
  const body = error.error as { message?: unknown } | undefined;
  const message = typeof body?.message === 'string' ? body.message : error.message;
  return message.slice(0, 500);
}

/**
 * Statuses a refusal of a request field comes with: 400 (OpenAI, vLLM, Ollama), 422 (FastAPI-based servers
 * validating the body), 500 (llama.cpp's server, which answers every request it cannot parse with 500),
 * 501 (not implemented).
 */
const REFUSAL_STATUSES: ReadonlySet<number> = new Set([400, 422, 500, 501]);

/** Requests refused for their size; asking in another way would not help, and would hide the real problem. */
const TOO_LONG = /context length|context size|context window|maximum context|context_length_exceeded|too many tokens|reduce the length|prompt is too long/i;

/** What a refusal of each mode talks about: the field it sent, or the feature behind it. */
const ABOUT: Record<StructuredOutputMode, RegExp> = {
  json_schema: /response_format|json_schema|structured output|guided/i,
  json_object: /response_format|json_object|json mode/i,
  tools: /\btools?\b|tool_choice|tool call|function call|--jinja|auto-tool-choice/i,
};

const PARAMS: Record<StructuredOutputMode, RegExp> = {
  json_schema: /^response_format/,
  json_object: /^response_format/,
  tools: /^(tools|tool_choice)/,
};

/**
 * How a server says it does not take something, beside naming it. A 500 is a refusal only with such words
 * (llama.cpp's "tools param requires --jinja flag", "Unsupported param: tools", "response_format type must be one
 * of ..."): a server that failed while it worked on the request may name the field too, and that is no refusal.
 */
const REFUSING = /not supported|unsupported|does not support|requires?\b|must be one of|not implemented|not permitted|not allowed|unknown|unrecognized|extra inputs|invalid/i;

/**
 * A strict JSON schema refused for what is in it (OpenAI's 400 invalid_json_schema, "Invalid schema for
 * response_format ...: 'minLength' is not permitted"; vLLM's "The provided JSON schema contains features not
 * supported by xgrammar"): the server takes json_schema, only not this schema.
 */
const SCHEMA_REFUSED = /invalid schema for|json schema contains features not supported/i;

/**
 * What an error response refuses: the way the request asked for structured output (`mode`: the server or
 * model does not take that kind), or, in json_schema mode, only the schema it carried (`schema`: another
 * schema would be taken); undefined when it is not a refusal of either.
 *
 * A refusal is a 400, 422, 500 or 501 whose `param` names the field, or whose message talks about it
 * (`response_format` / `json_schema` / `json_object` for the JSON modes; `tools`, `tool_choice`, function
 * calling or llama.cpp's `--jinja` for tools), a 500 or 501 only in words that refuse, and never one about
 * the prompt's length. Anything else (a 400 for a context that is too long, a model that does not exist, a
 * 500 that says nothing of the field or does not refuse it) is the failure it is.
 */
export function refusalOf(mode: StructuredOutputMode, error: APIError): 'mode' | 'schema' | undefined {
  const status = error.status;
  if (status === undefined || !REFUSAL_STATUSES.has(status)) return undefined;
  const message = describeRefusal(error);
  const code = typeof error.code === 'string' ? error.code : '';
  if (TOO_LONG.test(message) || TOO_LONG.test(code)) return undefined;
  if (mode === 'json_schema' && (code === 'invalid_json_schema' || SCHEMA_REFUSED.test(message))) return 'schema';
  if (typeof error.param === 'string' && PARAMS[mode].test(error.param)) return 'mode';
  if (!ABOUT[mode].test(message)) return undefined;
  return status < 500 || REFUSING.test(message) ? 'mode' : undefined;
}

/**
 * OpenAI's reasoning models (o-series, gpt-5), on api.openai.com or an Azure deployment, refuse max_tokens:
 * "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."
 */
export function refusesMaxTokens(error: APIError): boolean {
  if (error.status !== 400) return false;
  const message = describeRefusal(error);
  return (error.param === 'max_tokens' || /'max_tokens'/.test(message)) && /max_completion_tokens/.test(message);
}
