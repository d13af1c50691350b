import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { trace } from '@opentelemetry/api';
import { InMemorySpanExporter, NodeTracerProvider, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_TENANT_ID } from '../src/db/demo-data.js';
import { startScriptedLlm, type ScriptedLlm } from './fixtures/scripted-llm.js';
import { runPlan, sqlStep } from './support/plans.js';
import { startTestServer, type TestServer } from './support/server.js';

/** Waits until check() holds: a run's span ends a moment after its last update is published. */
async function until<T>(check: () => T | undefined, what: string): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const value = check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

interface OtlpSpan {
  name: string;
  spanId: string;
  parentSpanId?: string;
  attributes: { key: string; value: Record<string, unknown> }[];
}

/** An OTLP/HTTP collector on loopback that keeps the spans it is sent (JSON). */
async function startCollector(): Promise<{ url: string; spans: OtlpSpan[]; serviceNames: string[]; close(): Promise<void> }> {
  const spans: OtlpSpan[] = [];
  const serviceNames: string[] = [];
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const raw = Buffer.concat(chunks);
      const body = JSON.parse((request.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw).toString('utf8')) as {
        resourceSpans: { resource: { attributes: OtlpSpan['attributes'] }; scopeSpans: { spans: OtlpSpan[] }[] }[];
      };
      if (request.url === '/v1/traces') {
        for (const resourceSpans of body.resourceSpans) {
          const name = resourceSpans.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue;
          if (typeof name === 'string') serviceNames.push(name);
          for (const scope of resourceSpans.scopeSpans) spans.push(...scope.spans);
        }
      }
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    spans,
    serviceNames,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

// The OTLP test first: the service registers its SDK for the process, and unregisters it when it closes.
describe('traces exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set', () => {
  let collector: Awaited<ReturnType<typeof startCollector>>;
  let server: TestServer | undefined;
  beforeAll(async () => {
    collector = await startCollector();
  });
  afterAll(async () => {
    await server?.close();
    await collector?.close();
  });

  it('sends the spans of a run to the collector, under the service name', async () => {
    server = await startTestServer('pglite', { env: { OTEL_EXPORTER_OTLP_ENDPOINT: collector.url, OTEL_SERVICE_NAME: 'stepcast-under-test' } });
    const { execution } = await runPlan(server, { query: 'users', steps: [sqlStep('SELECT count(*) AS n FROM users')] });
    expect(execution.status).toBe('SUCCEEDED');
    // Closing sends what the batch still holds.
    await server.close();
    server = undefined;
    const run = collector.spans.find(
      (span) =>
        span.name === 'stepcast.execution' &&
        span.attributes.some((a) => a.key === 'stepcast.execution_id' && a.value.stringValue === execution.id),
    );
    expect(run).toBeDefined();
    const step = collector.spans.find((span) => span.name === 'stepcast.step' && span.parentSpanId === run!.spanId);
    expect(step).toBeDefined();
    expect(collector.spans.some((span) => span.name === 'stepcast.sql' && span.parentSpanId === step!.spanId)).toBe(true);
    expect(collector.serviceNames).toContain('stepcast-under-test');
  });
});

describe('spans of a plan run over HTTP (in-memory exporter)', () => {
  let llm: ScriptedLlm;
  let server: TestServer;
  let provider: NodeTracerProvider;
  const exporter = new InMemorySpanExporter();
  beforeAll(async () => {
    provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    provider.register();
    llm = await startScriptedLlm();
    server = await startTestServer('pglite', { env: { OPENAI_BASE_URL: llm.baseUrl, STEPCAST_SQL_MODEL: 'sql-model-under-test' } });
  });
  afterAll(async () => {
    await server?.close();
    await llm?.close();
    await provider?.shutdown();
    trace.disable();
  });

  it('records the execution, its steps, and their SQL statements, model calls and API calls as parent and children, with the run ids', async () => {
    llm.script({ when: () => true, replies: [{ content: { sql: 'SELECT count(*) AS n FROM users', explanation: 'counts' } }] });
    const { execution } = await runPlan(server, {
      query: 'traced',
      steps: [
        sqlStep('SELECT id FROM users ORDER BY id LIMIT 2'),
        { kind: 'SQL', queryContext: 'count the users' },
        { kind: 'API', queryContext: 'first user', code: "return [await api.call('getUser', { id: 1 })];" },
      ],
    });
    expect(execution.status).toBe('SUCCEEDED');
    const spans = () => exporter.getFinishedSpans();
    const ofRun = (span: ReadableSpan) => span.attributes['stepcast.execution_id'] === execution.id;
    const run = await until(() => spans().find((span) => span.name === 'stepcast.execution' && ofRun(span)), 'the execution span ends');
    const runIds = {
      'stepcast.correlation_id': execution.correlationId,
      'stepcast.execution_id': execution.id,
      'stepcast.tenant_id': DEMO_TENANT_ID,
    };
    expect(run.attributes).toMatchObject({ ...runIds, 'stepcast.execution.status': 'SUCCEEDED' });

    const childrenOf = (parent: ReadableSpan, name: string) =>
      spans().filter((span) => span.name === name && span.parentSpanContext?.spanId === parent.spanContext().spanId);
    const steps = childrenOf(run, 'stepcast.step').sort((a, b) => Number(a.attributes['stepcast.step.index']) - Number(b.attributes['stepcast.step.index']));
    expect(steps.map((step) => [step.attributes['stepcast.step.index'], step.attributes['stepcast.step.kind'], step.attributes['stepcast.step.status']])).toEqual([
      [1, 'SQL', 'SUCCEEDED'],
      [2, 'SQL', 'SUCCEEDED'],
      [3, 'API', 'SUCCEEDED'],
    ]);
    for (const step of steps) {
      expect(step.spanContext().traceId).toBe(run.spanContext().traceId);
      expect(step.attributes).toMatchObject(runIds);
    }
    const [written, agentWritten, program] = steps as [ReadableSpan, ReadableSpan, ReadableSpan];
    expect(childrenOf(written, 'stepcast.sql')).toHaveLength(1);
    expect(childrenOf(written, 'stepcast.sql')[0]!.attributes).toMatchObject({ ...runIds, 'stepcast.step.index': 1, 'db.response.returned_rows': 2 });
    const [modelCall] = childrenOf(agentWritten, 'stepcast.model_call');
    expect(modelCall?.attributes).toMatchObject({
      ...runIds,
      'stepcast.step.index': 2,
      'stepcast.agent': 'sql',
      'gen_ai.request.model': 'sql-model-under-test',
      'gen_ai.usage.input_tokens': 100,
      'gen_ai.usage.output_tokens': 20,
    });
    expect(childrenOf(agentWritten, 'stepcast.sql')).toHaveLength(1);
    const [apiCall] = childrenOf(program, 'stepcast.api_call');
    expect(apiCall?.attributes).toMatchObject({
      ...runIds,
      'stepcast.step.index': 3,
      'stepcast.api.operation_id': 'getUser',
      'http.request.method': 'GET',
      'http.response.status_code': 200,
    });
  });

  it('marks a failed step and its statement as errors', async () => {
    const { execution } = await runPlan(server, { query: 'fails', steps: [sqlStep('SELECT no_such_column FROM users')] });
    expect(execution.status).toBe('FAILED');
    const step = await until(
      () => exporter.getFinishedSpans().find((span) => span.name === 'stepcast.step' && span.attributes['stepcast.execution_id'] === execution.id),
      'the step span ends',
    );
    expect(step.status).toMatchObject({ code: 2, message: 'SQL_ERROR' });
    expect(step.attributes['stepcast.step.status']).toBe('FAILED');
    const statement = exporter
      .getFinishedSpans()
      .find((span) => span.name === 'stepcast.sql' && span.parentSpanContext?.spanId === step.spanContext().spanId);
    expect(statement?.status.code).toBe(2);
    expect(statement?.events.map((event) => event.name)).toEqual(['exception']);
  });
});
