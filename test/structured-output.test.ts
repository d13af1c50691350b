import { afterEach, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { ApiCodeAnswerSchema } from '../src/agents/api-agent.js';
import { AgentError, LlmClient, type StructuredRequest } from '../src/agents/llm-client.js';
import { PlanAnswerSchema } from '../src/agents/planner.js';
import { SqlAnswerSchema } from '../src/agents/sql-agent.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import {
  modelServers,
  outputModeOf,
  startScriptedLlm,
  type ModelServer,
  type RecordedRequest,
  type ScriptedLlm,
  type ScriptRule,
} from './fixtures/scripted-llm.js';

/**
 * Structured output on every common server, through the real openai SDK against scripted servers that refuse
 * what the real ones refuse and answer in their shapes (test/fixtures/scripted-llm.ts, `modelServers`).
 */

const SqlAnswer = z.strictObject({ sql: z.string().min(1), explanation: z.string() });
const ANSWER = { sql: 'SELECT 1 AS one', explanation: 'one' };

const sqlRequest = (overrides: Partial<StructuredRequest<z.infer<typeof SqlAnswer>>> = {}): StructuredRequest<z.infer<typeof SqlAnswer>> => ({
  agent: 'sql',
  schemaName: 'sql_step',
  schema: SqlAnswer,
  messages: [
    { role: 'system', content: 'You write SQL.' },
    { role: 'user', content: 'count the users' },
  ],
  ...overrides,
});

const answers = (replies: ScriptRule['replies'], repeat = true): ScriptRule => ({ when: () => true, replies, repeat });
const modes = (llm: ScriptedLlm) => llm.requests.map(outputModeOf);

async function failureOf(promise: Promise<unknown>): Promise<AgentError> {
  const error = await promise.then(
    () => undefined,
    (rejection: unknown) => rejection,
  );
  expect(error).toBeInstanceOf(AgentError);
  return error as AgentError;
}

let opened: ScriptedLlm[] = [];
afterEach(async () => {
  await Promise.all(opened.map((llm) => llm.close()));
  opened = [];
});

async function serverLike(server: ModelServer, env: Record<string, string> = {}) {
  const llm = await startScriptedLlm({ server });
  opened.push(llm);
  // Retries stay on: a refusal must not be retried even where it is a 500.
  const config = loadConfig({ OPENAI_BASE_URL: llm.baseUrl, STEPCAST_LLM_MAX_RETRIES: '3', ...env });
  return { llm, client: new LlmClient(config.llm, createLogger('silent')) };
}

describe('STEPCAST_LLM_OUTPUT=auto', () => {
  const cases: [keyof typeof modelServers, string[]][] = [
    ['openai', ['json_schema']],
    ['openaiWithoutStructuredOutputs', ['json_schema', 'json_object']],
    ['vllm', ['json_schema']],
    ['vllmBeforeJsonSchema', ['json_schema', 'json_object']],
    ['ollama', ['json_schema']],
    ['ollamaModelWithoutTools', ['json_schema']],
    ['llamaCpp', ['json_schema']],
    ['llamaCppWithoutJinja', ['json_schema']],
    ['llamaCppBeforeJsonSchema', ['json_schema', 'json_object']],
    ['gatewayWithoutResponseFormat', ['json_schema', 'json_object', 'tools']],
  ];
  it.each(cases)('gets a validated answer from %s, asking in %j, and asks the next call in the last of them at once', async (name, asked) => {
    const { llm, client } = await serverLike(modelServers[name]);
    llm.script(answers([{ content: ANSWER }]));
    expect((await client.completeStructured(sqlRequest())).value).toEqual(ANSWER);
    expect(modes(llm)).toEqual(asked);
    expect(client.outputModeOf('sql')).toBe(asked.at(-1));

    llm.script(answers([{ content: { sql: 'SELECT 2 AS two', explanation: 'two' } }]));
    expect((await client.completeStructured(sqlRequest())).value.sql).toBe('SELECT 2 AS two');
    expect(modes(llm)).toEqual([asked.at(-1)]);
  });

  it("asks OpenAI's strict mode with a schema it takes: each agent's own schema is answered in json_schema, and what strict mode cannot enforce is still checked", async () => {
    const { llm, client } = await serverLike(modelServers.openai);
    const agents = [
      { agent: 'sql', schemaName: 'sql_step', schema: SqlAnswerSchema, answer: { sql: 'SELECT 1', explanation: '' } },
      { agent: 'api', schemaName: 'api_step', schema: ApiCodeAnswerSchema, answer: { code: 'return [];', explanation: '' } },
      {
        agent: 'planner',
        schemaName: 'plan',
        schema: PlanAnswerSchema,
        answer: { reasoning: '', steps: [{ kind: 'SQL', queryContext: 'q', entity: null, reasoning: null, critical: true }] },
      },
    ] as const;
    for (const { agent, schemaName, schema, answer } of agents) {
      llm.script(answers([{ content: answer }]));
      const request = { agent, schemaName, schema: schema as z.ZodType<unknown>, messages: [{ role: 'user' as const, content: 'q' }] };
      expect((await client.completeStructured(request)).value, agent).toEqual(answer);
      expect(modes(llm), agent).toEqual(['json_schema']);
    }
    expect(client.outputModeOf('sql')).toBe('json_schema');

    // `sql` must not be empty (minLength, which strict mode refuses): zod still says so, and asks again.
    llm.script(answers([{ content: { sql: '', explanation: '' } }, { content: ANSWER }], false));
    expect((await client.completeStructured(sqlRequest())).value).toEqual(ANSWER);
    expect(modes(llm)).toEqual(['json_schema', 'json_schema']);
    expect(llm.requests[1]!.body.messages.at(-1)!.content).toMatch(/did not fit the required JSON schema \(sql: /);
  });

  it('asks in JSON mode with the schema in the first system message, and in tools mode with one forced function whose parameters are the schema', async () => {
    const { llm, client } = await serverLike(modelServers.gatewayWithoutResponseFormat);
    llm.script(answers([{ content: ANSWER }]));
    await client.completeStructured(sqlRequest());
    const [strict, jsonMode, tools] = llm.requests as [RecordedRequest, RecordedRequest, RecordedRequest];
    expect(strict.body.response_format).toMatchObject({ type: 'json_schema', json_schema: { name: 'sql_step', strict: true } });
    expect(strict.body.messages[0]!.content).toBe('You write SQL.');

    expect(jsonMode.body.response_format).toEqual({ type: 'json_object' });
    expect(jsonMode.body.messages.filter((message) => message.role === 'system')).toHaveLength(1);
    const system = jsonMode.body.messages[0]!.content!;
    expect(system.startsWith('You write SQL.\n\n')).toBe(true);
    const schemaText = /fits this JSON schema:\n(.*)$/s.exec(system)![1]!;
    expect(JSON.parse(schemaText)).toMatchObject({ type: 'object', required: ['sql', 'explanation'], additionalProperties: false });

    expect(tools.body.response_format).toBeUndefined();
    expect(tools.body.tools).toHaveLength(1);
    expect(tools.body.tools![0]!.function).toMatchObject({ name: 'sql_step', parameters: JSON.parse(schemaText) });
    expect(tools.body.tool_choice).toEqual({ type: 'function', function: { name: 'sql_step' } });
    expect(tools.body.messages.at(-1)).toEqual({ role: 'user', content: 'count the users' });
  });

  it('remembers the fallback per model: another agent on another model still asks for a strict JSON schema', async () => {
    const { llm, client } = await serverLike(modelServers.openaiWithoutStructuredOutputs, {
      STEPCAST_SQL_MODEL: 'gpt-4-turbo',
      STEPCAST_PLANNER_MODEL: 'gpt-4o',
    });
    llm.script(answers([{ content: ANSWER }]));
    await client.completeStructured(sqlRequest());
    expect(client.outputModeOf('sql')).toBe('json_object');
    expect(client.outputModeOf('planner')).toBe('json_schema');
    llm.behaveAs(modelServers.openai);
    llm.script(answers([{ content: ANSWER }]));
    await client.completeStructured(sqlRequest({ agent: 'planner' }));
    expect(llm.requests.map((request) => [request.body.model, outputModeOf(request)])).toEqual([['gpt-4o', 'json_schema']]);
  });

  it('asks in the first kind again an hour after it learnt a fallback: a server that still refuses is learnt again, one upgraded since is used as it is', async () => {
    const { llm, client } = await serverLike(modelServers.llamaCppBeforeJsonSchema);
    llm.script(answers([{ content: ANSWER }]));
    await client.completeStructured(sqlRequest());
    expect(client.outputModeOf('sql')).toBe('json_object');
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(Date.now() + 59 * 60_000);
      llm.script(answers([{ content: ANSWER }]));
      await client.completeStructured(sqlRequest());
      expect(modes(llm)).toEqual(['json_object']);

      vi.setSystemTime(Date.now() + 2 * 60_000);
      llm.script(answers([{ content: ANSWER }]));
      await client.completeStructured(sqlRequest());
      expect(modes(llm)).toEqual(['json_schema', 'json_object']);
      expect(client.outputModeOf('sql')).toBe('json_object');

      vi.setSystemTime(Date.now() + 61 * 60_000);
      llm.behaveAs(modelServers.llamaCpp);
      llm.script(answers([{ content: ANSWER }]));
      await client.completeStructured(sqlRequest());
      expect(modes(llm)).toEqual(['json_schema']);
      expect(client.outputModeOf('sql')).toBe('json_schema');
    } finally {
      vi.useRealTimers();
    }
  });

  it("does not fall back for a prompt longer than the context: each server's answer to it fails the call AGENT_FAILED, asked once in the mode it takes", async () => {
    const refusing = cases.filter(([name]) => (modelServers[name] as ModelServer).contextTooLong !== undefined);
    expect(refusing.length).toBeGreaterThanOrEqual(8);
    for (const [name, asked] of refusing) {
      const server: ModelServer = modelServers[name];
      const { llm, client } = await serverLike(server);
      llm.script(answers([{ status: server.contextTooLong!.status, body: server.contextTooLong!.body }]));
      const error = await failureOf(client.completeStructured(sqlRequest()));
      expect(error.code, name).toBe('AGENT_FAILED');
      expect(error.message, name).toMatch(/context|too long/);
      expect(modes(llm), name).toEqual(asked);
      expect(client.outputModeOf('sql'), name).toBe(asked.at(-1));
    }
  });

  it('does not fall back for a 400 or a 500 that says nothing of the output\'s form', async () => {
    const { llm, client } = await serverLike(modelServers.openai, { STEPCAST_LLM_MAX_RETRIES: '1' });
    llm.script(answers([{ status: 400, body: { error: { message: "The model 'nope' does not exist", type: 'invalid_request_error', param: 'model' } } }]));
    const missing = await failureOf(client.completeStructured(sqlRequest()));
    expect(missing).toMatchObject({ code: 'AGENT_FAILED', retryable: false });
    expect(missing.message).toContain("The model 'nope' does not exist");
    expect(llm.requests).toHaveLength(1);

    llm.script(answers([{ status: 500, headers: { 'retry-after-ms': '5' }, body: { error: { message: 'CUDA out of memory' } } }]));
    const down = await failureOf(client.completeStructured(sqlRequest()));
    expect(down).toMatchObject({ code: 'AGENT_FAILED', retryable: true });
    expect(modes(llm)).toEqual(['json_schema', 'json_schema']);
    expect(client.outputModeOf('sql')).toBe('json_schema');
  });

  it('does not take a 500 that names the field without refusing it for a refusal: it is retried, and nothing is learnt', async () => {
    const { llm, client } = await serverLike(modelServers.llamaCpp, { STEPCAST_LLM_MAX_RETRIES: '1' });
    const crashed = { error: { code: 500, message: 'the worker crashed while it sampled with the json_schema grammar', type: 'server_error' } };
    llm.script(answers([{ status: 500, headers: { 'retry-after-ms': '5' }, body: crashed }]));
    const error = await failureOf(client.completeStructured(sqlRequest()));
    expect(error).toMatchObject({ code: 'AGENT_FAILED', retryable: true });
    expect(error.message).toContain('the worker crashed');
    expect(modes(llm)).toEqual(['json_schema', 'json_schema']);
    expect(client.outputModeOf('sql')).toBe('json_schema');
  });

  it('falls back for a strict schema the server refuses for that call only: the model keeps json_schema for the schemas it takes', async () => {
    const { llm, client } = await serverLike(modelServers.openai);
    // A property that is not required: strict mode refuses the schema (400 invalid_json_schema), not the mode.
    const Loose = z.strictObject({ sql: z.string(), explanation: z.string().optional() });
    llm.script(answers([{ content: ANSWER }]));
    const loose = await client.completeStructured({ ...sqlRequest(), schema: Loose });
    expect(loose.value).toEqual(ANSWER);
    expect(modes(llm)).toEqual(['json_schema', 'json_object']);
    expect(client.outputModeOf('sql')).toBe('json_schema');

    llm.script(answers([{ content: ANSWER }]));
    await client.completeStructured(sqlRequest());
    expect(modes(llm)).toEqual(['json_schema']);
  });

  it('fails AGENT_FAILED, not retryable, when the server refuses all three, naming the last refusal', async () => {
    const refusesEverything: ModelServer = {
      ...modelServers.gatewayWithoutResponseFormat,
      refuse: (request) =>
        modelServers.gatewayWithoutResponseFormat.refuse(request) ??
        (request.body.tools ? { status: 422, body: { detail: [{ type: 'extra_forbidden', loc: ['body', 'tools'], msg: 'Extra inputs are not permitted' }] } } : undefined),
    };
    const { llm, client } = await serverLike(refusesEverything);
    llm.script(answers([{ content: ANSWER }]));
    const error = await failureOf(client.completeStructured(sqlRequest()));
    expect(error).toMatchObject({ code: 'AGENT_FAILED', retryable: false });
    expect(error.message).toMatch(/refused every kind of structured output \(json_schema, json_object, tools\).*HTTP 422.*tools/);
    expect(modes(llm)).toEqual(['json_schema', 'json_object', 'tools']);
  });

  it('gives every mode its corrective round: in tools mode the correction answers the tool call', async () => {
    const { llm, client } = await serverLike(modelServers.gatewayWithoutResponseFormat);
    llm.script(answers([{ content: { query: 'SELECT 1' } }, { content: ANSWER }], false));
    const answer = await client.completeStructured(sqlRequest());
    expect(answer.value).toEqual(ANSWER);
    expect(answer.usage.totalTokens).toBe(240);
    const [first, second] = llm.requests.slice(-2) as [RecordedRequest, RecordedRequest];
    expect(modes(llm).slice(-2)).toEqual(['tools', 'tools']);
    const call = first.body.messages.length;
    const [assistant, tool] = second.body.messages.slice(call) as [RecordedRequest['body']['messages'][number], RecordedRequest['body']['messages'][number]];
    expect(assistant).toMatchObject({ role: 'assistant', content: null, tool_calls: [{ type: 'function', function: { name: 'sql_step', arguments: '{"query":"SELECT 1"}' } }] });
    expect(tool).toMatchObject({ role: 'tool', tool_call_id: assistant.tool_calls![0]!.id });
    expect(tool.content).toMatch(/did not fit the required JSON schema \(.*sql.*\)\. Call sql_step again/);
    expect(second.body.messages).toHaveLength(call + 2);
  });

  it('gives JSON mode its corrective round, and accepts a JSON object wrapped in a code fence', async () => {
    const { llm, client } = await serverLike(modelServers.llamaCppBeforeJsonSchema, { STEPCAST_LLM_OUTPUT: 'json_object' });
    llm.script(answers([{ content: 'SELECT 1' }, { content: `\`\`\`json\n${JSON.stringify(ANSWER)}\n\`\`\`` }], false));
    expect((await client.completeStructured(sqlRequest())).value).toEqual(ANSWER);
    const second = llm.requests[1]!.body.messages;
    expect(second.at(-2)).toEqual({ role: 'assistant', content: 'SELECT 1' });
    expect(second.at(-1)!.content).toMatch(/did not fit the required JSON schema \(the answer was not valid JSON\)/);
    expect(modes(llm)).toEqual(['json_object', 'json_object']);
  });

  it('takes the answer from the content when a server reads the forced tool choice as auto and the model writes text', async () => {
    const { llm, client } = await serverLike(modelServers.llamaCpp, { STEPCAST_LLM_OUTPUT: 'tools' });
    llm.script(answers([{ content: ANSWER, asText: true }]));
    expect((await client.completeStructured(sqlRequest())).value).toEqual(ANSWER);
    expect(modes(llm)).toEqual(['tools']);
  });

  it('says when an answer was cut at the output token limit', async () => {
    const { llm, client } = await serverLike(modelServers.openai, { STEPCAST_SQL_MAX_TOKENS: '5' });
    llm.script(answers([{ content: '{"sql": "SELECT', finishReason: 'length' }]));
    const error = await failureOf(client.completeStructured(sqlRequest()));
    expect(error.code).toBe('AGENT_OUTPUT_INVALID');
    expect(error.message).toContain('cut off at the output token limit (STEPCAST_SQL_MAX_TOKENS or STEPCAST_MAX_TOKENS)');
    expect(llm.requests.map((request) => request.body.max_tokens)).toEqual([5, 5]);
  });
});

describe('STEPCAST_LLM_OUTPUT set to one mode', () => {
  it.each([
    ['tools', 'vllm'],
    ['tools', 'ollama'],
    ['tools', 'llamaCpp'],
    ['json_object', 'vllmBeforeJsonSchema'],
    ['json_object', 'ollamaModelWithoutTools'],
    ['json_object', 'llamaCppBeforeJsonSchema'],
  ] as const)('asks only in %s, which %s answers', async (mode, name) => {
    const { llm, client } = await serverLike(modelServers[name], { STEPCAST_LLM_OUTPUT: mode });
    llm.script(answers([{ content: ANSWER }]));
    expect((await client.completeStructured(sqlRequest())).value).toEqual(ANSWER);
    expect(modes(llm)).toEqual([mode]);
  });

  it.each([
    ['tools', 'ollamaModelWithoutTools', /does not support tools/],
    ['tools', 'llamaCppWithoutJinja', /tools param requires --jinja flag/],
    ['json_schema', 'llamaCppBeforeJsonSchema', /response_format type must be one of/],
    ['json_schema', 'vllmBeforeJsonSchema', /Input should be 'text' or 'json_object'/],
  ] as const)('fails %s on %s at once with AGENT_FAILED, not retryable, quoting the server and naming the setting', async (mode, name, quote) => {
    const { llm, client } = await serverLike(modelServers[name], { STEPCAST_LLM_OUTPUT: mode });
    llm.script(answers([{ content: ANSWER }]));
    const error = await failureOf(client.completeStructured(sqlRequest()));
    expect(error).toMatchObject({ code: 'AGENT_FAILED', retryable: false });
    expect(error.message).toMatch(quote);
    expect(error.message).toContain(`STEPCAST_LLM_OUTPUT=${mode}`);
    expect(modes(llm)).toEqual([mode]);
  });
});

describe('sampling settings', () => {
  it("sends the output limit as max_completion_tokens to a model that refuses max_tokens (OpenAI's reasoning models behind a base URL, Azure), from then on", async () => {
    const { llm, client } = await serverLike(modelServers.openaiReasoningModel, { STEPCAST_MAX_TOKENS: '500' });
    llm.script(answers([{ content: ANSWER }]));
    expect((await client.completeStructured(sqlRequest())).value).toEqual(ANSWER);
    expect(llm.requests.map(({ body }) => [body.max_tokens, body.max_completion_tokens])).toEqual([
      [500, undefined],
      [undefined, 500],
    ]);
    llm.script(answers([{ content: ANSWER }]));
    await client.completeStructured(sqlRequest({ agent: 'planner' }));
    expect(llm.requests.map(({ body }) => [body.max_tokens, body.max_completion_tokens])).toEqual([[undefined, 500]]);
  });

  it.each([
    ['STEPCAST_TEMPERATURE', '', /STEPCAST_TEMPERATURE: must be a number from 0 to 2, or unset/],
    ['STEPCAST_SQL_TEMPERATURE', '  ', /STEPCAST_SQL_TEMPERATURE: must be a number from 0 to 2, or unset/],
    ['STEPCAST_PLANNER_TEMPERATURE', '2.5', /STEPCAST_PLANNER_TEMPERATURE: must be a number from 0 to 2/],
    ['STEPCAST_API_TEMPERATURE', 'warm', /STEPCAST_API_TEMPERATURE: must be a number from 0 to 2/],
    ['STEPCAST_MAX_TOKENS', '', /STEPCAST_MAX_TOKENS: must be a whole number of tokens/],
    ['STEPCAST_SQL_MAX_TOKENS', '1.5', /STEPCAST_SQL_MAX_TOKENS: must be a whole number of tokens/],
  ])('refuses %s=%j at start, naming it (blank is not a temperature of 0)', (name, value, message) => {
    expect(() => loadConfig({ [name]: value })).toThrow(message);
  });

  it('sends each agent its temperature and max tokens, the global ones where it has none, and nothing when unset', async () => {
    const { llm, client } = await serverLike(modelServers.ollama, {
      STEPCAST_TEMPERATURE: '0.2',
      STEPCAST_SQL_TEMPERATURE: '0',
      STEPCAST_API_MAX_TOKENS: '800',
    });
    llm.script(answers([{ content: ANSWER }]));
    await client.completeStructured(sqlRequest());
    await client.completeStructured(sqlRequest({ agent: 'api' }));
    await client.completeStructured(sqlRequest({ agent: 'planner' }));
    expect(llm.requests.map(({ body }) => [body.temperature, body.max_tokens, body.max_completion_tokens])).toEqual([
      [0, undefined, undefined],
      [0.2, 800, undefined],
      [0.2, undefined, undefined],
    ]);

    const bare = await serverLike(modelServers.ollama);
    bare.llm.script(answers([{ content: ANSWER }]));
    await bare.client.completeStructured(sqlRequest());
    expect(Object.keys(bare.llm.requests[0]!.body).sort()).toEqual(['messages', 'model', 'response_format']);
  });
});
