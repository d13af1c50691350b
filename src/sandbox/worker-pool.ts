/**
 * The main thread's side of the sandbox: a few warm worker threads, one run per worker at a time.
 * Guest code never runs on the main thread, so a spinning program cannot stall the server, and a worker that
 * overruns its limits (QuickJS polls its interrupt handler only between bytecodes, so one long native call such
 * as a huge split() can hold it for minutes) is terminated.
 */
import { Worker } from 'node:worker_threads';
import { SandboxError } from './errors.js';
import { JsonText } from './json-text.js';
import { abortedRunError, cpuTimeoutError, wallClockTimeoutError } from './run-budget.js';
import type { SandboxHost, SandboxLimits } from './run-program.js';
import type { FromWorker, RunRequest, ToWorker, WireHostError, WorkerRun } from './worker-protocol.js';

const WORKER_URL = new URL('./sandbox-worker.mjs', import.meta.url);
const MAX_IDLE_WORKERS = 2;
/** The worker enforces the limits itself; the watchdog only steps in this long after it should have. */
const WATCHDOG_GRACE_MS = 1_000;

const idleWorkers = new Set<Worker>();

function spawnWorker(): Promise<Worker> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(WORKER_URL);
    // A worker's 'error' event must always have a listener, or it would crash the server.
    worker.on('error', () => idleWorkers.delete(worker));
    worker.on('exit', () => idleWorkers.delete(worker));
    const onMessage = (message: FromWorker): void => {
      if (message.type !== 'ready') return;
      stopListening();
      resolve(worker);
    };
    const onError = (error: Error): void => {
      stopListening();
      void worker.terminate();
      reject(new Error(`the sandbox worker failed to start: ${error.message}`));
    };
    const onExit = (exitCode: number): void => {
      stopListening();
      reject(new Error(`the sandbox worker exited while starting (exit code ${exitCode})`));
    };
    const stopListening = (): void => {
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
    };
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
  });
}

async function acquireWorker(): Promise<Worker> {
  const [worker] = idleWorkers;
  if (!worker) return spawnWorker();
  idleWorkers.delete(worker);
  worker.ref();
  return worker;
}

/** Idle workers do not keep the process alive. */
function releaseWorker(worker: Worker): void {
  if (idleWorkers.size >= MAX_IDLE_WORKERS) {
    void worker.terminate();
    return;
  }
  worker.unref();
  idleWorkers.add(worker);
}

/** JSON text for a host call's result; undefined and other values JSON leaves out become null. */
export function marshalHostResult(value: unknown): string | undefined {
  if (value instanceof JsonText) return value.text;
  try {
    return JSON.stringify(value) ?? 'null';
  } catch {
    return undefined;
  }
}

/** Only the message, and a string `code` and `retryable` if the host set them, ever reach the worker. */
function marshalHostError(error: unknown): WireHostError {
  const message = error instanceof Error ? error.message : String(error);
  if (typeof error !== 'object' || error === null) return { message };
  const { code, retryable } = error as { code?: unknown; retryable?: unknown };
  return { message, ...(typeof code === 'string' ? { code } : {}), ...(retryable === true ? { retryable } : {}) };
}

type RunOutcome = { run: WorkerRun } | { error: SandboxError };

/** One run on one worker: relays host calls and progress, and terminates the worker if it overruns. */
class SupervisedRun {
  private resolveRun: (run: WorkerRun) => void = () => {};
  private rejectRun: (error: SandboxError) => void = () => {};
  private cpuUsedMs = 0;
  private callsInFlight = 0;
  private finished = false;
  private cpuWatchdog: NodeJS.Timeout | undefined;
  private wallClockWatchdog: NodeJS.Timeout | undefined;

  constructor(
    private readonly worker: Worker,
    private readonly host: SandboxHost,
    private readonly limits: SandboxLimits,
    private readonly signal: AbortSignal | undefined,
  ) {}

  start(request: RunRequest): Promise<WorkerRun> {
    return new Promise<WorkerRun>((resolve, reject) => {
      this.resolveRun = resolve;
      this.rejectRun = reject;
      this.worker.on('message', this.onMessage);
      this.worker.on('error', this.onError);
      this.worker.on('exit', this.onExit);
      this.signal?.addEventListener('abort', this.onAbort, { once: true });
      this.wallClockWatchdog = setTimeout(
        () => this.terminate(wallClockTimeoutError(this.limits.wallClockMs, this.callsInFlight > 0)),
        this.limits.wallClockMs + WATCHDOG_GRACE_MS,
      );
      this.armCpuWatchdog();
      this.send(request);
    });
  }

  private readonly onMessage = (message: FromWorker): void => {
    switch (message.type) {
      case 'call':
        void this.relayCall(message.id, message.operationId, message.params);
        return;
      case 'progress':
        this.relayProgress(message.message);
        return;
      case 'busy':
        this.armCpuWatchdog();
        return;
      case 'idle':
        this.cpuUsedMs = message.cpuUsedMs;
        clearTimeout(this.cpuWatchdog);
        return;
      case 'done':
        this.end({ run: message.run }, true);
        return;
      case 'failed':
        this.end({ error: new SandboxError(message.error.code, message.error.message, { retryable: message.error.retryable }) }, true);
        return;
      case 'ready':
        return;
    }
  };

  private readonly onError = (error: Error): void => {
    this.terminate(new SandboxError('SANDBOX_ERROR', `the sandbox worker failed: ${error.message}`));
  };

  private readonly onExit = (exitCode: number): void => {
    this.end({ error: new SandboxError('SANDBOX_ERROR', `the sandbox worker stopped unexpectedly (exit code ${exitCode})`) }, false);
  };

  private readonly onAbort = (): void => {
    if (this.signal) this.terminate(abortedRunError(this.signal, this.limits.wallClockMs, true, this.callsInFlight > 0));
  };

  /** While the worker is busy, it must report back before its CPU time could have run out. */
  private armCpuWatchdog(): void {
    clearTimeout(this.cpuWatchdog);
    const remainingMs = Math.max(0, this.limits.cpuTimeMs - this.cpuUsedMs);
    this.cpuWatchdog = setTimeout(() => this.terminate(cpuTimeoutError(this.limits.cpuTimeMs)), remainingMs + WATCHDOG_GRACE_MS);
  }

  private send(message: ToWorker): void {
    if (!this.finished) this.worker.postMessage(message);
  }

  private async relayCall(id: number, operationId: string, params: Record<string, unknown>): Promise<void> {
    this.callsInFlight += 1;
    let reply: ToWorker;
    try {
      const json = marshalHostResult(await this.host.callApi(operationId, params));
      reply =
        json === undefined
          ? { type: 'callFailed', id, error: { message: 'the API returned a value that is not JSON' } }
          : { type: 'callSettled', id, json };
    } catch (error) {
      reply = { type: 'callFailed', id, error: marshalHostError(error) };
    } finally {
      this.callsInFlight -= 1;
    }
    this.send(reply);
  }

  private relayProgress(message: string): void {
    try {
      this.host.progress(message);
    } catch {
      // Progress is a notification: the program has moved on and cannot be told.
    }
  }

  private terminate(error: SandboxError): void {
    this.end({ error }, false);
  }

  /** A worker that finished its run goes back to the pool; any other is terminated. */
  private end(outcome: RunOutcome, workerReusable: boolean): void {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.cpuWatchdog);
    clearTimeout(this.wallClockWatchdog);
    this.worker.off('message', this.onMessage);
    this.worker.off('error', this.onError);
    this.worker.off('exit', this.onExit);
    this.signal?.removeEventListener('abort', this.onAbort);
    if (workerReusable) releaseWorker(this.worker);
    else void this.worker.terminate();
    if ('run' in outcome) this.resolveRun(outcome.run);
    else this.rejectRun(outcome.error);
  }
}

/** Runs one program on a pooled sandbox worker. */
export async function runInSandboxWorker(
  request: RunRequest,
  host: SandboxHost,
  signal: AbortSignal | undefined,
): Promise<WorkerRun> {
  const worker = await acquireWorker();
  if (signal?.aborted) {
    releaseWorker(worker);
    throw abortedRunError(signal, request.limits.wallClockMs, false);
  }
  return new SupervisedRun(worker, host, request.limits, signal).start(request);
}
