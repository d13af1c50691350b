import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  expectOnlyTheFailedRun,
  expectStillServing,
  OTHER_SCHEMA,
  startAttackTarget,
  snapshot,
  type AttackTarget,
} from './support/attacks.js';
import { backends } from './support/database.js';
import { runPlan, sqlStep } from './support/plans.js';

/**
 * Hostile SQL a client sends as a SQL step's `sql`. The plan is valid input, so it is stored and
 * runs; the step must fail with `code`, change nothing in any tenant's data or in the database's
 * objects, keep no records, and leave the service answering the next plan.
 */
interface SqlAttack {
  name: string;
  sql: string;
  code: 'SQL_REJECTED' | 'STEP_TIMEOUT';
  /** What the step's error message must say (why it was refused). */
  message: RegExp;
  stepTimeoutMs?: number;
}

const SQL_ATTACKS: SqlAttack[] = [
  // Several statements in one step.
  { name: 'two statements', sql: 'SELECT 1; DROP TABLE users', code: 'SQL_REJECTED', message: /multiple statements \(2\)/ },
  { name: 'a block comment before a second statement', sql: 'SELECT 1 /* */; DROP TABLE users --', code: 'SQL_REJECTED', message: /multiple statements/ },
  { name: 'a line comment hiding the SELECT of a DELETE', sql: '--SELECT 1\nDELETE FROM users', code: 'SQL_REJECTED', message: /DELETE statements are not allowed/ },
  { name: 'a line comment then a semicolon and a DELETE', sql: 'SELECT 1 --\n; DELETE FROM users', code: 'SQL_REJECTED', message: /multiple statements/ },
  { name: 'a statement inside a block comment', sql: '/* SELECT 1 */ TRUNCATE users', code: 'SQL_REJECTED', message: /TRUNCATE statements are not allowed/ },
  // Invisible characters that would make the checked text differ from what a reviewer sees.
  { name: 'a zero-width space (U+200B) before a second statement', sql: 'SELECT 1;\u200BDROP TABLE users', code: 'SQL_REJECTED', message: /U\+200B/ },
  { name: 'a zero-width joiner (U+200D) inside a table name', sql: 'SELECT * FROM us\u200Ders', code: 'SQL_REJECTED', message: /U\+200D/ },
  { name: 'a byte order mark (U+FEFF) at the start', sql: '\uFEFFSELECT 1', code: 'SQL_REJECTED', message: /U\+FEFF/ },
  { name: 'a right-to-left override (U+202E)', sql: "SELECT '\u202Esresu' AS x", code: 'SQL_REJECTED', message: /U\+202E/ },
  // Writes disguised as reads.
  { name: 'a writable CTE (DELETE ... RETURNING)', sql: 'WITH d AS (DELETE FROM users RETURNING *) SELECT * FROM d', code: 'SQL_REJECTED', message: /data-modifying DELETE/ },
  { name: 'a writable CTE (UPDATE ... RETURNING)', sql: "WITH u AS (UPDATE users SET status = 'x' RETURNING id) SELECT count(*) FROM u", code: 'SQL_REJECTED', message: /data-modifying UPDATE/ },
  { name: 'SELECT INTO a new table', sql: 'SELECT * INTO stolen FROM users', code: 'SQL_REJECTED', message: /SELECT INTO is not allowed/ },
  { name: 'CREATE TABLE AS', sql: 'CREATE TABLE stolen AS SELECT * FROM users', code: 'SQL_REJECTED', message: /not allowed/ },
  { name: 'FOR UPDATE (row locks)', sql: 'SELECT * FROM users FOR UPDATE', code: 'SQL_REJECTED', message: /locking clauses are not allowed/ },
  { name: 'FOR SHARE SKIP LOCKED in a subquery', sql: 'SELECT * FROM (SELECT id FROM users FOR SHARE SKIP LOCKED) s', code: 'SQL_REJECTED', message: /locking clauses are not allowed/ },
  { name: 'a DO block', sql: 'DO $$ BEGIN DROP TABLE users; END $$', code: 'SQL_REJECTED', message: /DO statements are not allowed/ },
  { name: 'COPY ... TO PROGRAM', sql: "COPY (SELECT 1) TO PROGRAM 'id'", code: 'SQL_REJECTED', message: /COPY statements are not allowed/ },
  // Changing the session the statement runs in.
  { name: "set_config('role')", sql: "SELECT set_config('role', 'postgres', false)", code: 'SQL_REJECTED', message: /function set_config is not allowed/ },
  { name: "set_config('search_path')", sql: "SELECT set_config('search_path', 'public', true)", code: 'SQL_REJECTED', message: /function set_config is not allowed/ },
  { name: "set_config('statement_timeout')", sql: "SELECT set_config('statement_timeout', '0', false)", code: 'SQL_REJECTED', message: /function set_config is not allowed/ },
  { name: "pg_catalog.set_config('default_transaction_read_only')", sql: "SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false)", code: 'SQL_REJECTED', message: /function set_config is not allowed/ },
  { name: 'set_config in a WHERE clause', sql: "SELECT id FROM users WHERE set_config('role', 'postgres', true) IS NOT NULL", code: 'SQL_REJECTED', message: /function set_config is not allowed/ },
  { name: 'SET ROLE', sql: 'SET ROLE postgres', code: 'SQL_REJECTED', message: /SET statements are not allowed/ },
  { name: 'RESET ROLE', sql: 'RESET ROLE', code: 'SQL_REJECTED', message: /SET statements are not allowed/ },
  { name: 'SET search_path', sql: 'SET search_path TO public', code: 'SQL_REJECTED', message: /SET statements are not allowed/ },
  { name: 'SET SESSION AUTHORIZATION', sql: 'SET SESSION AUTHORIZATION postgres', code: 'SQL_REJECTED', message: /SET statements are not allowed/ },
  { name: 'SET TRANSACTION READ WRITE', sql: 'SET TRANSACTION READ WRITE', code: 'SQL_REJECTED', message: /SET statements are not allowed/ },
  // Functions that reach outside the tenant's data.
  { name: 'pg_sleep', sql: 'SELECT pg_sleep(30)', code: 'SQL_REJECTED', message: /function pg_sleep is not allowed/ },
  { name: 'pg_sleep as a table function in a subquery', sql: 'SELECT id FROM users WHERE id = (SELECT 1 FROM pg_sleep(30))', code: 'SQL_REJECTED', message: /function pg_sleep is not allowed/ },
  { name: 'pg_read_file', sql: "SELECT pg_read_file('/etc/passwd')", code: 'SQL_REJECTED', message: /function pg_read_file is not allowed/ },
  { name: 'pg_ls_dir', sql: "SELECT * FROM pg_ls_dir('.')", code: 'SQL_REJECTED', message: /function pg_ls_dir is not allowed/ },
  { name: 'dblink', sql: "SELECT * FROM dblink('dbname=postgres', 'DROP TABLE tenant_demo.users') AS t(x text)", code: 'SQL_REJECTED', message: /function dblink is not allowed/ },
  { name: 'lo_import', sql: "SELECT lo_import('/etc/passwd')", code: 'SQL_REJECTED', message: /function lo_import is not allowed/ },
  { name: 'a schema-qualified function (public.anything)', sql: 'SELECT public.evil()', code: 'SQL_REJECTED', message: /only pg_catalog may qualify a function/ },
  // Statements that would run forever or fill memory: the guard lets these functions through, and the
  // step's time limit (stepTimeoutMs) cancels them.
  { name: 'a cross join bomb', sql: 'SELECT count(*) FROM users a, users b, users c, users d', code: 'STEP_TIMEOUT', message: /longer than 500 ms/, stepTimeoutMs: 500 },
  { name: 'an endless recursive CTE', sql: 'WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r', code: 'STEP_TIMEOUT', message: /longer than 500 ms/, stepTimeoutMs: 500 },
  { name: 'a memory bomb (a 1 GB string)', sql: "SELECT length(repeat('x', 1000000000)) AS n", code: 'STEP_TIMEOUT', message: /longer than 500 ms/, stepTimeoutMs: 500 },
  // Another tenant's data and the system catalogs.
  { name: "another tenant's table, schema-qualified", sql: `SELECT * FROM ${OTHER_SCHEMA}.secrets`, code: 'SQL_REJECTED', message: /relation tenant_other\.secrets is not allowed/ },
  { name: "another tenant's table, quoted", sql: `SELECT * FROM "${OTHER_SCHEMA}"."secrets"`, code: 'SQL_REJECTED', message: /relation tenant_other\.secrets is not allowed/ },
  { name: "another tenant's table, unqualified", sql: 'SELECT * FROM secrets', code: 'SQL_REJECTED', message: /relation secrets is not available/ },
  { name: "another tenant's table in a scalar subquery", sql: `SELECT (SELECT secret FROM ${OTHER_SCHEMA}.secrets LIMIT 1) AS s FROM users LIMIT 1`, code: 'SQL_REJECTED', message: /tenant_other\.secrets is not allowed/ },
  { name: "the service's own tables (public.api_keys)", sql: 'SELECT * FROM public.api_keys', code: 'SQL_REJECTED', message: /public\.api_keys is not allowed/ },
  { name: 'pg_catalog.pg_authid (password hashes)', sql: 'SELECT rolname, rolpassword FROM pg_catalog.pg_authid', code: 'SQL_REJECTED', message: /pg_catalog\.pg_authid is not allowed/ },
  { name: 'pg_roles, unqualified', sql: 'SELECT rolname FROM pg_roles', code: 'SQL_REJECTED', message: /system catalogs are off limits/ },
  { name: "pg_stat_activity (other sessions' queries)", sql: 'SELECT query FROM pg_stat_activity', code: 'SQL_REJECTED', message: /system catalogs are off limits/ },
  { name: 'information_schema.tables', sql: 'SELECT table_schema, table_name FROM information_schema.tables', code: 'SQL_REJECTED', message: /information_schema\.tables is not allowed/ },
  { name: 'a regclass cast naming a foreign table', sql: `SELECT '${OTHER_SCHEMA}.secrets'::regclass::oid AS o`, code: 'SQL_REJECTED', message: /type regclass is not allowed/ },
  { name: 'current_setting (reads the session settings)', sql: "SELECT current_setting('data_directory')", code: 'SQL_REJECTED', message: /function current_setting is not allowed/ },
  { name: 'current_user', sql: 'SELECT current_user', code: 'SQL_REJECTED', message: /current_user is not allowed/ },
  // Attribute notation: t.f and (expr).f call f(t) and f(expr) when there is no column or field f.
  { name: 't.pg_typeof (attribute notation)', sql: 'SELECT t.pg_typeof AS x FROM users t', code: 'SQL_REJECTED', message: /attribute notation \.pg_typeof would call function pg_typeof, which is not allowed/ },
  { name: 't.hash_record (attribute notation)', sql: 'SELECT t.hash_record AS x FROM users t', code: 'SQL_REJECTED', message: /would call function hash_record, which is not allowed/ },
  { name: '(u.id::bigint).pg_advisory_lock (a session lock that outlives the transaction)', sql: 'SELECT (u.id::bigint).pg_advisory_lock AS x FROM users u', code: 'SQL_REJECTED', message: /would call function pg_advisory_lock, which is not allowed/ },
  // Types that probe the catalogs or the server.
  { name: "'name=r/x'::aclitem (tells whether a role exists)", sql: "SELECT 'postgres=r/postgres'::aclitem AS a", code: 'SQL_REJECTED', message: /type aclitem is not allowed/ },
  { name: 'a pg_* type (pg_lsn)', sql: "SELECT '0/0'::pg_lsn AS l", code: 'SQL_REJECTED', message: /type pg_lsn is not allowed/ },
  // System columns expose the cluster's transaction counter and row locations.
  { name: 'the system column xmin', sql: 'SELECT xmin AS x FROM users', code: 'SQL_REJECTED', message: /system column xmin is not allowed/ },
  { name: 'the system column xmax, qualified', sql: 'SELECT u.xmax AS x FROM users u', code: 'SQL_REJECTED', message: /system column xmax is not allowed/ },
  { name: 'the system column cmin, schema-qualified', sql: 'SELECT tenant_demo.users.cmin AS x FROM tenant_demo.users', code: 'SQL_REJECTED', message: /system column cmin is not allowed/ },
  { name: 'the system column cmax', sql: 'SELECT cmax AS x FROM users', code: 'SQL_REJECTED', message: /system column cmax is not allowed/ },
  { name: 'the system column ctid', sql: 'SELECT ctid AS x FROM users', code: 'SQL_REJECTED', message: /system column ctid is not allowed/ },
  { name: 'the system column tableoid', sql: 'SELECT tableoid AS x FROM users', code: 'SQL_REJECTED', message: /system column tableoid is not allowed/ },
];

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`hostile SQL steps on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let target: AttackTarget;

    beforeAll(async () => {
      target = await startAttackTarget(backend);
    });
    afterAll(async () => {
      await target?.server.close();
    });

    for (const attack of SQL_ATTACKS) {
      it(`${attack.name}: fails ${attack.code}, changes and keeps nothing, and the next plan runs`, async () => {
        const { database } = target.server.app;
        const before = await snapshot(database);

        const { id, execution } = await runPlan(
          target.demo,
          { query: attack.name, steps: [sqlStep(attack.sql)] },
          attack.stepTimeoutMs ? { stepTimeoutMs: attack.stepTimeoutMs } : undefined,
        );

        // (1) The code, on the step and on the execution.
        const step = execution.steps[0]!;
        expect(step.status).toBe('FAILED');
        expect(step.error?.code).toBe(attack.code);
        expect(step.error?.message).toMatch(attack.message);
        expect(execution.status).toBe('FAILED');
        expect(execution.error?.code).toBe(attack.code);

        // (2) Nothing changed, and nothing but the failed run itself was stored.
        await expectOnlyTheFailedRun(database, before, id);
        expect(step.result).toBeNull();
        expect(step.recordCount).toBeNull();

        // (3) The next plan runs: the database connection (or PGlite worker) and the sandbox are fine.
        await expectStillServing(target.demo);
      });
    }
  });
}
