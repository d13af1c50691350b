import { context, propagation, trace, type ProxyTracerProvider } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import type { ObservabilityConfig } from '../config.js';
import type { Logger } from '../logger.js';

export interface Tracing {
  /** Sends the spans still buffered, then unregisters the SDK. */
  shutdown(): Promise<void>;
}

/**
 * Starts the OpenTelemetry SDK (OTLP over HTTP, batched) and registers it for the process, so that the spans the
 * code starts through @opentelemetry/api are recorded. Only called when an OTLP endpoint is configured.
 */
export function startTracing(config: NonNullable<ObservabilityConfig['tracing']>, logger: Logger): Tracing {
  const provider = new NodeTracerProvider({
    resource: defaultResource().merge(resourceFromAttributes({ 'service.name': config.serviceName })),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: config.tracesUrl }))],
  });
  provider.register();
  // One provider per process: a second service in the same process (tests) leaves the first one's in place.
  if ((trace.getTracerProvider() as ProxyTracerProvider).getDelegate() !== provider) {
    logger.warn('an OpenTelemetry tracer provider is already registered in this process; spans go to it');
    void provider.shutdown();
    return { shutdown: async () => undefined };
  }
  logger.info({ url: config.tracesUrl }, 'tracing: spans are exported over OTLP/HTTP');
  return {
    shutdown: async () => {
      try {
        await provider.shutdown();
      } catch (error) {
        logger.warn({ err: error }, 'tracing: the last spans could not be exported');
      }
      trace.disable();
      context.disable();
      propagation.disable();
    },
  };
}
