/** Messages between the main thread and a sandbox worker. Everything the program produced crosses as JSON data. */
import type { ProgramRun, SandboxLimits } from './run-program.js';

/** A run as the worker reports it: the result as JSON text, and what it costs once parsed (heap-bytes.ts). */
export type WorkerRun = Omit<ProgramRun, 'value'> & { json: string; heapBytes: number };

/** A host error as the worker sees it: only what the program and the run's outcome may show. */
export interface WireHostError {
  message: string;
  code?: string;
  retryable?: boolean;
}

export interface WireFailure {
  code: string;
  message: string;
  retryable: boolean;
}

export interface RunRequest {
  type: 'run';
  code: string;
  stepsJson: string;
  limits: SandboxLimits;
}

export type ToWorker =
  | RunRequest
  | { type: 'callSettled'; id: number; json: string }
  | { type: 'callFailed'; id: number; error: WireHostError };

export type FromWorker =
  | { type: 'ready' }
  | { type: 'call'; id: number; operationId: string; params: Record<string, unknown> }
  | { type: 'progress'; message: string }
  | { type: 'busy' }
  | { type: 'idle'; cpuUsedMs: number }
  | { type: 'done'; run: WorkerRun }
  | { type: 'failed'; error: WireFailure };
