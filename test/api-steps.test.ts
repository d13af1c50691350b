import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createTenant } from '../src/admin/tenants.js';
import { DEMO_TENANT_ID } from '../src/db/demo-data.js';
import { promptOf, startScriptedLlm, type RecordedRequest, type ScriptedLlm } from './fixtures/scripted-llm.js';
import { startSilentApi, type SilentApi } from './fixtures/silent-api.js';
import { backends } from './support/database.js';
import { ExecuteQueryMutation, StepUpdatesSubscription } from './support/operations.js';
import { describeUpdates, fetchExecution, runPlan, sqlStep } from './support/plans.js';
import { startTestServer, type TestClient, type TestServer } from './support/server.js';

const apiStep = (code: string, extra = {}) => ({ kind: 'API' as const, queryContext: `program: ${code.slice(0, 40)}`, code, ...extra });
const schemaOf = (request: RecordedRequest) => request.body.response_format?.json_schema?.name;

const APPLICATIONS_OF_USERS = `
const users = steps[0].records;
progress('looking up ' + users.length + ' users');
const answers = await Promise.all(users.map((user) => api.call('listUserApplications', { id: user.id })));
console.log('fetched', answers.length, 'answers');
return users.flatMap((user, i) => answers[i].data.map((app) => ({ user_id: user.id, application: app.name })));
`;

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`API steps on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let llm: ScriptedLlm;
    let server: TestServer;
    let silentApi: SilentApi;
    /** Requests as the demo tenant, whose API is the demo API. */
    let demo: TestClient;
    /** Requests as a tenant whose API keeps requests waiting (test/fixtures/silent-api.ts). */
    let silent: TestClient;
    beforeAll(async () => {
      llm = await startScriptedLlm();
      silentApi = await startSilentApi();
      server = await startTestServer(backend, {
        env: {
          STEPCAST_AUTH: 'on',
          STEPCAST_DEMO: 'on',
          OPENAI_BASE_URL: llm.baseUrl,
          STEPCAST_LLM_MAX_RETRIES: '0',
          STEPCAST_SANDBOX_CPU_MS: '500',
          STEPCAST_SANDBOX_MEMORY_MB: '16',
          STEPCAST_API_MAX_REQUESTS: '20',
          // Far beyond any test's time: only the end of its step can end a request here.
          STEPCAST_API_REQUEST_TIMEOUT_MS: '600000',
        },
      });
      const { database, secrets } = server.app;
      await createTenant(database, secrets, { name: 'Silent', id: 'silent', apiBaseUrl: silentApi.url, openapi: silentApi.openapi });
      demo = server.as(`Bearer ${(await createApiKey(database, DEMO_TENANT_ID)).token}`);
      silent = server.as(`Bearer ${(await createApiKey(database, 'silent')).token}`);
    });
    afterAll(async () => {
      await server?.close();
      await silentApi?.close();
      await llm?.close();
    });

    it('runs a plan written in words end to end: the planner, SQL through the guard, then a program against the demo API', async () => {
      llm.script(
        {
          when: (r) => schemaOf(r) === 'plan',
          replies: [
            {
              content: {
                reasoning: 'Find suspended users in the database, then ask the API for their applications.',
                steps: [
                  { kind: 'SQL', queryContext: 'the first four suspended users', entity: 'users', reasoning: null, critical: true },
                  { kind: 'API', queryContext: 'the applications of those users', entity: 'applications', reasoning: null, critical: true },
                ],
              },
            },
          ],
        },
        {
          when: (r) => schemaOf(r) === 'sql_step',
          replies: [{ content: { sql: "SELECT id, email FROM users WHERE status = 'suspended' ORDER BY id LIMIT 4", explanation: '' } }],
        },
        { when: (r) => schemaOf(r) === 'api_step', replies: [{ content: { code: APPLICATIONS_OF_USERS, explanation: '' } }] },
      );
      const response = await demo.request(ExecuteQueryMutation, { query: 'Which applications do suspended users have?' });
      expect(response.errors).toBeUndefined();
      const id = response.data!.executeQuery.id;
      const updates = (await demo.subscribeWs(StepUpdatesSubscription, { executionId: id })).map((r) => r.data!.stepUpdates);
      expect(describeUpdates(updates)).toEqual([
        'PLAN_CREATED',
        'EXECUTION_STARTED',
        'STEP_STARTED:1',
        'STEP_SUCCEEDED:1',
        'STEP_STARTED:2',
        'STEP_PROGRESS:2',
        'STEP_SUCCEEDED:2',
        'EXECUTION_SUCCEEDED',
      ]);
      expect(updates[5]!.message).toBe('looking up 4 users');

      const execution = await fetchExecution(demo, id);
      expect(execution.status).toBe('SUCCEEDED');
      const [users, applications] = execution.steps;
      expect(applications!.code).toBe(APPLICATIONS_OF_USERS);
      expect(applications!.logs).toEqual(['fetched 4 answers']);
      expect(applications!.columns).toEqual([
        { name: 'user_id', type: 'bigint' },
        { name: 'application', type: 'text' },
      ]);
      const ids = (users!.result as { id: number }[]).map((u) => u.id);
      const truth = await runPlan(demo, {
        query: 'ground truth',
        steps: [sqlStep(`SELECT count(*) AS n FROM app_assignments WHERE user_id IN (${ids.join(', ')})`)],
      });
      expect(truth.execution.steps[0]!.error).toBeNull();
      expect(applications!.recordCount).toBe((truth.execution.finalResult as { n: number }[])[0]!.n);
      expect(execution.usage!.totalTokens).toBe(360);

      const apiPrompt = promptOf(llm.requests.find((r) => schemaOf(r) === 'api_step')!);
      expect(apiPrompt).toContain('listUserApplications GET /users/{id}/applications (id: integer)');
      expect(apiPrompt).toContain('the applications of those users');
      expect(apiPrompt).toContain(JSON.stringify(users!.sample));
      expect(promptOf(llm.requests.find((r) => schemaOf(r) === 'plan')!)).toContain('listUsers GET /users');
    });

    it('runs client code as written, and a later SQL step joins its records as step_N', async () => {
      llm.script();
      const { execution } = await runPlan(demo, {
        query: 'q',
        steps: [
          sqlStep('SELECT id FROM users ORDER BY id LIMIT 3'),
          apiStep(APPLICATIONS_OF_USERS),
          sqlStep('SELECT count(DISTINCT u.id) AS users, count(*) AS assignments FROM step_2 s JOIN users u ON u.id = s.user_id'),
        ],
      });
      expect(llm.requests).toHaveLength(0);
      expect(execution.status).toBe('SUCCEEDED');
      const { users, assignments } = (execution.finalResult as { users: number; assignments: number }[])[0]!;
      expect(users).toBe(3);
      expect(assignments).toBe(execution.steps[1]!.recordCount);
    });

    it('fails each broken or hostile program with its own code, and keeps serving', async () => {
      const cases: [string, string, RegExp][] = [
        ['an infinite loop', 'while (true) {}', /SANDBOX_TIMEOUT/],
        ['an await that never resolves', 'await new Promise(() => {}); return 1;', /SANDBOX_TIMEOUT/],
        ['a memory bomb', "const a = []; while (true) a.push('x'.repeat(1e6));", /SANDBOX_MEMORY/],
        ['a call outside the catalog', "return await api.call('deleteEverything', {});", /API_CALL_REFUSED/],
        ['a method the tenant does not allow', "return await api.call('getUser', { id: 1, method: 'DELETE' });", /API_CALL_REFUSED/],
        ['too many requests', "for (let i = 0; i < 25; i++) await api.call('getUser', { id: 1 }); return 1;", /API_REQUEST_LIMIT/],
        ['a thrown error', "throw new Error('no luck')", /SANDBOX_ERROR/],
      ];
      const { execution } = await runPlan(
        demo,
        {
          query: 'hostile programs',
          steps: [
            ...cases.map(([name, code]) => ({ ...apiStep(code), queryContext: name, critical: false })),
            apiStep("return [{ probe: typeof process + ',' + typeof require + ',' + typeof fetch + ',' + typeof setTimeout, escape: (function () { try { return typeof this.constructor.constructor('return process')(); } catch (e) { return 'threw'; } })() }];"),
          ],
        },
        { stepTimeoutMs: 4_000 },
      );
      cases.forEach(([name, , code], i) => {
        const step = execution.steps[i]!;
        expect(step.status, name).toBe('FAILED');
        expect(step.error!.code, name).toMatch(code);
      });
      expect(execution.steps[1]!.error!.message).toMatch(/wall.clock/i);
      const probe = execution.finalResult as { probe: string; escape: string }[];
      expect(probe[0]!.probe).toBe('undefined,undefined,undefined,undefined');
      expect(probe[0]!.escape).not.toBe('object');
      expect(execution.status).toBe('SUCCEEDED');
    });

    it('counts every page of a paginated call against the request limit', async () => {
      const { execution } = await runPlan(demo, {
        query: 'q',
        steps: [
          apiStep(
            "const a = await api.call('listUsers', { limit: 5, paginate: true }); const b = await api.call('listGroups', { limit: 2, paginate: true }); return [...a.data, ...b.data];",
          ),
        ],
      });
      expect(execution.steps[0]!.error).toMatchObject({ code: 'API_REQUEST_LIMIT' });
    });

    it('lets a program handle an ordinary API error itself', async () => {
      const { execution } = await runPlan(demo, {
        query: 'q',
        steps: [apiStep("try { await api.call('getUser', { id: 999999 }); return []; } catch (error) { return [{ code: error.code, message: error.message }]; }")],
      });
      expect(execution.status).toBe('SUCCEEDED');
      expect(execution.finalResult).toEqual([{ code: 'API_CALL_FAILED', message: expect.stringMatching(/404/) }]);
    });

    it('never shows the program the API credentials', async () => {
      const { execution } = await runPlan(demo, {
        query: 'q',
        steps: [
          apiStep(
            "const user = await api.call('getUser', { id: 1 }); return [{ globals: Object.getOwnPropertyNames(globalThis).join(','), api: JSON.stringify(api), fn: String(api.call), user: JSON.stringify(user) }];",
          ),
        ],
      });
      expect(execution.status).toBe('SUCCEEDED');
      const text = JSON.stringify(execution.finalResult);
      expect(text).not.toMatch(/Bearer|authorization/i);
      expect((execution.finalResult as { user: string }[])[0]!.user).toContain('"id":1');
    });

    it("closes the API request a program still waits on when the step's time runs out, and fails the step SANDBOX_TIMEOUT", async () => {
      const before = silentApi.requests.length;
      const { execution } = await runPlan(
        silent,
        { query: 'q', steps: [apiStep("return [await api.call('waitForever', {})];")] },
        { stepTimeoutMs: 3_000 },
      );
      expect(execution.steps[0]!.status).toBe('FAILED');
      expect(execution.steps[0]!.error).toMatchObject({ code: 'SANDBOX_TIMEOUT', message: expect.stringMatching(/wall clock/) });
      expect(silentApi.requests.slice(before).map((request) => request.path)).toEqual(['/wait-forever']);
      await silentApi.allClosed();
    });

    it('closes an API request the program left in flight when it returned, and keeps the result', async () => {
      const before = silentApi.requests.length;
      const { execution } = await runPlan(silent, {
        query: 'q',
        steps: [apiStep("api.call('waitForever', {}); const answer = await api.call('answerOnceOneWaits', {}); return [answer];")],
      });
      expect(execution.status).toBe('SUCCEEDED');
      expect(execution.finalResult).toEqual([{ answered: true }]);
      expect(silentApi.requests.slice(before).map((request) => request.path).sort()).toEqual(['/answer-once-one-waits', '/wait-forever']);
      await silentApi.allClosed();
    });
  });
}
