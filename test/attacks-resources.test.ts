import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PlanInput } from './generated/graphql.js';
import {
  expectOnlyTheFailedRun,
  expectStillServing,
  serviceRows,
  snapshot,
  startAttackTarget,
  type AttackTarget,
} from './support/attacks.js';
import { backends } from './support/database.js';
import { describeLatencies, servedMeanwhile } from './support/latency.js';
import { ExecutionsQuery } from './support/operations.js';
import { runPlan, sqlStep } from './support/plans.js';

const MIB = 1_048_576;

/**
 * Attacks on the service's resources: plans that are valid input, stored and run, but would make the
 * service hold too much memory, write too much to disk, or spill without bound in the database. Each
 * row checks the code and its message (which names the setting), that nothing but the failed run was
 * stored (or, where earlier steps succeeded, that their results stayed), that another tenant was
 * served all along (its latencies are recorded on the test), and that the next plan runs.
 * The memory bounds of the whole process are tested in test/memory-bounds.test.ts.
 */
const RESOURCE_ENV: Record<string, string> = {
  STEPCAST_EXECUTION_MAX_BYTES: String(4 * MIB),
  STEPCAST_SQL_WORK_MEM_MB: '1',
  STEPCAST_SQL_TEMP_FILE_LIMIT_MB: '8',
  // Room for a program to build a large result, so that the execution's budget is what stops it.
  STEPCAST_SANDBOX_MEMORY_MB: '64',
  STEPCAST_SANDBOX_CPU_MS: '5000',
  STEPCAST_SANDBOX_MAX_RESULT_BYTES: String(8 * MIB),
};

interface ResourceAttack {
  name: string;
  steps: PlanInput['steps'];
  code: 'RESULT_TOO_LARGE' | 'TEMP_FILE_LIMIT';
  message: RegExp;
  /** The step that must fail (1-based); the ones before it succeed and keep their results. */
  failedStep: number;
}

/** n rows of about `bytes` of text each, as one SQL step. */
const rowsOf = (n: number, bytes: number) => sqlStep(`SELECT g AS id, repeat('x', ${bytes}) AS pad FROM generate_series(1, ${n}) g`);

const RESOURCE_ATTACKS: ResourceAttack[] = [
  {
    name: 'one row of 2 MB (the database refuses to send a row over STEPCAST_ROW_MAX_BYTES)',
    steps: [sqlStep("SELECT repeat('x', 2000000) AS big")],
    code: 'RESULT_TOO_LARGE',
    message: /a row of the result is 200000\d bytes, over the limit of 1048576 bytes per row \(STEPCAST_ROW_MAX_BYTES\)/,
    failedStep: 1,
  },
  {
    name: 'a 2 MB row with a column named q (the name the wrapper must not confuse with the measured row)',
    steps: [sqlStep("SELECT repeat('x', 2000000) AS big, 0 AS q")],
    code: 'RESULT_TOO_LARGE',
    message: /a row of the result is 200\d{4} bytes, over the limit of 1048576 bytes per row \(STEPCAST_ROW_MAX_BYTES\)/,
    failedStep: 1,
  },
  {
    name: 'a 0.8 MB jsonb value that takes 13 MB of heap (the budget counts heap, not JSON text)',
    steps: [sqlStep("SELECT jsonb_agg('{}'::jsonb) AS j FROM generate_series(1, 200000)")],
    code: 'RESULT_TOO_LARGE',
    message: /over this execution's memory limit of 4\.0 MiB \(STEPCAST_EXECUTION_MAX_BYTES\)/,
    failedStep: 1,
  },
  {
    name: 'steps that together hold more than STEPCAST_EXECUTION_MAX_BYTES for later steps',
    steps: Array.from({ length: 6 }, () => rowsOf(2_000, 500)),
    code: 'RESULT_TOO_LARGE',
    message: /step 4 needs more than the 0\.\d MiB left for its result, and the earlier steps keep 3\.\d MiB for later steps: that is over this execution's memory limit of 4\.0 MiB \(STEPCAST_EXECUTION_MAX_BYTES\)/,
    failedStep: 4,
  },
  {
    name: 'a program that returns 10,000 records of 600 characters (the budget holds for API steps too)',
    steps: [
      {
        kind: 'API',
        queryContext: 'many records',
        code: "return Array.from({ length: 10000 }, (_, i) => ({ i, s: 'x'.repeat(600) }));",
      },
    ],
    code: 'RESULT_TOO_LARGE',
    message: /step 1 needs about \d+\.\d MiB of memory for the result its program returned.*\(STEPCAST_EXECUTION_MAX_BYTES\)/,
    failedStep: 1,
  },
  {
    name: 'a sort that spills more than STEPCAST_SQL_TEMP_FILE_LIMIT_MB to temporary files',
    steps: [sqlStep('SELECT count(*) AS n FROM (SELECT g FROM generate_series(1, 3000000) g ORDER BY g DESC) s')],
    code: 'TEMP_FILE_LIMIT',
    message: /more than 8 MB of temporary files \(STEPCAST_SQL_TEMP_FILE_LIMIT_MB\)/,
    failedStep: 1,
  },
];

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`attacks on the service's resources on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let target: AttackTarget;

    beforeAll(async () => {
      target = await startAttackTarget(backend, RESOURCE_ENV);
    });
    afterAll(async () => {
      await target?.server.close();
    });

    const otherTenantsHistory = async () => {
      const page = await target.other.request(ExecutionsQuery, { first: 1 });
      return page.errors === undefined && page.data?.executions.pageInfo !== undefined;
    };

    for (const attack of RESOURCE_ATTACKS) {
      it(`${attack.name}: fails ${attack.code} naming the setting, keeps what came before, and others are served`, async ({ annotate }) => {
        const { database } = target.server.app;
        const before = await snapshot(database);

        const served = await servedMeanwhile(otherTenantsHistory, () =>
          runPlan(target.demo, { query: attack.name, steps: attack.steps }, { stepTimeoutMs: 30_000 }),
        );
        const { id, execution } = served.result;
        await annotate(`another tenant's history queries meanwhile: ${describeLatencies(served.latencies)}`);
        expect(served.failures, "another tenant's requests were all answered").toBe(0);

        const failed = execution.steps[attack.failedStep - 1]!;
        expect(failed.status).toBe('FAILED');
        expect(failed.error?.code).toBe(attack.code);
        expect(failed.error?.message).toMatch(attack.message);
        expect(execution.status).toBe('FAILED');
        expect(execution.error?.code).toBe(attack.code);
        expect(failed.result).toBeNull();
        expect(failed.recordCount).toBeNull();
        const earlier = execution.steps.slice(0, attack.failedStep - 1);
        expect(earlier.map((step) => step.status)).toEqual(earlier.map(() => 'SUCCEEDED'));
        expect(earlier.map((step) => step.recordCount)).toEqual(earlier.map(() => 2_000));
        expect(execution.steps.slice(attack.failedStep).map((step) => step.status)).toEqual(
          execution.steps.slice(attack.failedStep).map(() => 'SKIPPED'),
        );
        if (attack.failedStep === 1) await expectOnlyTheFailedRun(database, before, id);

        await expectStillServing(target.demo);
      });
    }

    it('stores a run once: events hold what changed, not the step code, so 19 programs of 48 KB reporting progress 100 times store under 3x the request', async ({ annotate }) => {
      const padding = 'x'.repeat(48_000);
      const steps: PlanInput['steps'] = Array.from({ length: 19 }, (_, i) => ({
        kind: 'API',
        queryContext: `step ${i + 1}`,
        code: `/* ${padding} */\nfor (let i = 0; i < 100; i++) progress('progress ' + i);\nreturn [{ step: ${i + 1} }];`,
      }));
      const plan: PlanInput = { query: 'progress', steps };
      const requestBytes = Buffer.byteLength(JSON.stringify({ query: 'mutation', variables: { plan } }));

      const { id, execution, updates } = await runPlan(target.demo, plan);
      expect(execution.status).toBe('SUCCEEDED');
      // Reports that arrive while one is being stored are coalesced: each step's last update has its newest.
      for (let index = 1; index <= 19; index++) {
        const progress = updates.filter((update) => update.type === 'STEP_PROGRESS' && update.step?.index === index);
        expect(progress.length).toBeGreaterThan(0);
        expect(progress.length).toBeLessThanOrEqual(100);
        expect(progress.at(-1)!.message).toBe('progress 99');
      }

      const [stored] = await serviceRows<{ stored: number; produced: number; events: number }>(
        target.server.app.database,
        `SELECT
           (SELECT octet_length(e::text) FROM executions e WHERE e.id = '${id}')
           + (SELECT sum(octet_length(s::text)) FROM step_results s WHERE s.execution_id = '${id}')
           + (SELECT sum(octet_length(v::text)) FROM step_events v WHERE v.execution_id = '${id}') AS stored,
           (SELECT coalesce(sum(octet_length(coalesce(s.result::text, '') || coalesce(s.sample::text, '') || coalesce(s.logs::text, ''))), 0)
              FROM step_results s WHERE s.execution_id = '${id}')
           + (SELECT coalesce(sum(octet_length(v.message)), 0) FROM step_events v WHERE v.execution_id = '${id}') AS produced,
           (SELECT count(*)::int FROM step_events v WHERE v.execution_id = '${id}') AS events`,
      );
      const { produced, events } = stored!;
      const storedBytes = Number(stored!.stored);
      await annotate(
        `request ${requestBytes} bytes, results and progress ${produced} bytes, stored ${storedBytes} bytes ` +
          `in ${events} events and rows (${(storedBytes / (requestBytes + Number(produced))).toFixed(2)}x)`,
      );
      expect(events).toBe(updates.length);
      expect(storedBytes).toBeLessThanOrEqual(3 * (requestBytes + Number(produced)));
    });

    it('coalesces progress reported in a tight loop: a program reporting 100 times stores a few updates, the newest last', async ({ annotate }) => {
      const { execution, updates } = await runPlan(target.demo, {
        query: 'empty progress',
        steps: [{ kind: 'API', queryContext: 'noisy', code: "for (let i = 0; i < 99; i++) progress(''); progress('done'); return [];" }],
      });
      expect(execution.status).toBe('SUCCEEDED');
      const progress = updates.filter((update) => update.type === 'STEP_PROGRESS');
      await annotate(`${progress.length} STEP_PROGRESS updates stored for 100 reports`);
      expect(progress.length).toBeGreaterThan(0);
      expect(progress.length).toBeLessThan(50);
      expect(progress.at(-1)!.message).toBe('done');
    });
  });
}
