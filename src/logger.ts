import { AsyncLocalStorage } from 'node:async_hooks';
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

export interface LogContext {
  correlationId?: string;
  executionId?: string;
  tenantId?: string;
  stepIndex?: number;
}

const logContext = new AsyncLocalStorage<LogContext>();

/** Every line carries the correlation id (and execution, step) of the run it was logged in; stdout unless told otherwise. */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  const options = { level, base: { service: 'stepcast' }, mixin: () => ({ ...logContext.getStore() }) };
  return destination ? pino(options, destination) : pino(options);
}

export function withLogContext<T>(context: LogContext, work: () => T): T {
  return logContext.run({ ...logContext.getStore(), ...context }, work);
}

/** The run the caller is in (correlation id, execution, tenant, step), when it is in one. */
export function currentLogContext(): LogContext | undefined {
  return logContext.getStore();
}
