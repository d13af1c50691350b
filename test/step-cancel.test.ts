import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createTenant } from '../src/admin/tenants.js';
import { LlmClient } from '../src/agents/llm-client.js';
import { loadConfig, type Config } from '../src/config.js';
import type { StoredPlanStep, TenantRow } from '../src/db/tables.js';
import { StepCancelledError, StepFailure } from '../src/executor/errors.js';
import { ExecutionMemory } from '../src/executor/execution-memory.js';
import { createApiStepHandler } from '../src/executor/steps/api.js';
import { createSqlStepHandler } from '../src/executor/steps/sql.js';
import type { StepContext, StepHandler, StepOutcome } from '../src/executor/steps/step-handler.js';
import { TenantKnowledge } from '../src/executor/tenant-knowledge.js';
import { createLogger } from '../src/logger.js';
import { startScriptedLlm, type RecordedRequest, type ScriptedLlm } from './fixtures/scripted-llm.js';
import { startSilentApi, type SilentApi } from './fixtures/silent-api.js';
import { backends } from './support/database.js';
import { startTestServer, type TestServer } from './support/server.js';
import { settlesWithin } from './support/timing.js';

/** The whole stop, from the abort to the handler's rejection (and the statement gone), must fit in this. */
const STOP_MS = 2_000;
// Runs until something stops it, and passes the SQL guard: no table, no function outside the allowlist.
const ENDLESS_SQL = 'WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) AS n FROM r';
const schemaOf = (request: RecordedRequest) => request.body.response_format?.json_schema?.name;


/** Runs `handler`, and once `running` says its work is under way, aborts with `reason`; the rejection and when it came. */
async function abortWhileRunning(
  handler: StepHandler,
  context: StepContext,
  controller: AbortController,
  running: () => Promise<void>,
  reason: unknown = new StepCancelledError(),
): Promise<{ error: unknown; settledInTime: boolean }> {
  const outcome: Promise<StepOutcome> = handler(context);
  outcome.catch(() => undefined);
  await running();
  controller.abort(reason);
  // Not settled in time, the work may never end: the test fails here rather than wait for it.
  if (!(await settlesWithin(outcome, STOP_MS))) return { error: undefined, settledInTime: false };
  const error = await outcome.then(
    () => undefined,
    (rejection: unknown) => rejection,
  );
  return { error, settledInTime: true };
}

/**
 * A step stopped through its signal (the engine's cancelExecution aborts it with a StepCancelledError):
 * the statement is cancelled in the database, the program interrupted, its API calls and the agents'
 * model calls closed, and the handler rejects with the cancel itself, all within 2 s of the abort.
 */
for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`a cancelled step stops its work on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let llm: ScriptedLlm;
    let silentApi: SilentApi;
    let server: TestServer;
    let config: Config;
    let tenant: TenantRow;
    let sqlHandler: StepHandler;
    let apiHandler: StepHandler;
    /** The service's own connection to the test database (PostgreSQL), to watch pg_stat_activity. */
    let observer: postgres.Sql | undefined;

    beforeAll(async () => {
      llm = await startScriptedLlm();
      silentApi = await startSilentApi();
      // One connection for tenant statements (PostgreSQL), as PGlite has one: a second statement waits for the first.
      server = await startTestServer(backend, { env: { STEPCAST_DEMO_API: 'off', STEPCAST_MAX_CONCURRENT_EXECUTIONS: '1' } });
      config = loadConfig({
        NODE_ENV: 'test',
        OPENAI_BASE_URL: llm.baseUrl,
        STEPCAST_LLM_MAX_RETRIES: '0',
        // Far beyond any test's time: only the abort can stop what these tests start.
        STEPCAST_LLM_TIMEOUT_MS: '600000',
        STEPCAST_SANDBOX_CPU_MS: '600000',
        STEPCAST_API_REQUEST_TIMEOUT_MS: '600000',
      });
      const { database, secrets } = server.app;
      tenant = await createTenant(database, secrets, { name: 'Slow', id: 'slow', apiBaseUrl: silentApi.url, openapi: silentApi.openapi });
      const knowledge = new TenantKnowledge(database, secrets);
      const model = new LlmClient(config.llm, createLogger('silent'));
      sqlHandler = createSqlStepHandler({
        database,
        knowledge,
        llm: model,
        repairRounds: 1,
        maxSqlChars: config.inputLimits.maxSqlChars,
        limits: {
          rowMaxBytes: config.executor.rowMaxBytes,
          readMaxBytes: config.executor.stepMaxBytes,
          workMemMb: config.executor.sqlWorkMemMb,
          tempFileLimitMb: config.executor.sqlTempFileLimitMb,
        },
      });
      apiHandler = createApiStepHandler({ knowledge, llm: model, sandbox: config.sandbox });
      if (server.databaseUrl) observer = postgres(server.databaseUrl, { max: 1, onnotice: () => undefined });
    });
    afterAll(async () => {
      await observer?.end();
      await server?.close();
      await silentApi?.close();
      await llm?.close();
    });

    const contextFor = (step: Partial<StoredPlanStep>, signal: AbortSignal, progress: (message: string) => void = () => undefined): StepContext => {
      const timeoutMs = 600_000;
      return {
        tenant,
        planQuery: 'a step that is cancelled',
        index: 1,
        step: { kind: 'SQL', queryContext: 'something slow', entity: null, reasoning: null, critical: true, sql: null, code: null, ...step },
        earlier: [],
        timeoutMs,
        rowCap: 1_000,
        sampleSize: 3,
        recordUsage: () => undefined,
        takeModelCall: () => Promise.resolve({ allowed: true }),
        reportProgress: progress,
        signal,
        deadline: Date.now() + timeoutMs,
        memory: new ExecutionMemory(64 * 1_048_576).forStep(1),
      };
    };

    /** Backends of this database running a tenant statement's FETCH (the cursor's query runs there), with their state. */
    const tenantStatementBackends = async () =>
      observer!<{ pid: number; state: string; inTransaction: boolean }[]>`
        SELECT pid, state, xact_start IS NOT NULL AS "inTransaction" FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%FETCH % FROM __stepcast_rows_%'
          AND state = 'active'`;

    it.skipIf(backend !== 'postgres')('cancels the running statement on the server: its backend is idle, out of its transaction, within 2 s', async () => {
      const controller = new AbortController();
      const cancel = new StepCancelledError();
      let pid = 0;
      const { error, settledInTime } = await abortWhileRunning(
        sqlHandler,
        contextFor({ sql: ENDLESS_SQL }, controller.signal),
        controller,
        async () => {
          await vi.waitFor(
            async () => {
              const [running] = await tenantStatementBackends();
              expect(running).toBeDefined();
              pid = running!.pid;
            },
            { timeout: 30_000, interval: 50 },
          );
        },
        cancel,
      );
      expect(settledInTime).toBe(true);
      expect(error).toBe(cancel);
      expect(cancel.code).toBe('CANCELLED');
      // The handler rejected after the rollback, so this holds at once: nothing is left to wait for.
      const [after] = await observer!<{ state: string; inTransaction: boolean }[]>`
        SELECT state, xact_start IS NOT NULL AS "inTransaction" FROM pg_stat_activity WHERE pid = ${pid}`;
      expect(after ?? { state: 'gone', inTransaction: false }).toMatchObject({ inTransaction: false });
      expect(after?.state).not.toBe('active');
      expect(await tenantStatementBackends()).toEqual([]);
    });

    it('interrupts the running statement: the handler rejects with the cancel within 2 s, and the next statement runs at once', async () => {
      const controller = new AbortController();
      const cancel = new StepCancelledError();
      const { database } = server.app;
      const { error, settledInTime } = await abortWhileRunning(
        sqlHandler,
        contextFor({ sql: ENDLESS_SQL }, controller.signal),
        controller,
        async () => {
          // Busy: a trivial query cannot get an answer while the statement holds the database (PGlite) or it
          // shows as an active FETCH (PostgreSQL).
          await vi.waitFor(
            async () => {
              if (observer) expect(await tenantStatementBackends()).not.toEqual([]);
              else expect(await database.ping(200)).toBe(false);
            },
            { timeout: 30_000, interval: 50 },
          );
        },
        cancel,
      );
      expect(settledInTime).toBe(true);
      expect(error).toBe(cancel);
      expect(await database.ping(STOP_MS)).toBe(true);
      const next = await sqlHandler(contextFor({ sql: 'SELECT 41 + 1 AS answer' }, new AbortController().signal));
      expect(next.records).toEqual([{ answer: 42 }]);
    });

    it('gives up a statement that still waits for the database, without waiting for the statement before it', async () => {
      const { database } = server.app;
      const tenantQuery = (sql: string, signal: AbortSignal) =>
        database.runTenantQuery({
          statement: sql,
          relations: { prefix: '', params: [] },
          role: tenant.dbRole!,
          searchPath: tenant.dataSchema,
          timeoutMs: 600_000,
          signal,
          limits: { rowCap: 10, rowMaxBytes: 1_048_576, readMaxBytes: 1_048_576, workMemMb: 4, tempFileLimitMb: 16 },
        });
      const first = new AbortController();
      const second = new AbortController();
      const running = tenantQuery(ENDLESS_SQL, first.signal);
      running.catch(() => undefined);
      try {
        await vi.waitFor(
          async () => {
            if (observer) expect(await tenantStatementBackends()).not.toEqual([]);
            else expect(await database.ping(200)).toBe(false);
          },
          { timeout: 30_000, interval: 50 },
        );
        const waiting = tenantQuery('SELECT 1 AS one', second.signal);
        waiting.catch(() => undefined);
        const cancel = new StepCancelledError();
        second.abort(cancel);
        expect(await settlesWithin(waiting, STOP_MS)).toBe(true);
        await expect(waiting).rejects.toBe(cancel);
      } finally {
        first.abort(new StepCancelledError());
        await running.catch(() => undefined);
      }
    });

    it("keeps the step's own time limit a STEP_TIMEOUT, not a cancel", async () => {
      const controller = new AbortController();
      const { error } = await abortWhileRunning(
        sqlHandler,
        contextFor({ sql: ENDLESS_SQL }, controller.signal),
        controller,
        async () => undefined,
        new DOMException('The operation was aborted due to timeout', 'TimeoutError'),
      );
      expect(error).toBeInstanceOf(StepFailure);
      expect(error).not.toBeInstanceOf(StepCancelledError);
      expect(error).toMatchObject({ code: 'STEP_TIMEOUT' });
    });

    it("closes the SQL agent's model call", async () => {
      llm.script({ when: (request) => schemaOf(request) === 'sql_step', replies: [{ hang: true }] });
      const controller = new AbortController();
      const cancel = new StepCancelledError();
      const { error, settledInTime } = await abortWhileRunning(sqlHandler, contextFor({}, controller.signal), controller, async () => {
        await vi.waitFor(() => expect(llm.hanging).toHaveLength(1), { timeout: 30_000, interval: 20 });
      }, cancel);
      expect(settledInTime).toBe(true);
      expect(error).toBe(cancel);
      expect(await settlesWithin(llm.hanging[0]!.closed, STOP_MS)).toBe(true);
    });

    it('interrupts a program in an endless loop within 2 s', async () => {
      const controller = new AbortController();
      const cancel = new StepCancelledError();
      let spinning!: () => void;
      const started = new Promise<void>((resolve) => (spinning = resolve));
      const code = "progress('spinning'); while (true) {}";
      const { error, settledInTime } = await abortWhileRunning(
        apiHandler,
        contextFor({ kind: 'API', code }, controller.signal, () => spinning()),
        controller,
        () => started,
        cancel,
      );
      expect(settledInTime).toBe(true);
      expect(error).toBe(cancel);
      expect(cancel.artefact).toMatchObject({ code });
    });

    it('closes the API request a program waits on', async () => {
      const before = silentApi.requests.length;
      const controller = new AbortController();
      const cancel = new StepCancelledError();
      const { error, settledInTime } = await abortWhileRunning(
        apiHandler,
        contextFor({ kind: 'API', code: "return [await api.call('waitForever', {})];" }, controller.signal),
        controller,
        async () => {
          await vi.waitFor(() => expect(silentApi.requests.length).toBeGreaterThan(before), { timeout: 30_000, interval: 20 });
        },
        cancel,
      );
      expect(settledInTime).toBe(true);
      expect(error).toBe(cancel);
      expect(await settlesWithin(silentApi.requests[before]!.closed, STOP_MS)).toBe(true);
    });

    it("closes the API code agent's model call", async () => {
      llm.script({ when: (request) => schemaOf(request) === 'api_step', replies: [{ hang: true }] });
      const controller = new AbortController();
      const cancel = new StepCancelledError();
      const { error, settledInTime } = await abortWhileRunning(apiHandler, contextFor({ kind: 'API' }, controller.signal), controller, async () => {
        await vi.waitFor(() => expect(llm.hanging).toHaveLength(1), { timeout: 30_000, interval: 20 });
      }, cancel);
      expect(settledInTime).toBe(true);
      expect(error).toBe(cancel);
      expect(await settlesWithin(llm.hanging[0]!.closed, STOP_MS)).toBe(true);
    });

    it("keeps a program's own time limit a SANDBOX_TIMEOUT, not a cancel", async () => {
      const controller = new AbortController();
      let spinning!: () => void;
      const started = new Promise<void>((resolve) => (spinning = resolve));
      const { error } = await abortWhileRunning(
        apiHandler,
        contextFor({ kind: 'API', code: "progress('spinning'); while (true) {}" }, controller.signal, () => spinning()),
        controller,
        () => started,
        new DOMException('The operation was aborted due to timeout', 'TimeoutError'),
      );
      expect(error).toMatchObject({ code: 'SANDBOX_TIMEOUT' });
    });
  });
}
