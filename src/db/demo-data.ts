import { and, eq, isNull } from 'drizzle-orm';
import type { Database } from './client.js';
import { tenants, type TenantRow } from './tables.js';
import { provisionTenantDataAccess } from './tenant-roles.js';

export const DEMO_TENANT_ID = 'demo';
export const DEMO_TENANT_SCHEMA = 'tenant_demo';
const DEMO_SEED_LOCK_KEY = 4_242_002;

const FIRST_NAMES = ['Ada', 'Alan', 'Grace', 'Linus', 'Barbara', 'Ken', 'Margaret', 'Dennis', 'Frances', 'Edsger',
  'Radia', 'Donald', 'Katherine', 'Tim', 'Hedy', 'John', 'Sophie', 'Niklaus', 'Joan', 'Guido'];
const LAST_NAMES = ['Lovelace', 'Turing', 'Hopper', 'Torvalds', 'Liskov', 'Thompson', 'Hamilton', 'Ritchie', 'Allen',
  'Dijkstra', 'Perlman', 'Knuth', 'Johnson', 'Berners', 'Lamarr', 'McCarthy', 'Wilson', 'Wirth', 'Clarke', 'Rossum',
  'Kay', 'Wing', 'Goldberg', 'Backus', 'Cerf'];
const DEPARTMENTS = ['Engineering', 'Sales', 'Marketing', 'Finance', 'Support', 'People', 'Legal', 'Operations'];
const TITLES = ['Engineer', 'Senior Engineer', 'Manager', 'Analyst', 'Director', 'Specialist', 'Associate', 'Lead'];
const APPLICATIONS: [string, string, string][] = [
  ['Slack', 'Slack Technologies', 'communication'], ['GitHub', 'GitHub', 'engineering'], ['Jira', 'Atlassian', 'engineering'],
  ['Confluence', 'Atlassian', 'knowledge'], ['Salesforce', 'Salesforce', 'sales'], ['Zoom', 'Zoom', 'communication'],
  ['Google Workspace', 'Google', 'productivity'], ['Figma', 'Figma', 'design'], ['Notion', 'Notion Labs', 'knowledge'],
  ['Workday', 'Workday', 'people'], ['NetSuite', 'Oracle', 'finance'], ['Zendesk', 'Zendesk', 'support'],
  ['HubSpot', 'HubSpot', 'marketing'], ['Datadog', 'Datadog', 'engineering'], ['PagerDuty', 'PagerDuty', 'engineering'],
  ['AWS Console', 'Amazon', 'engineering'], ['Okta Dashboard', 'Okta', 'security'], ['1Password', 'AgileBits', 'security'],
  ['DocuSign', 'DocuSign', 'legal'], ['Expensify', 'Expensify', 'finance'], ['Greenhouse', 'Greenhouse', 'people'],
  ['Asana', 'Asana', 'productivity'], ['Miro', 'Miro', 'design'], ['Tableau', 'Salesforce', 'analytics'],
  ['Snowflake', 'Snowflake', 'analytics']];

const sqlString = (value: string) => `'${value.replaceAll("'", "''")}'`;
const textArray = (values: readonly string[]) => `ARRAY[${values.map(sqlString).join(', ')}]::text[]`;

/** Deterministic: the same user count always yields the same rows, so examples and tests can name them. */
export function demoDatasetScript(schema: string, userCount: number): string {
  const users = Math.max(10, Math.floor(userCount));
  const groupCount = Math.max(DEPARTMENTS.length + 4, Math.floor(users / 25));
  const projectGroups = groupCount - DEPARTMENTS.length;
  const apps = APPLICATIONS.length;
  return `
CREATE SCHEMA ${schema};
CREATE TABLE ${schema}.users (
  id integer PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL, department text NOT NULL,
  title text NOT NULL, status text NOT NULL, mfa_enabled boolean NOT NULL, manager_id integer REFERENCES ${schema}.users(id),
  created_at timestamptz NOT NULL, last_login_at timestamptz);
CREATE TABLE ${schema}.groups (
  id integer PRIMARY KEY, name text NOT NULL UNIQUE, type text NOT NULL, description text NOT NULL,
  created_at timestamptz NOT NULL);
CREATE TABLE ${schema}.group_members (
  group_id integer NOT NULL REFERENCES ${schema}.groups(id), user_id integer NOT NULL REFERENCES ${schema}.users(id),
  role text NOT NULL, added_at timestamptz NOT NULL, PRIMARY KEY (group_id, user_id));
CREATE TABLE ${schema}.applications (
  id integer PRIMARY KEY, name text NOT NULL UNIQUE, vendor text NOT NULL, category text NOT NULL,
  sso_enabled boolean NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE ${schema}.app_assignments (
  app_id integer NOT NULL REFERENCES ${schema}.applications(id), user_id integer NOT NULL REFERENCES ${schema}.users(id),
  assigned_at timestamptz NOT NULL, last_used_at timestamptz, PRIMARY KEY (app_id, user_id));

INSERT INTO ${schema}.users
SELECT i,
  lower(f) || '.' || lower(l) || i || '@example.com',
  f || ' ' || l,
  (${textArray(DEPARTMENTS)})[1 + (i * 31) % ${DEPARTMENTS.length}],
  (${textArray(TITLES)})[1 + (i * 11) % ${TITLES.length}],
  CASE WHEN i % 37 = 0 THEN 'deprovisioned' WHEN i % 23 = 0 THEN 'suspended' ELSE 'active' END,
  (i * 17) % 10 < 7,
  CASE WHEN i % 10 = 1 OR i - (i % 10) + 1 > ${users} THEN NULL ELSE i - (i % 10) + 1 END,
  timestamptz '2022-01-01 00:00:00+00' + ((i * 7919) % 730) * interval '1 day' + (i % 1440) * interval '1 minute',
  CASE WHEN i % 37 = 0 OR i % 11 = 0 THEN NULL
       ELSE timestamptz '2024-01-01 00:00:00+00' + ((i * 104729) % 365) * interval '1 day' + (i % 720) * interval '1 minute' END
FROM generate_series(1, ${users}) AS i,
  LATERAL (SELECT (${textArray(FIRST_NAMES)})[1 + (i * 7) % ${FIRST_NAMES.length}] AS f,
                  (${textArray(LAST_NAMES)})[1 + (i * 13) % ${LAST_NAMES.length}] AS l) AS names;

INSERT INTO ${schema}.groups
SELECT g,
  CASE WHEN g <= ${DEPARTMENTS.length} THEN lower((${textArray(DEPARTMENTS)})[g])
       WHEN g % 3 = 0 THEN 'security-' || g ELSE 'project-' || g END,
  CASE WHEN g <= ${DEPARTMENTS.length} THEN 'department' WHEN g % 3 = 0 THEN 'security' ELSE 'project' END,
  CASE WHEN g <= ${DEPARTMENTS.length} THEN 'Everyone in ' || (${textArray(DEPARTMENTS)})[g]
       ELSE 'Group number ' || g END,
  timestamptz '2021-06-01 00:00:00+00' + g * interval '3 days'
FROM generate_series(1, ${groupCount}) AS g;

INSERT INTO ${schema}.group_members
SELECT DISTINCT ON (group_id, user_id) group_id, user_id,
  CASE WHEN user_id % 10 = 1 THEN 'owner' ELSE 'member' END,
  timestamptz '2022-06-01 00:00:00+00' + ((user_id * 13 + group_id) % 500) * interval '1 day'
FROM (
  SELECT 1 + (i * 31) % ${DEPARTMENTS.length} AS group_id, i AS user_id FROM generate_series(1, ${users}) AS i
  UNION ALL
  SELECT ${DEPARTMENTS.length + 1} + (i * 7) % ${projectGroups}, i FROM generate_series(1, ${users}) AS i
  UNION ALL
  SELECT ${DEPARTMENTS.length + 1} + (i * 3) % ${projectGroups}, i FROM generate_series(1, ${users}) AS i WHERE i % 4 = 0
) AS memberships
ORDER BY group_id, user_id;

INSERT INTO ${schema}.applications
SELECT n, name, vendor, category, n % 4 <> 0, timestamptz '2020-01-01 00:00:00+00' + n * interval '20 days'
FROM (VALUES ${APPLICATIONS.map((app, i) => `(${i + 1}, ${app.map(sqlString).join(', ')})`).join(', ')}) AS a(n, name, vendor, category);

INSERT INTO ${schema}.app_assignments
SELECT DISTINCT ON (app_id, user_id) app_id, user_id,
  timestamptz '2023-01-01 00:00:00+00' + ((user_id * 7 + app_id) % 300) * interval '1 day',
  CASE WHEN (user_id + app_id) % 5 = 0 THEN NULL
       ELSE timestamptz '2024-02-01 00:00:00+00' + ((user_id * 3 + app_id * 11) % 300) * interval '1 day' END
FROM (
  SELECT 1 + i % ${apps} AS app_id, i AS user_id FROM generate_series(1, ${users}) AS i
  UNION ALL SELECT 1 + (i * 7) % ${apps}, i FROM generate_series(1, ${users}) AS i
  UNION ALL SELECT 1 + (i * 13) % ${apps}, i FROM generate_series(1, ${users}) AS i WHERE i % 2 = 0
) AS assignments
ORDER BY app_id, user_id;
ANALYZE ${schema}.users, ${schema}.groups, ${schema}.group_members, ${schema}.applications, ${schema}.app_assignments;
`;
}

/**
 * Creates the demo tenant and its dataset on first start; later starts find it and change nothing,
 * except that a demo tenant without a database role (one made before roles existed) is given one.
 */
export async function ensureDemoTenant(database: Database, options: { users: number }): Promise<TenantRow> {
  const existing = await findTenant(database, DEMO_TENANT_ID);
  if (existing?.dbRole) return existing;
  if (!existing) await seedDemoTenant(database, options.users);
  // Provisioning is idempotent, so replicas starting together may all do it; they store the same role.
  const role = await provisionTenantDataAccess(database, DEMO_TENANT_SCHEMA);
  await database.db
    .update(tenants)
    .set({ dbRole: role })
    .where(and(eq(tenants.id, DEMO_TENANT_ID), isNull(tenants.dbRole)));
  const provisioned = await findTenant(database, DEMO_TENANT_ID);
  if (!provisioned) throw new Error('demo tenant was not created');
  return provisioned;
}

async function seedDemoTenant(database: Database, users: number): Promise<void> {
  await database.runScriptInTransaction(`
SELECT pg_advisory_xact_lock(${DEMO_SEED_LOCK_KEY});
DO $seed$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM tenants WHERE id = '${DEMO_TENANT_ID}') THEN
    EXECUTE ${dollarQuote(demoDatasetScript(DEMO_TENANT_SCHEMA, users))};
    INSERT INTO tenants (id, name, data_schema) VALUES ('${DEMO_TENANT_ID}', 'Demo tenant', '${DEMO_TENANT_SCHEMA}');
  END IF;
END
$seed$;`);
}

async function findTenant(database: Database, id: string): Promise<TenantRow | undefined> {
  const [row] = await database.db.select().from(tenants).where(eq(tenants.id, id));
  return row;
}

function dollarQuote(body: string): string {
  return `$dataset$${body}$dataset$`;
}
