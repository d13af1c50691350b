import { context, SpanKind, SpanStatusCode, trace, type Attributes, type Span, type Tracer, type TracerProvider } from '@opentelemetry/api';
import { currentLogContext } from '../logger.js';

/**
 * Spans go through @opentelemetry/api only: with no SDK registered (OTEL_EXPORTER_OTLP_ENDPOINT unset) every span is
 * the API's shared no-op, and nothing here builds attributes or switches context.
 */
const TRACER_NAME = 'stepcast';

let tracerOf: { provider: TracerProvider; tracer: Tracer } | undefined;

/**
 * The tracer, kept for as long as the API's global provider stays the same: a service that stops unregisters its
 * SDK (trace.disable() puts a new global provider in place), and the tracer kept from before would still hold it.
 */
function stepcastTracer(): Tracer {
  const provider = trace.getTracerProvider();
  if (tracerOf?.provider !== provider) tracerOf = { provider, tracer: provider.getTracer(TRACER_NAME) };
  return tracerOf.tracer;
}

/** The attributes every stepcast span carries, from the run it belongs to (the log context). */
function runAttributes(attributes: Attributes): Attributes {
  const run = currentLogContext();
  if (!run) return attributes;
  return {
    ...(run.correlationId === undefined ? {} : { 'stepcast.correlation_id': run.correlationId }),
    ...(run.executionId === undefined ? {} : { 'stepcast.execution_id': run.executionId }),
    ...(run.tenantId === undefined ? {} : { 'stepcast.tenant_id': run.tenantId }),
    ...(run.stepIndex === undefined ? {} : { 'stepcast.step.index': run.stepIndex }),
    ...attributes,
  };
}

export interface SpanOptions {
  /** Built only when the span is recorded. */
  attributes?: () => Attributes;
  /** CLIENT for calls that leave the process (the model, a tenant's API, the database). */
  client?: boolean;
}

/**
 * Runs work inside a span that is the parent of the spans it starts; the span ends when the work settles, with an
 * error status (and the exception) when it throws.
 */
export async function inSpan<T>(name: string, options: SpanOptions, work: (span: Span) => Promise<T>): Promise<T> {
  const span = stepcastTracer().startSpan(name, options.client ? { kind: SpanKind.CLIENT } : undefined);
  if (!span.isRecording()) return work(span);
  span.setAttributes(runAttributes(options.attributes?.() ?? {}));
  try {
    return await context.with(trace.setSpan(context.active(), span), () => work(span));
  } catch (error) {
    span.recordException(error instanceof Error ? error : String(error));
    span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : undefined });
    throw error;
  } finally {
    span.end();
  }
}
