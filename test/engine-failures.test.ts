import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { DEMO_TENANT_ID } from '../src/db/demo-data.js';
import { runExecution, type EngineDependencies } from '../src/executor/engine.js';
import { createTenantRateLimiter } from '../src/executor/rate-limiter.js';
import { createInProcessStepUpdateBus } from '../src/executor/step-update-bus.js';
import type { StepHandler } from '../src/executor/steps/step-handler.js';
import { snapshotOf } from '../src/executor/step-snapshots.js';
import { ExecutionStore, type Transition } from '../src/executor/store.js';
import { createLogger } from '../src/logger.js';
import { backends } from './support/database.js';
import { storeQueuedExecution } from './support/plans.js';
import { startTestServer, type TestServer } from './support/server.js';

const config = loadConfig({});

/** What happens when the store itself fails in the middle of a run (a connection blip, a full disk). */
for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`engine under store failures on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    beforeAll(async () => {
      server = await startTestServer(backend, { env: { STEPCAST_DEMO_API: 'off' } });
    });
    afterAll(async () => {
      await server?.close();
    });

    it('marks the execution FAILED (INTERNAL) when a state write fails, and its stream completes', async () => {
      const store = new ExecutionStore(server.app.database.db);
      const execution = await storeQueuedExecution(server.app.database, ['SELECT 1', 'SELECT 2', 'SELECT 3']);
      let failed = false;
      const flakyStore = Object.assign(Object.create(store) as ExecutionStore, {
        recordTransition: async (executionId: string, transition: Transition) => {
          if (!failed && transition.type === 'STEP_STARTED' && transition.step?.before.index === 2) {
            failed = true;
            throw new Error('connection reset by peer');
          }
          return store.recordTransition(executionId, transition);
        },
      });
      const handler: StepHandler = async () => ({ records: [{ n: 1 }], columns: [{ name: 'n', type: 'integer' }], truncated: false, attempts: 1 });
      const bus = createInProcessStepUpdateBus();
      const deps: EngineDependencies = {
        store: flakyStore,
        bus,
        acquireLease: (id) => server.app.database.acquireExecutionLease(id),
        handlers: { SQL: handler, API: handler },
        findTenant: (tenantId) => server.app.executor.findTenant(tenantId),
        modelCalls: createTenantRateLimiter({ ratePerMinute: 60, burst: 10 }),
        logger: createLogger('silent'),
        settings: {
          rowCap: 100,
          resultMaxBytes: 10_000,
          executionMaxBytes: config.executor.executionMaxBytes,
          sampleMaxBytes: config.executor.sampleMaxBytes,
          maxProgressUpdates: config.sandbox.maxProgressReports,
          maxProgressChars: config.sandbox.maxProgressChars,
        },
      };
      await runExecution(deps, execution.id);

      const stored = await store.findExecution(DEMO_TENANT_ID, execution.id);
      expect(stored!.status).toBe('FAILED');
      expect(stored!.error).toMatchObject({ code: 'INTERNAL', retryable: true });
      expect(stored!.error!.message).not.toContain('connection reset');
      expect(stored!.finalResult).toEqual([{ n: 1 }]);
      const steps = await store.listSteps(execution.id);
      expect(steps.map((s) => s.status)).toEqual(['SUCCEEDED', 'SKIPPED', 'SKIPPED']);
      const events = await store.loadEvents(execution.id, 0);
      expect(events.map((e) => e.sequence)).toEqual(events.map((_, i) => i + 1));
      expect(events.at(-1)!.type).toBe('EXECUTION_FAILED');
    });

    it('never lets a second run of a finished execution write to it', async () => {
      const store = new ExecutionStore(server.app.database.db);
      const execution = await storeQueuedExecution(server.app.database);
      await store.recordTransition(execution.id, { type: 'EXECUTION_STARTED', from: ['QUEUED'], execution: { status: 'RUNNING' } });
      await store.recordTransition(execution.id, { type: 'EXECUTION_SUCCEEDED', execution: { status: 'SUCCEEDED' } });
      const [step] = await store.listSteps(execution.id);
      await expect(store.recordTransition(execution.id, { type: 'STEP_STARTED', step: { before: snapshotOf(step!), change: { status: 'RUNNING' } } })).rejects.toThrow(
        /not in a state/,
      );
      await expect(
        store.recordTransition(execution.id, { type: 'EXECUTION_STARTED', from: ['QUEUED'], execution: { status: 'RUNNING' } }),
      ).rejects.toThrow(/not in a state/);
      expect((await store.loadEvents(execution.id, 0)).map((e) => e.type)).toEqual(['EXECUTION_STARTED', 'EXECUTION_SUCCEEDED']);
    });
  });
}
