/**
 * One program run inside one QuickJS runtime and context: globals, host calls, the event loop, the result.
 * It runs inside the sandbox worker; the host it talks to relays to the real one on the main thread.
 */
import {
  errors,
  Scope,
  type JSPromiseState,
  type QuickJSContext,
  type QuickJSDeferredPromise,
  type QuickJSHandle,
  type QuickJSRuntime,
  type QuickJSWASMModule,
  type VmCallResult,
} from 'quickjs-emscripten-core';
import { SandboxError } from './errors.js';
import { ERROR_MESSAGE_MAX_CHARS, GUEST_PRELUDE, wrapProgram } from './guest-prelude.js';
import { RunBudget } from './run-budget.js';
import { heapBytesOf } from '../heap-bytes.js';
import type { SandboxLimits } from './run-program.js';
import type { WorkerRun } from './worker-protocol.js';

/** QuickJS's own stack check must fire before Node's native stack (which the WebAssembly frames share) runs out. */
const MAX_STACK_BYTES = 256 * 1024;
const JOBS_PER_BATCH = 1_000;
const MAX_TIMER_MS = 2_147_483_647;
const LOG_TRUNCATED = '[log truncated]';

interface QueuedCall {
  operationId: string;
  params: Record<string, unknown>;
  deferred: QuickJSDeferredPromise;
}

type CallOutcome = { ok: true; json: string } | { ok: false; error: unknown };

interface SettledCall {
  call: QueuedCall;
  outcome: CallOutcome;
}

interface GuestHelpers {
  install: QuickJSHandle;
  serializeResult: QuickJSHandle;
  describeError: QuickJSHandle;
  reserve: QuickJSHandle;
}

interface GuestErrorDescription {
  name: string;
  message: string;
  /** A string `code` on the thrown value, as on the errors api.call rejects with. */
  code?: string;
}

export interface SessionHost {
  /** The call's result as JSON text. Rejects with the host's error; a string `code` on it makes it a refusal. */
  callApi(operationId: string, params: Record<string, unknown>): Promise<string>;
  progress(message: string): void;
}

/** Told when the session parks on `await` and when it resumes, so a watchdog can time the busy stretches. */
export interface SessionActivity {
  busy(): void;
  idle(cpuUsedMs: number): void;
}

export interface SessionOptions {
  limits: SandboxLimits;
  host: SessionHost;
  activity?: SessionActivity;
}

/** Lets the event loop sleep until something happens: a host call settles or the wall clock runs out. */
class Wakeup {
  private notified = false;
  private resolveWait: (() => void) | undefined;

  notify(): void {
    this.notified = true;
    this.resolveWait?.();
  }

  async wait(): Promise<void> {
    if (!this.notified) await new Promise<void>((resolve) => (this.resolveWait = resolve));
    this.resolveWait = undefined;
    this.notified = false;
  }
}

/** console.log output, kept up to a byte budget. */
class LogBook {
  readonly lines: string[] = [];
  private bytes = 0;
  private truncated = false;

  constructor(private readonly maxBytes: number) {}

  add(line: string): void {
    if (this.truncated) return;
    // Each line costs at least one byte, so empty lines cannot pile up without limit.
    const size = Buffer.byteLength(line, 'utf8') + 1;
    if (this.bytes + size > this.maxBytes) {
      this.truncated = true;
      this.lines.push(LOG_TRUNCATED);
      return;
    }
    this.bytes += size;
    this.lines.push(line);
  }
}

function memoryError(limits: SandboxLimits, during?: string): SandboxError {
  const mib = Math.round((limits.memoryBytes / 1_048_576) * 10) / 10;
  const when = during ? ` while ${during}` : '';
  return new SandboxError('SANDBOX_MEMORY', `the program ran out of memory${when} (limit ${mib} MiB)`);
}

function stackOverflowError(): SandboxError {
  return new SandboxError('SANDBOX_MEMORY', 'stack overflow: the program nested calls too deeply');
}

function classifyGuestError(description: GuestErrorDescription, context: string, limits: SandboxLimits): SandboxError {
  const { name, message } = description;
  if (name === 'InternalError' && message === 'out of memory') return memoryError(limits);
  if (name === 'InternalError' && message === 'stack overflow') return stackOverflowError();
  if (name === 'RangeError' && message === 'Maximum call stack size exceeded') return stackOverflowError();
  // QuickJS says 'string too long' when concatenation passes its maximum string length, which ropes reach cheaply.
  if ((name === 'RangeError' && message === 'invalid string length') || (name === 'InternalError' && message === 'string too long')) {
    return new SandboxError('SANDBOX_MEMORY', 'the program tried to build a string longer than the sandbox allows');
  }
  return new SandboxError('SANDBOX_ERROR', `${context}: ${name ? `${name}: ` : ''}${message}`);
}

/** An exception thrown out of the engine itself (not a JavaScript error inside it) leaves the instance unusable. */
function engineCrashError(error: unknown): SandboxError {
  if (error instanceof RangeError && /call stack/i.test(error.message)) return stackOverflowError();
  const detail = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return new SandboxError('SANDBOX_ERROR', `the sandbox engine failed: ${detail.slice(0, ERROR_MESSAGE_MAX_CHARS)}`);
}

function hostErrorMessage(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.slice(0, ERROR_MESSAGE_MAX_CHARS);
}

// Refusals and broken limits end the run whatever the program does; other API errors (a 404, a 503) are the program's to handle.
const FATAL_HOST_CODES: ReadonlySet<string> = new Set(['API_CALL_REFUSED', 'API_REQUEST_LIMIT']);

/** A host error whose code is a refusal or a broken limit: the run fails with that code whatever the program does. */
function refusalOf(error: unknown): SandboxError | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const { code, retryable } = error as { code?: unknown; retryable?: unknown };
  if (typeof code !== 'string' || !FATAL_HOST_CODES.has(code)) return undefined;
  return new SandboxError(code, hostErrorMessage(error), { retryable: retryable === true });
}

function parseParams(json: string): Record<string, unknown> | undefined {
  const params: unknown = JSON.parse(json);
  if (typeof params !== 'object' || params === null || Array.isArray(params)) return undefined;
  return params as Record<string, unknown>;
}

export class ProgramSession {
  private readonly runtime: QuickJSRuntime;
  private readonly context: QuickJSContext;
  private readonly budget: RunBudget;
  private readonly logBook: LogBook;
  private progressReports = 0;
  private newestProgress: string | undefined;
  private readonly wakeup = new Wakeup();
  private readonly ownedHandles: QuickJSHandle[] = [];
  private helpers: GuestHelpers | undefined;
  private readonly unsettledCalls = new Set<QuickJSDeferredPromise>();
  private readonly queuedCalls: QueuedCall[] = [];
  private readonly settledCalls: SettledCall[] = [];
  private callsInFlight = 0;
  private callInvocations = 0;
  private requestsSent = 0;
  /** The first event that decided the run's outcome; later ones do not replace it. */
  private failure: SandboxError | undefined;
  /** Set with a failure that must stop guest code at once (time, memory, a crash), as opposed to a refusal. */
  private guestStopped = false;
  /** API errors handed to the program (code, then message), to recognise one it lets escape. */
  private readonly deliveredHostErrors = new Map<string, SandboxError>();
  private crashed = false;
  private closed = false;

  constructor(
    engine: QuickJSWASMModule,
    private readonly options: SessionOptions,
  ) {
    const { limits } = options;
    this.budget = new RunBudget(limits);
    this.logBook = new LogBook(limits.maxLogBytes);
    this.runtime = engine.newRuntime();
    this.runtime.setMemoryLimit(limits.memoryBytes);
    this.runtime.setMaxStackSize(MAX_STACK_BYTES);
    this.runtime.setInterruptHandler(() => this.shouldInterrupt());
    this.context = this.runtime.newContext();
  }

  async run(code: string, stepsJson: string): Promise<WorkerRun> {
    try {
      return await this.runToCompletion(code, stepsJson);
    } catch (error) {
      if (error instanceof SandboxError) throw error;
      // Anything else came out of the engine or its bindings, not from the program.
      this.crashed = true;
      throw this.record(engineCrashError(error));
    }
  }

  private async runToCompletion(code: string, stepsJson: string): Promise<WorkerRun> {
    this.installGlobals(stepsJson);
    const program = this.startProgram(code);
    try {
      const json = this.programResult(await this.awaitProgram(program));
      this.passOnNewestProgress();
      // Measured here, on this thread's heap, so that the service's heap takes the result only if it fits; the
      // program no longer runs, so the time it takes is not the program's CPU time.
      this.options.activity?.idle(this.budget.cpuUsedMs());
      return { json, heapBytes: heapBytesOf(JSON.parse(json)), logs: this.logBook.lines, requests: this.requestsSent };
    } finally {
      if (!this.crashed) program.dispose();
    }
  }

  dispose(): void {
    this.closed = true;
    // After a crash the engine's memory may be inconsistent; the whole instance is dropped instead.
    if (this.crashed) return;
    try {
      for (const deferred of this.unsettledCalls) deferred.dispose();
      for (const handle of this.ownedHandles) handle.dispose();
      this.context.dispose();
      this.runtime.dispose();
    } catch {
      // The engine instance belongs to this run alone, so a failed teardown cannot affect later runs.
    }
  }

  // Outcome bookkeeping ------------------------------------------------------

  private record(error: SandboxError): SandboxError {
    this.failure ??= error;
    return this.failure;
  }

  private stopGuest(error: SandboxError): SandboxError {
    this.guestStopped = true;
    return this.record(error);
  }

  private shouldInterrupt(): boolean {
    if (!this.guestStopped) this.checkBudget();
    return this.guestStopped;
  }

  private checkBudget(): void {
    const exceeded = this.budget.exceeded(this.callsInFlight > 0);
    if (exceeded) this.stopGuest(exceeded);
  }

  private throwIfStopped(): void {
    if (this.guestStopped && this.failure) throw this.failure;
  }

  // Running guest code -------------------------------------------------------

  /** Runs engine work as guest CPU time; an exception out of the engine itself is a crash. */
  private inGuest<T>(work: () => T): T {
    try {
      return this.budget.measureGuest(work);
    } catch (error) {
      this.crashed = true;
      this.guestStopped = true;
      throw this.record(engineCrashError(error));
    }
  }

  private own(handle: QuickJSHandle): QuickJSHandle {
    this.ownedHandles.push(handle);
    return handle;
  }

  private guestHelpers(): GuestHelpers {
    if (!this.helpers) throw new Error('the sandbox globals are not installed');
    return this.helpers;
  }

  /** The value of a guest evaluation or call, or the run's failure if it threw. */
  private expectValue(result: VmCallResult<QuickJSHandle>, context: string): QuickJSHandle {
    if (result.error) throw this.failureFrom(result.error, context);
    return result.value;
  }

  private callHelper(helper: QuickJSHandle, args: QuickJSHandle[]): VmCallResult<QuickJSHandle> {
    return this.inGuest(() => this.context.callFunction(helper, this.context.undefined, args));
  }

  /** Turns a guest exception into the run's failure (an earlier failure wins) and releases it. */
  private failureFrom(errorHandle: QuickJSHandle, context: string): SandboxError {
    try {
      if (this.failure) return this.failure;
      const description = this.describeGuestError(errorHandle);
      if (!description) return this.stopGuest(memoryError(this.options.limits, 'reading the program’s error'));
      // An API error the program did not handle fails the step with the API's code (API_CALL_FAILED, say) and
      // its retryable flag, not as a crash of the program.
      const escaped = description.name === 'Error' && description.code !== undefined
        ? this.deliveredHostErrors.get(`${description.code}\n${description.message}`)
        : undefined;
      return this.record(escaped ?? classifyGuestError(description, context, this.options.limits));
    } finally {
      if (!this.crashed) errorHandle.dispose();
    }
  }

  /** Name and message of a thrown value, read by guest code; undefined if even that fails (memory exhausted). */
  private describeGuestError(errorHandle: QuickJSHandle): GuestErrorDescription | undefined {
    const result = this.callHelper(this.guestHelpers().describeError, [errorHandle]);
    if (result.error) {
      result.error.dispose();
      return undefined;
    }
    const json = result.value.consume((handle) => this.context.getString(handle));
    return JSON.parse(json) as GuestErrorDescription;
  }

  /**
   * Copies host text into the guest. The library copies it through an unchecked malloc, so guest code first
   * proves the memory is there by allocating (and freeing) as much; if it is not, the run fails.
   */
  private guestString(text: string, receiving: string): QuickJSHandle {
    const utf8Bytes = Buffer.byteLength(text, 'utf8');
    const cStringBytes = utf8Bytes + 64;
    // QuickJS stores ASCII text one byte per character, anything else two.
    const guestStringBytes = (utf8Bytes === text.length ? 1 : 2) * text.length + 64;
    const reserved = Scope.withScope((scope) => {
      const sizes = [cStringBytes, guestStringBytes].map((size) => scope.manage(this.context.newNumber(size)));
      return this.callHelper(this.guestHelpers().reserve, sizes);
    });
    if (reserved.error) {
      reserved.error.dispose();
      throw this.stopGuest(memoryError(this.options.limits, receiving));
    }
    reserved.value.dispose();
    return this.inGuest(() => this.context.newString(text));
  }

  private newGuestError(message: string, code?: string): QuickJSHandle {
    return this.inGuest(() => {
      const error = this.context.newError({ name: 'Error', message });
      if (code !== undefined) this.context.newString(code).consume((value) => this.context.setProp(error, 'code', value));
      return error;
    });
  }

  // Globals ------------------------------------------------------------------

  private installGlobals(stepsJson: string): void {
    const prelude = this.own(this.expectValue(this.evaluate(GUEST_PRELUDE, 'sandbox-prelude.js'), 'the sandbox failed to start'));
    const helper = (name: string): QuickJSHandle => this.own(this.context.getProp(prelude, name));
    this.helpers = {
      install: helper('install'),
      serializeResult: helper('serializeResult'),
      describeError: helper('describeError'),
      reserve: helper('reserve'),
    };
    Scope.withScope((scope) => {
      const steps = scope.manage(this.guestString(stepsJson, 'receiving the earlier steps’ records'));
      const host = scope.manage(this.hostBridge());
      const maxLogChars = scope.manage(this.context.newNumber(this.options.limits.maxLogBytes));
      const maxProgressChars = scope.manage(this.context.newNumber(this.options.limits.maxProgressChars));
      const installed = this.callHelper(this.guestHelpers().install, [host, steps, maxLogChars, maxProgressChars]);
      this.expectValue(installed, 'the sandbox failed to start').dispose();
    });
  }

  /** The three functions the prelude closes over; the program never sees them. */
  private hostBridge(): QuickJSHandle {
    const bridge = this.context.newObject();
    const functions: Record<string, (...args: QuickJSHandle[]) => QuickJSHandle | VmCallResult<QuickJSHandle> | void> = {
      hostCall: (operationId, params) => this.acceptCall(operationId, params),
      hostProgress: (message) => this.reportProgress(message),
      hostLog: (line) => this.keepLog(line),
    };
    for (const [name, implementation] of Object.entries(functions)) {
      this.context.newFunction(name, implementation).consume((fn) => this.context.setProp(bridge, name, fn));
    }
    return bridge;
  }

  /** Past maxProgressReports only the newest report is kept, and passed on when the program has returned. */
  private reportProgress(messageHandle: QuickJSHandle | undefined): void {
    if (!messageHandle) return;
    const { maxProgressReports, maxProgressChars } = this.options.limits;
    const message = this.context.getString(messageHandle).slice(0, maxProgressChars);
    if (++this.progressReports < maxProgressReports) this.options.host.progress(message);
    else this.newestProgress = message;
  }

  private passOnNewestProgress(): void {
    if (this.newestProgress !== undefined) this.options.host.progress(this.newestProgress);
    this.newestProgress = undefined;
  }

  private keepLog(lineHandle: QuickJSHandle | undefined): void {
    if (lineHandle) this.logBook.add(this.context.getString(lineHandle));
  }

  // Host calls ---------------------------------------------------------------

  /** api.call from the guest: count it, queue it, and hand back a promise the event loop settles later. */
  private acceptCall(
    operationIdHandle: QuickJSHandle | undefined,
    paramsHandle: QuickJSHandle | undefined,
  ): QuickJSHandle | VmCallResult<QuickJSHandle> {
    const { maxRequests } = this.options.limits;
    this.callInvocations += 1;
    if (this.callInvocations > maxRequests) {
      this.record(new SandboxError('API_REQUEST_LIMIT', `the program made more than ${maxRequests} api.call requests`));
    }
    // Once the run is bound to fail, no further calls reach the host.
    if (this.failure) return { error: this.newGuestError(this.failure.message, this.failure.code) };
    if (!operationIdHandle || !paramsHandle) return { error: this.newGuestError('api.call needs an operationId and params') };
    const operationId = this.context.getString(operationIdHandle);
    const params = parseParams(this.context.getString(paramsHandle));
    if (!params) return { error: this.newGuestError('api.call(operationId, params): params must be a plain object') };
    const deferred = this.context.newPromise();
    this.unsettledCalls.add(deferred);
    this.queuedCalls.push({ operationId, params, deferred });
    return deferred.handle;
  }

  /** Hands queued calls to the host, oldest first, while fewer than maxConcurrentRequests are in flight. */
  private startQueuedCalls(): void {
    while (this.callsInFlight < this.options.limits.maxConcurrentRequests) {
      const call = this.queuedCalls.shift();
      if (!call) return;
      this.callsInFlight += 1;
      this.requestsSent += 1;
      void this.performCall(call);
    }
  }

  private async performCall(call: QueuedCall): Promise<void> {
    let outcome: CallOutcome;
    try {
      outcome = { ok: true, json: await this.options.host.callApi(call.operationId, call.params) };
    } catch (error) {
      outcome = { ok: false, error };
    }
    this.callsInFlight -= 1;
    if (this.closed) return;
    this.settledCalls.push({ call, outcome });
    this.wakeup.notify();
  }

  private deliverSettledCalls(): void {
    for (const { call, outcome } of this.settledCalls.splice(0)) {
      if (this.guestStopped) return;
      try {
        if (outcome.ok) this.resolveCall(call.deferred, outcome.json);
        else this.rejectCall(call.deferred, outcome.error);
      } finally {
        if (!this.crashed) call.deferred.dispose();
        this.unsettledCalls.delete(call.deferred);
      }
    }
  }

  private resolveCall(deferred: QuickJSDeferredPromise, json: string): void {
    const result = this.guestString(json, 'receiving an API response');
    this.settleInGuest(() => deferred.resolve(result));
    result.dispose();
  }

  private rejectCall(deferred: QuickJSDeferredPromise, error: unknown): void {
    const refusal = refusalOf(error);
    if (refusal) this.record(refusal);
    const { code, retryable } = (error ?? {}) as { code?: unknown; retryable?: unknown };
    const message = hostErrorMessage(error);
    if (typeof code === 'string' && !refusal) {
      this.deliveredHostErrors.set(`${code}\n${message}`, new SandboxError(code, message, { retryable: retryable === true }));
    }
    const guestError = this.newGuestError(message, typeof code === 'string' ? code : undefined);
    this.settleInGuest(() => deferred.reject(guestError));
    guestError.dispose();
  }

  /** Resolving a guest promise runs guest code, which can fail like any other (out of memory, interrupted). */
  private settleInGuest(settle: () => void): void {
    this.inGuest(() => {
      try {
        settle();
      } catch (error) {
        if (!(error instanceof errors.QuickJSUnwrapError)) throw error;
        this.stopGuest(classifyGuestError({ name: error.name, message: error.message }, 'the program failed', this.options.limits));
      }
    });
  }

  // The program --------------------------------------------------------------

  private evaluate(source: string, filename: string): VmCallResult<QuickJSHandle> {
    return this.inGuest(() => this.context.evalCode(source, filename, { type: 'global' }));
  }

  private startProgram(code: string): QuickJSHandle {
    return this.expectValue(this.evaluate(wrapProgram(code), 'program.js'), 'the program failed');
  }

  /** The event loop: run guest jobs, hand out host calls, sleep until one settles, until the program settles. */
  private async awaitProgram(program: QuickJSHandle): Promise<JSPromiseState> {
    for (;;) {
      this.deliverSettledCalls();
      this.runPendingJobs();
      this.throwIfStopped();
      const state = this.context.getPromiseState(program);
      if (state.type !== 'pending') return state;
      this.startQueuedCalls();
      await this.nextEvent();
      this.checkBudget();
      this.throwIfStopped();
    }
  }

  private runPendingJobs(): void {
    while (!this.guestStopped && this.runtime.hasPendingJob()) {
      const executed = this.inGuest(() => this.runtime.executePendingJobs(JOBS_PER_BATCH));
      if (executed.error) this.stopGuest(this.failureFrom(executed.error, 'the program failed'));
      else this.checkBudget();
    }
  }

  private async nextEvent(): Promise<void> {
    const untilWallClock = Math.min(this.budget.msUntilWallClockLimit() + 1, MAX_TIMER_MS);
    const timer = setTimeout(() => this.wakeup.notify(), untilWallClock);
    this.options.activity?.idle(this.budget.cpuUsedMs());
    try {
      await this.wakeup.wait();
    } finally {
      clearTimeout(timer);
      this.options.activity?.busy();
    }
  }

  private programResult(state: JSPromiseState): string {
    if (state.type === 'pending') throw new Error('the program has not settled');
    if (state.type === 'rejected') throw this.failureFrom(state.error, 'the program failed');
    try {
      if (this.failure) throw this.failure;
      return this.readResult(state.value);
    } finally {
      if (!state.notAPromise && !this.crashed) state.value.dispose();
    }
  }

  /** JSON.stringify runs inside the guest, so getters, toJSON and cycles behave as in any JavaScript. */
  private readResult(valueHandle: QuickJSHandle): string {
    const { maxResultBytes } = this.options.limits;
    const serialized = Scope.withScope((scope) => {
      const maxChars = scope.manage(this.context.newNumber(maxResultBytes));
      return this.callHelper(this.guestHelpers().serializeResult, [valueHandle, maxChars]);
    });
    const jsonHandle = this.expectValue(serialized, 'the program returned a value that cannot be turned into JSON');
    try {
      this.throwIfStopped();
      if (this.context.typeof(jsonHandle) === 'number') {
        throw this.tooLarge(`at least ${this.context.getNumber(jsonHandle)}`);
      }
      const json = this.context.getString(jsonHandle);
      const bytes = Buffer.byteLength(json, 'utf8');
      if (bytes > maxResultBytes) throw this.tooLarge(String(bytes));
      return json;
    } finally {
      if (!this.crashed) jsonHandle.dispose();
    }
  }

  private tooLarge(bytes: string): SandboxError {
    const { maxResultBytes } = this.options.limits;
    return this.record(
      new SandboxError('SANDBOX_RESULT_TOO_LARGE', `the program's result is ${bytes} bytes of JSON, over the limit of ${maxResultBytes} bytes`),
    );
  }
}
