import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends } from './support/database.js';
import { runPlan, sqlStep } from './support/plans.js';
import { startTestServer, type TestServer } from './support/server.js';

const HOSTILE_SQL: [string, string, RegExp][] = [
  ['two statements', 'SELECT 1; DELETE FROM users', /multiple statements/],
  ['a comment hiding a second statement', 'SELECT 1 /* ; */; DROP TABLE users', /multiple statements/],
  ['a zero-width space', 'SEL\u200bECT * FROM users', /character/],
  ['an UPDATE', "UPDATE users SET status = 'x'", /UPDATE|statement/],
  ['a writable CTE', 'WITH d AS (DELETE FROM users RETURNING *) SELECT * FROM d', /data-modifying|DELETE/],
  ['SELECT INTO', 'SELECT * INTO stolen FROM users', /INTO/],
  ['FOR UPDATE', 'SELECT * FROM users FOR UPDATE', /FOR UPDATE/],
  ['set_config', "SELECT set_config('statement_timeout', '0', false)", /set_config/],
  ['pg_sleep', 'SELECT pg_sleep(30)', /pg_sleep/],
  ['pg_read_file', "SELECT pg_read_file('/etc/passwd')", /pg_read_file/],
  ['dblink', "SELECT * FROM dblink('host=127.0.0.1', 'SELECT 1') AS t(x int)", /dblink/],
  ['lo_import', "SELECT lo_import('/etc/passwd')", /lo_import/],
  ['pg_advisory_lock', 'SELECT pg_advisory_lock(1)', /pg_advisory_lock/],
  ['the catalog', 'SELECT * FROM pg_catalog.pg_authid', /pg_catalog/],
  ['information_schema', 'SELECT * FROM information_schema.tables', /information_schema/],
  ["another tenant's schema", 'SELECT * FROM tenant_other.users', /tenant_other/],
  ['the public schema', 'SELECT * FROM public.executions', /public/],
  ['a regclass cast', "SELECT 'pg_authid'::regclass", /regclass/],
  ['an unknown table', 'SELECT * FROM secrets', /secrets/],
];

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`SQL steps on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    beforeAll(async () => {
      server = await startTestServer(backend, {
        env: {
          STEPCAST_ROW_CAP: '50',
          STEPCAST_RESULT_MAX_BYTES: '4096',
          STEPCAST_STEP_MAX_BYTES: '65536',
          // More executions than the default burst (10), in a few seconds.
          STEPCAST_TENANT_RATE_BURST: '100',
          STEPCAST_MAX_SQL_CHARS: '50000',
        },
      });
    });
    afterAll(async () => {
      await server?.close();
    });

    it('rejects every hostile statement with SQL_REJECTED naming the reason, and changes nothing', async () => {
      const { execution } = await runPlan(server, {
        query: 'attack',
        steps: [
          ...HOSTILE_SQL.map(([name, sql]) => sqlStep(sql, { queryContext: name, critical: false })),
          sqlStep("SELECT count(*) AS users, count(*) FILTER (WHERE status = 'x') AS changed FROM users"),
        ],
      });
      HOSTILE_SQL.forEach(([name, , reason], i) => {
        const step = execution.steps[i]!;
        expect(step.status, name).toBe('FAILED');
        expect(step.error?.code, name).toBe('SQL_REJECTED');
        expect(step.error?.message, name).toMatch(reason);
      });
      expect(execution.status).toBe('SUCCEEDED');
      expect(execution.finalResult).toEqual([{ users: 200, changed: 0 }]);
    });

    it('runs a statement longer than the default limit when STEPCAST_MAX_SQL_CHARS allows it: validation and the guard agree', async () => {
      const sql = `SELECT length('${'x'.repeat(24_998)}') AS n`;
      expect(sql).toHaveLength(25_020);
      const { execution } = await runPlan(server, { query: 'a long statement', steps: [sqlStep(sql)] });
      expect(execution.steps[0]!.error).toBeNull();
      expect(execution.status).toBe('SUCCEEDED');
      expect(execution.steps[0]!.sql).toBe(sql);
      expect(execution.finalResult).toEqual([{ n: 24_998 }]);
    });

    it('cancels a statement that runs past stepTimeoutMs with STEP_TIMEOUT, and keeps serving', async () => {
      const { execution } = await runPlan(
        server,
        {
          query: 'cross join bomb',
          steps: [sqlStep('SELECT count(*) AS n FROM users a, users b, users c, users d, users e')],
        },
        { stepTimeoutMs: 500 },
      );
      expect(execution.status).toBe('FAILED');
      expect(execution.steps[0]!.error).toMatchObject({ code: 'STEP_TIMEOUT' });
      expect(execution.steps[0]!.error!.message).toContain('500 ms');
      const after = await runPlan(server, { query: 'still alive?', steps: [sqlStep('SELECT count(*) AS n FROM users')] });
      expect(after.execution.finalResult).toEqual([{ n: 200 }]);
    });

    it('caps rows at the row cap, counts what it returned, and says it truncated', async () => {
      const { execution } = await runPlan(server, {
        query: 'q',
        steps: [sqlStep('SELECT id FROM users ORDER BY id'), sqlStep('SELECT id FROM users ORDER BY id LIMIT 50')],
      });
      const [capped, exact] = execution.steps;
      expect(capped!.recordCount).toBe(50);
      expect(capped!.truncated).toBe(true);
      expect((capped!.result as { id: number }[]).map((r) => r.id)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
      expect(exact!.recordCount).toBe(50);
      expect(exact!.truncated).toBe(false);
    });

    it('keeps the stored result under the size cap while recordCount and later steps see every record', async () => {
      const { execution } = await runPlan(server, {
        query: 'q',
        steps: [
          sqlStep('SELECT id, email, name, department, title FROM users ORDER BY id LIMIT 40'),
          sqlStep('SELECT count(*) AS n FROM step_1'),
        ],
      });
      const first = execution.steps[0]!;
      expect(first.recordCount).toBe(40);
      expect(first.truncated).toBe(true);
      const stored = first.result as unknown[];
      expect(stored.length).toBeGreaterThan(0);
      expect(stored.length).toBeLessThan(40);
      expect(JSON.stringify(stored).length).toBeLessThanOrEqual(4096);
      expect(execution.finalResult).toEqual([{ n: 40 }]);
    });

    it('types step_N columns as the earlier step produced them, so dates and numbers compare', async () => {
      const { execution } = await runPlan(server, {
        query: 'q',
        steps: [
          sqlStep('SELECT id, created_at, mfa_enabled FROM users ORDER BY id LIMIT 20'),
          sqlStep(
            "SELECT count(*) AS recent FROM step_1 WHERE created_at > timestamptz '2023-01-01' AND mfa_enabled AND id > 0",
          ),
          sqlStep(
            "SELECT count(*) AS recent FROM (SELECT * FROM users ORDER BY id LIMIT 20) u WHERE created_at > timestamptz '2023-01-01' AND mfa_enabled",
          ),
        ],
      });
      expect(execution.status).toBe('SUCCEEDED');
      const [source, viaStep, direct] = execution.steps;
      expect(source!.columns).toEqual([
        { name: 'id', type: 'integer' },
        { name: 'created_at', type: 'timestamptz' },
        { name: 'mfa_enabled', type: 'boolean' },
      ]);
      const firstRecord = (source!.result as { created_at: string }[])[0]!;
      expect(firstRecord.created_at).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
      expect(viaStep!.result).toEqual(direct!.result);
    });

    it("reads a qualified column of an earlier step even when it is named like a function, and never one its relation lacks", async () => {
      const { execution } = await runPlan(server, {
        query: 'q',
        steps: [
          sqlStep('SELECT id, email AS name, 1 AS hash_record FROM users ORDER BY id LIMIT 2'),
          sqlStep('SELECT s.name FROM step_1 s ORDER BY s.id'),
          sqlStep('SELECT u.hash_record FROM users u LIMIT 1', { critical: false }),
        ],
      });
      expect(execution.steps[0]!.status).toBe('SUCCEEDED');
      expect(execution.steps[1]!.error).toBeNull();
      expect(execution.steps[1]!.recordCount).toBe(2);
      // users has no column hash_record, whatever step 1 has: this would call hash_record(u).
      expect(execution.steps[2]!.error).toMatchObject({ code: 'SQL_REJECTED' });
      expect(execution.steps[2]!.error!.message).toMatch(/attribute notation \.hash_record would call function hash_record/);
    });

    it('stops reading a result at STEPCAST_STEP_MAX_BYTES and says it truncated', async () => {
      const { execution } = await runPlan(server, {
        query: 'q',
        steps: [sqlStep("SELECT g AS n, repeat('x', 5000) AS filler FROM generate_series(1, 40) g")],
      });
      const step = execution.steps[0]!;
      expect(step.status).toBe('SUCCEEDED');
      expect(step.truncated).toBe(true);
      expect(step.recordCount).toBeGreaterThan(0);
      expect(step.recordCount).toBeLessThan(14);
    });

    it('stops the statement in the database once the result passes STEPCAST_STEP_MAX_BYTES, instead of computing the rest', async () => {
      // 200,000 rows of 20 kB would take the database far longer than 5 s to compute in full.
      const { execution } = await runPlan(
        server,
        { query: 'q', steps: [sqlStep("SELECT g AS n, repeat('x', 20000) AS filler FROM generate_series(1, 200000) g")] },
        { stepTimeoutMs: 5_000 },
      );
      const step = execution.steps[0]!;
      expect(step.error).toBeNull();
      expect(step.status).toBe('SUCCEEDED');
      expect(step.truncated).toBe(true);
      expect(step.recordCount).toBeGreaterThan(0);
      expect(step.recordCount).toBeLessThanOrEqual(3);
    });

    it('refuses more than one statement in the database call itself, even past the guard', async () => {
      const { database } = server.app;
      await expect(
        database.runReadOnly({
          sql: 'SELECT 1 AS a; COMMIT; CREATE TABLE escaped (x int)',
          params: [],
          timeoutMs: 5_000,
          searchPath: 'tenant_demo',
        }),
      ).rejects.toThrow(/multiple commands|cannot insert multiple/);
      const tables = await database.runReadOnly({
        sql: "SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'escaped'",
        params: [],
        timeoutMs: 5_000,
        searchPath: 'tenant_demo',
      });
      expect(Number(tables.rows[0]!.n)).toBe(0);
    });

    it('returns numerics as JSON numbers only where exact, and as decimal text otherwise', async () => {
      const { execution } = await runPlan(server, {
        query: 'q',
        steps: [
          sqlStep(
            "SELECT 12345678901234.56789::numeric AS big, 0.1000000000000000000001::numeric AS tiny, 12.5000::numeric AS plain, 9007199254740993::bigint AS huge",
          ),
        ],
      });
      expect(execution.finalResult).toEqual([
        { big: '12345678901234.56789', tiny: '0.1000000000000000000001', plain: 12.5, huge: '9007199254740993' },
      ]);
    });

    it('returns counts and numerics as JSON numbers', async () => {
      const { execution } = await runPlan(server, {
        query: 'q',
        steps: [sqlStep('SELECT count(*) AS n, avg(id) AS mean, sum(id)::numeric(12,2) AS total FROM users')],
      });
      expect(execution.finalResult).toEqual([{ n: 200, mean: 100.5, total: 20100 }]);
    });

    it('does not offer the relation of a step that failed', async () => {
      const { execution } = await runPlan(server, {
        query: 'q',
        steps: [sqlStep('SELECT 1 / 0 AS boom', { critical: false }), sqlStep('SELECT * FROM step_1')],
      });
      expect(execution.steps[1]!.error).toMatchObject({ code: 'SQL_REJECTED' });
      expect(execution.steps[1]!.error!.message).toMatch(/step_1/);
    });

    it('reports a database error in the statement as SQL_ERROR with the database message', async () => {
      const { execution } = await runPlan(server, {
        query: 'q',
        steps: [sqlStep('SELECT no_such_column FROM users')],
      });
      expect(execution.steps[0]!.error).toMatchObject({ code: 'SQL_ERROR', retryable: false });
      expect(execution.steps[0]!.error!.message).toContain('no_such_column');
    });
  });
}
