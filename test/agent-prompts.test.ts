import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createTenant } from '../src/admin/tenants.js';
import { DEFAULT_SCHEMA_CHARS, describeDataSchema } from '../src/agents/prompt-context.js';
import { loadConfig } from '../src/config.js';
import { quoteIdentifier } from '../src/db/client.js';
import { DEMO_TENANT_ID, DEMO_TENANT_SCHEMA } from '../src/db/demo-data.js';
import { introspectDataSchema, type DataTable } from '../src/db/introspect.js';
import { guardSql, SqlRejectedError, type SqlGuardScope } from '../src/guard/sql-guard.js';
import { startScriptedLlm, type RecordedRequest, type ScriptedLlm } from './fixtures/scripted-llm.js';
import { backends } from './support/database.js';
import { PlanQueryQuery } from './support/operations.js';
import { runPlan, sqlStep } from './support/plans.js';
import { startTestServer, type TestClient, type TestServer } from './support/server.js';

const schemaOf = (request: RecordedRequest) => request.body.response_format?.json_schema?.name;
const messageOf = (request: RecordedRequest, role: 'system' | 'user') => request.body.messages.find((m) => m.role === role)?.content ?? '';
const agentStep = (kind: 'SQL' | 'API', queryContext: string, extra = {}) => ({ kind, queryContext, ...extra });

/** The requests one agent (its structured output's name) was sent, in order. */
const requestsOf = (llm: ScriptedLlm, name: string) => llm.requests.filter((request) => schemaOf(request) === name);

/** A scope for calling the guard directly on single expressions. */
const probeScope: SqlGuardScope = {
  tenantSchema: DEMO_TENANT_SCHEMA,
  tenantTables: new Set(['users']),
  stepRelations: new Set(),
  relationColumns: new Map([['users', new Set(['id', 'email'])]]),
  reachableFunctions: new Set(),
  maxSqlChars: 10_000,
};

async function guardAccepts(sql: string): Promise<boolean> {
  try {
    await guardSql(sql, probeScope);
    return true;
  } catch (error) {
    if (error instanceof SqlRejectedError) return false;
    throw error;
  }
}

/** The 200 tables of the wide tenant: each has 25 columns and a foreign key to the one before it. */
function wideSchemaScript(schema: string, tables: number): string {
  const name = (i: number) => `ledger_${String(i).padStart(3, '0')}`;
  const measures = Array.from({ length: 22 }, (_, c) => `amount_${String(c + 1).padStart(2, '0')} numeric`).join(', ');
  return Array.from({ length: tables }, (_, i) => {
    const parent = i === 0 ? '' : `${name(i - 1)}_id integer REFERENCES ${schema}.${name(i - 1)}(id), `;
    return `CREATE TABLE ${schema}.${name(i)} (id integer PRIMARY KEY, ${parent}region text, ${measures});`;
  }).join('\n');
}

describe('the tables in a prompt', () => {
  it('describes a table the step names that is too large with its values, without them, within the bound', () => {
    const values = (prefix: string) => ({ values: Array.from({ length: 12 }, (_, v) => `${prefix}_${v}`.padEnd(40, 'x')), complete: true });
    const events: DataTable = {
      name: 'events',
      rowCount: 1000,
      keys: [],
      primaryKey: ['id'],
      columns: [
        { name: 'id', type: 'integer', nullable: false },
        ...Array.from({ length: 59 }, (_, c) => ({ name: `attribute_${c}`, type: 'text', nullable: true, values: values(`v${c}`) })),
      ],
    };
    const others: DataTable[] = Array.from({ length: 30 }, (_, t) => ({
      name: `table_${t}`,
      rowCount: 10,
      keys: [],
      columns: [
        { name: 'id', type: 'integer', nullable: false },
        { name: 'kind', type: 'text', nullable: true, values: { values: ['a', 'b'], complete: true } },
      ],
    }));
    const text = describeDataSchema({ schema: 's', tables: [...others, events] }, { focus: ['count the events by attribute_3'] });
    expect(text.length).toBeLessThanOrEqual(DEFAULT_SCHEMA_CHARS);
    expect(text).toMatch(/^- events \(~1000 rows\): id integer not null, attribute_0 text, attribute_1 text, .*, attribute_58 text$/m);
    expect(text).toContain("- table_0 (~10 rows): id integer not null, kind text (values: 'a' | 'b')");
    expect(text).toMatch(/^\(The schema is abridged to fit: 31 of 31 tables are described \(1 without their columns' values\)\.\)$/m);
  });
});

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`agent prompts on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let llm: ScriptedLlm;
    let server: TestServer;
    /** The demo tenant, with the demo API. */
    let demo: TestClient;
    /** A tenant with 200 tables of 25 columns. */
    let wide: TestClient;
    /** A tenant whose tables' values come from statistics, from their first rows, or are hidden by row-level security. */
    let samples: TestClient;

    beforeAll(async () => {
      llm = await startScriptedLlm();
      server = await startTestServer(backend, {
        env: {
          STEPCAST_AUTH: 'on',
          STEPCAST_DEMO: 'on',
          OPENAI_BASE_URL: llm.baseUrl,
          STEPCAST_LLM_MAX_RETRIES: '0',
          STEPCAST_TENANT_RATE_BURST: '1000',
          STEPCAST_TENANT_MODEL_CALLS_BURST: '1000',
        },
      });
      const { database, secrets } = server.app;
      await createTenant(database, secrets, { name: 'Wide', id: 'wide' });
      await database.runScriptInTransaction(wideSchemaScript('tenant_wide', 200));
      await createTenant(database, secrets, { name: 'Samples', id: 'samples' });
      // autovacuum stays off these tables, so that their statistics are exactly the ANALYZEs below.
      await database.runScriptInTransaction(`
        CREATE TABLE tenant_samples.tickets (id integer PRIMARY KEY, status text NOT NULL, subject text NOT NULL, note text)
          WITH (autovacuum_enabled = false);
        INSERT INTO tenant_samples.tickets
          SELECT i, (ARRAY['open', 'closed', 'pending'])[1 + i % 3], 'subject number ' || i,
                 CASE WHEN i % 2 = 0 THEN repeat('a long note that is not a category ', 3) END
            FROM generate_series(1, 1500) AS i;
        CREATE TABLE tenant_samples.events (id integer PRIMARY KEY, kind text NOT NULL) WITH (autovacuum_enabled = false);
        INSERT INTO tenant_samples.events SELECT i, (ARRAY['login', 'logout'])[1 + i % 2] FROM generate_series(1, 40) AS i;
        ANALYZE tenant_samples.events;
        INSERT INTO tenant_samples.events SELECT i, 'arrived-after-analyze' FROM generate_series(41, 45) AS i;
        CREATE TABLE tenant_samples.documents (id integer PRIMARY KEY, level text NOT NULL, secret boolean NOT NULL)
          WITH (autovacuum_enabled = false);
        INSERT INTO tenant_samples.documents SELECT i, CASE WHEN i % 5 = 0 THEN 'classified' WHEN i % 2 = 0 THEN 'internal' ELSE 'public' END, i % 5 = 0
          FROM generate_series(1, 50) AS i;
        ANALYZE tenant_samples.documents;
        ALTER TABLE tenant_samples.documents ENABLE ROW LEVEL SECURITY;
        CREATE POLICY documents_not_secret ON tenant_samples.documents FOR SELECT USING (NOT secret);`);
      demo = server.as(`Bearer ${(await createApiKey(database, DEMO_TENANT_ID)).token}`);
      wide = server.as(`Bearer ${(await createApiKey(database, 'wide')).token}`);
      samples = server.as(`Bearer ${(await createApiKey(database, 'samples')).token}`);
    });
    afterAll(async () => {
      await server?.close();
      await llm?.close();
    });

    it("tells the SQL agent each table's columns, keys and the values of its low-cardinality columns, the step_N relations and the guard's rules", async () => {
      llm.script({ when: (r) => schemaOf(r) === 'sql_step', replies: [{ content: { sql: 'SELECT count(*) AS n FROM step_1', explanation: '' } }] });
      const { execution } = await runPlan(demo, {
        query: 'How many of the first users are suspended?',
        steps: [sqlStep('SELECT id, email, status FROM users ORDER BY id LIMIT 5'), agentStep('SQL', 'count the suspended users of step 1')],
      });
      expect(execution.status).toBe('SUCCEEDED');
      const [request] = requestsOf(llm, 'sql_step');
      const user = messageOf(request!, 'user');

      expect(user).toMatch(/- users \(~200 rows\): id integer not null, email text not null, name text not null, department text not null \(values: /);
      expect(user).toContain('keys: primary key (id); unique (email); users.manager_id -> users.id');
      expect(user).toContain('group_members.user_id -> users.id');
      const truth = await runPlan(demo, { query: 'statuses', steps: [sqlStep('SELECT DISTINCT status FROM users')] });
      const statuses = (truth.execution.finalResult as { status: string }[]).map((row) => `'${row.status}'`).sort();
      expect(statuses.length).toBeGreaterThan(1);
      const listed = /status text not null \(values: ([^)]*)\)/.exec(user)?.[1]?.split(' | ');
      expect(listed?.sort()).toEqual(statuses);
      // Unique columns are identifiers, not categories.
      expect(user).not.toMatch(/email text not null \(/);

      expect(user).toContain('- step_1 (step 1, SQL): run: SELECT id, email, status FROM users');
      expect(user).toContain('  5 rows; columns: id integer, email text, status text');
      expect(user).toContain(`sample: ${JSON.stringify(execution.steps[0]!.sample)}`);

      const system = messageOf(request!, 'system');
      expect(system).toContain('Exactly one SELECT statement');
      expect(system).toMatch(/^- Functions: .*\bdate_trunc\b/m);
      expect(system).toMatch(/^- Casts .*\btimestamptz\b/m);
      expect(system).toContain(`at most ${loadConfig({}).inputLimits.maxSqlChars} characters`);
    });

    it('lists exactly the cast types and functions the guard accepts: every other type and function of the database is refused', async () => {
      llm.script({ when: (r) => schemaOf(r) === 'sql_step', replies: [{ content: { sql: 'SELECT 1 AS one', explanation: '' } }] });
      await runPlan(demo, { query: 'q', steps: [agentStep('SQL', 'anything')] });
      const system = messageOf(requestsOf(llm, 'sql_step')[0]!, 'system');
      const castLine = /^- Casts \(.*?\): only to (.*?), and arrays of these/m.exec(system)?.[1];
      const functionLine = /^- Functions: [^:]*: (.*)\.$/m.exec(system)?.[1];
      const forbiddenLine = /^- Not allowed: (.*)$/m.exec(system)?.[1];
      expect(castLine && functionLine && forbiddenLine).toBeTruthy();

      const castable = castLine!.split(', ');
      expect(castable.length).toBeGreaterThan(10);
      for (const type of castable) {
        expect(await guardAccepts(`SELECT NULL::${type} AS x, CAST(NULL AS ${type}[]) AS y`), type).toBe(true);
      }
      const run = async (sql: string, params: string[] = []) =>
        (await server.app.database.runReadOnly({ sql, params, timeoutMs: 10_000, searchPath: DEMO_TENANT_SCHEMA })).rows;
      const canonical = new Set<string>();
      for (const type of castable) canonical.add(String((await run('SELECT format_type($1::regtype, NULL) AS name', [type]))[0]!.name));
      const types = await run(`SELECT t.typname, format_type(t.oid, NULL) AS name,
                                      (SELECT format_type(e.oid, NULL) FROM pg_type e WHERE e.typarray = t.oid) AS element
                                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'pg_catalog'`);
      expect(types.length).toBeGreaterThan(100);
      const wrong: string[] = [];
      for (const type of types) {
        // An array type (the typarray of its element) is castable when its element is.
        const listed = canonical.has(String(type.name)) || (type.element !== null && canonical.has(String(type.element)));
        if ((await guardAccepts(`SELECT NULL::pg_catalog.${quoteIdentifier(String(type.typname))} AS x`)) !== listed) wrong.push(String(type.typname));
      }
      expect(wrong).toEqual([]);

      const functions = new Set(functionLine!.split('; ').flatMap((family) => family.replace(/^[^:]+: /, '').split(', ')));
      expect(functions.size).toBeGreaterThan(200);
      for (const name of functions) expect(await guardAccepts(`SELECT ${quoteIdentifier(name)}() AS x`), name).toBe(true);
      const catalogFunctions = await run(`SELECT DISTINCT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'pg_catalog'`);
      expect(catalogFunctions.length).toBeGreaterThan(1_000);
      const accepted = [];
      for (const row of catalogFunctions) {
        const name = String(row.proname);
        if (!functions.has(name) && (await guardAccepts(`SELECT ${quoteIdentifier(name)}() AS x`))) accepted.push(name);
      }
      expect(accepted).toEqual([]);

      const systemColumns = /system columns ([a-z, ]+)\./.exec(forbiddenLine!)?.[1]?.split(', ') ?? [];
      expect(systemColumns).toContain('xmin');
      for (const column of systemColumns) expect(await guardAccepts(`SELECT ${column} FROM users`), column).toBe(false);
      const revealing = forbiddenLine!.split(/[;,] /).filter((word) => /^(current_\w+|session_user|user)$/.test(word));
      expect(revealing).toContain('current_user');
      for (const word of revealing) expect(await guardAccepts(`SELECT ${word} AS x`), word).toBe(false);
    });

    it("gives a repair round the guard's exact rejection, the same a client's statement gets", async () => {
      const refused = 'SELECT DATE(created_at) AS day, count(*) AS n FROM users GROUP BY 1';
      const client = await runPlan(demo, { query: 'q', steps: [sqlStep(refused)] });
      const rejection = client.execution.steps[0]!.error!.message;
      expect(rejection).toMatch(/^SQL rejected: /);
      llm.script({
        when: (r) => schemaOf(r) === 'sql_step',
        replies: [
          { content: { sql: refused, explanation: '' } },
          { content: { sql: "SELECT created_at::date AS day, count(*) AS n FROM users GROUP BY 1", explanation: '' } },
        ],
      });
      const { execution } = await runPlan(demo, { query: 'sign-ups per day', steps: [agentStep('SQL', 'users created per day')] });
      expect(execution.status).toBe('SUCCEEDED');
      expect(execution.steps[0]!.attempts).toBe(2);
      const repair = messageOf(requestsOf(llm, 'sql_step')[1]!, 'user');
      expect(repair).toContain(`Attempt 1 failed (the guard refused it; it did not run).\nSQL:\n${refused}\nError: ${rejection}\n`);
    });

    it("gives a repair round the database's error with its SQLSTATE, hint and a caret where it is in the agent's SQL", async () => {
      const broken = "-- the users of step 1\nSELECT s.id, s.emial FROM step_1 s JOIN users u ON u.id = s.id";
      llm.script({
        when: (r) => schemaOf(r) === 'sql_step',
        replies: [{ content: { sql: broken, explanation: '' } }, { content: { sql: 'SELECT s.id, s.email FROM step_1 s', explanation: '' } }],
      });
      const { execution } = await runPlan(demo, {
        query: 'q',
        steps: [sqlStep('SELECT id, email FROM users ORDER BY id LIMIT 2'), agentStep('SQL', 'the emails of step 1')],
      });
      expect(execution.status).toBe('SUCCEEDED');
      const repair = messageOf(requestsOf(llm, 'sql_step')[1]!, 'user');
      expect(repair).toContain('Attempt 1 failed (the database refused it).');
      expect(repair).toContain('Error: column s.emial does not exist\nSQLSTATE: 42703\n');
      expect(repair).toContain('Hint: Perhaps you meant to reference the column "s.email".');
      const position = broken.indexOf('s.emial') + 1;
      expect(repair).toContain(`At character ${position}:\nSELECT s.id, s.emial FROM step_1 s JOIN users u ON u.id = s.id\n${' '.repeat(13)}^`);
    });

    it("points the repair round's caret at the statement the guard cut out, even when a comment before it repeats it", async () => {
      const statement = 'SELECT s.id, s.emial FROM step_1 s';
      const broken = `/* ${statement} */;\n${statement}`;
      llm.script({
        when: (r) => schemaOf(r) === 'sql_step',
        replies: [{ content: { sql: broken, explanation: '' } }, { content: { sql: 'SELECT s.id, s.email FROM step_1 s', explanation: '' } }],
      });
      const { execution } = await runPlan(demo, {
        query: 'q',
        steps: [sqlStep('SELECT id, email FROM users ORDER BY id LIMIT 2'), agentStep('SQL', 'the emails of step 1')],
      });
      expect(execution.status).toBe('SUCCEEDED');
      const repair = messageOf(requestsOf(llm, 'sql_step')[1]!, 'user');
      expect(repair).toContain(`At character ${broken.lastIndexOf('s.emial') + 1}:\n${statement}\n${' '.repeat(13)}^`);
    });

    it('tells the API agent which operations paginate and how, and exactly those accept paginate: true', async () => {
      llm.script({ when: (r) => schemaOf(r) === 'api_step', replies: [{ content: { code: 'return [{ ok: true }];', explanation: '' } }] });
      const asked = await runPlan(demo, { query: 'q', steps: [agentStep('API', 'list the applications')] });
      expect(asked.execution.status).toBe('SUCCEEDED');
      const request = requestsOf(llm, 'api_step')[0]!;
      expect(messageOf(request, 'system')).toContain('Never pass paginate to an operation marked "not paginated"');
      const user = messageOf(request, 'user');
      const operations = [...user.matchAll(/^(\w+) GET \S+ \(([^)]*)\).*\n(?: {2}returns .*\n)? {2}(paginated by \w+|not paginated)/gm)].map((match) => ({
        operationId: match[1]!,
        required: match[2]!.split(', ').filter((p) => p && !p.includes('?:')).map((p) => p.split(':')[0]!),
        paginated: match[3]!.startsWith('paginated'),
      }));
      expect(operations.map((op) => op.operationId).sort()).toEqual(
        ['getUser', 'listApplications', 'listGroupMembers', 'listGroups', 'listUserApplications', 'listUserGroups', 'listUsers'],
      );
      expect(operations.filter((op) => op.paginated).map((op) => op.operationId).sort()).toEqual(['listGroupMembers', 'listGroups', 'listUsers']);
      expect(user).toContain('  returns { data: [{ id, email, name, department, title, status, mfa_enabled, manager_id, created_at, last_login_at }], nextCursor }');

      llm.script();
      const { execution } = await runPlan(demo, {
        query: 'which operations take paginate: true',
        steps: operations.map((op) => ({
          kind: 'API' as const,
          queryContext: `paginate ${op.operationId}`,
          critical: false,
          code: `await api.call('${op.operationId}', { ${op.required.map((name) => `${name}: 1, `).join('')}paginate: true }); return [{ ok: true }];`,
        })),
      });
      const outcomes = execution.steps.map((step) => ({ succeeded: step.status === 'SUCCEEDED', error: step.error?.message ?? null }));
      operations.forEach((op, i) => {
        expect(outcomes[i]!.succeeded, `${op.operationId}: ${outcomes[i]!.error}`).toBe(op.paginated);
        if (!op.paginated) expect(outcomes[i]!.error).toMatch(/is not paginated/);
      });
    });

    it('tells the planner the tables with keys and values, the catalog, and how steps pass data on', async () => {
      llm.script({
        when: (r) => schemaOf(r) === 'plan',
        replies: [{ content: { reasoning: 'r', steps: [{ kind: 'SQL', queryContext: 'suspended users', entity: 'users', reasoning: null, critical: true }] } }],
      });
      const response = await demo.request(PlanQueryQuery, { query: 'Which applications do suspended users use?' });
      expect(response.errors).toBeUndefined();
      const request = requestsOf(llm, 'plan')[0]!;
      const system = messageOf(request, 'system');
      expect(system).toContain('reads step N\'s records as the relation step_N');
      expect(system).toContain('steps[i].records');
      expect(system).toContain("The last step's records are the answer the user sees");
      const user = messageOf(request, 'user');
      expect(user).toContain('users.manager_id -> users.id');
      expect(user).toMatch(/status text not null \(values: 'active'/);
      expect(user).toContain('listUsers GET /users (limit?: integer, after?: string, status?: "active" | "suspended" | "deprovisioned"');
      expect(user).toContain('  paginated by after: ');
    });

    it('bounds the prompts for a tenant with many wide tables (the tables the step names are described, and the prompt says the rest are left out) and for long samples', async () => {
      llm.script(
        { when: (r) => schemaOf(r) === 'sql_step', replies: [{ content: { sql: 'SELECT count(*) AS n FROM ledger_150', explanation: '' } }] },
        { when: (r) => schemaOf(r) === 'plan', replies: [{ content: { reasoning: 'r', steps: [{ kind: 'SQL', queryContext: 'count', entity: null, reasoning: null, critical: true }] } }] },
      );
      const { execution } = await runPlan(wide, { query: 'How many entries?', steps: [agentStep('SQL', 'count the entries of ledger_150', { entity: 'ledger_150' })] });
      expect(execution.status).toBe('SUCCEEDED');
      const user = messageOf(requestsOf(llm, 'sql_step')[0]!, 'user');
      expect(user.length).toBeLessThan(DEFAULT_SCHEMA_CHARS + 1_000);
      expect(user).toMatch(/^- ledger_150 \(row count unknown\): id integer not null, ledger_149_id integer, region text, amount_01 numeric/m);
      expect(user).toContain('ledger_150.ledger_149_id -> ledger_149.id');
      expect(user).toMatch(/^- ledger_149 \(/m);
      expect(user).toMatch(/^- ledger_151 \(/m);
      expect(user).toMatch(/^\(The schema is abridged to fit: \d+ of 200 tables are described; named only, columns not shown: /m);
      const described = user.match(/^- ledger_\d+ \(/gm) ?? [];
      expect(described.length).toBeGreaterThan(3);
      expect(described.length).toBeLessThan(200);

      const planned = await wide.request(PlanQueryQuery, { query: 'What is in ledger_007?' });
      expect(planned.errors).toBeUndefined();
      const planner = messageOf(requestsOf(llm, 'plan')[0]!, 'user');
      expect(planner.length).toBeLessThan(DEFAULT_SCHEMA_CHARS + 1_000);
      expect(planner).toMatch(/^- ledger_007 \(/m);
      expect(planner).toContain('(The schema is abridged to fit: ');

      llm.script({ when: (r) => schemaOf(r) === 'sql_step', replies: [{ content: { sql: 'SELECT count(*) AS n FROM step_1', explanation: '' } }] });
      const long = await runPlan(demo, {
        query: 'q',
        steps: [sqlStep("SELECT id, repeat('x', 5000) AS bio FROM users ORDER BY id LIMIT 3"), agentStep('SQL', 'count the rows of step 1')],
      });
      expect(long.execution.status).toBe('SUCCEEDED');
      const sample = /^ {2}sample: .*$/m.exec(messageOf(requestsOf(llm, 'sql_step')[0]!, 'user'))![0];
      expect(sample.length).toBeLessThan(1_600);
      expect(sample).toMatch(/"bio":"x{200}…".* \(3 of 3 sample records shown, long strings cut\)$/);
    });

    it('reads example values as the tenant role: from statistics where a table has them, else from its first rows, never from rows it may not read', async () => {
      llm.script({ when: (r) => schemaOf(r) === 'sql_step', replies: [{ content: { sql: 'SELECT count(*) AS n FROM tickets', explanation: '' } }] });
      const { execution } = await runPlan(samples, { query: 'q', steps: [agentStep('SQL', 'count the tickets')] });
      expect(execution.status).toBe('SUCCEEDED');
      const user = messageOf(requestsOf(llm, 'sql_step')[0]!, 'user');
      // Never analyzed: read from its first 1,000 of 1,500 rows, so only the most common values are claimed.
      expect(user).toMatch(/status text not null \(most common values: ('open'|'closed'|'pending') \| ('open'|'closed'|'pending') \| ('open'|'closed'|'pending')\)/);
      // Too many distinct values, or values too long to be a category.
      expect(user).toMatch(/subject text not null, note text[,\n]/);
      // Analyzed, and read from its statistics: the rows inserted since are not read.
      expect(user).toMatch(/kind text not null \(values: ('login' \| 'logout'|'logout' \| 'login')\)/);
      expect(user).not.toContain('arrived-after-analyze');
      // Row-level security hides its statistics from the tenant role, and the classified rows from its read.
      expect(user).toMatch(/level text not null \(values: ('public' \| 'internal'|'internal' \| 'public')\)/);
      expect(user).not.toContain('classified');
    });

    it("reads values for agents' prompts only: a statement the client wrote does not wait for a table slow to read", async () => {
      const { database, secrets } = server.app;
      await createTenant(database, secrets, { name: 'Slow', id: 'slow' });
      // Reading a row of b_slow as the tenant's role takes a second: reading its first rows for their values would take
      // the 2 s a table may, longer than the step below may run.
      await database.runScriptInTransaction(`
        CREATE TABLE tenant_slow.a_fast (id integer PRIMARY KEY, kind text NOT NULL);
        INSERT INTO tenant_slow.a_fast SELECT i, (ARRAY['red', 'blue'])[1 + i % 2] FROM generate_series(1, 10) AS i;
        CREATE TABLE tenant_slow.b_slow (id integer PRIMARY KEY, kind text NOT NULL);
        INSERT INTO tenant_slow.b_slow SELECT i, (ARRAY['x', 'y'])[1 + i % 2] FROM generate_series(1, 10) AS i;
        ALTER TABLE tenant_slow.b_slow ENABLE ROW LEVEL SECURITY;
        CREATE POLICY sleepy ON tenant_slow.b_slow FOR SELECT USING (pg_sleep(1) IS NOT NULL);`);
      const slow = server.as(`Bearer ${(await createApiKey(database, 'slow')).token}`);
      // A first statement (of any tenant) checkpoints what the tests wrote, which would count against the step below.
      expect((await runPlan(demo, { query: 'q', steps: [sqlStep('SELECT 1 AS one')] })).execution.status).toBe('SUCCEEDED');

      const written = await runPlan(slow, { query: 'q', steps: [sqlStep('SELECT count(*) AS n FROM a_fast')] }, { stepTimeoutMs: 1_500 });
      expect(written.execution.status, JSON.stringify(written.execution.steps[0]!.error)).toBe('SUCCEEDED');
    });

    it("lists no value that would break a prompt's lines: an enum's label or a column's value with a line break, a line or paragraph separator", async () => {
      const { database, secrets } = server.app;
      const tenant = await createTenant(database, secrets, { name: 'Odd', id: 'odd' });
      await database.runScriptInTransaction(`
        CREATE TYPE tenant_odd.mood AS ENUM (E'happy\\nsad', 'calm');
        CREATE TYPE tenant_odd.size AS ENUM ('small', 'large');
        CREATE TABLE tenant_odd.notes (id integer PRIMARY KEY, mood tenant_odd.mood, size tenant_odd.size, tag text, shade text);
        INSERT INTO tenant_odd.notes SELECT i, 'calm', 'small', (ARRAY[E'a\\u2028b', 'plain'])[1 + i % 2], (ARRAY['dark', 'light'])[1 + i % 2]
          FROM generate_series(1, 10) AS i;`);
      const text = describeDataSchema(await introspectDataSchema(database, 'tenant_odd', { role: tenant.dbRole! }));
      expect(text.split(/\r\n|[\n\r\u2028\u2029\u0085]/)).toEqual([
        "- notes (row count unknown): id integer not null, mood mood, size size (values: 'small' | 'large'), tag text, shade text (values: 'dark' | 'light')",
        '  keys: primary key (id)',
      ]);
    });

    it("takes a parent table's values from the statistics of its whole hierarchy, which a statement reading it reads", async () => {
      const { database, secrets } = server.app;
      const tenant = await createTenant(database, secrets, { name: 'Family', id: 'family' });
      await database.runScriptInTransaction(`
        CREATE TABLE tenant_family.parents (id integer, kind text NOT NULL) WITH (autovacuum_enabled = false);
        CREATE TABLE tenant_family.children () INHERITS (tenant_family.parents) WITH (autovacuum_enabled = false);
        INSERT INTO tenant_family.parents SELECT i, 'parent' FROM generate_series(1, 20) AS i;
        INSERT INTO tenant_family.children SELECT i, 'child' FROM generate_series(21, 40) AS i;
        ANALYZE tenant_family.parents;
        ANALYZE tenant_family.children;`);
      const schema = await introspectDataSchema(database, 'tenant_family', { role: tenant.dbRole! });
      const kind = (table: string) => schema.tables.find((t) => t.name === table)!.columns.find((c) => c.name === 'kind')!.values;
      expect(kind('parents')?.values.sort()).toEqual(['child', 'parent']);
      expect(kind('children')?.values).toEqual(['child']);
    });

    it.skipIf(backend !== 'pglite')('checkpoints PGlite before reading values as the tenant role, so that a read that runs out of time restarts the database quickly', async () => {
      const { database, secrets } = server.app;
      const tenant = await createTenant(database, secrets, { name: 'Filled', id: 'filled' });
      await database.runScriptInTransaction(`
        CREATE TABLE tenant_filled.things (id integer PRIMARY KEY, kind text NOT NULL);
        INSERT INTO tenant_filled.things SELECT i, (ARRAY['a', 'b'])[1 + i % 2] FROM generate_series(1, 200000) AS i;`);
      // The WAL a restarted worker would replay: PGlite has no checkpointer of its own.
      const behind = async () =>
        Number(
          (
            await database.runReadOnly({
              sql: 'SELECT (pg_current_wal_insert_lsn() - redo_lsn)::float8 AS behind FROM pg_control_checkpoint()',
              params: [],
              timeoutMs: 10_000,
              searchPath: 'public',
            })
          ).rows[0]!.behind,
        );
      expect(await behind()).toBeGreaterThan(8 * 1_048_576);
      const schema = await introspectDataSchema(database, 'tenant_filled', { role: tenant.dbRole! });
      expect(schema.tables[0]!.columns[1]!.values?.values.sort()).toEqual(['a', 'b']);
      expect(await behind()).toBeLessThan(8 * 1_048_576);
    });
  });
}
