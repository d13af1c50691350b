import { describe, it, expect } from 'vitest';
import { loadModule, parseSync } from 'libpg-query';
import { loadConfig } from '../src/config.js';
import { ALLOWED_FUNCTIONS, SqlRejectedError, guardSql, type SqlGuardScope } from '../src/guard/sql-guard.js';

const scope: SqlGuardScope = {
  tenantSchema: 'tenant_demo',
  tenantTables: new Set(['users', 'groups', 'group_members', 'applications', 'app_assignments']),
  stepRelations: new Set(['step_1', 'step_2']),
  relationColumns: new Map<string, ReadonlySet<string>>([
    ['users', new Set(['id', 'email', 'name', 'created_at', 'last_login', 'active', 'score', 'settings', 'status'])],
    ['groups', new Set(['id', 'name', 'created_at'])],
    ['group_members', new Set(['group_id', 'user_id', 'role'])],
    ['applications', new Set(['id', 'name', 'status'])],
    ['app_assignments', new Set(['app_id', 'user_id'])],
    ['step_1', new Set(['id', 'user_id', 'date'])],
    ['step_2', new Set(['group_id', 'name'])],
  ]),
  // A few of pg_catalog's function names, as the executor reads them from the database.
  reachableFunctions: new Set(['count', 'upper', 'lower', 'date_trunc', 'name', 'text', 'date', 'version', 'hash_record', 'pg_typeof', 'pg_advisory_lock', 'current_setting', 'nextval']),
  maxSqlChars: loadConfig({}).inputLimits.maxSqlChars,
};

interface AcceptedCase {
  name: string;
  sql: string;
  tables?: string[];
  stepRelations?: string[];
  statement?: string;
}

interface RejectedCase {
  name: string;
  sql: string;
  reason: string;
  message: RegExp;
}

const acceptedCases: AcceptedCase[] = [
  { name: 'accepts a simple select from a tenant table', sql: 'SELECT id, email FROM users WHERE id > 10 LIMIT 5', tables: ['users'] },
  {
    name: 'accepts a join between a tenant table and step_1',
    sql: 'SELECT u.id, s.score FROM users u JOIN step_1 s ON s.user_id = u.id',
    tables: ['users'],
    stepRelations: ['step_1'],
  },
  {
    name: 'accepts WITH … SELECT and does not record the CTE as a table',
    sql: 'WITH active AS (SELECT id FROM users WHERE active) SELECT count(*) FROM active JOIN group_members gm ON gm.user_id = active.id',
    tables: ['users', 'group_members'],
  },
  {
    name: 'accepts a recursive CTE',
    sql: 'WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10) SELECT sum(i) FROM n',
    tables: [],
  },
  {
    name: 'accepts mutually referencing CTEs under WITH RECURSIVE',
    sql: 'WITH RECURSIVE a AS (SELECT * FROM b), b AS (SELECT 1 AS x) SELECT * FROM a',
    tables: [],
  },
  {
    name: 'accepts a non-recursive CTE named like a tenant table that reads the real table',
    sql: 'WITH users AS (SELECT * FROM users WHERE active) SELECT * FROM users',
    tables: ['users'],
  },
  {
    name: 'accepts window functions',
    sql: 'SELECT id, row_number() OVER (PARTITION BY group_id ORDER BY id), lag(id) OVER w, sum(id) OVER (ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM group_members WINDOW w AS (ORDER BY id)',
    tables: ['group_members'],
  },
  {
    name: 'accepts aggregates with GROUP BY and HAVING',
    sql: "SELECT group_id, count(*) AS members, count(DISTINCT user_id), string_agg(role, ', ' ORDER BY role), avg(score) FILTER (WHERE score > 0), percentile_cont(0.5) WITHIN GROUP (ORDER BY score) FROM group_members GROUP BY group_id HAVING count(*) > 3",
    tables: ['group_members'],
  },
  {
    name: 'accepts date_trunc, extract and coalesce',
    sql: "SELECT date_trunc('month', created_at), EXTRACT(YEAR FROM created_at), coalesce(last_login, created_at), nullif(email, ''), greatest(1, 2), least(3, 4), created_at AT TIME ZONE 'UTC', now() - interval '7 days', current_date FROM users",
    tables: ['users'],
  },
  {
    name: 'accepts jsonb functions and operators',
    sql: "SELECT jsonb_build_object('id', id, 'tags', jsonb_agg(tag)), settings->>'theme', settings #> '{a,b}', jsonb_array_length(settings->'items'), jsonb_typeof(settings) FROM applications, jsonb_array_elements_text(settings->'tags') AS tag GROUP BY id, settings",
    tables: ['applications'],
  },
  {
    name: 'accepts SQL-syntax functions the parser rewrites into pg_catalog calls',
    sql: "SELECT trim(both ' ' from name), substring(name from 1 for 3), position('a' in name), overlay(name placing 'x' from 1), name LIKE 'a%' ESCAPE '!', name SIMILAR TO 'a%', (created_at, created_at) OVERLAPS (now(), now()) FROM users",
    tables: ['users'],
  },
  {
    name: 'accepts ordinary casts including arrays and pg_catalog-qualified types',
    sql: "SELECT id::text, '1'::int, CAST(score AS numeric(10, 2)), '2024-01-01'::date, '{1,2}'::int[], 'x'::pg_catalog.text, true::boolean, '00000000-0000-0000-0000-000000000000'::uuid, '{}'::jsonb FROM users",
    tables: ['users'],
  },
  { name: 'accepts a qualified reference to tenant_demo.users', sql: 'SELECT u.id FROM tenant_demo.users u', tables: ['users'] },
  { name: 'accepts a pg_catalog-qualified allowlisted function', sql: 'SELECT pg_catalog.count(*) FROM users', tables: ['users'] },
  {
    name: 'accepts UNION across a tenant table and step_2',
    sql: 'SELECT id FROM users UNION SELECT id FROM step_2 ORDER BY 1',
    tables: ['users'],
    stepRelations: ['step_2'],
  },
  { name: 'accepts VALUES', sql: "VALUES (1, 'a'), (2, 'b')", tables: [] },
  {
    name: 'accepts parenthesized set-operation arms',
    sql: '(SELECT id FROM users) UNION (SELECT id FROM step_1) LIMIT 3;',
    tables: ['users'],
    stepRelations: ['step_1'],
    statement: '(SELECT id FROM users) UNION (SELECT id FROM step_1) LIMIT 3',
  },
  { name: 'accepts TABLE shorthand', sql: 'TABLE groups', tables: ['groups'] },
  {
    name: 'accepts generate_series in FROM and a LATERAL subquery',
    sql: 'SELECT d, c.n FROM generate_series(1, 3) AS d, LATERAL (SELECT count(*) AS n FROM app_assignments a WHERE a.app_id = d) c',
    tables: ['app_assignments'],
  },
  {
    name: 'accepts EXISTS and IN subqueries',
    sql: 'SELECT * FROM users u WHERE EXISTS (SELECT 1 FROM group_members gm WHERE gm.user_id = u.id) AND u.id IN (SELECT user_id FROM step_1)',
    tables: ['users', 'group_members'],
    stepRelations: ['step_1'],
  },
  { name: 'accepts an IN list of constants', sql: 'SELECT count(*) AS n FROM users WHERE id IN (23, 46, 69)', tables: ['users'] },
  { name: 'accepts date and time SQL value functions', sql: 'SELECT current_date, current_timestamp, localtime, localtimestamp', tables: [] },
  { name: 'accepts tabs and newlines', sql: 'SELECT\tid\r\nFROM users\n', tables: ['users'], statement: 'SELECT\tid\r\nFROM users' },
  { name: 'strips a trailing semicolon from the statement', sql: 'SELECT id FROM users;', tables: ['users'], statement: 'SELECT id FROM users' },
  { name: 'strips repeated trailing semicolons and whitespace', sql: '  SELECT 1 ; ;\n', statement: 'SELECT 1' },
  { name: 'strips a trailing line comment', sql: 'SELECT 1 -- note', statement: 'SELECT 1' },
  { name: 'strips a semicolon followed by a comment', sql: 'SELECT 1; -- note\n', statement: 'SELECT 1' },
  { name: 'strips a leading block comment', sql: '/* why */ SELECT 1', statement: 'SELECT 1' },
  { name: 'keeps semicolons inside string literals', sql: "SELECT ';' AS s;", statement: "SELECT ';' AS s" },
  {
    name: 'accepts qualified columns whose names are also function names, when the relation they are qualified by has such a column',
    sql: 'SELECT users.name, g.name, tenant_demo.users.email, s.date, t.name FROM tenant_demo.users, groups g, step_1 s JOIN step_2 t ON t.group_id = s.id',
    tables: ['users', 'groups'],
    stepRelations: ['step_1', 'step_2'],
  },
  {
    name: 'accepts an outer relation\'s column in a correlated subquery',
    sql: 'SELECT g.id, (SELECT count(*) FROM group_members m WHERE m.group_id = g.id AND g.name IS NOT NULL) AS n FROM groups g',
    tables: ['group_members', 'groups'],
  },
  {
    name: 'accepts whole-row field selection and subscripts',
    sql: "SELECT (u).email, (u).id, (jsonb_each(u.settings)).key, (regexp_match(u.email, '(.*)@'))[1] FROM users u",
    tables: ['users'],
  },
  { name: 'accepts u.* and (u).*', sql: 'SELECT u.*, (u).* FROM users u', tables: ['users'] },
  { name: 'accepts attribute notation for an allowlisted function', sql: 'SELECT (u.email).upper FROM users u', tables: ['users'] },
  {
    name: 'accepts every allowlisted type, its SQL spelling and its arrays',
    sql: "SELECT true::boolean, 1::smallint, 1::integer, 1::int, 1::bigint, 1::int2, 1::int4, 1::int8, 1::numeric(10, 2), 1::decimal, 1::real, 1::float, 1::double precision, 1::float4, 1::float8, 'a'::text, 'a'::varchar(3), 'a'::character varying, 'a'::char(2), 'a'::character, 'a'::bpchar, date '2024-01-01', time '10:00', time with time zone '10:00', timetz '10:00', timestamp '2024-01-01', timestamptz '2024-01-01', timestamp(3) with time zone '2024-01-01', interval '1 day', '1'::interval day to second, gen_random_uuid()::uuid, '{}'::json, '{}'::jsonb, '\\x00'::bytea, '{1}'::int[], '{1}'::_int4, '{a}'::text[][], CAST('1' AS pg_catalog.int8), ARRAY[]::timestamptz[]",
    tables: [],
  },
  {
    name: 'accepts allowlisted types in column definition lists and JSON RETURNING',
    sql: "SELECT a, b, JSON_VALUE('1'::jsonb, '$' RETURNING int) FROM jsonb_to_record('{}') AS t(a int, b timestamptz[])",
    tables: [],
  },
  { name: 'cuts the statement correctly after multi-byte characters', sql: "SELECT 'héllo ✓' AS s; -- ünïcode", statement: "SELECT 'héllo ✓' AS s" },
];

const rejectedCases: RejectedCase[] = [
  { name: 'rejects empty input', sql: '', reason: 'empty input', message: /empty/ },
  { name: 'rejects whitespace-only input', sql: ' \n\t ', reason: 'empty input', message: /empty/ },
  { name: 'rejects input with only a comment', sql: '-- nothing here', reason: 'empty input', message: /no statement/ },
  { name: 'rejects input with only semicolons', sql: ';;', reason: 'empty input', message: /no statement/ },
  {
    name: 'rejects input longer than STEPCAST_MAX_SQL_CHARS',
    sql: `SELECT 1${' '.repeat(scope.maxSqlChars)}`,
    reason: 'input too long',
    message: new RegExp(`the query is ${scope.maxSqlChars + 8} characters long; the limit is ${scope.maxSqlChars}$`),
  },
  { name: 'rejects current_user, which names the database role', sql: 'SELECT current_user', reason: 'function not allowed', message: /current_user is not allowed/ },
  { name: 'rejects session_user', sql: 'SELECT session_user', reason: 'function not allowed', message: /session_user is not allowed/ },
  { name: 'rejects current_catalog, which names the database', sql: 'SELECT current_catalog', reason: 'function not allowed', message: /current_catalog is not allowed/ },
  { name: 'rejects current_schema', sql: 'SELECT 1 WHERE current_schema IS NOT NULL', reason: 'function not allowed', message: /current_schema is not allowed/ },
  { name: 'rejects a bind parameter, which would read the executor step_N parameters', sql: 'SELECT * FROM users WHERE id = $1', reason: 'parameter not allowed', message: /parameters/ },
  { name: 'rejects syntax errors with the parser message', sql: 'SELEC 1', reason: 'parse error', message: /syntax error at or near "SELEC"/ },
  { name: 'rejects multiple statements', sql: 'SELECT 1; SELECT 2', reason: 'multiple statements', message: /multiple statements/ },
  { name: 'rejects a line comment hiding a second statement', sql: 'SELECT 1; -- x\nDELETE FROM users', reason: 'multiple statements', message: /multiple statements/ },
  { name: 'rejects a block comment hiding a second statement', sql: 'SELECT 1 /* ; */; DROP TABLE users', reason: 'multiple statements', message: /multiple statements/ },
  { name: 'rejects a comment before a second statement', sql: 'SELECT 1; /* */ DELETE FROM users', reason: 'multiple statements', message: /multiple statements/ },
  { name: 'rejects a zero-width space inside a keyword', sql: 'SEL\u200BECT 1', reason: 'forbidden character', message: /U\+200B/ },
  { name: 'rejects a zero-width joiner inside an identifier', sql: 'SELECT * FROM us\u200Ders', reason: 'forbidden character', message: /U\+200D/ },
  { name: 'rejects a byte order mark', sql: '\uFEFFSELECT 1', reason: 'forbidden character', message: /U\+FEFF/ },
  { name: 'rejects a bidi override', sql: "SELECT '\u202Eabc'", reason: 'forbidden character', message: /U\+202E/ },
  { name: 'rejects a soft hyphen', sql: 'SELECT 1 AS a\u00ADb', reason: 'forbidden character', message: /U\+00AD/ },
  { name: 'rejects a control character', sql: 'SELECT 1\u0007', reason: 'forbidden character', message: /U\+0007/ },
  { name: 'rejects a NUL character', sql: 'SELECT 1\u0000; DROP TABLE users', reason: 'forbidden character', message: /U\+0000/ },
  { name: 'rejects a lone surrogate', sql: "SELECT '\uD800'", reason: 'forbidden character', message: /U\+D800/ },
  { name: 'rejects INSERT', sql: "INSERT INTO users (email) VALUES ('x')", reason: 'statement not allowed', message: /INSERT statements are not allowed/ },
  { name: 'rejects UPDATE', sql: "UPDATE users SET email = 'x'", reason: 'statement not allowed', message: /UPDATE statements are not allowed/ },
  { name: 'rejects DELETE', sql: 'DELETE FROM users', reason: 'statement not allowed', message: /DELETE statements are not allowed/ },
  {
    name: 'rejects MERGE',
    sql: 'MERGE INTO users u USING step_1 s ON u.id = s.id WHEN MATCHED THEN DELETE',
    reason: 'statement not allowed',
    message: /MERGE statements are not allowed/,
  },
  { name: 'rejects COPY', sql: 'COPY users TO STDOUT', reason: 'statement not allowed', message: /COPY statements are not allowed/ },
  { name: 'rejects SET', sql: 'SET search_path = public', reason: 'statement not allowed', message: /SET statements are not allowed/ },
  { name: 'rejects SHOW', sql: 'SHOW search_path', reason: 'statement not allowed', message: /SHOW statements are not allowed/ },
  { name: 'rejects EXPLAIN', sql: 'EXPLAIN SELECT 1', reason: 'statement not allowed', message: /EXPLAIN statements are not allowed/ },
  { name: 'rejects CREATE TABLE', sql: 'CREATE TABLE x (a int)', reason: 'statement not allowed', message: /CREATE TABLE statements are not allowed/ },
  { name: 'rejects CREATE TABLE AS', sql: 'CREATE TABLE x AS SELECT 1', reason: 'statement not allowed', message: /CREATE TABLE AS statements/ },
  { name: 'rejects DO', sql: 'DO $$ BEGIN PERFORM 1; END $$', reason: 'statement not allowed', message: /DO statements/ },
  { name: 'rejects CALL', sql: 'CALL p()', reason: 'statement not allowed', message: /CALL statements/ },
  { name: 'rejects LISTEN', sql: 'LISTEN x', reason: 'statement not allowed', message: /LISTEN statements/ },
  { name: 'rejects PREPARE', sql: 'PREPARE p AS SELECT 1', reason: 'statement not allowed', message: /PREPARE statements/ },
  { name: 'rejects transaction control', sql: 'COMMIT', reason: 'statement not allowed', message: /transaction control/ },
  {
    name: 'rejects a writable CTE',
    sql: 'WITH d AS (DELETE FROM users RETURNING *) SELECT * FROM d',
    reason: 'data-modifying cte',
    message: /data-modifying DELETE/,
  },
  {
    name: 'rejects a writable CTE nested in a subquery',
    sql: "SELECT * FROM (WITH i AS (INSERT INTO users (email) VALUES ('x') RETURNING id) SELECT * FROM i) s",
    reason: 'data-modifying cte',
    message: /data-modifying INSERT/,
  },
  { name: 'rejects SELECT INTO', sql: 'SELECT * INTO copy_of_users FROM users', reason: 'select into', message: /SELECT INTO/ },
  { name: 'rejects FOR UPDATE', sql: 'SELECT * FROM users FOR UPDATE', reason: 'locking clause', message: /FOR UPDATE/ },
  { name: 'rejects FOR SHARE', sql: 'SELECT * FROM users FOR SHARE', reason: 'locking clause', message: /FOR UPDATE\/FOR SHARE/ },
  { name: 'rejects FOR NO KEY UPDATE inside a subquery', sql: 'SELECT * FROM (SELECT * FROM users FOR NO KEY UPDATE) s', reason: 'locking clause', message: /locking/ },
  { name: 'rejects set_config', sql: "SELECT set_config('search_path', 'public', false)", reason: 'function not allowed', message: /function set_config is not allowed/ },
  {
    name: 'rejects pg_catalog.set_config',
    sql: "SELECT pg_catalog.set_config('search_path', 'public', false)",
    reason: 'function not allowed',
    message: /function set_config is not allowed/,
  },
  { name: 'rejects current_setting', sql: "SELECT current_setting('search_path')", reason: 'function not allowed', message: /function current_setting is not allowed/ },
  { name: 'rejects pg_sleep', sql: 'SELECT pg_sleep(10)', reason: 'function not allowed', message: /function pg_sleep is not allowed/ },
  { name: 'rejects pg_read_file', sql: "SELECT pg_read_file('/etc/passwd')", reason: 'function not allowed', message: /function pg_read_file is not allowed/ },
  { name: 'rejects dblink', sql: "SELECT * FROM dblink('host=x', 'SELECT 1') AS t(a int)", reason: 'function not allowed', message: /function dblink is not allowed/ },
  { name: 'rejects lo_import', sql: "SELECT lo_import('/etc/passwd')", reason: 'function not allowed', message: /function lo_import is not allowed/ },
  { name: 'rejects pg_advisory_lock', sql: 'SELECT pg_advisory_lock(1)', reason: 'function not allowed', message: /function pg_advisory_lock is not allowed/ },
  { name: 'rejects nextval', sql: "SELECT nextval('users_id_seq')", reason: 'function not allowed', message: /function nextval is not allowed/ },
  { name: 'rejects SYSTEM_USER, which the parser turns into a function call', sql: 'SELECT system_user', reason: 'function not allowed', message: /function system_user/ },
  { name: 'rejects a quoted function name that differs only in case', sql: 'SELECT "COUNT"(*) FROM users', reason: 'function not allowed', message: /function COUNT is not allowed/ },
  { name: 'rejects a function qualified with another schema', sql: 'SELECT myschema.f()', reason: 'qualified function', message: /function myschema\.f is not allowed/ },
  { name: 'rejects a function qualified with the tenant schema', sql: 'SELECT tenant_demo.count(*) FROM users', reason: 'qualified function', message: /tenant_demo\.count/ },
  { name: 'rejects a function in FROM', sql: "SELECT * FROM pg_ls_dir('.')", reason: 'function not allowed', message: /function pg_ls_dir is not allowed/ },
  {
    name: 'rejects a disallowed function inside ROWS FROM',
    sql: "SELECT * FROM ROWS FROM (generate_series(1, 2), pg_ls_dir('.')) AS t(a, b)",
    reason: 'function not allowed',
    message: /function pg_ls_dir/,
  },
  { name: 'rejects a sub-select in the target list calling pg_sleep', sql: 'SELECT (SELECT pg_sleep(10))', reason: 'function not allowed', message: /pg_sleep/ },
  { name: 'rejects a function hidden in ORDER BY', sql: 'SELECT id FROM users ORDER BY pg_sleep(1)', reason: 'function not allowed', message: /pg_sleep/ },
  {
    name: 'rejects a function hidden in a lateral join',
    sql: 'SELECT u.id FROM users u CROSS JOIN LATERAL (SELECT pg_sleep(1)) s',
    reason: 'function not allowed',
    message: /pg_sleep/,
  },
  { name: 'rejects a function hidden in a CASE', sql: 'SELECT CASE WHEN id > 0 THEN pg_sleep(1) END FROM users', reason: 'function not allowed', message: /pg_sleep/ },
  { name: 'rejects a function hidden in a type modifier', sql: 'SELECT 1::numeric(pg_sleep(1))', reason: 'function not allowed', message: /pg_sleep/ },
  {
    name: 'rejects a function hidden in a window frame',
    sql: 'SELECT sum(id) OVER (ORDER BY id ROWS BETWEEN pg_sleep(1)::int PRECEDING AND CURRENT ROW) FROM users',
    reason: 'function not allowed',
    message: /pg_sleep/,
  },
  {
    name: 'rejects a function hidden in a CTE body',
    sql: 'WITH x AS (SELECT pg_sleep(1)) SELECT * FROM x',
    reason: 'function not allowed',
    message: /pg_sleep/,
  },
  { name: 'rejects pg_catalog.pg_class', sql: 'SELECT * FROM pg_catalog.pg_class', reason: 'qualified relation', message: /pg_catalog\.pg_class is not allowed/ },
  { name: 'rejects pg_class unqualified', sql: 'SELECT relname FROM pg_class', reason: 'relation not available', message: /relation pg_class is not available/ },
  { name: 'rejects a system catalog referenced from a subquery', sql: 'SELECT 1 WHERE EXISTS (SELECT 1 FROM pg_authid)', reason: 'relation not available', message: /pg_authid/ },
  { name: 'rejects information_schema.tables', sql: 'SELECT * FROM information_schema.tables', reason: 'qualified relation', message: /information_schema\.tables/ },
  { name: 'rejects public.x', sql: 'SELECT * FROM public.x', reason: 'qualified relation', message: /public\.x is not allowed/ },
  { name: "rejects another tenant's schema", sql: 'SELECT * FROM tenant_other.users', reason: 'qualified relation', message: /tenant_other\.users/ },
  { name: 'rejects a catalog-qualified name', sql: 'SELECT * FROM stepcast.tenant_demo.users', reason: 'qualified relation', message: /stepcast\.tenant_demo\.users/ },
  { name: 'rejects a qualified unknown tenant relation', sql: 'SELECT * FROM tenant_demo.secrets', reason: 'qualified relation', message: /tenant_demo\.secrets/ },
  { name: 'rejects a qualified step relation', sql: 'SELECT * FROM pg_temp.step_1', reason: 'qualified relation', message: /pg_temp\.step_1/ },
  { name: 'rejects an unknown table and lists what is available', sql: 'SELECT * FROM secrets', reason: 'relation not available', message: /relation secrets is not available \(available: .*users/ },
  { name: 'rejects step_3 when it is not in scope', sql: 'SELECT * FROM step_3', reason: 'relation not available', message: /relation step_3 is not available/ },
  {
    name: 'rejects the inner-CTE-shadowing trick',
    sql: 'SELECT * FROM (WITH pg_authid AS (SELECT 1) SELECT 1) a, pg_authid',
    reason: 'reserved cte name',
    message: /pg_authid/,
  },
  {
    name: 'rejects an outer reference to a CTE defined in an inner scope',
    sql: 'SELECT * FROM (WITH secrets AS (SELECT 1) SELECT 1) a, secrets',
    reason: 'relation not available',
    message: /relation secrets is not available/,
  },
  {
    name: 'rejects a reference to a CTE defined in a sibling set-operation arm',
    sql: 'SELECT * FROM (WITH secrets AS (SELECT 1) SELECT 1) a UNION SELECT * FROM secrets',
    reason: 'relation not available',
    message: /relation secrets is not available/,
  },
  {
    name: 'rejects a reference to a CTE that belongs to the other UNION arm',
    sql: '(WITH secrets AS (SELECT 1 AS a) SELECT a FROM secrets) UNION SELECT a FROM secrets',
    reason: 'relation not available',
    message: /relation secrets is not available/,
  },
  {
    name: 'rejects a forward reference between non-recursive CTEs',
    sql: 'WITH a AS (SELECT * FROM secrets), secrets AS (SELECT 1) SELECT * FROM a',
    reason: 'relation not available',
    message: /relation secrets is not available/,
  },
  { name: 'rejects a CTE named like a system catalog', sql: 'WITH pg_stats AS (SELECT 1) SELECT * FROM pg_stats', reason: 'reserved cte name', message: /pg_stats/ },
  { name: "rejects 'pg_authid'::regclass", sql: "SELECT 'pg_authid'::regclass", reason: 'type not allowed', message: /type regclass is not allowed/ },
  { name: 'rejects CAST to regproc', sql: "SELECT CAST('pg_sleep' AS pg_catalog.regproc)", reason: 'type not allowed', message: /regproc/ },
  { name: 'rejects the regclass array type', sql: "SELECT '{pg_authid}'::_regclass", reason: 'type not allowed', message: /_regclass/ },
  {
    name: 'rejects regclass in a column definition list',
    sql: 'SELECT * FROM jsonb_to_record(\'{"a":"pg_authid"}\') AS t(a regclass)',
    reason: 'type not allowed',
    message: /regclass/,
  },
  { name: 'rejects regclass in JSON_VALUE RETURNING', sql: "SELECT JSON_VALUE('\"pg_authid\"'::jsonb, '$' RETURNING regclass)", reason: 'type not allowed', message: /regclass/ },
  { name: 'rejects a type qualified with another schema', sql: "SELECT 'x'::tenant_other.mood", reason: 'qualified type', message: /tenant_other\.mood/ },
  { name: 'rejects an operator qualified with another schema', sql: 'SELECT 1 OPERATOR(public.+) 2', reason: 'qualified operator', message: /operator public\.\+/ },
  { name: 'rejects ORDER BY USING a qualified operator', sql: 'SELECT id FROM users ORDER BY id USING OPERATOR(public.<)', reason: 'qualified operator', message: /public\.</ },
  { name: 'rejects a collation qualified with another schema', sql: 'SELECT email COLLATE public.c FROM users', reason: 'qualified collation', message: /public\.c/ },
  { name: 'rejects XML functions', sql: "SELECT xmlparse(document '<a/>')", reason: 'xml not allowed', message: /XML/ },
  { name: 'rejects XMLTABLE', sql: "SELECT * FROM XMLTABLE('/a' PASSING '<a/>' COLUMNS a int PATH 'a') t", reason: 'xml not allowed', message: /XMLTABLE/ },
  { name: 'rejects the xml type', sql: "SELECT '<a/>'::xml", reason: 'xml not allowed', message: /xml/ },
  { name: 'rejects the system column xmin', sql: 'SELECT xmin FROM users', reason: 'system column', message: /system column xmin is not allowed/ },
  { name: 'rejects the system column xmax, qualified', sql: 'SELECT u.xmax FROM users u', reason: 'system column', message: /system column xmax is not allowed/ },
  { name: 'rejects the system column cmin, schema-qualified', sql: 'SELECT tenant_demo.users.cmin FROM tenant_demo.users', reason: 'system column', message: /system column cmin is not allowed/ },
  { name: 'rejects the system column cmax in WHERE', sql: 'SELECT id FROM users WHERE cmax > 0', reason: 'system column', message: /system column cmax is not allowed/ },
  { name: 'rejects the system column ctid in ORDER BY', sql: 'SELECT id FROM users ORDER BY ctid', reason: 'system column', message: /system column ctid is not allowed/ },
  { name: 'rejects the system column tableoid in a subquery', sql: 'SELECT (SELECT tableoid FROM users LIMIT 1)', reason: 'system column', message: /system column tableoid is not allowed/ },
  { name: 'rejects a system column as a field selection', sql: 'SELECT (u).xmin FROM users u', reason: 'system column', message: /system column xmin is not allowed/ },
  { name: 'rejects t.pg_typeof (attribute notation for pg_typeof(t))', sql: 'SELECT t.pg_typeof FROM users t', reason: 'function not allowed', message: /attribute notation \.pg_typeof would call function pg_typeof, which is not allowed/ },
  { name: 'rejects t.hash_record', sql: 'SELECT t.hash_record FROM users t', reason: 'function not allowed', message: /would call function hash_record, which is not allowed/ },
  { name: 'rejects a schema-qualified attribute-notation call', sql: 'SELECT tenant_demo.users.hash_record FROM tenant_demo.users', reason: 'function not allowed', message: /function hash_record/ },
  { name: 'rejects attribute notation on a field of a column', sql: 'SELECT u.settings.version FROM users u', reason: 'function not allowed', message: /function version/ },
  {
    name: 'rejects (expr).pg_advisory_lock, which would take a session lock',
    sql: 'SELECT (u.id::bigint).pg_advisory_lock FROM users u',
    reason: 'function not allowed',
    message: /attribute notation \.pg_advisory_lock would call function pg_advisory_lock, which is not allowed/,
  },
  { name: 'rejects (expr).current_setting', sql: "SELECT ('search_path'::text).current_setting", reason: 'function not allowed', message: /function current_setting/ },
  { name: "rejects a function name qualified by a relation that has no such column", sql: 'SELECT g.version FROM groups g', reason: 'function not allowed', message: /attribute notation \.version would call function version/ },
  { name: "rejects a step column name another step relation has, qualified by one that has not", sql: 'SELECT s.name FROM step_1 s', reason: 'function not allowed', message: /function name/ },
  { name: 'rejects a table name shadowed by a WITH query as the source of a column', sql: 'WITH users AS (SELECT 1 AS x) SELECT u.name FROM users u', reason: 'function not allowed', message: /function name/ },
  { name: 'rejects a column of a subquery named like a function (its columns are not known)', sql: 'SELECT q.date FROM (SELECT 1 AS date) q', reason: 'function not allowed', message: /function date/ },
  { name: 'rejects any pg_ name in attribute notation, even one not known to exist', sql: 'SELECT u.pg_anything, (u).pg_else FROM users u', reason: 'function not allowed', message: /function pg_anything/ },
  {
    name: 'rejects (expr).f for a function name even when some table has a column f, since expr may be of any type',
    sql: "SELECT ('x'::text).name FROM users u",
    reason: 'function not allowed',
    message: /function name/,
  },
  { name: 'rejects t.f for a function name no table has as a column', sql: 'SELECT g.text FROM groups g', reason: 'function not allowed', message: /function text/ },
  { name: "rejects 'name=r/x'::aclitem, which tells whether a role exists", sql: "SELECT 'name=r/x'::aclitem", reason: 'type not allowed', message: /type aclitem is not allowed/ },
  { name: 'rejects an aclitem array', sql: "SELECT '{name=r/x}'::aclitem[]", reason: 'type not allowed', message: /type aclitem is not allowed/ },
  { name: 'rejects the _aclitem array type', sql: "SELECT '{name=r/x}'::_aclitem", reason: 'type not allowed', message: /type _aclitem is not allowed/ },
  { name: 'rejects pg_catalog.aclitem in CAST', sql: "SELECT CAST('name=r/x' AS pg_catalog.aclitem)", reason: 'type not allowed', message: /type pg_catalog\.aclitem is not allowed/ },
  { name: 'rejects regrole', sql: "SELECT 'postgres'::regrole", reason: 'type not allowed', message: /type regrole is not allowed/ },
  { name: 'rejects regnamespace', sql: "SELECT 'tenant_other'::regnamespace", reason: 'type not allowed', message: /type regnamespace is not allowed/ },
  { name: 'rejects the pg_lsn type', sql: "SELECT '0/0'::pg_lsn", reason: 'type not allowed', message: /type pg_lsn is not allowed/ },
  { name: 'rejects a typed pg_snapshot literal', sql: "SELECT pg_snapshot '1:1:'", reason: 'type not allowed', message: /type pg_snapshot is not allowed/ },
  { name: 'rejects oid', sql: 'SELECT 1::oid', reason: 'type not allowed', message: /type oid is not allowed/ },
  { name: 'rejects name', sql: "SELECT 'x'::name", reason: 'type not allowed', message: /type name is not allowed/ },
  { name: 'rejects the one-byte internal "char" type, which no SQL spelling of a castable type names', sql: "SELECT 'a'::\"char\"", reason: 'type not allowed', message: /type "char" is not allowed \(only .*, char, / },
  { name: 'rejects a range type', sql: "SELECT '[1,2)'::int4range", reason: 'type not allowed', message: /type int4range is not allowed/ },
  { name: 'rejects the bit type the parser qualifies', sql: "SELECT '1'::bit(1)", reason: 'type not allowed', message: /type pg_catalog\.bit is not allowed/ },
  { name: "rejects a cast to a tenant table's row type", sql: "SELECT '(1)'::users", reason: 'type not allowed', message: /type users is not allowed/ },
  { name: 'rejects a quoted type name differing in case', sql: "SELECT 'x'::\"TEXT\"", reason: 'type not allowed', message: /type TEXT is not allowed/ },
  { name: 'rejects a disallowed type in a column definition list', sql: "SELECT * FROM jsonb_to_record('{}') AS t(a aclitem)", reason: 'type not allowed', message: /aclitem/ },
  { name: 'rejects a disallowed type in JSON_TABLE columns', sql: "SELECT * FROM JSON_TABLE('[1]'::jsonb, '$[*]' COLUMNS (a pg_lsn PATH '$')) jt", reason: 'type not allowed', message: /pg_lsn/ },
  { name: 'rejects TABLESAMPLE', sql: 'SELECT * FROM users TABLESAMPLE bernoulli (10)', reason: 'tablesample not allowed', message: /TABLESAMPLE/ },
  { name: 'rejects absurdly deep nesting', sql: `SELECT ${'~ '.repeat(600)}1`, reason: 'too deeply nested', message: /nested more than/ },
];

describe('guardSql accepts read-only queries over the tenant scope', () => {
  for (const testCase of acceptedCases) {
    it(testCase.name, async () => {
      const guarded = await guardSql(testCase.sql, scope);
      if (testCase.tables) expect(guarded.tables).toEqual(testCase.tables);
      expect(guarded.stepRelations).toEqual(testCase.stepRelations ?? []);
      if (testCase.statement !== undefined) expect(guarded.statement).toBe(testCase.statement);
      expect(guarded.statement).not.toMatch(/;\s*$/);
    });
  }

  it('returns a statement that parses as a single SELECT when wrapped as a subquery', async () => {
    await loadModule();
    for (const sql of ['SELECT 1 -- note', 'SELECT id FROM users; -- trailing', 'WITH x AS (SELECT 1) SELECT * FROM x;;', 'VALUES (1) /* c */']) {
      const { statement } = await guardSql(sql, scope);
      expect(statement.endsWith(';')).toBe(false);
      const wrapped = parseSync(`SELECT * FROM (\n${statement}\n) AS q`);
      expect(wrapped.stmts).toHaveLength(1);
      expect(Object.keys(wrapped.stmts?.[0]?.stmt ?? {})).toEqual(['SelectStmt']);
    }
  });

  it('lists each referenced relation once', async () => {
    const guarded = await guardSql('SELECT * FROM users a JOIN users b ON a.id = b.id JOIN step_1 ON true JOIN step_1 s2 ON true', scope);
    expect(guarded.tables).toEqual(['users']);
    expect(guarded.stepRelations).toEqual(['step_1']);
  });
});

describe('guardSql checks a statement it has seen before against the scope of each call', () => {
  it('refuses a step relation the scope no longer has, and accepts it again where it has it', async () => {
    const sql = 'SELECT group_id FROM step_2 -- same text every time';
    await expect(guardSql(sql, scope)).resolves.toMatchObject({ stepRelations: ['step_2'] });
    const withoutStep2 = { ...scope, stepRelations: new Set(['step_1']) };
    await expect(guardSql(sql, withoutStep2)).rejects.toMatchObject({ reason: 'relation not available' });
    await expect(guardSql(sql, { ...scope, tenantTables: new Set<string>() })).resolves.toMatchObject({ tables: [], stepRelations: ['step_2'] });
    await expect(guardSql(sql, withoutStep2)).rejects.toThrow(/relation step_2 is not available/);
  });

  it("reads attribute notation by the columns of each call's relations", async () => {
    const sql = 'SELECT s.name FROM step_1 s';
    await expect(guardSql(sql, scope)).rejects.toMatchObject({ reason: 'function not allowed' });
    const step1HasName = { ...scope, relationColumns: new Map([...scope.relationColumns, ['step_1', new Set(['name'])]]) };
    await expect(guardSql(sql, step1HasName)).resolves.toMatchObject({ statement: sql, stepRelations: ['step_1'] });
    await expect(guardSql(sql, scope)).rejects.toThrow(/function name/);
  });

  it('returns the same statement and start for the same text, and refuses a refused text every time', async () => {
    const sql = '/* lead */  SELECT id FROM users;';
    const first = await guardSql(sql, scope);
    expect(first).toEqual({ statement: 'SELECT id FROM users', statementStart: 12, tables: ['users'], stepRelations: [] });
    await expect(guardSql(sql, scope)).resolves.toEqual(first);
    for (let i = 0; i < 2; i++) {
      await expect(guardSql('SELECT 1; SELECT 2', scope)).rejects.toMatchObject({ reason: 'multiple statements' });
      await expect(guardSql('SELECT pg_sleep(1)', scope)).rejects.toMatchObject({ reason: 'function not allowed' });
    }
  });

  it('still checks a statement too long to be kept, on every call', async () => {
    const sql = `SELECT id FROM step_2 WHERE name <> '${'x'.repeat(10_000)}'`;
    await expect(guardSql(sql, scope)).resolves.toMatchObject({ stepRelations: ['step_2'] });
    await expect(guardSql(sql, { ...scope, stepRelations: new Set<string>() })).rejects.toMatchObject({ reason: 'relation not available' });
  });

  it('refuses a tree nested deeper than the checks allow as too deeply nested, kept or not, never with a RangeError', async () => {
    // 1,400 nested scalar subqueries (12,608 characters): libpg-query still parses them, and the tree is some 11,000
    // objects deep, past what a recursive walk of it (the freezing of the tree kept) had stack for.
    const nested = (levels: number) => `SELECT ${'(SELECT '.repeat(levels)}1${')'.repeat(levels)}`;
    for (const sql of [nested(1_400), nested(900)]) {
      for (let i = 0; i < 2; i++) {
        await expect(guardSql(sql, scope)).rejects.toMatchObject({ name: 'SqlRejectedError', reason: 'too deeply nested' });
      }
    }
  });
});

describe('guardSql rejects anything outside the allowlist', () => {
  for (const testCase of rejectedCases) {
    it(testCase.name, async () => {
      const attempt = guardSql(testCase.sql, scope);
      await expect(attempt).rejects.toThrow(SqlRejectedError);
      await expect(attempt).rejects.toThrow(testCase.message);
      await expect(attempt).rejects.toMatchObject({ name: 'SqlRejectedError', reason: testCase.reason });
    });
  }

  it('prefixes every message with "SQL rejected:"', async () => {
    await expect(guardSql('SELECT pg_sleep(1)', scope)).rejects.toThrow(/^SQL rejected: function pg_sleep is not allowed$/);
  });

  it('takes its length limit from the scope, which the executor fills from STEPCAST_MAX_SQL_CHARS', async () => {
    const statement = `SELECT '${'x'.repeat(25_000)}' AS padding`;
    expect(statement.length).toBe(25_020);
    await expect(guardSql(statement, { ...scope, maxSqlChars: 50_000 })).resolves.toMatchObject({ statement });
    await expect(guardSql(statement, { ...scope, maxSqlChars: 25_019 })).rejects.toThrow(/the query is 25020 characters long; the limit is 25019$/);
  });

  it('rejects a value that is not a string', async () => {
    await expect(guardSql(undefined as unknown as string, scope)).rejects.toThrow(SqlRejectedError);
  });
});

describe('ALLOWED_FUNCTIONS', () => {
  const dangerousFunctions = [
    'pg_sleep', 'pg_sleep_for', 'pg_sleep_until', 'set_config', 'current_setting', 'pg_read_file', 'pg_read_binary_file',
    'pg_ls_dir', 'pg_stat_file', 'dblink', 'dblink_exec', 'lo_import', 'lo_export', 'lo_get', 'lo_open', 'pg_advisory_lock',
    'pg_try_advisory_lock', 'pg_advisory_xact_lock', 'pg_terminate_backend', 'pg_cancel_backend', 'pg_reload_conf', 'nextval',
    'setval', 'currval', 'txid_current', 'pg_notify', 'query_to_xml', 'version', 'has_table_privilege', 'quote_ident',
    'quote_literal', 'to_regclass', 'setseed', 'current_database',
  ];

  it.each(dangerousFunctions)('excludes %s', (name) => {
    expect(ALLOWED_FUNCTIONS.has(name)).toBe(false);
  });

  it('contains no pg_ or has_*_privilege functions', () => {
    const suspicious = [...ALLOWED_FUNCTIONS].filter((name) => name.startsWith('pg_') || /^has_.*_privilege$/.test(name));
    expect(suspicious).toEqual([]);
  });

  it('holds only lower-case names', () => {
    expect([...ALLOWED_FUNCTIONS].filter((name) => name !== name.toLowerCase())).toEqual([]);
  });
});
