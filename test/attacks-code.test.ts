import diagnosticsChannel from 'node:diagnostics_channel';
import type { ClientRequest, IncomingMessage, Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createTenant } from '../src/admin/tenants.js';
import { DEMO_TENANT_ID } from '../src/db/demo-data.js';
import { tenants } from '../src/db/tables.js';
import { startSilentApi, type SilentApi } from './fixtures/silent-api.js';
import {
  bearer,
  expectOnlyTheFailedRun,
  expectStillServing,
  startAttackTarget,
  snapshot,
  type AttackTarget,
} from './support/attacks.js';
import { backends } from './support/database.js';
import { runPlan } from './support/plans.js';
import type { TestClient } from './support/server.js';

/**
 * Hostile programs a client sends as an API step's `code`, run against the demo tenant's API. The
 * plan is valid input, so it is stored and runs; the step must fail with `code`, the demo API must
 * have received exactly `demoApiPaths` (nothing for most rows), nothing may be stored or changed,
 * and the next plan must run. The limits are small (test/support/attacks.ts): 300 ms of CPU, 16 MB
 * of memory, 64 KiB of result, 10 requests.
 */
interface CodeAttack {
  name: string;
  code: string;
  expected:
    | 'SANDBOX_ERROR'
    | 'SANDBOX_TIMEOUT'
    | 'SANDBOX_MEMORY'
    | 'SANDBOX_RESULT_TOO_LARGE'
    | 'API_CALL_REFUSED'
    | 'API_CALL_FAILED'
    | 'API_REQUEST_LIMIT';
  message: RegExp;
  /** The request paths the demo API received, in order; none when absent. */
  demoApiPaths?: string[];
  stepTimeoutMs?: number;
  /**
   * When set, the program runs as a tenant whose API keeps requests waiting (test/fixtures/silent-api.ts):
   * the paths that API received, sorted, each of whose sockets must be closed once the step has ended.
   */
  silentApiPaths?: string[];
}

/** Names that would mean the program reached the host (Node, the sandbox's own plumbing, or I/O). */
const HOST_NAMES =
  'process|require|module|exports|Buffer|global|__dirname|__filename|fetch|XMLHttpRequest|WebSocket|setTimeout|setInterval|setImmediate|queueMicrotask|std|os|Deno|Bun|hostCall|hostLog|hostProgress|host|install|serializeResult|describeError|reserve';

const CODE_ATTACKS: CodeAttack[] = [
  // Reaching the host from inside QuickJS.
  { name: 'require', code: "return [require('fs').readFileSync('/etc/passwd', 'utf8')];", expected: 'SANDBOX_ERROR', message: /'require' is not defined/ },
  { name: 'process', code: 'process.exit(1);', expected: 'SANDBOX_ERROR', message: /'process' is not defined/ },
  { name: 'dynamic import()', code: "const fs = await import('node:fs'); return [fs.readFileSync('/etc/passwd', 'utf8')];", expected: 'SANDBOX_ERROR', message: /node:fs|module|import/i },
  {
    name: "Function('return this')() reaches only the QuickJS global",
    code: "const g = Function('return this')(); return [g.process.mainModule.require('child_process').execSync('id').toString()];",
    expected: 'SANDBOX_ERROR',
    message: /cannot read property 'mainModule' of undefined/i,
  },
  {
    name: "constructor.constructor('return process')()",
    code: "const p = (function () {}).constructor.constructor('return process')(); return [p.pid];",
    expected: 'SANDBOX_ERROR',
    message: /'process' is not defined/,
  },
  {
    name: "api.call.constructor('return process')() (a host-provided function's constructor)",
    code: "const p = await api.call.constructor('return process')(); return [p.pid];",
    expected: 'SANDBOX_ERROR',
    message: /'process' is not defined/,
  },
  {
    name: 'globalThis holds no host object (the program reports what it found)',
    code: `const host = Object.getOwnPropertyNames(globalThis).filter((name) => /^(${HOST_NAMES})$/.test(name));
           const apiKeys = Object.getOwnPropertyNames(api);
           throw new Error('host objects on globalThis: [' + host.join(',') + '] api: [' + apiKeys.join(',') + ']');`,
    expected: 'SANDBOX_ERROR',
    message: /host objects on globalThis: \[\] api: \[call\]$/,
  },
  // Exhausting the sandbox.
  // Text PostgreSQL cannot store (NUL, a lone surrogate) in what the program reports: stored with U+FFFD instead.
  {
    name: 'NUL and a lone surrogate in a progress message and an error message',
    code: "progress('half \\u0000 way \\ud800'); throw new Error('bad \\ud800 and \\u0000 end');",
    expected: 'SANDBOX_ERROR',
    message: /bad \uFFFD and \uFFFD end/,
  },
  { name: 'an infinite loop', code: 'while (true) {}', expected: 'SANDBOX_TIMEOUT', message: /CPU time limit of 300 ms/ },
  { name: 'an await that never resolves', code: 'await new Promise(() => {}); return [];', expected: 'SANDBOX_TIMEOUT', message: /wall clock limit/, stepTimeoutMs: 500 },
  { name: 'a memory bomb (an array of megabyte strings)', code: "const a = []; while (true) a.push('x'.repeat(1e6));", expected: 'SANDBOX_MEMORY', message: /memory/i },
  { name: 'a string doubling itself past the longest string QuickJS allows', code: "let s = 'x'; while (true) s += s;", expected: 'SANDBOX_MEMORY', message: /string longer than the sandbox allows/ },
  {
    name: 'a result over the limit (about 200 KiB)',
    code: "return Array.from({ length: 2000 }, (_, i) => ({ i, pad: 'x'.repeat(100) }));",
    expected: 'SANDBOX_RESULT_TOO_LARGE',
    message: /65536/,
  },
  // Calls outside the catalog, and requests that would leave the API's base URL.
  { name: 'an operation outside the catalog', code: "return [await api.call('deleteUser', { id: 1 })];", expected: 'API_CALL_REFUSED', message: /unknown operation "deleteUser"/ },
  {
    name: 'an absolute URL as the operation (cloud metadata)',
    code: "return [await api.call('http://169.254.169.254/latest/meta-data/', {})];",
    expected: 'API_CALL_REFUSED',
    message: /unknown operation "http:\/\/169\.254\.169\.254/,
  },
  { name: 'a relative path as the operation', code: "return [await api.call('/users/1/../../admin', {})];", expected: 'API_CALL_REFUSED', message: /unknown operation/ },
  { name: 'a parameter the operation does not declare (url)', code: "return [await api.call('getUser', { id: 1, url: 'http://169.254.169.254/' })];", expected: 'API_CALL_REFUSED', message: /getUser has no parameter "url"/ },
  { name: 'a dot-dot path parameter', code: "return [await api.call('getUser', { id: '..' })];", expected: 'API_CALL_REFUSED', message: /cannot be empty, "\." or "\.\."/ },
  {
    name: "path traversal in a path parameter ('../../admin')",
    code: "return [await api.call('getUser', { id: '../../admin' })];",
    expected: 'API_CALL_FAILED',
    message: /400: id must be a positive integer/,
    demoApiPaths: ['/users/..%2F..%2Fadmin'],
  },
  {
    name: "another host in a path parameter ('1@169.254.169.254')",
    code: "return [await api.call('getUser', { id: '1@169.254.169.254' })];",
    expected: 'API_CALL_FAILED',
    message: /400: id must be a positive integer/,
    demoApiPaths: ['/users/1%40169.254.169.254'],
  },
  {
    name: "an encoded traversal in a path parameter ('%2e%2e%2f')",
    code: "return [await api.call('getUser', { id: '%2e%2e%2f' })];",
    expected: 'API_CALL_FAILED',
    message: /400: id must be a positive integer/,
    demoApiPaths: ['/users/%252e%252e%252f'],
  },
  {
    name: 'a query string and fragment in a path parameter',
    code: "return [await api.call('getUser', { id: '1?admin=true#' })];",
    expected: 'API_CALL_FAILED',
    message: /400: id must be a positive integer/,
    demoApiPaths: ['/users/1%3Fadmin%3Dtrue%23'],
  },
  {
    name: 'a header injected through a path parameter (CRLF)',
    code: "return [await api.call('getUser', { id: '1\\r\\nX-Injected: yes' })];",
    expected: 'API_CALL_FAILED',
    message: /400: id must be a positive integer/,
    demoApiPaths: ['/users/1%0D%0AX-Injected%3A%20yes'],
  },
  {
    name: 'a second query parameter smuggled into a query value',
    code: "return [await api.call('listUsers', { status: 'active&limit=100000' })];",
    expected: 'API_CALL_FAILED',
    message: /400: status must be one of/,
    demoApiPaths: ['/users?status=active%26limit%3D100000'],
  },
  {
    name: 'more requests than the step may make',
    code: "for (let i = 0; i < 11; i++) await api.call('getUser', { id: 1 }); return [];",
    expected: 'API_REQUEST_LIMIT',
    message: /more than 10 api\.call requests/,
    demoApiPaths: Array<string>(10).fill('/users/1'),
  },
  // Requests that would outlive their step (the API request timeout is 600 s here).
  {
    name: 'a request the API never answers, still awaited when the step runs out of time',
    code: "return [await api.call('waitForever', {})];",
    expected: 'SANDBOX_TIMEOUT',
    message: /wall clock limit/,
    stepTimeoutMs: 3_000,
    silentApiPaths: ['/wait-forever'],
  },
  {
    name: 'a request left in flight by a program that then throws',
    code: "api.call('waitForever', {}); await api.call('answerOnceOneWaits', {}); throw new Error('leaving a request behind');",
    expected: 'SANDBOX_ERROR',
    message: /leaving a request behind/,
    silentApiPaths: ['/answer-once-one-waits', '/wait-forever'],
  },
];

interface SeenRequest {
  /** The port of the server that received it, or the host header a client sent it with. */
  where: string;
  path: string;
}

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`hostile API step programs on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let target: AttackTarget;
    let silentApi: SilentApi;
    let silentApiUrl: URL;
    /** Requests as the tenant whose API is silentApi. */
    let silent: TestClient;
    let demoApi: URL;
    let graphqlHost: string;
    // Every HTTP request this process received or sent while a case ran (the server runs in-process).
    let received: SeenRequest[] = [];
    let sent: SeenRequest[] = [];
    const onServerRequest = (message: unknown) => {
      const { request, server } = message as { request: IncomingMessage; server: Server };
      received.push({ where: String((server.address() as AddressInfo).port), path: request.url ?? '' });
    };
    const onClientRequest = (message: unknown) => {
      const { request } = message as { request: ClientRequest };
      sent.push({ where: String(request.getHeader('host')), path: request.path });
    };

    beforeAll(async () => {
      silentApi = await startSilentApi();
      silentApiUrl = new URL(silentApi.url);
      target = await startAttackTarget(backend, { STEPCAST_API_REQUEST_TIMEOUT_MS: '600000' });
      const { database, secrets } = target.server.app;
      await createTenant(database, secrets, { name: 'Silent', id: 'silent', apiBaseUrl: silentApi.url, openapi: silentApi.openapi });
      silent = target.server.as(bearer((await createApiKey(database, 'silent', 'attacks')).token));
      const [demo] = await target.server.app.database.db
        .select({ apiBaseUrl: tenants.apiBaseUrl })
        .from(tenants)
        .where(eq(tenants.id, DEMO_TENANT_ID));
      demoApi = new URL(demo!.apiBaseUrl!);
      graphqlHost = new URL(target.server.url).host;
      diagnosticsChannel.subscribe('http.server.request.start', onServerRequest);
      diagnosticsChannel.subscribe('http.client.request.start', onClientRequest);
    });
    afterAll(async () => {
      diagnosticsChannel.unsubscribe('http.server.request.start', onServerRequest);
      diagnosticsChannel.unsubscribe('http.client.request.start', onClientRequest);
      await target?.server.close();
      await silentApi?.close();
    });

    for (const attack of CODE_ATTACKS) {
      it(`${attack.name}: fails ${attack.expected}, changes and keeps nothing, and the next plan runs`, async () => {
        const { database } = target.server.app;
        const before = await snapshot(database);
        received = [];
        sent = [];

        const { id, execution } = await runPlan(
          attack.silentApiPaths ? silent : target.demo,
          { query: attack.name, steps: [{ kind: 'API', queryContext: attack.name, code: attack.code }] },
          { stepTimeoutMs: attack.stepTimeoutMs ?? 5_000 },
        );

        // (1) The code, on the step and on the execution.
        const step = execution.steps[0]!;
        expect(step.status).toBe('FAILED');
        expect(step.error?.code).toBe(attack.expected);
        expect(step.error?.message).toMatch(attack.message);
        expect(execution.status).toBe('FAILED');
        expect(execution.error?.code).toBe(attack.expected);

        // What reached the network: the demo API's own paths on its own port, and nothing anywhere else.
        const expectedPaths = attack.demoApiPaths ?? [];
        expect(received.filter((request) => request.where === demoApi.port)).toEqual(
          expectedPaths.map((path) => ({ where: demoApi.port, path })),
        );
        expect(sent.filter((request) => request.where !== graphqlHost && request.where !== silentApiUrl.host)).toEqual(
          expectedPaths.map((path) => ({ where: demoApi.host, path })),
        );
        const silentPaths = attack.silentApiPaths ?? [];
        expect(received.filter((request) => request.where === silentApiUrl.port).map((request) => request.path).sort()).toEqual(silentPaths);
        expect(sent.filter((request) => request.where === silentApiUrl.host).map((request) => request.path).sort()).toEqual(silentPaths);
        // None of them outlives the step: the API sees every socket closed, long before their own timeout.
        await silentApi.allClosed();

        // (2) Nothing changed, and nothing but the failed run itself was stored.
        await expectOnlyTheFailedRun(database, before, id);
        expect(step.result).toBeNull();
        expect(step.recordCount).toBeNull();

        // (3) The next plan runs: the sandbox workers, the demo API and the database are fine.
        await expectStillServing(target.demo);
      });
    }
  });
}
