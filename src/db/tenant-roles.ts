import { createHash } from 'node:crypto';
import { quoteIdentifier, type Database } from './client.js';

/**
 * Every tenant's SQL steps run under a role of its own that may only read its schema.
 *
 * Roles belong to the whole server while schemas belong to one database, so the role's name carries
 * a digest of the database's name: two databases on one server (a test database per test file, a
 * staging and a production database) never share a role, and the roles of one database can be
 * found by their prefix (tenantRolePrefix) and dropped with it.
 */

const ROLE_PREFIX = 'stepcast_';
const DATABASE_DIGEST_LENGTH = 10;
const SCHEMA_DIGEST_LENGTH = 8;
const MAX_IDENTIFIER_BYTES = 63;
const PROVISION_LOCK_KEY = 4_242_003;
const MAX_ATTEMPTS = 6;
const LOOKUP_TIMEOUT_MS = 10_000;

const digest = (text: string, length: number) => createHash('sha256').update(text).digest('hex').slice(0, length);

/** The start of the name of every tenant role of one database, e.g. "stepcast_1a2b3c4d5e_". */
export function tenantRolePrefix(databaseName: string): string {
  return `${ROLE_PREFIX}${digest(databaseName, DATABASE_DIGEST_LENGTH)}_`;
}

/**
 * The role of one schema of one database, at most 63 bytes: the prefix, the schema's name as far as
 * it is plain (lower-case letters, digits, underscores) and fits, and a digest of the exact name.
 */
export function tenantRoleName(databaseName: string, schema: string): string {
  const prefix = tenantRolePrefix(databaseName);
  const room = MAX_IDENTIFIER_BYTES - prefix.length - 1 - SCHEMA_DIGEST_LENGTH;
  const readable = schema
    .toLowerCase()
    .replaceAll(/[^a-z0-9_]+/g, '_')
    .slice(0, room);
  return `${prefix}${readable}_${digest(schema, SCHEMA_DIGEST_LENGTH)}`;
}

export class TenantRoleError extends Error {
  override name = 'TenantRoleError';
}

const sqlString = (value: string) => `'${value.replaceAll("'", "''")}'`;

/**
 * One transaction, serialized with every other provisioning of this database by an advisory lock.
 * Roles are created only when missing; an existing role is checked rather than altered (changing
 * SUPERUSER, REPLICATION or BYPASSRLS needs a superuser, and the service may not be one).
 */
function provisioningScript(schema: string, role: string): string {
  const schemaId = quoteIdentifier(schema);
  const roleId = quoteIdentifier(role);
  const roleLiteral = sqlString(role);
  // The role's name is made of [a-z0-9_] only (tenantRoleName), so it is safe inside the DO block's
  // dollar quotes; the schema's name, which may be anything, appears only outside them, quoted.
  return `
SELECT pg_advisory_xact_lock(${PROVISION_LOCK_KEY});
CREATE SCHEMA IF NOT EXISTS ${schemaId};
DO $provision$
DECLARE
  role_oid oid;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ${roleLiteral}) THEN
    CREATE ROLE ${roleId} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS;
  END IF;
  SELECT oid INTO role_oid FROM pg_roles WHERE rolname = ${roleLiteral};
  IF EXISTS (SELECT 1 FROM pg_roles WHERE oid = role_oid
               AND (rolsuper OR rolcanlogin OR rolcreatedb OR rolcreaterole OR rolinherit OR rolreplication OR rolbypassrls)) THEN
    RAISE EXCEPTION 'role % exists with more than NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS', ${roleLiteral};
  END IF;
  IF EXISTS (SELECT 1 FROM pg_auth_members WHERE member = role_oid) THEN
    RAISE EXCEPTION 'role % is a member of other roles; a tenant role must belong to none', ${roleLiteral};
  END IF;
  IF EXISTS (SELECT 1 FROM pg_class WHERE relowner = role_oid)
     OR EXISTS (SELECT 1 FROM pg_namespace WHERE nspowner = role_oid)
     OR EXISTS (SELECT 1 FROM pg_proc WHERE proowner = role_oid)
     OR EXISTS (SELECT 1 FROM pg_type WHERE typowner = role_oid) THEN
    RAISE EXCEPTION 'role % owns objects; a tenant role must own nothing', ${roleLiteral};
  END IF;
  -- SET ROLE needs the session's role to be a member (a superuser may always); from PostgreSQL 16 on
  -- the membership is granted for SET only, so the service does not inherit the tenant's privileges.
  IF current_setting('server_version_num')::int >= 160000 THEN
    IF NOT pg_has_role(current_user, role_oid, 'SET') THEN
      EXECUTE $grant$GRANT ${roleId} TO CURRENT_USER WITH INHERIT FALSE, SET TRUE$grant$;
    END IF;
  ELSIF NOT pg_has_role(current_user, role_oid, 'MEMBER') THEN
    EXECUTE $grant$GRANT ${roleId} TO CURRENT_USER$grant$;
  END IF;
END
$provision$;
GRANT USAGE ON SCHEMA ${schemaId} TO ${roleId};
GRANT SELECT ON ALL TABLES IN SCHEMA ${schemaId} TO ${roleId};
ALTER DEFAULT PRIVILEGES FOR ROLE CURRENT_USER IN SCHEMA ${schemaId} GRANT SELECT ON TABLES TO ${roleId};
`;
}

/** Failures that another session doing the same thing at the same moment can cause; trying again settles them. */
function isConcurrencyConflict(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  return (
    code === '23505' || // unique_violation: two CREATE ROLE/SCHEMA raced on the catalog's unique index
    code === '42710' || // duplicate_object: the role appeared between the check and CREATE ROLE
    code === '42P06' || // duplicate_schema
    code === '40001' || // serialization_failure
    code === '40P01' || // deadlock_detected
    /tuple concurrently (updated|deleted)/.test(error.message)
  );
}

async function currentDatabaseName(database: Database): Promise<string> {
  const { rows } = await database.runReadOnly({
    sql: 'SELECT current_database() AS name',
    params: [],
    timeoutMs: LOOKUP_TIMEOUT_MS,
    searchPath: 'pg_catalog',
  });
  const name = rows[0]?.name;
  if (typeof name !== 'string') throw new TenantRoleError('could not read the name of the current database');
  return name;
}

/** The role tenants of `schema` have (or would have) in this database. */
export async function tenantRoleFor(database: Database, schema: string): Promise<string> {
  return tenantRoleName(await currentDatabaseName(database), schema);
}

/**
 * Makes `schema` readable, and only readable, by a role of its own, and returns the role's name
 * (to be stored in tenants.db_role). Idempotent and safe to run from several processes at once:
 * creates the schema and the role when missing (NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
 * NOINHERIT NOREPLICATION NOBYPASSRLS, owning nothing), grants it USAGE on the schema and SELECT on
 * its tables, present and future (default privileges for tables the service's role creates there),
 * and lets the service's role SET ROLE to it. Throws TenantRoleError when an existing role of that
 * name has more rights than that.
 */
export async function provisionTenantDataAccess(database: Database, schema: string): Promise<string> {
  if (schema.length === 0) throw new TenantRoleError('a tenant schema needs a name');
  const role = await tenantRoleFor(database, schema);
  const script = provisioningScript(schema, role);
  for (let attempt = 1; ; attempt++) {
    try {
      await database.runScriptInTransaction(script);
      return role;
    } catch (error) {
      if (attempt < MAX_ATTEMPTS && isConcurrencyConflict(error)) {
        await new Promise((resolve) => setTimeout(resolve, 10 * attempt + Math.floor(Math.random() * 20)));
        continue;
      }
      if (error instanceof Error && /^role .* (exists with more|is a member|owns objects)/.test(error.message)) {
        throw new TenantRoleError(error.message, { cause: error });
      }
      throw error;
    }
  }
}
