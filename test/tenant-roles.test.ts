import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq, sql } from 'drizzle-orm';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { openDatabase, type Database, type ReadOnlyQuery } from '../src/db/client.js';
import { DEMO_TENANT_ID, DEMO_TENANT_SCHEMA } from '../src/db/demo-data.js';
import { introspectFunctionNames } from '../src/db/introspect.js';
import { tenants } from '../src/db/tables.js';
import { provisionTenantDataAccess, tenantRoleFor, tenantRolePrefix } from '../src/db/tenant-roles.js';
import { ALLOWED_FUNCTIONS, guardSql } from '../src/guard/sql-guard.js';
import { backends, createTestDatabase, postgresUrl, tenantRolesOf, type Backend, type TestDatabase } from './support/database.js';
import { seedPgliteDataDir } from './support/pglite-template.js';
import { runPlan, sqlStep } from './support/plans.js';
import { startTestServer, type TestServer } from './support/server.js';

const SERVICE_TABLES = ['executions', 'step_results', 'step_events', 'tenants', 'api_keys'];
const PERMISSION_DENIED = '42501';
const READ_ONLY_TRANSACTION = '25006';

/** Rows of a statement run as the service, outside runReadOnly (so with the connection's own settings). */
async function serviceRows(database: Database, query: string): Promise<Record<string, unknown>[]> {
  const result = (await database.db.execute(sql.raw(query))) as unknown;
  return Array.isArray(result) ? (result as Record<string, unknown>[]) : (result as { rows: Record<string, unknown>[] }).rows;
}

async function openTestDatabase(backend: Backend, dataDir: string, url: string | undefined): Promise<Database> {
  return backend === 'pglite'
    ? openDatabase(loadConfig({ DATA_DIR: dataDir }).database)
    : openDatabase({ kind: 'postgres', url: url!, poolSize: 1 }, { tenantStatements: 1 });
}

const tenantSchemaScript = (schema: string, labels: string[]) => `
CREATE SCHEMA ${schema};
CREATE TABLE ${schema}.things (id serial PRIMARY KEY, label text NOT NULL);
INSERT INTO ${schema}.things (label) VALUES ${labels.map((label) => `('${label}')`).join(', ')};`;

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`tenant database roles on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let dataDir: string;
    let testDatabase: TestDatabase | undefined;
    let database: Database;
    let roleA: string;
    let roleB: string;
    const asTenant = (role: string, schema: string, statement: string): Promise<Record<string, unknown>[]> =>
      database
        .runReadOnly({ sql: statement, params: [], timeoutMs: 10_000, searchPath: schema, role } satisfies ReadOnlyQuery)
        .then((result) => result.rows);
    const asA = (statement: string) => asTenant(roleA, 'tenant_a', statement);

    beforeAll(async () => {
      dataDir = await mkdtemp(join(tmpdir(), 'stepcast-roles-'));
      if (backend === 'postgres') testDatabase = await createTestDatabase();
      else await seedPgliteDataDir(dataDir);
      database = await openTestDatabase(backend, dataDir, testDatabase?.url);
      await database.runScriptInTransaction(tenantSchemaScript('tenant_a', ['a1', 'a2']));
      await database.runScriptInTransaction(tenantSchemaScript('tenant_b', ['b1']));
      roleA = await provisionTenantDataAccess(database, 'tenant_a');
      roleB = await provisionTenantDataAccess(database, 'tenant_b');
    });
    afterAll(async () => {
      await database?.close();
      await testDatabase?.drop();
      await rm(dataDir, { recursive: true, force: true });
    });

    it('creates a role per schema that cannot log in and holds no attribute beyond reading', async () => {
      const [current] = await serviceRows(database, 'SELECT current_database() AS name');
      expect(roleA.startsWith(tenantRolePrefix(String(current!.name)))).toBe(true);
      expect(roleA).not.toBe(roleB);
      expect(Buffer.byteLength(roleA)).toBeLessThanOrEqual(63);
      for (const role of [roleA, roleB]) {
        const [attributes] = await serviceRows(
          database,
          `SELECT rolsuper, rolcanlogin, rolbypassrls, rolcreaterole, rolcreatedb, rolreplication, rolinherit,
                  (SELECT count(*)::int FROM pg_auth_members m WHERE m.member = r.oid) AS member_of
             FROM pg_roles r WHERE rolname = '${role}'`,
        );
        expect(attributes).toEqual({
          rolsuper: false,
          rolcanlogin: false,
          rolbypassrls: false,
          rolcreaterole: false,
          rolcreatedb: false,
          rolreplication: false,
          rolinherit: false,
          member_of: 0,
        });
        const [owned] = await serviceRows(
          database,
          `SELECT (SELECT count(*)::int FROM pg_class WHERE relowner = r.oid) AS relations,
                  (SELECT count(*)::int FROM pg_namespace WHERE nspowner = r.oid) AS schemas,
                  (SELECT count(*)::int FROM pg_proc WHERE proowner = r.oid) AS functions,
                  (SELECT count(*)::int FROM pg_database WHERE datdba = r.oid) AS databases
             FROM pg_roles r WHERE rolname = '${role}'`,
        );
        expect(owned).toEqual({ relations: 0, schemas: 0, functions: 0, databases: 0 });
      }
    });

    it("may use its own schema and select its tables, and nothing of the other tenant's or the service's", async () => {
      const [privileges] = await serviceRows(
        database,
        `SELECT has_schema_privilege('${roleA}', 'tenant_a', 'USAGE') AS own_usage,
                has_schema_privilege('${roleA}', 'tenant_a', 'CREATE') AS own_create,
                has_schema_privilege('${roleA}', 'tenant_b', 'USAGE') AS other_usage,
                has_schema_privilege('${roleA}', 'public', 'CREATE') AS public_create,
                has_table_privilege('${roleA}', 'tenant_a.things', 'SELECT') AS own_select,
                has_table_privilege('${roleA}', 'tenant_a.things', 'INSERT, UPDATE, DELETE, TRUNCATE') AS own_write,
                has_table_privilege('${roleA}', 'tenant_b.things', 'SELECT') AS other_select`,
      );
      expect(privileges).toEqual({
        own_usage: true,
        own_create: false,
        other_usage: false,
        public_create: false,
        own_select: true,
        own_write: false,
        other_select: false,
      });
      for (const table of SERVICE_TABLES) {
        const [row] = await serviceRows(
          database,
          `SELECT has_table_privilege('${roleA}', 'public.${table}', 'SELECT, INSERT, UPDATE, DELETE') AS any`,
        );
        expect(row!.any, table).toBe(false);
      }
      // Every relation outside the system catalogs that the role may select is one of its schema's.
      const readable = await serviceRows(
        database,
        `SELECT n.nspname || '.' || c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
            AND has_table_privilege('${roleA}', c.oid, 'SELECT') ORDER BY 1`,
      );
      expect(readable.map((row) => row.name)).toEqual(['tenant_a.things']);
    });

    it('reads its own rows, and the database itself refuses everything else, with no guard in the way', async () => {
      expect(await asA('SELECT label FROM things ORDER BY label')).toEqual([{ label: 'a1' }, { label: 'a2' }]);
      expect(await asA('SELECT current_user AS who')).toEqual([{ who: roleA }]);
      const refusals: [string, string[]][] = [
        ['SELECT * FROM tenant_b.things', [PERMISSION_DENIED]],
        ['SELECT * FROM public.executions', [PERMISSION_DENIED]],
        ['SELECT * FROM public.tenants', [PERMISSION_DENIED]],
        ['SELECT * FROM public.api_keys', [PERMISSION_DENIED]],
        ["SELECT pg_read_file('/etc/passwd')", [PERMISSION_DENIED]],
        ["SELECT lo_import('/etc/hostname')", [PERMISSION_DENIED]],
        // READ ONLY refuses writes before privileges are looked at; has_table_privilege above shows the role could not either.
        ["INSERT INTO things (label) VALUES ('x')", [READ_ONLY_TRANSACTION, PERMISSION_DENIED]],
        ["UPDATE things SET label = 'x'", [READ_ONLY_TRANSACTION, PERMISSION_DENIED]],
        ['CREATE TABLE tenant_a.stolen (x int)', [READ_ONLY_TRANSACTION, PERMISSION_DENIED]],
      ];
      for (const [statement, codes] of refusals) {
        const error = await asA(statement).then(
          () => undefined,
          (caught: unknown) => caught as { code?: string; message: string },
        );
        expect(error, statement).toBeDefined();
        expect(codes, `${statement}: ${error!.message}`).toContain(error!.code);
      }
      expect(await asA('SELECT label FROM things ORDER BY label')).toEqual([{ label: 'a1' }, { label: 'a2' }]);
    });

    it('reads a table created in its schema after provisioning (default privileges)', async () => {
      await database.runScriptInTransaction(`
CREATE TABLE tenant_a.later (n int);
INSERT INTO tenant_a.later VALUES (7);
CREATE VIEW tenant_a.later_view AS SELECT n * 2 AS doubled FROM tenant_a.later;`);
      expect(await asA('SELECT n FROM later')).toEqual([{ n: 7 }]);
      expect(await asA('SELECT doubled FROM later_view')).toEqual([{ doubled: 14 }]);
      await expect(asTenant(roleB, 'tenant_b', 'SELECT n FROM tenant_a.later')).rejects.toMatchObject({
        code: PERMISSION_DENIED,
      });
    });

    it('leaves the pooled connection as the service, with its own search path, for the next statement', async () => {
      const settings = `SELECT current_user AS who, current_setting('search_path') AS search_path, pg_backend_pid() AS pid`;
      const [before] = await serviceRows(database, settings);
      const [defaults] = await serviceRows(
        database,
        `SELECT session_user AS who, reset_val AS search_path FROM pg_settings WHERE name = 'search_path'`,
      );
      expect({ who: before!.who, search_path: before!.search_path }).toEqual(defaults);
      await asA('SELECT count(*) AS n FROM things');
      expect(await serviceRows(database, settings)).toEqual([before]);
      // A failed statement rolls back, and ROLLBACK ends SET LOCAL as COMMIT does.
      await expect(asA('SELECT * FROM tenant_b.things')).rejects.toMatchObject({ code: PERMISSION_DENIED });
      expect(await serviceRows(database, settings)).toEqual([before]);
      // The next tenant on the same connection sees its own rows only, and none of the first tenant's.
      expect(await asTenant(roleB, 'tenant_b', 'SELECT current_user AS who, label FROM things')).toEqual([
        { who: roleB, label: 'b1' },
      ]);
      await expect(asTenant(roleB, 'tenant_b', 'SELECT * FROM tenant_a.things')).rejects.toMatchObject({
        code: PERMISSION_DENIED,
      });
      expect(await serviceRows(database, settings)).toEqual([before]);
      // The service's own reads through runReadOnly (introspection) still see everything.
      const { rows } = await database.runReadOnly({
        sql: 'SELECT count(*)::int AS n FROM public.tenants',
        params: [],
        timeoutMs: 10_000,
        searchPath: 'tenant_a',
      });
      expect(rows).toEqual([{ n: 0 }]);
    });

    it('provisions again, and concurrently, to the same single role', async () => {
      expect(await provisionTenantDataAccess(database, 'tenant_a')).toBe(roleA);
      const handles =
        backend === 'postgres'
          ? await Promise.all([1, 2, 3].map(() => openTestDatabase(backend, dataDir, testDatabase!.url)))
          : [database, database, database];
      try {
        const created = await Promise.all(
          handles.flatMap((handle) => [
            provisionTenantDataAccess(handle, 'tenant_c'),
            provisionTenantDataAccess(handle, 'tenant_d'),
            provisionTenantDataAccess(handle, 'tenant_a'),
          ]),
        );
        const [roleC, roleD] = created;
        expect(created).toEqual(handles.flatMap(() => [roleC, roleD, roleA]));
        const rows = await serviceRows(
          database,
          `SELECT rolname FROM pg_roles WHERE rolname IN ('${roleA}', '${roleC}', '${roleD}') ORDER BY rolname`,
        );
        expect(rows.map((row) => row.rolname)).toEqual([roleA, roleC!, roleD!].sort());
        await database.runScriptInTransaction(`CREATE TABLE tenant_c.facts (f text); INSERT INTO tenant_c.facts VALUES ('c');`);
        expect(await asTenant(roleC!, 'tenant_c', 'SELECT f FROM facts')).toEqual([{ f: 'c' }]);
        expect(await asA('SELECT count(*)::int AS n FROM things')).toEqual([{ n: 2 }]);
      } finally {
        if (backend === 'postgres') await Promise.all(handles.map((handle) => handle.close()));
      }
    });

    it('is what the guard keeps: set_config and SET ROLE, which could undo SET LOCAL ROLE, are refused', async () => {
      expect(ALLOWED_FUNCTIONS.has('set_config')).toBe(false);
      expect(ALLOWED_FUNCTIONS.has('current_setting')).toBe(false);
      const scope = {
        tenantSchema: 'tenant_a',
        tenantTables: new Set(['things']),
        stepRelations: new Set<string>(),
        relationColumns: new Map(),
        reachableFunctions: await introspectFunctionNames(database, 'pg_catalog'),
        maxSqlChars: loadConfig({}).inputLimits.maxSqlChars,
      };
      for (const statement of ["SELECT set_config('role', 'none', true)", 'RESET ROLE', 'SET ROLE NONE', 'SET LOCAL ROLE postgres']) {
        await expect(guardSql(statement, scope), statement).rejects.toThrow(/rejected/);
      }
    });
  });
}

describe.skipIf(!postgresUrl)(
  `tenant roles across databases on one PostgreSQL server${postgresUrl ? '' : ' (skipped: TEST_DATABASE_URL is not set)'}`,
  () => {
    let admin: postgres.Sql;
    beforeAll(() => {
      admin = postgres(postgresUrl!, { max: 1, onnotice: () => undefined });
    });
    afterAll(async () => {
      await admin?.end();
    });

    it('gives the same schema a different role in each database, and drop() removes them all', async () => {
      const [first, second] = await Promise.all([createTestDatabase(), createTestDatabase()]);
      const [one, two] = await Promise.all([
        openDatabase({ kind: 'postgres', url: first!.url, poolSize: 2 }),
        openDatabase({ kind: 'postgres', url: second!.url, poolSize: 2 }),
      ]);
      try {
        const [roleOne, roleTwo] = await Promise.all([
          provisionTenantDataAccess(one, 'tenant_a'),
          provisionTenantDataAccess(two, 'tenant_a'),
        ]);
        expect(roleOne).not.toBe(roleTwo);
        expect(await tenantRolesOf(admin, first!.name)).toEqual([roleOne]);
        expect(await tenantRolesOf(admin, second!.name)).toEqual([roleTwo]);
        const [grants] = await serviceRows(
          two,
          `SELECT has_schema_privilege('${roleOne}', 'tenant_a', 'USAGE') AS foreign_role,
                  has_schema_privilege('${roleTwo}', 'tenant_a', 'USAGE') AS own_role`,
        );
        expect(grants).toEqual({ foreign_role: false, own_role: true });
      } finally {
        await Promise.all([one.close(), two.close()]);
        await first!.drop();
      }
      expect(await tenantRolesOf(admin, first!.name)).toEqual([]);
      expect(await tenantRolesOf(admin, second!.name)).toHaveLength(1);
      await second!.drop();
      expect(await tenantRolesOf(admin, second!.name)).toEqual([]);
    });

    it('works for a service role that is not a superuser (CREATEROLE, owner of its database, granted SET on temp_file_limit)', async () => {
      const testDatabase = await createTestDatabase();
      const service = `${tenantRolePrefix(testDatabase.name)}service`;
      let database: Database | undefined;
      try {
        await admin.unsafe(`CREATE ROLE "${service}" LOGIN NOSUPERUSER CREATEROLE`);
        await admin.unsafe(`ALTER DATABASE ${testDatabase.name} OWNER TO "${service}"`);
        const url = new URL(testDatabase.url);
        url.username = service;
        // Every tenant statement sets temp_file_limit: without the right to, the service refuses to start.
        await expect(openDatabase({ kind: 'postgres', url: url.toString(), poolSize: 1 })).rejects.toThrow(
          `the database user ${service} may not set temp_file_limit, which bounds the temporary files of every tenant statement: ` +
            `run stepcast as a superuser, or GRANT SET ON PARAMETER temp_file_limit TO "${service}" (PostgreSQL 15 and later)`,
        );
        await admin.unsafe(`GRANT SET ON PARAMETER temp_file_limit TO "${service}"`);
        database = await openDatabase({ kind: 'postgres', url: url.toString(), poolSize: 1 });
        const [who] = await serviceRows(database, `SELECT current_user AS who, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser`);
        expect(who).toEqual({ who: service, superuser: false });
        await database.runScriptInTransaction(tenantSchemaScript('tenant_x', ['x1']));
        await database.runScriptInTransaction(tenantSchemaScript('tenant_y', ['y1']));
        const roleX = await provisionTenantDataAccess(database, 'tenant_x');
        await provisionTenantDataAccess(database, 'tenant_y');
        expect(await provisionTenantDataAccess(database, 'tenant_x')).toBe(roleX);
        const run = (statement: string) =>
          database!.runReadOnly({ sql: statement, params: [], timeoutMs: 10_000, searchPath: 'tenant_x', role: roleX });
        expect((await run('SELECT current_user AS who, label FROM things')).rows).toEqual([{ who: roleX, label: 'x1' }]);
        await expect(run('SELECT * FROM tenant_y.things')).rejects.toMatchObject({ code: PERMISSION_DENIED });
        await expect(run('SELECT * FROM public.executions')).rejects.toMatchObject({ code: PERMISSION_DENIED });
        const [after] = await serviceRows(database, 'SELECT current_user AS who');
        expect(after).toEqual({ who: service });
      } finally {
        await database?.close();
        await admin.unsafe(`REVOKE SET ON PARAMETER temp_file_limit FROM "${service}"`).catch(() => undefined);
        await testDatabase.drop();
      }
      expect(await tenantRolesOf(admin, testDatabase.name)).toEqual([]);
    });
  },
);

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`SQL steps run as the tenant's role on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    beforeAll(async () => {
      server = await startTestServer(backend, { env: { STEPCAST_DEMO_USERS: '20' } });
    });
    afterAll(async () => {
      await server?.close();
    });

    const demoTenant = async () => {
      const [row] = await server.app.database.db.select().from(tenants).where(eq(tenants.id, DEMO_TENANT_ID));
      return row!;
    };

    it('gives the demo tenant its role at first start, and again after a restart if it has none', async () => {
      const role = await tenantRoleFor(server.app.database, DEMO_TENANT_SCHEMA);
      expect((await demoTenant()).dbRole).toBe(role);
      await server.app.database.db.update(tenants).set({ dbRole: null }).where(eq(tenants.id, DEMO_TENANT_ID));
      await server.restart();
      expect((await demoTenant()).dbRole).toBe(role);
    });

    it('runs the statement as the role: a table the guard lets through but the role may not read fails SQL_ERROR', async () => {
      const { dbRole } = await demoTenant();
      // Introspection (as the service) lists the table, so the guard accepts it; only the role stands in the way.
      await server.app.database.runScriptInTransaction(`
CREATE TABLE ${DEMO_TENANT_SCHEMA}.payroll (user_id int, salary int);
INSERT INTO ${DEMO_TENANT_SCHEMA}.payroll VALUES (1, 100000);
REVOKE SELECT ON ${DEMO_TENANT_SCHEMA}.payroll FROM "${dbRole}";`);
      const { execution } = await runPlan(server, {
        query: 'who earns what',
        steps: [
          sqlStep('SELECT count(*) AS n FROM users'),
          sqlStep('SELECT salary FROM payroll', { critical: false }),
        ],
      });
      expect(execution.steps[0]!.status).toBe('SUCCEEDED');
      expect(execution.steps[0]!.result).toEqual([{ n: 20 }]);
      expect(execution.steps[1]!.status).toBe('FAILED');
      expect(execution.steps[1]!.error).toMatchObject({ code: 'SQL_ERROR' });
      expect(execution.steps[1]!.error!.message).toMatch(/permission denied for table payroll/);
    });

    it('fails SQL steps with SQL_NOT_CONFIGURED when the tenant has no role, instead of running as the service', async () => {
      await server.app.database.db.update(tenants).set({ dbRole: null }).where(eq(tenants.id, DEMO_TENANT_ID));
      try {
        const { execution } = await runPlan(server, {
          query: 'count users',
          steps: [sqlStep('SELECT count(*) AS n FROM users')],
        });
        expect(execution.status).toBe('FAILED');
        expect(execution.steps[0]!.status).toBe('FAILED');
        expect(execution.steps[0]!.error).toMatchObject({ code: 'SQL_NOT_CONFIGURED' });
        expect(execution.steps[0]!.error!.message).toMatch(/no database role/);
        expect(execution.steps[0]!.result ?? null).toBeNull();
      } finally {
        await server.app.database.db
          .update(tenants)
          .set({ dbRole: await tenantRoleFor(server.app.database, DEMO_TENANT_SCHEMA) })
          .where(eq(tenants.id, DEMO_TENANT_ID));
      }
    });
  });
}
