/** The worker side: runs one program at a time in QuickJS and relays its host calls to the main thread. */
import { parentPort } from 'node:worker_threads';
import { newSandboxEngine } from './engine.js';
import { SandboxError } from './errors.js';
import { NOT_JSON_MESSAGE } from './json-text.js';
import { ProgramSession, type SessionActivity, type SessionHost } from './program-session.js';
import type { FromWorker, RunRequest, ToWorker, WireFailure, WireHostError } from './worker-protocol.js';

interface PendingCall {
  resolve: (json: string) => void;
  reject: (error: Error) => void;
}

const pendingCalls = new Map<number, PendingCall>();
let nextCallId = 1;

function send(message: FromWorker): void {
  parentPort?.postMessage(message);
}

function hostError({ message, code, retryable }: WireHostError): Error {
  return Object.assign(new Error(message), { code, retryable });
}

const relayedHost: SessionHost = {
  callApi: (operationId, params) =>
    new Promise((resolve, reject) => {
      const id = nextCallId++;
      pendingCalls.set(id, { resolve, reject });
      send({ type: 'call', id, operationId, params });
    }),
  progress: (message) => send({ type: 'progress', message }),
};

const reportedActivity: SessionActivity = {
  busy: () => send({ type: 'busy' }),
  idle: (cpuUsedMs) => send({ type: 'idle', cpuUsedMs }),
};

function toWireFailure(error: unknown): WireFailure {
  if (error instanceof SandboxError) return { code: error.code, message: error.message, retryable: error.retryable };
  const detail = error instanceof Error ? error.message : String(error);
  return { code: 'SANDBOX_ERROR', message: `the sandbox failed: ${detail}`, retryable: false };
}

async function runRequest({ code, stepsJson, limits }: RunRequest): Promise<void> {
  let session: ProgramSession | undefined;
  try {
    const engine = await newSandboxEngine(limits.memoryBytes);
    session = new ProgramSession(engine, { limits, host: relayedHost, activity: reportedActivity });
    send({ type: 'done', run: await session.run(code, stepsJson) });
  } catch (error) {
    send({ type: 'failed', error: toWireFailure(error) });
  } finally {
    session?.dispose();
    // Calls still out belong to the finished run; their answers, if any, are dropped.
    pendingCalls.clear();
  }
}

function settleCall(message: Exclude<ToWorker, RunRequest>): void {
  const call = pendingCalls.get(message.id);
  if (!call) return;
  pendingCalls.delete(message.id);
  if (message.type === 'callFailed') {
    call.reject(hostError(message.error));
    return;
  }
  // An API response comes as the API sent it, to be parsed on this thread rather than the service's; written
  // out again, it reaches the program exactly as a parsed value would (1e400 as null, -0 as 0).
  let json: string;
  try {
    json = JSON.stringify(JSON.parse(message.json));
  } catch {
    call.reject(hostError({ message: NOT_JSON_MESSAGE, code: 'API_CALL_FAILED' }));
    return;
  }
  call.resolve(json);
}

parentPort?.on('message', (message: ToWorker) => {
  if (message.type === 'run') void runRequest(message);
  else settleCall(message);
});
send({ type: 'ready' });
