import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { LlmClient } from '../src/agents/llm-client.js';
import { ConfigError, loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { startScriptedLlm, type ScriptedLlm } from './fixtures/scripted-llm.js';
import { StepUpdatesSubscription } from './support/operations.js';
import { runPlan, sqlStep, storeQueuedExecution } from './support/plans.js';
import { StepcastMetrics } from '../src/observability/metrics.js';
import { parsePrometheusText, sampleValue, scrapeMetrics, type PromSample } from './support/prometheus.js';
import { postgresUrl } from './support/database.js';
import { redisUrl } from './support/redis.js';
import { startTestServer, type TestServer } from './support/server.js';

const TOKEN = 'metrics-token-for-the-test-0123456789';

/** Scrapes until check() holds for the samples (gauges follow what happens on sockets a moment later). */
async function scrapeUntil(origin: string, check: (samples: PromSample[]) => boolean, what: string): Promise<PromSample[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const { samples } = await scrapeMetrics(origin);
    if (check(samples)) return samples;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('/metrics after plans ran', () => {
  let llm: ScriptedLlm;
  let server: TestServer;
  let origin: string;
  beforeAll(async () => {
    llm = await startScriptedLlm();
    server = await startTestServer('pglite', {
      env: {
        OPENAI_BASE_URL: llm.baseUrl,
        STEPCAST_SQL_MODEL: 'sql-model-under-test',
        STEPCAST_LLM_MAX_RETRIES: '0',
        STEPCAST_SANDBOX_CPU_MS: '200',
        // An execution stored past the executor stays QUEUED (no look for work after the start).
        STEPCAST_RECOVERY_INTERVAL_MS: '0',
      },
    });
    origin = new URL(server.url).origin;
  });
  afterAll(async () => {
    await server?.close();
    await llm?.close();
  });

  it('counts executions, steps, durations, model calls and tokens, and guard and sandbox refusals, with their labels', async () => {
    llm.script({ when: () => true, replies: [{ content: { sql: 'SELECT count(*) AS n FROM users', explanation: 'counts' } }] });
    const succeeded = await runPlan(server, { query: 'users', steps: [sqlStep('SELECT count(*) AS n FROM users')] });
    const refused = await runPlan(server, { query: 'locks', steps: [sqlStep('SELECT id FROM users FOR UPDATE')] });
    const written = await runPlan(server, { query: 'agent', steps: [{ kind: 'SQL', queryContext: 'count the users' }] });
    const stopped = await runPlan(server, { query: 'loop', steps: [{ kind: 'API', queryContext: 'loop', code: 'while (true) {}' }] });
    expect([succeeded, refused, written, stopped].map((run) => run.execution.status)).toEqual(['SUCCEEDED', 'FAILED', 'SUCCEEDED', 'FAILED']);
    expect(refused.execution.steps[0]!.error).toMatchObject({ code: 'SQL_REJECTED' });
    expect(stopped.execution.steps[0]!.error).toMatchObject({ code: 'SANDBOX_TIMEOUT' });

    const { status, contentType, samples } = await scrapeMetrics(origin);
    expect(status).toBe(200);
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(sampleValue(samples, 'stepcast_executions_started_total')).toBe(4);
    expect(sampleValue(samples, 'stepcast_executions_finished_total', { status: 'SUCCEEDED' })).toBe(2);
    expect(sampleValue(samples, 'stepcast_executions_finished_total', { status: 'FAILED' })).toBe(2);
    expect(sampleValue(samples, 'stepcast_steps_started_total', { kind: 'SQL' })).toBe(3);
    expect(sampleValue(samples, 'stepcast_steps_started_total', { kind: 'API' })).toBe(1);
    expect(sampleValue(samples, 'stepcast_steps_finished_total', { kind: 'SQL', status: 'SUCCEEDED' })).toBe(2);
    expect(sampleValue(samples, 'stepcast_steps_finished_total', { kind: 'SQL', status: 'FAILED' })).toBe(1);
    expect(sampleValue(samples, 'stepcast_steps_finished_total', { kind: 'API', status: 'FAILED' })).toBe(1);
    expect(sampleValue(samples, 'stepcast_step_duration_seconds_count', { kind: 'SQL' })).toBe(3);
    expect(sampleValue(samples, 'stepcast_step_duration_seconds_count', { kind: 'API' })).toBe(1);
    // The looping program ran until its 200 ms of CPU were spent.
    expect(sampleValue(samples, 'stepcast_step_duration_seconds_sum', { kind: 'API' })).toBeGreaterThanOrEqual(0.2);
    expect(sampleValue(samples, 'stepcast_step_duration_seconds_bucket', { kind: 'API', le: '0.1' })).toBe(0);
    expect(sampleValue(samples, 'stepcast_sql_guard_refusals_total', { reason: 'locking clause' })).toBe(1);
    expect(sampleValue(samples, 'stepcast_sandbox_refusals_total', { code: 'SANDBOX_TIMEOUT' })).toBe(1);
    const model = { agent: 'sql', model: 'sql-model-under-test' };
    expect(sampleValue(samples, 'stepcast_model_calls_total', { ...model, outcome: 'ok' })).toBe(1);
    expect(sampleValue(samples, 'stepcast_model_tokens_total', { ...model, type: 'prompt' })).toBe(100);
    expect(sampleValue(samples, 'stepcast_model_tokens_total', { ...model, type: 'completion' })).toBe(20);
    // Each run commits at least its start and its end.
    expect(sampleValue(samples, 'stepcast_transition_commit_seconds_count')).toBeGreaterThanOrEqual(8);
    expect(sampleValue(samples, 'stepcast_executions', { status: 'RUNNING' })).toBe(0);
    // GraphQL's side, from yoga's plugin: by operation type, never by the name a client chose.
    expect(sampleValue(samples, 'graphql_envelop_request', { operationType: 'mutation' })).toBe(4);
    expect(sampleValue(samples, 'graphql_yoga_http_duration_count', { operationType: 'mutation', statusCode: '200' })).toBe(4);
    expect(samples.filter((sample) => 'operationName' in sample.labels || 'url' in sample.labels)).toEqual([]);
    // Node's own, from the same registry.
    expect(sampleValue(samples, 'process_cpu_seconds_total')).toBeGreaterThan(0);
  });

  it('reads queued executions, open subscriptions and sockets when scraped', async () => {
    const queued = await storeQueuedExecution(server.app.database);
    const client = server.wsClient();
    const dispose = client.subscribe(
      { query: StepUpdatesSubscription.toString(), variables: { executionId: queued.id } },
      { next: () => undefined, error: () => undefined, complete: () => undefined },
    );
    try {
      const samples = await scrapeUntil(origin, (s) => sampleValue(s, 'stepcast_subscriptions_open') === 1, 'the subscription is counted');
      expect(sampleValue(samples, 'stepcast_websockets_open')).toBe(1);
      expect(sampleValue(samples, 'stepcast_executions', { status: 'QUEUED' })).toBe(1);
      expect(sampleValue(samples, 'stepcast_executions_running_in_process')).toBe(0);
    } finally {
      dispose();
      await client.dispose();
    }
    await scrapeUntil(
      origin,
      (s) => sampleValue(s, 'stepcast_subscriptions_open') === 0 && sampleValue(s, 'stepcast_websockets_open') === 0,
      'the subscription and its socket are no longer counted',
    );
  });

  it("leaves yoga's subscribe phase unmeasured: no per-subscription hook, no subscription series", async () => {
    const queued = await storeQueuedExecution(server.app.database);
    const client = server.wsClient();
    const dispose = client.subscribe(
      { query: StepUpdatesSubscription.toString(), variables: { executionId: queued.id } },
      { next: () => undefined, error: () => undefined, complete: () => undefined },
    );
    try {
      await scrapeUntil(origin, (s) => sampleValue(s, 'stepcast_subscriptions_open') === 1, 'the subscription is counted');
    } finally {
      dispose();
      await client.dispose();
    }
    await scrapeUntil(origin, (s) => sampleValue(s, 'stepcast_subscriptions_open') === 0, 'the subscription is no longer counted');
    const { text, samples } = await scrapeMetrics(origin);
    // The subscribe-phase metrics are not registered at all, so the plugin has no onSubscribe hook (which would
    // allocate for every subscription, for as long as it is open).
    expect(text).not.toContain('graphql_envelop_phase_subscribe');
    const subscribePhase = samples.filter(
      (sample) =>
        /^graphql_envelop_(request|request_duration_\w+|error_result)$/.test(sample.name) &&
        (sample.labels.operationType === 'subscription' || sample.labels.phase === 'subscribe'),
    );
    expect(subscribePhase).toEqual([]);
    // The subscription was still parsed and validated, and counted there.
    expect(sampleValue(samples, 'graphql_envelop_phase_validate_count', { operationType: 'subscription' })).toBeGreaterThanOrEqual(1);
  });
});

describe('StepcastMetrics', () => {
  const sources = {
    unfinishedExecutions: () => Promise.resolve(undefined),
    runningInProcess: () => 0,
    openSubscriptions: () => 0,
    openSockets: () => 0,
  };

  it("starts prom-client's GC observer and event-loop monitor once per process, not once per service", async () => {
    // prom-client reads these off the CommonJS module at each collectDefaultMetrics, and cannot stop what they start.
    const perfHooks = createRequire(import.meta.url)('node:perf_hooks') as typeof import('node:perf_hooks');
    const monitor = vi.spyOn(perfHooks, 'monitorEventLoopDelay');
    const observe = vi.spyOn(perfHooks.PerformanceObserver.prototype, 'observe');
    try {
      const services = [new StepcastMetrics(sources), new StepcastMetrics(sources), new StepcastMetrics(sources)];
      // Once at most: another service of this file may have registered them first.
      expect(monitor.mock.calls.length).toBeLessThanOrEqual(1);
      expect(observe.mock.calls.length).toBeLessThanOrEqual(1);
      for (const service of services) {
        const text = await service.registry.metrics();
        expect(text).toContain('nodejs_eventloop_lag_seconds');
        expect(text).toContain('nodejs_gc_duration_seconds');
        expect(text).toContain('process_cpu_seconds_total');
      }
      // Each still counts on its own.
      services[0]!.sqlRefused('locking clause');
      expect(parsePrometheusText(await services[1]!.registry.metrics()).filter((s) => s.name === 'stepcast_sql_guard_refusals_total')).toEqual([]);
    } finally {
      monitor.mockRestore();
      observe.mockRestore();
    }
  });

  it('counts a cancelled model request as cancelled, not as an error', async () => {
    const metrics = new StepcastMetrics(sources);
    metrics.modelCalled('sql', 'm', 'cancelled');
    metrics.modelCalled('sql', 'm', 'error');
    metrics.modelCalled('sql', 'm', 'ok', { promptTokens: 3, completionTokens: 2, totalTokens: 5 });
    const samples = parsePrometheusText(await metrics.registry.metrics());
    for (const outcome of ['ok', 'error', 'cancelled']) {
      expect(sampleValue(samples, 'stepcast_model_calls_total', { agent: 'sql', model: 'm', outcome })).toBe(1);
    }
    expect(sampleValue(samples, 'stepcast_model_tokens_total', { type: 'prompt' })).toBe(3);
  });

  it('is told by the model client that a cancelled request was cancelled, and a failed one failed', async () => {
    const llm = await startScriptedLlm();
    const outcomes: string[] = [];
    try {
      const config = loadConfig({ OPENAI_BASE_URL: llm.baseUrl, STEPCAST_LLM_MAX_RETRIES: '0', STEPCAST_LLM_TIMEOUT_MS: '600000' });
      const client = new LlmClient(config.llm, createLogger('silent'), (_agent, _model, outcome) => outcomes.push(outcome));
      const request = { agent: 'sql' as const, messages: [{ role: 'user' as const, content: 'q' }], schemaName: 'answer', schema: z.object({ sql: z.string() }) };
      llm.script({ when: () => true, replies: [{ hang: true }, { status: 500, body: '{"error":{"message":"down"}}' }] });
      const cancel = new AbortController();
      const cancelled = client.completeStructured({ ...request, signal: cancel.signal });
      const deadline = Date.now() + 5_000;
      while (llm.hanging.length === 0) {
        if (Date.now() > deadline) throw new Error('the request never reached the model');
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      cancel.abort(new Error('the execution was cancelled'));
      await expect(cancelled).rejects.toThrow('the execution was cancelled');
      await expect(client.completeStructured(request)).rejects.toThrow(/HTTP 500/);
      expect(outcomes).toEqual(['cancelled', 'error']);
    } finally {
      await llm.close();
    }
  });

  it('counts as sandbox refusals only what the sandbox or its host imposes', async () => {
    const metrics = new StepcastMetrics(sources);
    for (const code of ['SANDBOX_TIMEOUT', 'SANDBOX_MEMORY', 'SANDBOX_RESULT_TOO_LARGE', 'API_REQUEST_LIMIT', 'API_CALL_REFUSED', 'API_RESPONSE_TOO_LARGE']) {
      metrics.sandboxStopped(code);
    }
    for (const code of ['SANDBOX_ERROR', 'API_CALL_FAILED', 'SANDBOX_ABORTED', 'SOMETHING_ELSE']) metrics.sandboxStopped(code);
    const refusals = parsePrometheusText(await metrics.registry.metrics()).filter((s) => s.name === 'stepcast_sandbox_refusals_total');
    expect(Object.fromEntries(refusals.map((s) => [s.labels.code, s.value]))).toEqual({
      SANDBOX_TIMEOUT: 1,
      SANDBOX_MEMORY: 1,
      SANDBOX_RESULT_TOO_LARGE: 1,
      API_REQUEST_LIMIT: 1,
      API_CALL_REFUSED: 1,
      API_RESPONSE_TOO_LARGE: 1,
    });
  });
});

describe('/metrics settings', () => {
  let servers: TestServer[] = [];
  afterAll(async () => {
    await Promise.all(servers.map((server) => server.close()));
    servers = [];
  });

  it('answers 404 when STEPCAST_METRICS=off, and keeps /health', async () => {
    const server = await startTestServer('pglite', { env: { STEPCAST_METRICS: 'off' } });
    servers.push(server);
    const origin = new URL(server.url).origin;
    expect((await scrapeMetrics(origin)).status).toBe(404);
    expect((await fetch(new URL('/health', origin))).status).toBe(200);
  });

  it('with STEPCAST_METRICS_PORT, serves metrics with their token, health and readiness there and not on the GraphQL port', async () => {
    const server = await startTestServer('pglite', { env: { STEPCAST_METRICS_TOKEN: TOKEN, STEPCAST_METRICS_PORT: '0' } });
    servers.push(server);
    expect(server.app.metricsPort).toBeGreaterThan(0);
    const metricsOrigin = `http://127.0.0.1:${server.app.metricsPort}`;
    expect((await scrapeMetrics(new URL(server.url).origin, TOKEN)).status).toBe(404);
    const refused = await scrapeMetrics(metricsOrigin);
    expect(refused.status).toBe(401);
    expect(refused.text).not.toContain('stepcast_');
    expect((await scrapeMetrics(metricsOrigin, `${TOKEN}x`)).status).toBe(401);
    const scraped = await scrapeMetrics(metricsOrigin, TOKEN);
    expect(scraped.status).toBe(200);
    expect(sampleValue(scraped.samples, 'stepcast_executions_started_total')).toBe(0);
    // Known series exist at zero before their first event.
    expect(sampleValue(scraped.samples, 'stepcast_executions_finished_total', { status: 'CANCELLED' })).toBe(0);
    expect(sampleValue(scraped.samples, 'stepcast_steps_finished_total', { kind: 'API', status: 'SKIPPED' })).toBe(0);
    expect(sampleValue(scraped.samples, 'stepcast_step_duration_seconds_count', { kind: 'SQL' })).toBe(0);
    const health = await fetch(new URL('/health', metricsOrigin));
    expect([health.status, await health.text()]).toEqual([200, '']);
    expect((await fetch(new URL('/ready', metricsOrigin))).status).toBe(200);
    expect((await fetch(new URL('/anything-else', metricsOrigin))).status).toBe(404);
  });

  it('with a token on the GraphQL port, refuses scrapes without it', async () => {
    const server = await startTestServer('pglite', { env: { STEPCAST_METRICS_TOKEN: TOKEN } });
    servers.push(server);
    const origin = new URL(server.url).origin;
    const refused = await scrapeMetrics(origin);
    expect(refused.status).toBe(401);
    expect(refused.text).not.toContain('stepcast_');
    expect((await scrapeMetrics(origin, TOKEN)).status).toBe(200);
  });

  it('is off in production unless protected by a token or a port of its own', () => {
    const production = {
      NODE_ENV: 'production',
      STEPCAST_ENCRYPTION_KEY: 'a'.repeat(64),
    };
    expect(loadConfig(production).observability.metrics).toBeUndefined();
    expect(() => loadConfig({ ...production, STEPCAST_METRICS: 'on' })).toThrow(ConfigError);
    expect(loadConfig({ ...production, STEPCAST_METRICS: 'on', STEPCAST_METRICS_TOKEN: TOKEN }).observability.metrics).toEqual({
      token: TOKEN,
      port: undefined,
      host: '127.0.0.1',
    });
    expect(loadConfig({ ...production, STEPCAST_METRICS: 'on', STEPCAST_METRICS_PORT: '9464' }).observability.metrics).toEqual({
      token: undefined,
      port: 9464,
      host: '127.0.0.1',
    });
    expect(loadConfig({ NODE_ENV: 'development' }).observability.metrics).toEqual({ token: undefined, port: undefined, host: '127.0.0.1' });
  });

  it('reads a blank STEPCAST_METRICS_PORT as unset, never as port 0', () => {
    const production = { NODE_ENV: 'production', STEPCAST_ENCRYPTION_KEY: 'a'.repeat(64), STEPCAST_METRICS: 'on' };
    for (const blank of ['', '   ']) {
      expect(loadConfig({ STEPCAST_METRICS_PORT: blank }).observability.metrics?.port).toBeUndefined();
      expect(() => loadConfig({ ...production, STEPCAST_METRICS_PORT: blank })).toThrow(/needs STEPCAST_METRICS_TOKEN/);
      expect(loadConfig({ ...production, STEPCAST_METRICS_PORT: blank, STEPCAST_METRICS_TOKEN: TOKEN }).observability.metrics?.port).toBeUndefined();
    }
  });

  it('refuses in production, without a token, a random metrics port or one on a non-loopback address; and a metrics port equal to PORT', () => {
    const production = { NODE_ENV: 'production', STEPCAST_ENCRYPTION_KEY: 'a'.repeat(64), STEPCAST_METRICS: 'on' };
    expect(() => loadConfig({ ...production, STEPCAST_METRICS_PORT: '0' })).toThrow(/STEPCAST_METRICS_PORT=0/);
    expect(loadConfig({ ...production, STEPCAST_METRICS_PORT: '0', STEPCAST_METRICS_TOKEN: TOKEN }).observability.metrics?.port).toBe(0);
    // HOST (the GraphQL port's address) does not move the metrics listener: it stays on loopback unless told.
    expect(loadConfig({ ...production, HOST: '0.0.0.0', STEPCAST_METRICS_PORT: '9464' }).observability.metrics?.host).toBe('127.0.0.1');
    for (const host of ['0.0.0.0', '::', '10.0.0.5', 'metrics.internal']) {
      expect(() => loadConfig({ ...production, STEPCAST_METRICS_PORT: '9464', STEPCAST_METRICS_HOST: host })).toThrow(/not a loopback address/);
      expect(
        loadConfig({ ...production, STEPCAST_METRICS_PORT: '9464', STEPCAST_METRICS_HOST: host, STEPCAST_METRICS_TOKEN: TOKEN }).observability.metrics?.host,
      ).toBe(host);
    }
    for (const host of ['127.0.0.1', '127.0.0.2', '::1', 'localhost']) {
      expect(loadConfig({ ...production, STEPCAST_METRICS_PORT: '9464', STEPCAST_METRICS_HOST: host }).observability.metrics?.host).toBe(host);
    }
    expect(() => loadConfig({ PORT: '4000', STEPCAST_METRICS_PORT: '4000' })).toThrow(/the same as PORT/);
    expect(() => loadConfig({ ...production, PORT: '9464', STEPCAST_METRICS_PORT: '9464', STEPCAST_METRICS_TOKEN: TOKEN })).toThrow(/the same as PORT/);
    expect(() => loadConfig({ STEPCAST_METRICS_PORT: '4000' })).toThrow(/the same as PORT/);
  });

  it('binds the metrics listener to STEPCAST_METRICS_HOST (loopback by default), not HOST', async () => {
    const server = await startTestServer('pglite', { env: { HOST: '0.0.0.0', STEPCAST_METRICS_PORT: '0' } });
    servers.push(server);
    expect(server.app.metricsAddress).toBe('127.0.0.1');
    expect((await fetch(`http://127.0.0.1:${server.app.metricsPort}/health`)).status).toBe(200);
  });
});

describe.skipIf(!postgresUrl)(`the executions gauge when its count waits${postgresUrl ? '' : ' (skipped: TEST_DATABASE_URL is not set)'}`, () => {
  it('gives no series, and the database cancels the count instead of leaving it waiting', async () => {
    const server = await startTestServer('postgres', { env: { STEPCAST_RECOVERY_INTERVAL_MS: '0' } });
    const holder = postgres(server.databaseUrl!, { max: 1, onnotice: () => undefined });
    const observer = postgres(server.databaseUrl!, { max: 1, onnotice: () => undefined });
    let release: () => void = () => undefined;
    let holding: Promise<unknown> | undefined;
    try {
      const locked = new Promise<void>((resolve) => {
        holding = holder.begin(async (tx) => {
          await tx`LOCK TABLE executions IN ACCESS EXCLUSIVE MODE`;
          resolve();
          await new Promise<void>((done) => (release = done));
        });
      });
      await locked;
      const counting = () => observer<{ n: number }[]>`
        SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE pid <> pg_backend_pid() AND state = 'active' AND query LIKE '%count(*)::int AS n FROM executions%'`;
      const { samples } = await scrapeMetrics(new URL(server.url).origin);
      expect(samples.filter((sample) => sample.name === 'stepcast_executions')).toEqual([]);
      // The lock is still held: a count left running would still be waiting on it.
      const deadline = Date.now() + 1_000;
      while ((await counting())[0]!.n > 0) {
        if (Date.now() > deadline) throw new Error('the count is still running on the database after the scrape gave up on it');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    } finally {
      release();
      await holding?.catch(() => undefined);
      await holder.end();
      await observer.end();
      await server.close();
    }
  });
});

const clusterSkipReason = postgresUrl && redisUrl ? null : 'skipped: TEST_DATABASE_URL and TEST_REDIS_URL are not both set';

describe.skipIf(clusterSkipReason !== null)(`/metrics of each process of a cluster${clusterSkipReason ? ` (${clusterSkipReason})` : ''}`, () => {
  let api: TestServer;
  let worker: TestServer;
  beforeAll(async () => {
    const shared = {
      REDIS_URL: redisUrl!,
      STEPCAST_REDIS_PREFIX: `test${randomBytes(4).toString('hex')}:`,
      STEPCAST_ENCRYPTION_KEY: randomBytes(32).toString('hex'),
      STEPCAST_QUEUE_POLL_MS: '100',
    };
    api = await startTestServer('postgres', { env: { ...shared, STEPCAST_ROLE: 'api' } });
    worker = await startTestServer('postgres', { joinDatabaseOf: api, env: { ...shared, STEPCAST_ROLE: 'worker', STEPCAST_METRICS_PORT: '0' } });
  });
  afterAll(async () => {
    await worker?.close();
    await api?.close();
  });

  it('the worker, which serves no GraphQL, is scraped on STEPCAST_METRICS_PORT and counts the runs; the API replica counts GraphQL', async () => {
    expect(worker.app.url).toBe('');
    const { execution } = await runPlan(api, { query: 'users', steps: [sqlStep('SELECT count(*) AS n FROM users')] });
    expect(execution.status).toBe('SUCCEEDED');
    const workerOrigin = `http://127.0.0.1:${worker.app.metricsPort}`;
    const fromWorker = await scrapeUntil(
      workerOrigin,
      (samples) => sampleValue(samples, 'stepcast_executions_finished_total', { status: 'SUCCEEDED' }) === 1,
      'the worker counted the execution',
    );
    expect(sampleValue(fromWorker, 'stepcast_executions_started_total')).toBe(1);
    expect(sampleValue(fromWorker, 'stepcast_steps_finished_total', { kind: 'SQL', status: 'SUCCEEDED' })).toBe(1);
    expect(sampleValue(fromWorker, 'graphql_envelop_request', { operationType: 'mutation' })).toBeUndefined();
    expect((await fetch(new URL('/ready', workerOrigin))).status).toBe(200);
    const fromApi = (await scrapeMetrics(new URL(api.url).origin)).samples;
    expect(sampleValue(fromApi, 'stepcast_executions_started_total')).toBe(0);
    expect(sampleValue(fromApi, 'graphql_envelop_request', { operationType: 'mutation' })).toBe(1);
    expect(sampleValue(fromApi, 'stepcast_executions', { status: 'RUNNING' })).toBe(0);
  });
});
