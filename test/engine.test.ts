import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import type { TenantRow } from '../src/db/tables.js';
import { createInProcessDispatcher } from '../src/executor/dispatcher.js';
import { Engine, type EngineDependencies } from '../src/executor/engine.js';
import { RunStoppedError, StepFailure } from '../src/executor/errors.js';
import { Executor, type ExecutorSettings } from '../src/executor/executor.js';
import { MemoryExecutionStore } from '../src/executor/memory-store.js';
import { ExecutionNotRunnableError, type Transition } from '../src/executor/store.js';
import { validatePlan, type PlanInput } from '../src/executor/plan.js';
import { createMemoryTenantLimits } from '../src/executor/rate-limiter.js';
import { createInProcessStepUpdateBus } from '../src/executor/step-update-bus.js';
import type { StepUpdate } from '../src/executor/step-update.js';
import type { StepContext, StepHandler, StepOutcome } from '../src/executor/steps/step-handler.js';
import type { TenantKnowledge } from '../src/executor/tenant-knowledge.js';
import { IdempotentSubmits } from '../src/executor/idempotency.js';
import type { Db } from '../src/db/client.js';
import type { LlmClient } from '../src/agents/llm-client.js';
import { createLogger } from '../src/logger.js';
import { isDatabaseUnavailable } from '../src/db/unavailable.js';
import { AgentError, NO_USAGE } from '../src/agents/llm-client.js';
import { asStepFailure } from '../src/executor/errors.js';

/*
 * The engine as a step machine, on the in-memory store: crashes at every transition, cancels at every
 * point, leases taken over, approvals, and a store that goes away. No server, no database: milliseconds.
 */

const config = loadConfig({});
const TENANT = 'tenant-a';
const tenantRow = { id: TENANT, name: 'A', dataSchema: 'tenant_a' } as TenantRow;
const LEASE_TTL_MS = 60_000;

class Unavailable extends Error {}

/** A process that dies: every write after the given number of commits is lost, and the run stops. */
class Crash extends RunStoppedError {
  constructor() {
    super('shutdown');
  }
}

type Behaviour = (context: StepContext) => Promise<StepOutcome>;

const recordsOf = (index: number, count = 3) => Array.from({ length: count }, (_, i) => ({ step: index, n: i + 1, pad: 'x'.repeat(40) }));

function outcome(index: number, count = 3): StepOutcome {
  return { records: recordsOf(index, count), columns: [{ name: 'step', type: 'integer' }], truncated: false, attempts: 1 };
}

const waitForAbort = (context: StepContext) =>
  new Promise<StepOutcome>((_, reject) => {
    if (context.signal.aborted) reject(context.signal.reason);
    context.signal.addEventListener('abort', () => reject(context.signal.reason), { once: true });
  });

function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

class World {
  clock = 1_000_000;
  readonly store = new MemoryExecutionStore(() => this.clock);
  readonly bus = createInProcessStepUpdateBus();
  readonly published: StepUpdate[] = [];
  /** What each step does when run (by index); by default it succeeds with three records. */
  readonly behaviours = new Map<number, Behaviour>();
  /** Every run of a step: its index, and the records of earlier steps it was handed. */
  readonly calls: { index: number; earlier: { index: number; records: unknown[]; sample: unknown[] }[] }[] = [];
  settings = { resultMaxBytes: 10_000, maxResumes: 3, beginSqlStepsEarly: true };
  /** The process died: nothing more is written (a handler that "crashes" sets it, then throws). */
  crashed = false;

  constructor() {
    this.store.tenants.set(TENANT, tenantRow);
    const publish = this.bus.publish.bind(this.bus);
    this.bus.publish = (update) => {
      this.published.push(update);
      publish(update);
    };
  }

  readonly handler: StepHandler = async (context) => {
    this.calls.push({
      index: context.index,
      earlier: context.earlier.map((e) => ({ index: e.index, records: e.records, sample: e.sample })),
    });
    const behaviour = this.behaviours.get(context.index);
    return behaviour ? behaviour(context) : outcome(context.index);
  };

  /** The store as a process sees it: once that process has died, nothing it writes arrives. */
  private storeOfProcess(commitBudget = Infinity): MemoryExecutionStore {
    let left = commitBudget;
    const store = this.store;
    const view = Object.create(store) as MemoryExecutionStore;
    view.recordTransition = async (id, transition) => {
      if (this.crashed || left-- <= 0) {
        this.crashed = true;
        throw new Crash();
      }
      return store.recordTransition(id, transition);
    };
    view.markUnsafeCalls = async (id, lease, index) => {
      if (this.crashed) throw new Crash();
      return store.markUnsafeCalls(id, lease, index);
    };
    view.release = async (id, lease) => {
      if (this.crashed) throw new Crash();
      return store.release(id, lease);
    };
    return view;
  }

  /** A handler's way to kill its process. */
  crash(): never {
    this.crashed = true;
    throw new Error('the process died');
  }

  engineDeps(workerId: string, store = this.storeOfProcess()): EngineDependencies {
    return {
      store,
      leases: store,
      bus: this.bus,
      handlers: { SQL: this.handler, API: this.handler },
      tenants: this.store,
      rateLimits: createMemoryTenantLimits({
        executions: { ratePerMinute: 600, burst: 100 },
        modelCalls: { ratePerMinute: 600, burst: 100 },
      }),
      logger: createLogger('silent'),
      workerId,
      // The service's own classification, as the composition root hands it over, plus this file's outage.
      isUnavailable: (error) => error instanceof Unavailable || isDatabaseUnavailable(error),
      settings: {
        rowCap: 1_000,
        resultMaxBytes: this.settings.resultMaxBytes,
        executionMaxBytes: config.executor.executionMaxBytes,
        sampleMaxBytes: config.executor.sampleMaxBytes,
        maxProgressUpdates: 10,
        maxProgressChars: 200,
        leaseTtlMs: LEASE_TTL_MS,
        maxResumes: this.settings.maxResumes,
        agentTimeoutMs: config.llm.agentTimeoutMs,
        sqlRepairRounds: 0,
        beginSqlStepsEarly: this.settings.beginSqlStepsEarly,
      },
    };
  }

  /** A process's engine; a new one starts alive. */
  engine(workerId = 'worker-1'): Engine {
    this.crashed = false;
    return new Engine(this.engineDeps(workerId));
  }

  /** An engine whose process dies once `commits` transitions have been written. */
  crashingEngine(commits: number, workerId = 'crashing'): Engine {
    this.crashed = false;
    return new Engine(this.engineDeps(workerId, this.storeOfProcess(commits)));
  }

  executor(workerId = 'worker-1'): Executor {
    const deps = this.engineDeps(workerId);
    return new Executor({
      ...deps,
      dispatcher: (run) =>
        createInProcessDispatcher({ concurrency: 4, perTenantConcurrency: 4, runExecution: run, logger: deps.logger }),
      knowledge: {} as TenantKnowledge,
      // No test here sends an idempotency key; keys are settled by the database (test/idempotency.test.ts).
      idempotency: ({ findExecution, logger, shutdown }) =>
        new IdempotentSubmits({} as Db, { ttlMs: 60_000, plannerMaxMs: 60_000 }, findExecution, logger, shutdown),
      llm: { configured: false } as LlmClient,
      settings: {
        ...config.executor,
        ...deps.settings,
        recoveryIntervalMs: 0,
        sqlRepairRounds: 0,
        sandbox: config.sandbox,
        tenantLimits: config.tenantLimits,
        inputLimits: config.inputLimits,
      } as ExecutorSettings,
    });
  }

  async submit(steps = 3, extra: (index: number) => Partial<PlanInput['steps'][number]> = () => ({})): Promise<string> {
    const plan = validatePlan(
      {
        query: 'q',
        steps: Array.from({ length: steps }, (_, i) => ({ kind: 'SQL' as const, queryContext: `step ${i + 1}`, sql: `SELECT ${i + 1}`, ...extra(i + 1) })),
      },
      null,
      {
        sampleSize: 2,
        stepTimeoutMs: 5_000,
        maxStepTimeoutMs: config.executor.maxStepTimeoutMs,
        limits: config.inputLimits,
      },
    );
    return (await this.store.createExecution(TENANT, plan)).execution.id;
  }

  /** The lease of every crashed holder lapses. */
  passLeaseTtl(): void {
    this.clock += LEASE_TTL_MS + 1;
  }

  async events(id: string) {
    return this.store.loadEvents(id, 0);
  }

  async steps(id: string) {
    return this.store.listSteps(id);
  }
}

/** Whatever happened: contiguous sequences, one terminal update and it is the last, publications match the log. */
async function expectWellFormedLog(world: World, id: string): Promise<StepUpdate[]> {
  const events = await world.events(id);
  expect(events.map((e) => e.sequence)).toEqual(events.map((_, i) => i + 1));
  const terminal = events.filter((e) => ['EXECUTION_SUCCEEDED', 'EXECUTION_FAILED', 'EXECUTION_CANCELLED'].includes(e.type));
  expect(terminal).toHaveLength(1);
  expect(events.at(-1)).toEqual(terminal[0]);
  expect(world.published.filter((u) => u.executionId === id).map((u) => u.sequence)).toEqual(events.map((e) => e.sequence));
  return events;
}

describe('engine: runs and resumes', () => {
  it('runs the steps in order, handing each the records and samples of the earlier ones', async () => {
    const world = new World();
    const id = await world.submit(3);
    await world.engine().run(id);
    const events = await expectWellFormedLog(world, id);
    expect(events.map((e) => e.type)).toEqual([
      'EXECUTION_STARTED',
      ...['STEP_STARTED', 'STEP_SUCCEEDED', 'STEP_STARTED', 'STEP_SUCCEEDED', 'STEP_STARTED', 'STEP_SUCCEEDED'],
      'EXECUTION_SUCCEEDED',
    ]);
    expect(world.calls.map((c) => c.index)).toEqual([1, 2, 3]);
    expect(world.calls[2]!.earlier).toEqual([
      { index: 1, records: recordsOf(1), sample: recordsOf(1).slice(0, 2) },
      { index: 2, records: recordsOf(2), sample: recordsOf(2).slice(0, 2) },
    ]);
    expect((await world.store.loadExecution(id))!.leaseOwner).toBeNull();
  });

  it("commits once per step: a step's end carries the next step's start, the last one the execution's end", async () => {
    const world = new World();
    // Step 2's agent writes its SQL (the plan gives none).
    const id = await world.submit(3, (index) => (index === 2 ? { sql: undefined } : {}));
    const statements: string[][] = [];
    const view = Object.create(world.store) as MemoryExecutionStore;
    view.recordTransition = async (executionId, batch) => {
      statements.push((Array.isArray(batch) ? batch : [batch]).map((t: Transition) => t.type));
      return world.store.recordTransition(executionId, batch);
    };
    // A step whose agent writes its SQL runs only once its start has been committed and published.
    let seenByStep2: StepUpdate | undefined;
    world.behaviours.set(2, async () => {
      seenByStep2 = world.published.at(-1);
      return outcome(2);
    });
    await new Engine(world.engineDeps('worker-1', view)).run(id);
    expect(statements).toEqual([
      ['EXECUTION_STARTED', 'STEP_STARTED'],
      ['STEP_SUCCEEDED', 'STEP_STARTED'],
      ['STEP_SUCCEEDED', 'STEP_STARTED'],
      ['STEP_SUCCEEDED', 'EXECUTION_SUCCEEDED'],
    ]);
    expect(seenByStep2).toMatchObject({ type: 'STEP_STARTED', status: 'RUNNING', step: { index: 2, status: 'RUNNING' } });
    const events = await expectWellFormedLog(world, id);
    // Each event of a statement carries the execution's status as that event left it.
    expect(events.map((e) => e.status)).toEqual([...Array(7).fill('RUNNING'), 'SUCCEEDED']);
  });

  it("begins a SQL step whose plan gives the statement while its start commits, and records nothing of it before the start", async () => {
    const world = new World();
    const id = await world.submit(3);
    const view = Object.create(world.store) as MemoryExecutionStore;
    // Step 1's end and step 2's start commit only once step 2 has begun: the two overlap.
    const step2Begun = deferred();
    let startOf2Committed = false;
    view.recordTransition = async (executionId, batch) => {
      const types = (Array.isArray(batch) ? batch : [batch]).map((t: Transition) => t.type);
      const isStartOf2 = types.join() === 'STEP_SUCCEEDED,STEP_STARTED' && world.calls.length <= 2;
      if (isStartOf2) await step2Begun.promise;
      const result = await world.store.recordTransition(executionId, batch);
      if (isStartOf2) startOf2Committed = true;
      return result;
    };
    let step2SawItsStart: boolean | undefined;
    world.behaviours.set(2, async () => {
      step2SawItsStart = startOf2Committed;
      step2Begun.resolve();
      return outcome(2);
    });
    await new Engine(world.engineDeps('worker-1', view)).run(id);
    expect(step2SawItsStart).toBe(false);
    expect(world.calls.map((c) => c.index)).toEqual([1, 2, 3]);
    // Handed step 1's records, as a step begun after its start is.
    expect(world.calls[1]!.earlier).toEqual([{ index: 1, records: recordsOf(1), sample: recordsOf(1).slice(0, 2) }]);
    const events = await expectWellFormedLog(world, id);
    expect(events.map((e) => e.type)).toEqual([
      'EXECUTION_STARTED',
      ...['STEP_STARTED', 'STEP_SUCCEEDED', 'STEP_STARTED', 'STEP_SUCCEEDED', 'STEP_STARTED', 'STEP_SUCCEEDED'],
      'EXECUTION_SUCCEEDED',
    ]);
    expect((await world.steps(id)).map((s) => s.attempts)).toEqual([1, 1, 1]);
  });

  for (const ending of ['succeeds', 'fails', 'waits for the abort'] as const) {
    it(`records nothing of a step begun early whose start does not commit (the lease was taken over; the step ${ending})`, async () => {
      const world = new World();
      const id = await world.submit(3);
      const view = Object.create(world.store) as MemoryExecutionStore;
      const step2Begun = deferred();
      let step2Signal: AbortSignal | undefined;
      view.recordTransition = async (executionId, batch) => {
        const types = (Array.isArray(batch) ? batch : [batch]).map((t: Transition) => t.type);
        if (types.join() !== 'STEP_SUCCEEDED,STEP_STARTED') return world.store.recordTransition(executionId, batch);
        await step2Begun.promise;
        throw new ExecutionNotRunnableError(executionId);
      };
      world.behaviours.set(2, async (context) => {
        step2Signal = context.signal;
        step2Begun.resolve();
        if (ending === 'succeeds') return outcome(2);
        if (ending === 'fails') throw new StepFailure('SQL_ERROR', 'relation "nope" does not exist');
        return waitForAbort(context);
      });
      await new Engine(world.engineDeps('worker-1', view)).run(id);
      expect(world.calls.map((c) => c.index)).toEqual([1, 2]);
      expect(step2Signal!.aborted).toBe(true);
      // The run stopped at step 1's committed start: step 1 RUNNING, as the store has it, and nothing after.
      expect((await world.steps(id)).map((s) => s.status)).toEqual(['RUNNING', 'PENDING', 'PENDING']);
      expect(world.published.filter((u) => u.executionId === id).map((u) => u.type)).toEqual(['EXECUTION_STARTED', 'STEP_STARTED']);
    });
  }

  // A 3-step run commits its 8 transitions in 4 statements (a step's end carries the next step's start, the last
  // one the execution's end); a crash before any of them is written must resume to the same end.
  for (let commits = 0; commits < 4; commits++) {
    it(`resumes after a crash with ${commits} transitions committed, running no succeeded step again`, async () => {
      const world = new World();
      // More records than `result` keeps: a resumed run must still hand later steps every one of them.
      world.settings.resultMaxBytes = 200;
      world.behaviours.set(1, async () => outcome(1, 20));
      const id = await world.submit(3);
      await world.crashingEngine(commits).run(id);
      const before = await world.steps(id);
      const succeededBefore = before.filter((s) => s.status === 'SUCCEEDED').map((s) => s.index);
      const runningBefore = before.find((s) => s.status === 'RUNNING');
      const callsBefore = world.calls.length;

      // The restarted process finds nothing to take until the dead holder's lease lapses.
      const restarted = world.engine('worker-2');
      await restarted.run(id);
      expect(world.calls.length).toBe(callsBefore);
      world.passLeaseTtl();
      await restarted.run(id);

      const events = await expectWellFormedLog(world, id);
      expect(events.at(-1)!.type).toBe('EXECUTION_SUCCEEDED');
      const rerun = world.calls.slice(callsBefore).map((c) => c.index);
      expect(rerun.filter((index) => succeededBefore.includes(index))).toEqual([]);
      for (const index of [1, 2, 3]) {
        expect(events.filter((e) => e.type === 'STEP_SUCCEEDED' && e.step!.index === index)).toHaveLength(1);
        expect(events.filter((e) => e.type === 'STEP_STARTED' && e.step!.index === index).length).toBeLessThanOrEqual(1);
      }
      // Every run of step 2 and 3 saw all 20 records of step 1, though `result` keeps fewer.
      for (const call of world.calls.filter((c) => c.index > 1)) expect(call.earlier[0]!.records).toEqual(recordsOf(1, 20));
      const steps = await world.steps(id);
      expect(steps.map((s) => s.status)).toEqual(['SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED']);
      if (commits >= 1) {
        const resumed = events.filter((e) => e.type === 'EXECUTION_RESUMED');
        expect(resumed).toHaveLength(1);
        if (runningBefore) {
          expect(resumed[0]!.step).toMatchObject({ index: runningBefore.index, attempts: 2 });
          expect(steps[runningBefore.index - 1]!.attempts).toBe(2);
        } else {
          expect(resumed[0]!.step).toBeNull();
        }
      } else {
        expect(events.some((e) => e.type === 'EXECUTION_RESUMED')).toBe(false);
      }
      expect((await world.store.loadExecution(id))!.resumes).toBe(commits >= 1 ? 1 : 0);
    });
  }

  it(`fails INTERRUPTED once a step has stopped the process more than STEPCAST_MAX_RESUMES times`, async () => {
    const world = new World();
    world.settings.maxResumes = 2;
    const id = await world.submit(3);
    // Each holder dies while step 2 runs (after EXECUTION_STARTED with step 1's start, then step 1's end with step 2's start).
    world.behaviours.set(2, async () => world.crash());
    for (let attempt = 0; attempt < 4; attempt++) {
      await world.engine(`worker-${attempt}`).run(id);
      world.passLeaseTtl();
    }
    const execution = (await world.store.loadExecution(id))!;
    expect(execution.status).toBe('FAILED');
    expect(execution.error).toMatchObject({ code: 'INTERRUPTED' });
    expect(execution.error!.message).toContain('STEPCAST_MAX_RESUMES');
    expect(world.calls.filter((c) => c.index === 2)).toHaveLength(3);
    expect((await world.steps(id)).map((s) => s.status)).toEqual(['SUCCEEDED', 'FAILED', 'SKIPPED']);
    await expectWellFormedLog(world, id);
  });

  it('does not run again an API step whose program made a call that is not safe to repeat', async () => {
    const world = new World();
    const id = await world.submit(2, (index) => (index === 2 ? { kind: 'API', sql: undefined, code: 'return []' } : {}));
    world.behaviours.set(2, async (context) => {
      await context.beforeUnsafeCall!();
      return world.crash();
    });
    await world.engine('worker-1').run(id);
    world.passLeaseTtl();
    await world.engine('worker-2').run(id);
    const steps = await world.steps(id);
    expect(steps.map((s) => s.status)).toEqual(['SUCCEEDED', 'FAILED']);
    expect(steps[1]!.error).toMatchObject({ code: 'INTERRUPTED' });
    expect(steps[1]!.unsafeCalls).toBe(true);
    expect(world.calls.filter((c) => c.index === 2)).toHaveLength(1);
    await expectWellFormedLog(world, id);
  });

  it('refuses the commits of a holder whose lease was taken over, and lets the new holder finish', async () => {
    const world = new World();
    const id = await world.submit(2);
    const release = deferred();
    let firstRun = true;
    world.behaviours.set(1, async () => {
      if (!firstRun) return outcome(1);
      firstRun = false;
      await release.promise;
      return { ...outcome(1), records: [{ from: 'the old holder' }] };
    });
    const oldRun = world.engine('old').run(id);
    await expect.poll(() => world.calls.length).toBe(1);
    world.passLeaseTtl();
    await world.engine('new').run(id);
    release.resolve();
    await oldRun;
    const events = await expectWellFormedLog(world, id);
    expect(events.at(-1)!.type).toBe('EXECUTION_SUCCEEDED');
    expect(events.filter((e) => e.type === 'STEP_SUCCEEDED' && e.step!.index === 1)).toHaveLength(1);
    expect(await world.store.findStepResult(TENANT, id, 1)).toEqual(recordsOf(1));
  });

  it("keeps a step's outcome through a store that goes away: the transition is written, once, when it answers", async () => {
    const world = new World();
    const id = await world.submit(3);
    world.behaviours.set(2, async () => {
      // The next two writes (step 2's outcome, then its retry) meet a database that cannot be reached.
      world.store.failures.set('recordTransition', { times: 2, error: () => new Unavailable('connection refused') });
      return outcome(2);
    });
    await world.engine('worker-1').run(id);
    expect((await world.store.loadExecution(id))!.status).toBe('SUCCEEDED');
    expect(world.calls.map((c) => c.index)).toEqual([1, 2, 3]);
    const events = await expectWellFormedLog(world, id);
    expect(events.some((e) => e.type === 'EXECUTION_RESUMED')).toBe(false);
  });

  it('stops a run whose step met a database that went away, and resumes it once the store answers', async () => {
    const world = new World();
    // Step 2 begins after its start (its agent writes its SQL); one begun early is below.
    const id = await world.submit(3, (index) => (index === 2 ? { sql: undefined } : {}));
    let firstTry = true;
    world.behaviours.set(2, async () => {
      if (!firstTry) return outcome(2);
      firstTry = false;
      throw new StepFailure('SQL_ERROR', 'terminating connection due to administrator command', { cause: new Unavailable('57P01') });
    });
    const executor = world.executor('worker-1');
    await world.engine('worker-1').run(id);
    // Nothing failed: the run stopped, holding its lease, for the store to answer again.
    expect((await world.steps(id)).map((s) => s.status)).toEqual(['SUCCEEDED', 'RUNNING', 'PENDING']);
    await executor.recover();
    await expect.poll(async () => (await world.store.loadExecution(id))!.status).toBe('SUCCEEDED');
    const events = await expectWellFormedLog(world, id);
    expect(events.filter((e) => e.type === 'EXECUTION_RESUMED')).toHaveLength(1);
    expect(world.calls.map((c) => c.index)).toEqual([1, 2, 2, 3]);
    // The same worker took its own run back after an outage: no step is to blame, so no resume is counted.
    expect((await world.store.loadExecution(id))!.resumes).toBe(0);
    await executor.stop(1_000);
  });

  it('fails a step whose model server cannot be reached: a socket error of another service is not an outage', async () => {
    const world = new World();
    const id = await world.submit(2);
    world.behaviours.set(1, async () => {
      const fetchFailed = Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error('getaddrinfo ENOTFOUND'), { code: 'ENOTFOUND' }) });
      throw asStepFailure(new AgentError('AGENT_FAILED', 'the model server could not be reached', true, NO_USAGE, { cause: fetchFailed }));
    });
    await world.engine().run(id);
    const execution = (await world.store.loadExecution(id))!;
    expect(execution.status).toBe('FAILED');
    expect(execution.error).toMatchObject({ code: 'AGENT_FAILED' });
    expect(world.calls).toHaveLength(1);
  });

  it('fails a step whose own statement keeps meeting a terminated backend, after a few pauses', async () => {
    const world = new World();
    const id = await world.submit(2);
    world.behaviours.set(1, async () => {
      throw new StepFailure('SQL_ERROR', 'terminating connection due to administrator command', {
        cause: Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }),
      });
    });
    const executor = world.executor('worker-1');
    await expect
      .poll(async () => {
        await executor.recover();
        return (await world.store.loadExecution(id))!.status;
      })
      .toBe('FAILED');
    expect((await world.steps(id))[0]!.error).toMatchObject({ code: 'SQL_ERROR' });
    // The first run and five pauses, then the error is the step's.
    expect(world.calls).toHaveLength(6);
    await expectWellFormedLog(world, id);
    await executor.stop(1_000);
  });

  it('fails the execution INTERNAL when a transition fails for another reason', async () => {
    const world = new World();
    const id = await world.submit(3);
    world.behaviours.set(2, async () => {
      world.store.failures.set('recordTransition', { times: 1, error: () => new Error('disk full') });
      return outcome(2);
    });
    await world.engine().run(id);
    const execution = (await world.store.loadExecution(id))!;
    expect(execution.status).toBe('FAILED');
    expect(execution.error).toMatchObject({ code: 'INTERNAL', retryable: true });
    expect(execution.finalResult).toEqual(recordsOf(1));
    expect((await world.steps(id)).map((s) => s.status)).toEqual(['SUCCEEDED', 'FAILED', 'SKIPPED']);
    await expectWellFormedLog(world, id);
  });
});

describe('engine: cancel', () => {
  it('cancels a QUEUED execution at once: no step runs', async () => {
    const world = new World();
    const executor = world.executor();
    const id = await world.submit(3);
    const cancelled = await executor.cancelExecution(TENANT, id);
    expect(cancelled.status).toBe('CANCELLED');
    const events = await expectWellFormedLog(world, id);
    expect(events.map((e) => e.type)).toEqual(['STEP_SKIPPED', 'STEP_SKIPPED', 'STEP_SKIPPED', 'EXECUTION_CANCELLED']);
    expect(world.calls).toEqual([]);
    await executor.stop(1_000);
  });

  for (const index of [1, 2, 3]) {
    it(`cancels while step ${index} runs: it becomes CANCELLED, the rest SKIPPED`, async () => {
      const world = new World();
      const executor = world.executor();
      world.behaviours.set(index, waitForAbort);
      const id = await world.submit(3);
      await executor.recover();
      await expect.poll(() => world.calls.length).toBe(index);
      const cancelled = await executor.cancelExecution(TENANT, id);
      expect(cancelled.status).toBe('CANCELLED');
      const steps = await world.steps(id);
      expect(steps.map((s) => s.status)).toEqual([
        ...Array<string>(index - 1).fill('SUCCEEDED'),
        'CANCELLED',
        ...Array<string>(3 - index).fill('SKIPPED'),
      ]);
      expect(steps[index - 1]!.error).toMatchObject({ code: 'CANCELLED' });
      const events = await expectWellFormedLog(world, id);
      expect(events.at(-1)!.type).toBe('EXECUTION_CANCELLED');
      expect(events.at(-1)!.status).toBe('CANCELLED');
      await executor.stop(1_000);
    });
  }

  it('honours a cancel stored just before the holder crashed, after the restart', async () => {
    const world = new World();
    const id = await world.submit(3);
    world.behaviours.set(2, async () => {
      await world.store.requestCancel(TENANT, id);
      return world.crash();
    });
    await world.engine('worker-1').run(id);
    world.behaviours.delete(2);
    world.passLeaseTtl();
    await world.engine('worker-2').run(id);
    expect((await world.steps(id)).map((s) => s.status)).toEqual(['SUCCEEDED', 'CANCELLED', 'SKIPPED']);
    expect(world.calls.map((c) => c.index)).toEqual([1, 2]);
    await expectWellFormedLog(world, id);
  });

  it('returns a finished execution unchanged, and answers NOT_FOUND for another tenant', async () => {
    const world = new World();
    const executor = world.executor();
    const id = await world.submit(1);
    await world.engine().run(id);
    const before = await world.events(id);
    expect((await executor.cancelExecution(TENANT, id)).status).toBe('SUCCEEDED');
    expect(await world.events(id)).toEqual(before);
    await expect(executor.cancelExecution('someone-else', id)).rejects.toMatchObject({ name: 'ExecutionNotFoundError' });
    await executor.stop(1_000);
  });
});

describe('engine: approval steps', () => {
  async function waiting(world: World, approvalTimeoutMs?: number) {
    const executor = world.executor();
    const id = await world.submit(3, (index) => (index === 2 ? { approval: true, approvalTimeoutMs } : {}));
    await world.engine().run(id);
    return { executor, id };
  }

  it('waits before the step holding no lease, then runs it once approved, with who approved it on the step', async () => {
    const world = new World();
    const { executor, id } = await waiting(world);
    const execution = (await world.store.loadExecution(id))!;
    expect(execution.status).toBe('WAITING');
    expect(execution.leaseOwner).toBeNull();
    expect(world.calls.map((c) => c.index)).toEqual([1]);
    const waitingUpdate = (await world.events(id)).at(-1)!;
    expect(waitingUpdate).toMatchObject({ type: 'STEP_WAITING', status: 'WAITING', step: { index: 2, status: 'WAITING' } });

    await executor.decideStep(TENANT, { executionId: id, index: 2, approve: true, comment: 'looks right', decidedBy: 'key:ops' });
    await expect.poll(async () => (await world.store.loadExecution(id))!.status).toBe('SUCCEEDED');
    const steps = await world.steps(id);
    expect(steps[1]).toMatchObject({ status: 'SUCCEEDED', decision: 'APPROVED', decidedBy: 'key:ops', decisionComment: 'looks right' });
    expect(steps[1]!.decidedAt).toBeInstanceOf(Date);
    expect(world.calls.map((c) => c.index)).toEqual([1, 2, 3]);
    const types = (await expectWellFormedLog(world, id)).map((e) => e.type);
    expect(types.slice(types.indexOf('STEP_WAITING'))).toEqual([
      'STEP_WAITING',
      'STEP_APPROVED',
      'STEP_STARTED',
      'STEP_SUCCEEDED',
      'STEP_STARTED',
      'STEP_SUCCEEDED',
      'EXECUTION_SUCCEEDED',
    ]);
    await executor.stop(1_000);
  });

  it('fails a rejected step REJECTED and, being critical, the execution', async () => {
    const world = new World();
    const { executor, id } = await waiting(world);
    await executor.decideStep(TENANT, { executionId: id, index: 2, approve: false, comment: 'no', decidedBy: 'key:ops' });
    await expect.poll(async () => (await world.store.loadExecution(id))!.status).toBe('FAILED');
    const steps = await world.steps(id);
    expect(steps.map((s) => s.status)).toEqual(['SUCCEEDED', 'FAILED', 'SKIPPED']);
    expect(steps[1]).toMatchObject({ decision: 'REJECTED', error: { code: 'REJECTED' } });
    expect(world.calls.map((c) => c.index)).toEqual([1]);
    await expectWellFormedLog(world, id);
    // A decision on a step that no longer waits is refused, and changes nothing.
    await expect(
      executor.decideStep(TENANT, { executionId: id, index: 2, approve: true, comment: null, decidedBy: 'key:ops' }),
    ).rejects.toMatchObject({ name: 'InvalidArgumentError' });
    await executor.stop(1_000);
  });

  it('fails the step APPROVAL_TIMEOUT once its approvalTimeoutMs has passed', async () => {
    const world = new World();
    const { executor, id } = await waiting(world, 5_000);
    await executor.recover();
    expect((await world.store.loadExecution(id))!.status).toBe('WAITING');
    world.clock += 5_001;
    await executor.recover();
    await expect.poll(async () => (await world.store.loadExecution(id))!.status).toBe('FAILED');
    expect((await world.steps(id))[1]!.error).toMatchObject({ code: 'APPROVAL_TIMEOUT' });
    await expectWellFormedLog(world, id);
    await executor.stop(1_000);
  });

  it('times out an approval whose first claimer died before recording it', async () => {
    const world = new World();
    const { executor, id } = await waiting(world, 5_000);
    world.clock += 5_001;
    // A worker claims it to record the timeout, and dies before it writes anything.
    expect(await world.store.claim(id, 'dies', LEASE_TTL_MS)).not.toBeNull();
    expect((await world.store.loadExecution(id))!).toMatchObject({ status: 'WAITING', leaseOwner: 'dies' });
    expect(await world.store.listClaimable('someone-else', 10)).toEqual([]);
    // Its lease lapses: the execution is work again, for any worker.
    world.passLeaseTtl();
    expect(await world.store.listClaimable('someone-else', 10)).toEqual([{ id, tenantId: TENANT }]);
    await executor.recover();
    await expect.poll(async () => (await world.store.loadExecution(id))!.status).toBe('FAILED');
    expect((await world.steps(id))[1]!.error).toMatchObject({ code: 'APPROVAL_TIMEOUT' });
    await expectWellFormedLog(world, id);
    await executor.stop(1_000);
  });

  it('lets a person decide on a waiting step whose claimer died', async () => {
    const world = new World();
    const { executor, id } = await waiting(world);
    expect(await world.store.claim(id, 'dies', LEASE_TTL_MS)).not.toBeNull();
    // While the claimer's lease holds, nobody else decides; once it lapsed, a person may.
    await expect(
      executor.decideStep(TENANT, { executionId: id, index: 2, approve: true, comment: null, decidedBy: 'key:ops' }),
    ).rejects.toMatchObject({ name: 'InvalidArgumentError' });
    world.passLeaseTtl();
    await executor.decideStep(TENANT, { executionId: id, index: 2, approve: true, comment: null, decidedBy: 'key:ops' });
    await expect.poll(async () => (await world.store.loadExecution(id))!.status).toBe('SUCCEEDED');
    expect((await world.steps(id))[1]).toMatchObject({ decision: 'APPROVED', status: 'SUCCEEDED' });
    await expectWellFormedLog(world, id);
    await executor.stop(1_000);
  });

  it('cancels a waiting execution at once', async () => {
    const world = new World();
    const { executor, id } = await waiting(world);
    expect((await executor.cancelExecution(TENANT, id)).status).toBe('CANCELLED');
    expect((await world.steps(id)).map((s) => s.status)).toEqual(['SUCCEEDED', 'CANCELLED', 'SKIPPED']);
    await expectWellFormedLog(world, id);
    await executor.stop(1_000);
  });
});

describe('engine: step failures', () => {
  it('records a failed non-critical step and goes on', async () => {
    const world = new World();
    const id = await world.submit(2, (index) => (index === 1 ? { critical: false } : {}));
    world.behaviours.set(1, async () => {
      throw new StepFailure('SQL_ERROR', 'no such table');
    });
    await world.engine().run(id);
    expect((await world.steps(id)).map((s) => s.status)).toEqual(['FAILED', 'SUCCEEDED']);
    expect((await world.store.loadExecution(id))!.status).toBe('SUCCEEDED');
    await expectWellFormedLog(world, id);
  });
});

describe('engine: a SQL step begun while its start commits', () => {
  /** A store whose commit of step 1's end with step 2's start waits for `gate` (once step 2 has begun), then does `then`. */
  function gatedStart(world: World, gate: Promise<unknown>, then: (executionId: string) => Promise<void> | void = () => undefined) {
    const view = Object.create(world.store) as MemoryExecutionStore;
    let gated = false;
    view.recordTransition = async (executionId, batch) => {
      const types = (Array.isArray(batch) ? batch : [batch]).map((t: Transition) => t.type);
      if (!gated && types.join() === 'STEP_SUCCEEDED,STEP_STARTED') {
        gated = true;
        await gate;
        await then(executionId);
      }
      return world.store.recordTransition(executionId, batch);
    };
    return view;
  }

  it('writes no progress of a step whose start did not commit', async () => {
    const world = new World();
    const id = await world.submit(3);
    world.behaviours.set(1, async () => {
      // Step 1's end with step 2's start fails (neither an outage nor a fence): the run fails INTERNAL.
      world.store.failures.set('recordTransition', { times: 1, error: () => new Error('disk full') });
      return outcome(1);
    });
    world.behaviours.set(2, async (context) => {
      context.reportProgress('halfway');
      return waitForAbort(context);
    });
    await world.engine().run(id);
    const publishedAtEnd = world.published.length;
    expect((await world.store.loadExecution(id))!.status).toBe('FAILED');
    const events = await expectWellFormedLog(world, id);
    expect(events.filter((e) => e.step?.index === 2).map((e) => e.type)).toEqual(['STEP_SKIPPED']);
    // Nothing is written or published after the run ended.
    await new Promise((resolve) => setImmediate(resolve));
    expect(world.published).toHaveLength(publishedAtEnd);
    expect((await world.store.loadExecution(id))!.leaseOwner).toBeNull();
  });

  it('rides out an outage that its start commit met: the step runs again once its start has committed', async () => {
    const world = new World();
    const id = await world.submit(3);
    let outage = false;
    const step2Failed = deferred();
    world.behaviours.set(1, async () => {
      outage = true;
      // Step 1's end with step 2's start meets an unreachable database twice, and is tried again until it answers.
      world.store.failures.set('recordTransition', { times: 2, error: () => new Unavailable('connection refused') });
      void step2Failed.promise.then(() => (outage = false));
      return outcome(1);
    });
    // Step 2's statement goes to the same server: while it is away, the statement meets the outage too.
    world.behaviours.set(2, async () => {
      if (!outage) return outcome(2);
      step2Failed.resolve();
      throw new StepFailure('SQL_ERROR', 'connection refused', { cause: new Unavailable('ECONNREFUSED') });
    });
    await world.engine('worker-1').run(id);
    expect((await world.store.loadExecution(id))!.status).toBe('SUCCEEDED');
    expect(world.calls.map((c) => c.index)).toEqual([1, 2, 2, 3]);
    const events = await expectWellFormedLog(world, id);
    expect(events.some((e) => e.type === 'EXECUTION_RESUMED')).toBe(false);
    expect((await world.steps(id)).map((s) => s.attempts)).toEqual([1, 1, 1]);
  });

  it('stops the run, as any step does, when a step begun early meets an unreachable database that its start did not', async () => {
    const world = new World();
    const id = await world.submit(3);
    world.behaviours.set(2, async () => {
      throw new StepFailure('SQL_ERROR', 'terminating connection due to administrator command', { cause: new Unavailable('57P01') });
    });
    await world.engine('worker-1').run(id);
    // Its start committed at the first try: the outage is the step's own, and it is not run again in this run.
    expect(world.calls.map((c) => c.index)).toEqual([1, 2]);
    expect((await world.steps(id)).map((s) => s.status)).toEqual(['SUCCEEDED', 'RUNNING', 'PENDING']);
  });

  it('gives a step run again after its start rode an outage out its whole time, not what the outage left of it', async () => {
    const world = new World();
    // 300 ms per statement; the start's commit below rides out 250 + 500 + 1,000 ms of retries.
    const plan = validatePlan(
      { query: 'q', steps: [1, 2, 3].map((i) => ({ kind: 'SQL' as const, queryContext: `step ${i}`, sql: `SELECT ${i}` })) },
      null,
      { sampleSize: 2, stepTimeoutMs: 300, maxStepTimeoutMs: config.executor.maxStepTimeoutMs, limits: config.inputLimits },
    );
    const id = (await world.store.createExecution(TENANT, plan)).execution.id;
    let outage = false;
    world.behaviours.set(1, async () => {
      outage = true;
      world.store.failures.set('recordTransition', { times: 3, error: () => new Unavailable('connection refused') });
      return outcome(1);
    });
    world.behaviours.set(2, async (context) => {
      if (outage) {
        // The statement met the outage; the database answers again by the time the start commits.
        outage = false;
        throw new StepFailure('SQL_ERROR', 'connection refused', { cause: new Unavailable('ECONNREFUSED') });
      }
      // As the SQL handler does: a signal that ran out of time, or a deadline that passed, is the step's timeout.
      if (context.signal.aborted || context.deadline <= Date.now()) throw new StepFailure('STEP_TIMEOUT', 'the statement ran out of time');
      return outcome(2);
    });
    await world.engine().run(id);
    expect((await world.steps(id)).map((s) => [s.status, s.error?.code ?? null])).toEqual([
      ['SUCCEEDED', null],
      ['SUCCEEDED', null],
      ['SUCCEEDED', null],
    ]);
    expect(world.calls.map((c) => c.index)).toEqual([1, 2, 2, 3]);
  }, 15_000);

  it('does not run a step begun early again when its start, riding an outage out, reported a cancel', async () => {
    const world = new World();
    const id = await world.submit(3);
    const step2Failed = deferred();
    const view = Object.create(world.store) as MemoryExecutionStore;
    let tries = 0;
    view.recordTransition = async (executionId, batch) => {
      const types = (Array.isArray(batch) ? batch : [batch]).map((t: Transition) => t.type);
      if (types.join() === 'STEP_SUCCEEDED,STEP_STARTED' && tries++ === 0) {
        // Step 2's statement meets the outage meanwhile; the commit is tried again, and another process asks for a cancel.
        await step2Failed.promise;
        await world.store.requestCancel(TENANT, executionId);
        throw new Unavailable('connection refused');
      }
      return world.store.recordTransition(executionId, batch);
    };
    world.behaviours.set(2, async () => {
      step2Failed.resolve();
      throw new StepFailure('SQL_ERROR', 'connection refused', { cause: new Unavailable('ECONNREFUSED') });
    });
    await new Engine(world.engineDeps('worker-1', view)).run(id);
    expect((await world.steps(id)).map((s) => s.status)).toEqual(['SUCCEEDED', 'CANCELLED', 'SKIPPED']);
    expect(world.calls.map((c) => c.index)).toEqual([1, 2]);
  });

  for (const moment of ['before the commit answers', 'reported by the commit'] as const) {
    it(`cancels a step begun early by a cancel ${moment}: step 2 CANCELLED, step 3 SKIPPED`, async () => {
      const world = new World();
      const id = await world.submit(3);
      const step2Begun = deferred();
      const view = gatedStart(world, step2Begun.promise, async (executionId) => {
        if (moment === 'before the commit answers') engine.cancelRun(executionId);
        else await world.store.requestCancel(TENANT, executionId);
      });
      world.behaviours.set(2, async (context) => {
        step2Begun.resolve();
        return waitForAbort(context);
      });
      const engine = new Engine(world.engineDeps('worker-1', view));
      await engine.run(id);
      expect((await world.steps(id)).map((s) => s.status)).toEqual(['SUCCEEDED', 'CANCELLED', 'SKIPPED']);
      const events = await expectWellFormedLog(world, id);
      expect(events.at(-1)!.type).toBe('EXECUTION_CANCELLED');
    });
  }

  it('lets the lease go at a shutdown while a step runs early; the next run finishes without running step 1 again', async () => {
    const world = new World();
    const id = await world.submit(3);
    const step2Begun = deferred();
    let stopping: Promise<void> | undefined;
    const view = gatedStart(world, step2Begun.promise, () => {
      stopping = engine.stopRuns(1_000);
    });
    world.behaviours.set(2, async (context) => {
      step2Begun.resolve();
      return waitForAbort(context);
    });
    const engine = new Engine(world.engineDeps('worker-1', view));
    await engine.run(id);
    await stopping;
    expect((await world.store.loadExecution(id))!.leaseOwner).toBeNull();
    expect((await world.steps(id)).map((s) => s.status)).toEqual(['SUCCEEDED', 'RUNNING', 'PENDING']);
    world.behaviours.delete(2);
    await world.engine('worker-2').run(id);
    expect((await world.store.loadExecution(id))!.status).toBe('SUCCEEDED');
    expect(world.calls.map((c) => c.index)).toEqual([1, 2, 2, 3]);
    await expectWellFormedLog(world, id);
  });

  it('leaves nothing of a step begun early whose process died at its start', async () => {
    const world = new World();
    const id = await world.submit(3);
    world.behaviours.set(2, async (context) => {
      context.reportProgress('halfway');
      return waitForAbort(context);
    });
    // The process dies at its second commit (step 1's end with step 2's start).
    await world.crashingEngine(1).run(id);
    expect((await world.steps(id)).map((s) => s.status)).toEqual(['RUNNING', 'PENDING', 'PENDING']);
    expect((await world.events(id)).map((e) => e.type)).toEqual(['EXECUTION_STARTED', 'STEP_STARTED']);
  });

  for (const why of ['the setting is off (PGlite)', "the step before's result was cut (its commit carries every record)"] as const) {
    it(`begins a SQL step only after its start has committed when ${why}`, async () => {
      const world = new World();
      if (why.startsWith('the setting')) world.settings.beginSqlStepsEarly = false;
      else {
        world.settings.resultMaxBytes = 200;
        world.behaviours.set(1, async () => outcome(1, 20));
      }
      const id = await world.submit(3);
      let seenByStep2: StepUpdate | undefined;
      world.behaviours.set(2, async () => {
        seenByStep2 = world.published.at(-1);
        return outcome(2);
      });
      await world.engine().run(id);
      expect(seenByStep2).toMatchObject({ type: 'STEP_STARTED', step: { index: 2, status: 'RUNNING' } });
      await expectWellFormedLog(world, id);
    });
  }
});
