import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { JsonText } from '../src/sandbox/json-text.js';
import {
  runProgram,
  SandboxError,
  type ProgramRun,
  type SandboxHost,
  type SandboxLimits,
} from '../src/sandbox/run-program.js';

const MIB = 1_048_576;
/** The service's configured limits, as the API step handler passes them, with a wall clock of its own. */
const LIMITS: SandboxLimits = { ...loadConfig({}).sandbox, wallClockMs: 30_000 };

interface RecordedCall {
  operationId: string;
  params: Record<string, unknown>;
}

type Respond = (call: RecordedCall) => unknown;

/** An in-memory API: records every call and progress message, and counts calls in flight. */
class FakeHost implements SandboxHost {
  readonly calls: RecordedCall[] = [];
  readonly progressMessages: string[] = [];
  inFlight = 0;
  maxInFlight = 0;

  constructor(private readonly respond: Respond = ({ operationId, params }) => ({ operationId, params })) {}

  async callApi(operationId: string, params: Record<string, unknown>): Promise<unknown> {
    const call = { operationId, params };
    this.calls.push(call);
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      return await this.respond(call);
    } finally {
      this.inFlight -= 1;
    }
  }

  progress(message: string): void {
    this.progressMessages.push(message);
  }
}

function refusal(message: string): Error {
  return Object.assign(new Error(message), { code: 'API_CALL_REFUSED' });
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function run(
  code: string,
  options: { host?: SandboxHost; steps?: { records: unknown[] }[]; limits?: Partial<SandboxLimits>; signal?: AbortSignal } = {},
): Promise<ProgramRun> {
  const limits = { ...LIMITS, ...options.limits };
  return runProgram({ code, steps: options.steps ?? [], host: options.host ?? new FakeHost(), limits, signal: options.signal });
}

async function failureOf(running: Promise<unknown>): Promise<SandboxError> {
  const outcome = await running.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
  if (!('error' in outcome)) throw new Error(`expected the run to fail, it returned ${JSON.stringify(outcome.value)}`);
  expect(outcome.error).toBeInstanceOf(SandboxError);
  return outcome.error as SandboxError;
}

function expectNoHostStack(message: string): void {
  expect(message).not.toMatch(/node_modules|node:internal|\.ts:\d+|file:\/\//);
}

describe('runProgram: results, steps and the host API', () => {
  it('takes every limit from the configuration, whose defaults are the documented ones', async () => {
    expect(loadConfig({}).sandbox).toEqual({
      memoryBytes: 64 * MIB,
      cpuTimeMs: 5_000,
      maxResultBytes: 5 * MIB,
      maxLogBytes: 64 * 1024,
      maxRequests: 200,
      maxConcurrentRequests: 5,
      maxResponseBytes: 5 * MIB,
      requestTimeoutMs: 10_000,
      maxPages: 20,
      maxProgressReports: 100,
      maxProgressChars: 1_000,
    });
    const missingOne: Partial<SandboxLimits> = { ...LIMITS };
    delete missingOne.maxProgressChars;
    await expect(runProgram({ code: 'return 1', steps: [], host: new FakeHost(), limits: missingOne as SandboxLimits })).rejects.toThrow(
      'sandbox limit maxProgressChars must be a number of at least 0, not undefined',
    );
  });

  it('returns a JSON value computed from steps[0].records', async () => {
    const steps = [{ records: [{ region: 'north', amount: 3 }, { region: 'south', amount: 4 }] }, { records: [{ x: 1 }] }];
    const result = await run(
      `const total = steps[0].records.reduce((sum, r) => sum + r.amount, 0);
       steps[0].records.push({ region: 'mutated', amount: 100 });
       return { total, regions: steps[0].records.slice(0, 2).map((r) => r.region), second: steps[1].records };`,
      { steps },
    );
    expect(result).toEqual({ value: { total: 7, regions: ['north', 'south'], second: [{ x: 1 }] }, logs: [], requests: 0 });
    expect(steps[0]?.records).toHaveLength(2);
  });

  it('returns null for undefined, and evaluates getters and toJSON inside the sandbox', async () => {
    expect((await run('return undefined')).value).toBeNull();
    const result = await run(`return { get answer() { return 6 * 7; }, when: { toJSON: () => 'later' }, skipped: undefined };`);
    expect(result.value).toEqual({ answer: 42, when: 'later' });
  });

  it('passes api.call params to the host as a JSON copy and resolves with the parsed result', async () => {
    const host = new FakeHost(({ operationId, params }) => ({ operationId, echoed: params, at: new Date(0), dropped: undefined }));
    const result = await run(
      `const params = { status: 'open', since: new Date(0), nested: { ids: [1, 2] }, skip: undefined };
       const pending = api.call('listOrders', params);
       params.status = 'changed after the call';
       params.nested.ids.push(3);
       const answer = await pending;
       return { answer, isPlainObject: Object.getPrototypeOf(answer) === Object.prototype };`,
      { host },
    );
    expect(host.calls).toEqual([
      { operationId: 'listOrders', params: { status: 'open', since: '1970-01-01T00:00:00.000Z', nested: { ids: [1, 2] } } },
    ]);
    expect(result.value).toEqual({
      answer: {
        operationId: 'listOrders',
        echoed: { status: 'open', since: '1970-01-01T00:00:00.000Z', nested: { ids: [1, 2] } },
        at: '1970-01-01T00:00:00.000Z',
      },
      isPlainObject: true,
    });
    expect(result.requests).toBe(1);
  });

  it('rejects api.call with an Error carrying the host message, and no host stack, when the host fails', async () => {
    const host = new FakeHost(() => {
      throw new Error('upstream answered 503');
    });
    const result = await run(
      `try {
         await api.call('getUser', { id: 1 });
         return 'not reached';
       } catch (error) {
         return { isError: error instanceof Error, message: error.message, code: error.code ?? null, stack: String(error.stack) };
       }`,
      { host },
    );
    const value = result.value as { isError: boolean; message: string; code: unknown; stack: string };
    expect(value).toMatchObject({ isError: true, message: 'upstream answered 503', code: null });
    expectNoHostStack(value.stack);
  });

  it('fails the run with the host error message when the program does not catch a failed call', async () => {
    const host = new FakeHost(() => Promise.reject(new Error('connection reset')));
    const error = await failureOf(run(`await api.call('getUser', {}); return 1;`, { host }));
    expect(error.code).toBe('SANDBOX_ERROR');
    expect(error.message).toContain('connection reset');
  });

  it('rejects api.call inside the program when the host returns something JSON cannot carry', async () => {
    const host = new FakeHost(() => ({ count: 10n }));
    const result = await run(`try { return await api.call('count', {}); } catch (error) { return 'rejected: ' + error.message; }`, { host });
    expect(result.value).toBe('rejected: the API returned a value that is not JSON');
  });

  it('hands an API body given as JsonText to the program as it came, parsed on the worker, and rejects one that is not JSON', async () => {
    const host = new FakeHost(({ operationId }) => new JsonText(operationId === 'good' ? '{"users": [{"id": 1}], "n": 1.5}' : '<html>oops</html>'));
    const good = await run(`return await api.call('good', {});`, { host });
    expect(good.value).toEqual({ users: [{ id: 1 }], n: 1.5 });
    const bad = await run(`try { await api.call('bad', {}); } catch (error) { return [error.code, error.message]; }`, { host });
    expect(bad.value).toEqual(['API_CALL_FAILED', 'the API answered with a body that is not JSON']);
  });

  it('rejects api.call inside the program when params is not a plain object', async () => {
    const host = new FakeHost();
    const result = await run(
      `const messages = [];
       for (const params of [[1, 2], 'text', null]) {
         try { await api.call('op', params); } catch (error) { messages.push(error.message); }
       }
       return messages;`,
      { host },
    );
    expect(result.value).toEqual(Array(3).fill('api.call(operationId, params): params must be a plain object'));
    expect(host.calls).toEqual([]);
  });

  it('never has more than maxConcurrentRequests calls in flight; the rest wait in order and all complete', async () => {
    const host = new FakeHost(async ({ params }) => {
      await delay(20);
      return { n: params['n'] };
    });
    const result = await run(`return await Promise.all([0, 1, 2, 3, 4, 5].map((n) => api.call('slow', { n })));`, {
      host,
      limits: { maxConcurrentRequests: 2 },
    });
    expect(result.value).toEqual([0, 1, 2, 3, 4, 5].map((n) => ({ n })));
    expect(host.maxInFlight).toBe(2);
    expect(host.calls.map((call) => call.params['n'])).toEqual([0, 1, 2, 3, 4, 5]);
    expect(result.requests).toBe(6);
  });

  it('reports progress to the host (as a string, capped at 1,000 characters) and keeps console.log lines', async () => {
    const host = new FakeHost();
    const result = await run(
      `progress('fetching users');
       progress(42);
       progress('x'.repeat(5000));
       console.log('users', 3, { active: true }, [1, 'two'], null, undefined);
       console.log('done');
       return 'ok';`,
      { host },
    );
    expect(host.progressMessages).toEqual(['fetching users', '42', 'x'.repeat(1000)]);
    expect(result.logs).toEqual(['users 3 {"active":true} [1,"two"] null undefined', 'done']);
  });

  it('passes on at most maxProgressReports progress messages, each cut to maxProgressChars: the first as they come, the newest once the program returns', async () => {
    const host = new FakeHost();
    await run(`for (let i = 0; i < 10; i++) progress(i + ' of ten reports'); return 1;`, {
      host,
      limits: { maxProgressReports: 3, maxProgressChars: 4 },
    });
    expect(host.progressMessages).toEqual(['0 of', '1 of', '9 of']);
  });

  it('keeps console.log output up to maxLogBytes, then drops lines and says so once', async () => {
    const result = await run(`for (let i = 0; i < 50; i++) console.log('line ' + String(i).padStart(2, '0') + ' ' + 'z'.repeat(10)); return 1;`, {
      limits: { maxLogBytes: 100 },
    });
    expect(result.logs.at(-1)).toBe('[log truncated]');
    expect(result.logs.filter((line) => line === '[log truncated]')).toHaveLength(1);
    const kept = result.logs.slice(0, -1);
    expect(kept[0]).toBe('line 00 zzzzzzzzzz');
    expect(kept.join('').length).toBeLessThanOrEqual(100);
    expect(kept.length).toBeGreaterThan(0);
  });
});

describe('runProgram: limits', () => {
  it('stops an infinite synchronous loop at the CPU limit, even inside try/catch', async () => {
    for (const code of ['while (true) {}', 'try { for (;;) {} } catch (error) {} return "escaped";']) {
      const error = await failureOf(run(code, { limits: { cpuTimeMs: 100 } }));
      expect(error.code).toBe('SANDBOX_TIMEOUT');
      expect(error.message).toMatch(/CPU/);
      expect(error.retryable).toBe(false);
    }
  });

  it('stops an infinite loop that starts after an await', async () => {
    const error = await failureOf(run(`await api.call('ping', {}); for (;;) {}`, { limits: { cpuTimeMs: 100 } }));
    expect(error.code).toBe('SANDBOX_TIMEOUT');
    expect(error.message).toMatch(/CPU/);
  });

  it('stops an endless chain of promise jobs at the CPU limit', async () => {
    const error = await failureOf(run(`for (;;) await null;`, { limits: { cpuTimeMs: 100 } }));
    expect(error.code).toBe('SANDBOX_TIMEOUT');
  });

  it(
    'stops a loop of long native calls, between which QuickJS rarely checks its interrupt handler, at the CPU limit',
    { timeout: 30_000 },
    async () => {
      const error = await failureOf(run(`const s = 'x'.repeat(1e6); for (;;) s.split('');`, { limits: { cpuTimeMs: 200 } }));
      expect(error.code).toBe('SANDBOX_TIMEOUT');
      expect(error.message).toMatch(/CPU/);
    },
  );

  it('leaves the server thread free while a program spins: a timer on it can abort the run', async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const error = await failureOf(run('while (true) {}', { limits: { cpuTimeMs: 10_000 }, signal: controller.signal }));
    expect(error.code).toBe('SANDBOX_ABORTED');
  });

  it('stops a program awaiting a promise that never settles at the wall clock limit', async () => {
    const error = await failureOf(run('await new Promise(() => {});', { limits: { wallClockMs: 300 } }));
    expect(error.code).toBe('SANDBOX_TIMEOUT');
    expect(error.message).toMatch(/wall clock/);
  });

  it('stops a program waiting on a host call that never returns at the wall clock limit', async () => {
    const host = new FakeHost(() => new Promise(() => {}));
    const error = await failureOf(run(`return await api.call('hang', {});`, { host, limits: { wallClockMs: 300 } }));
    expect(error.code).toBe('SANDBOX_TIMEOUT');
    expect(error.message).toMatch(/wall clock/);
    expect(error.retryable).toBe(true);
    expect(host.calls).toHaveLength(1);
  });

  it('stops a memory bomb of strings at the memory limit', async () => {
    const error = await failureOf(run(`let a = []; while (true) a.push('x'.repeat(1e6));`, { limits: { memoryBytes: 16 * MIB } }));
    expect(error.code).toBe('SANDBOX_MEMORY');
  });

  it('stops typed arrays held on the global object at the memory limit', async () => {
    const error = await failureOf(
      run(`globalThis.keep = []; for (;;) keep.push(new Uint8Array(1 << 20));`, { limits: { memoryBytes: 16 * MIB, cpuTimeMs: 20_000 } }),
    );
    expect(error.code).toBe('SANDBOX_MEMORY');
  });

  it('caps the whole heap near memoryBytes, not just each allocation', async () => {
    const result = await run(
      `globalThis.keep = [];
       try { for (;;) keep.push(new Uint8Array(1 << 20)); } catch (error) { return { mib: keep.length, message: error.message }; }`,
      { limits: { memoryBytes: 16 * MIB } },
    );
    const { mib, message } = result.value as { mib: number; message: string };
    expect(message).toBe('out of memory');
    expect(mib).toBeGreaterThanOrEqual(12);
    expect(mib).toBeLessThanOrEqual(17);
  });

  it('stops huge strings', async () => {
    const tooLong = await failureOf(run(`return 'x'.repeat(2 ** 30).length;`));
    expect(tooLong.code).toBe('SANDBOX_MEMORY');
    const overLimit = await failureOf(run(`return 'x'.repeat(2 ** 26).length;`, { limits: { memoryBytes: 16 * MIB } }));
    expect(overLimit.code).toBe('SANDBOX_MEMORY');
    // Concatenation builds ropes, so doubling reaches QuickJS's longest string ('string too long') within the heap.
    const doubled = await failureOf(run(`let s = 'x'; while (true) s += s;`, { limits: { memoryBytes: 16 * MIB } }));
    expect(doubled).toMatchObject({ code: 'SANDBOX_MEMORY', message: 'the program tried to build a string longer than the sandbox allows' });
  });

  it('stops deep recursion with a stack overflow', async () => {
    const error = await failureOf(run(`function dive(n) { return dive(n + 1) + 1; } return dive(0);`));
    expect(error.code).toBe('SANDBOX_MEMORY');
    expect(error.message).toMatch(/stack overflow/);
  });

  it('stops a result nested too deeply to serialise', async () => {
    const error = await failureOf(
      run(`let o = {}; for (let i = 0; i < 20000; i++) o = { o }; return o;`, { limits: { cpuTimeMs: 20_000 } }),
    );
    expect(error.code).toBe('SANDBOX_MEMORY');
    expect(error.message).toMatch(/stack overflow/);
  });

  it('fails the run when an API response does not fit in the memory limit', async () => {
    const host = new FakeHost(() => ({ data: 'q'.repeat(20 * MIB) }));
    const error = await failureOf(run(`const r = await api.call('export', {}); return r.data.length;`, { host, limits: { memoryBytes: 16 * MIB } }));
    expect(error.code).toBe('SANDBOX_MEMORY');
  });

  it('measures the result as UTF-8 JSON against maxResultBytes', async () => {
    const limits = { maxResultBytes: 1_000 };
    expect((await run(`return 'x'.repeat(990);`, { limits })).value).toHaveLength(990);
    const ascii = await failureOf(run(`return 'x'.repeat(2000);`, { limits }));
    expect(ascii.code).toBe('SANDBOX_RESULT_TOO_LARGE');
    const multiByte = await failureOf(run(`return 'é'.repeat(600);`, { limits }));
    expect(multiByte.code).toBe('SANDBOX_RESULT_TOO_LARGE');
  });

  it('rejects the call after maxRequests and fails the run with API_REQUEST_LIMIT even if the program catches it', async () => {
    const host = new FakeHost(() => ({ ok: true }));
    const error = await failureOf(
      run(
        `let refused = 0;
         for (let i = 0; i < 201; i++) {
           try { await api.call('ping', { i }); } catch (error) { refused += 1; }
         }
         return refused;`,
        { host },
      ),
    );
    expect(error.code).toBe('API_REQUEST_LIMIT');
    expect(host.calls).toHaveLength(200);
  });

  it('lets the program catch an ordinary API failure (a 404) and go on, with the error code visible', async () => {
    const host = new FakeHost(async () => {
      throw Object.assign(new Error('the API answered HTTP 404'), { code: 'API_CALL_FAILED', retryable: false });
    });
    const run = await runProgram({
      code: "try { await api.call('getUser', { id: 5 }); } catch (error) { return { caught: error.message, code: error.code }; }",
      steps: [],
      host,
      limits: LIMITS,
    });
    expect(run.value).toEqual({ caught: 'the API answered HTTP 404', code: 'API_CALL_FAILED' });
  });

  it("fails the run with the API's code and retryable flag when the program lets an API failure escape", async () => {
    const host = new FakeHost(async () => {
      throw Object.assign(new Error('the API answered 503: try later'), { code: 'API_CALL_FAILED', retryable: true });
    });
    const escaped = await failureOf(run("return await api.call('getUser', { id: 5 });", { host }));
    expect(escaped).toMatchObject({ code: 'API_CALL_FAILED', message: 'the API answered 503: try later', retryable: true });
    // Rethrowing the same error is letting it escape; an error of the program's own making stays SANDBOX_ERROR,
    // even when it copies the code (it cannot claim a message the API never sent).
    const rethrown = await failureOf(run("try { await api.call('getUser', {}); } catch (error) { throw error; }", { host }));
    expect(rethrown).toMatchObject({ code: 'API_CALL_FAILED', retryable: true });
    for (const code of [
      "try { await api.call('getUser', {}); } catch (error) { throw new Error(error.message); }",
      "throw Object.assign(new Error('the API answered 500: invented'), { code: 'API_CALL_FAILED' });",
    ]) {
      expect(await failureOf(run(code, { host }))).toMatchObject({ code: 'SANDBOX_ERROR', retryable: false });
    }
  });

  it('fails the run with a host refusal even when the program catches it, and sends no further calls', async () => {
    const host = new FakeHost(({ operationId }) => {
      if (operationId === 'deleteEverything') throw refusal('deleteEverything is not allowed for this tenant');
      return { ok: true };
    });
    const error = await failureOf(
      run(
        `try {
           await api.call('deleteEverything', {});
         } catch (error) {
           progress('caught ' + error.code + ': ' + error.message);
         }
         await api.call('listUsers', {}).catch(() => {});
         return 'carried on';`,
        { host },
      ),
    );
    expect(error.code).toBe('API_CALL_REFUSED');
    expect(error.message).toBe('deleteEverything is not allowed for this tenant');
    expect(host.progressMessages).toEqual(['caught API_CALL_REFUSED: deleteEverything is not allowed for this tenant']);
    expect(host.calls.map((call) => call.operationId)).toEqual(['deleteEverything']);
  });

  it('ends the run with SANDBOX_ABORTED when the signal aborts, and does not start one already aborted', async () => {
    const controller = new AbortController();
    const host = new FakeHost(() => new Promise(() => {}));
    setTimeout(() => controller.abort(), 50);
    const aborted = await failureOf(run(`return await api.call('hang', {});`, { host, signal: controller.signal }));
    expect(aborted.code).toBe('SANDBOX_ABORTED');

    const idleHost = new FakeHost();
    const notStarted = await failureOf(run(`await api.call('ping', {}); return 1;`, { host: idleHost, signal: AbortSignal.abort() }));
    expect(notStarted.code).toBe('SANDBOX_ABORTED');
    expect(idleHost.calls).toEqual([]);
  });

  it('ends the run with SANDBOX_TIMEOUT when the signal aborts because time is up (a step that ran out of time)', async () => {
    // The reason AbortSignal.timeout gives, sent once the program waits on the host.
    const stepTime = new AbortController();
    const host = new FakeHost(() => {
      stepTime.abort(new DOMException('the step ran out of time', 'TimeoutError'));
      return new Promise(() => {});
    });
    const timedOut = await failureOf(run(`return await api.call('hang', {});`, { host, signal: stepTime.signal }));
    expect(timedOut).toMatchObject({ code: 'SANDBOX_TIMEOUT', retryable: true });
    expect(timedOut.message).toMatch(/wall clock limit of 30000 ms/);
  });
});

describe('runProgram: isolation and errors', () => {
  it('exposes no Node globals, and constructor escapes reach only the QuickJS global', async () => {
    const result = await run(`
      const viaThis = this.constructor.constructor('return this')();
      const viaFunction = Function('return this')();
      const viaApi = await api.call.constructor('return globalThis')();
      const names = (g) => Object.getOwnPropertyNames(g);
      return {
        types: [typeof process, typeof require, typeof fetch, typeof setTimeout, typeof setInterval, typeof Buffer, typeof module],
        sameGlobal: viaThis === globalThis && viaFunction === globalThis && viaApi === globalThis,
        process: [typeof viaThis.process, typeof viaFunction.process, typeof viaApi.process],
        nodeNames: names(viaApi).filter((n) => ['process', 'require', 'Buffer', 'global', 'fetch', 'setTimeout'].includes(n)),
        ownGlobals: Object.keys(globalThis).sort(),
      };`);
    expect(result.value).toEqual({
      types: Array(7).fill('undefined'),
      sameGlobal: true,
      process: ['undefined', 'undefined', 'undefined'],
      nodeNames: [],
      ownGlobals: ['api', 'console', 'progress', 'steps'],
    });
  });

  it('reports a syntax error as SANDBOX_ERROR', async () => {
    const error = await failureOf(run(`return {`));
    expect(error.code).toBe('SANDBOX_ERROR');
    expect(error.message).toMatch(/SyntaxError/);
  });

  it('surfaces the message of an error the program throws, without a stack trace', async () => {
    const error = await failureOf(run(`throw new TypeError('no records matched the filter');`));
    expect(error.code).toBe('SANDBOX_ERROR');
    expect(error.message).toContain('TypeError: no records matched the filter');
    expect(error.message).not.toMatch(/\n\s+at /);
    expectNoHostStack(error.message);
    const thrownString = await failureOf(run(`throw 'plain words';`));
    expect(thrownString.message).toContain('plain words');
  });

  it('reports a result that is not JSON as SANDBOX_ERROR', async () => {
    for (const [code, message] of [
      ['return () => 1;', /not a JSON value/],
      ['const o = {}; o.self = o; return o;', /circular/],
      ['return 10n;', /BigInt/i],
    ] as const) {
      const error = await failureOf(run(code));
      expect(error.code).toBe('SANDBOX_ERROR');
      expect(error.message).toMatch(message);
    }
  });

  it('keeps serving after a memory bomb, a timeout and a stack overflow', async () => {
    // Generous CPU limits where the point is memory, so a loaded machine cannot turn them into timeouts.
    const roomy = { memoryBytes: 16 * MIB, cpuTimeMs: 20_000 };
    expect((await failureOf(run(`let a = []; while (true) a.push('x'.repeat(1e6));`, { limits: roomy }))).code).toBe('SANDBOX_MEMORY');
    expect((await failureOf(run(`while (true) {}`, { limits: { cpuTimeMs: 200 } }))).code).toBe('SANDBOX_TIMEOUT');
    expect(
      (await failureOf(run(`let o = {}; for (let i = 0; i < 20000; i++) o = { o }; return o;`, { limits: roomy }))).code,
    ).toBe('SANDBOX_MEMORY');
    const after = await run(`return steps[0].records.map((r) => r.n * 2);`, { steps: [{ records: [{ n: 1 }, { n: 2 }] }] });
    expect(after.value).toEqual([2, 4]);
  });

  it('runs programs side by side without one run affecting another', async () => {
    const [bomb, normal] = await Promise.allSettled([
      run(`globalThis.keep = []; for (;;) keep.push(new Uint8Array(1 << 20));`, { limits: { memoryBytes: 16 * MIB } }),
      run(`const r = await api.call('ping', {}); return r.operationId;`),
    ]);
    expect(bomb.status === 'rejected' && (bomb.reason as SandboxError).code).toBe('SANDBOX_MEMORY');
    expect(normal.status === 'fulfilled' && normal.value.value).toBe('ping');
  });
});
