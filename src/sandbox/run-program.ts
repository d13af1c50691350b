/**
 * Runs an untrusted program (the body of an async function) in QuickJS, never in Node's `vm`, on a worker thread.
 * Inside it sees only `steps`, `api.call`, `progress` and `console.log`; everything crosses the boundary as JSON.
 */
import { SandboxError } from './errors.js';
import { abortedRunError } from './run-budget.js';
import { runInSandboxWorker } from './worker-pool.js';

export { SandboxError, type SandboxErrorCode } from './errors.js';

/** Every limit of a run; the service supplies them from its configuration (config.sandbox), and the step its wall clock. */
export interface SandboxLimits {
  /** The program's heap; the WebAssembly memory is capped at this plus the engine's fixed share. */
  memoryBytes: number;
  /** Time spent executing inside QuickJS. */
  cpuTimeMs: number;
  /** Total, including time parked on `await` for host calls. */
  wallClockMs: number;
  /** api.call invocations per run. */
  maxRequests: number;
  /** api.call calls in flight at once; more wait in a FIFO queue. */
  maxConcurrentRequests: number;
  /** JSON size of the returned value, in UTF-8 bytes. */
  maxResultBytes: number;
  /** console.log output kept; beyond it lines are dropped and one "[log truncated]" line added. */
  maxLogBytes: number;
  /** progress() calls passed to the host; later ones are dropped. */
  maxProgressReports: number;
  /** A progress message is cut to this many characters. */
  maxProgressChars: number;
}

export interface SandboxHost {
  /** Performs one API call for the program. May throw; an error whose `code` is a string (e.g. 'API_CALL_REFUSED') is a refusal. */
  callApi(operationId: string, params: Record<string, unknown>): Promise<unknown>;
  /** The program reported progress. */
  progress(message: string): void;
}

export interface ProgramRun {
  value: unknown;
  logs: string[];
  /** api.call requests handed to the host. */
  requests: number;
}

export interface RunProgramOptions {
  /** The BODY of an async function: it may use `await` and must `return` a JSON value. */
  code: string;
  /** Visible inside as `steps[i].records`, deep-copied in as JSON. */
  steps: { records: unknown[] }[];
  host: SandboxHost;
  limits: SandboxLimits;
  /** Aborting ends the run with SANDBOX_ABORTED, or SANDBOX_TIMEOUT when it aborts with a TimeoutError (AbortSignal.timeout). */
  signal?: AbortSignal;
  /**
   * Called with what the program's result will cost on this heap (heap-bytes.ts), measured by the worker
   * on its own heap, before the result is parsed here: throw to refuse it.
   */
  admitResult?: (heapBytes: number) => void;
}

const LIMIT_MINIMUMS: Record<keyof SandboxLimits, number> = {
  memoryBytes: 1_048_576,
  cpuTimeMs: 1,
  wallClockMs: 1,
  maxRequests: 0,
  maxConcurrentRequests: 1,
  maxResultBytes: 1,
  maxLogBytes: 0,
  maxProgressReports: 0,
  maxProgressChars: 0,
};

/** Only the limits the sandbox knows travel to the worker, each checked to be a usable number. */
function checkedLimits(given: SandboxLimits): SandboxLimits {
  const limits = {} as SandboxLimits;
  for (const key of Object.keys(LIMIT_MINIMUMS) as (keyof SandboxLimits)[]) {
    const value = given[key];
    if (typeof value !== 'number' || !Number.isFinite(value) || value < LIMIT_MINIMUMS[key]) {
      throw new RangeError(`sandbox limit ${key} must be a number of at least ${LIMIT_MINIMUMS[key]}, not ${value}`);
    }
    limits[key] = value;
  }
  return limits;
}

function stepsToJson(steps: { records: unknown[] }[]): string {
  try {
    return JSON.stringify(steps.map((step) => ({ records: step.records })));
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new SandboxError('SANDBOX_ERROR', `the earlier steps' records cannot be passed to the program as JSON: ${reason}`);
  }
}

/** Runs one program in a fresh QuickJS runtime and context (and WebAssembly instance), disposed however the run ends. */
export async function runProgram(options: RunProgramOptions): Promise<ProgramRun> {
  const limits = checkedLimits(options.limits);
  if (options.signal?.aborted) throw abortedRunError(options.signal, limits.wallClockMs, false);
  const stepsJson = stepsToJson(options.steps);
  const { json, heapBytes, ...run } = await runInSandboxWorker(
    { type: 'run', code: options.code, stepsJson, limits },
    options.host,
    options.signal,
  );
  // The worker measured the result; it comes onto this heap only if the caller lets it.
  options.admitResult?.(heapBytes);
  return { value: JSON.parse(json) as unknown, ...run };
}
