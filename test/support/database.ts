import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { tenantRolePrefix } from '../../src/db/tenant-roles.js';

export type Backend = 'pglite' | 'postgres';

export const postgresUrl = process.env.TEST_DATABASE_URL;

/** PGlite always; PostgreSQL too when TEST_DATABASE_URL is set (CI sets it). */
export const backends: { backend: Backend; skipReason: string | null }[] = [
  { backend: 'pglite', skipReason: null },
  { backend: 'postgres', skipReason: postgresUrl ? null : 'skipped: TEST_DATABASE_URL is not set' },
];

export interface TestDatabase {
  url: string;
  name: string;
  /** Drops the database, then the tenant roles provisioned for it (roles belong to the whole server). */
  drop(): Promise<void>;
}

/** The tenant roles provisioned for one database, from their name (src/db/tenant-roles.ts). */
export async function tenantRolesOf(admin: postgres.Sql, databaseName: string): Promise<string[]> {
  const rows = await admin<{ rolname: string }[]>`
    SELECT rolname FROM pg_roles WHERE starts_with(rolname, ${tenantRolePrefix(databaseName)}) ORDER BY rolname`;
  return rows.map((row) => row.rolname);
}

/** A fresh database on the PostgreSQL server for one test file, dropped afterwards. */
export async function createTestDatabase(): Promise<TestDatabase> {
  if (!postgresUrl) throw new Error('TEST_DATABASE_URL is not set');
  const name = `stepcast_test_${randomBytes(6).toString('hex')}`;
  const admin = postgres(postgresUrl, { max: 1, onnotice: () => undefined });
  await admin.unsafe(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(postgresUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    drop: async () => {
      const cleanup = postgres(postgresUrl, { max: 1, onnotice: () => undefined });
      try {
        await cleanup.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        // With the database gone nothing depends on its roles any more (grants, default privileges).
        const roles = await tenantRolesOf(cleanup, name);
        if (roles.length > 0) await cleanup.unsafe(`DROP ROLE IF EXISTS ${roles.map((r) => `"${r}"`).join(', ')}`);
      } finally {
        await cleanup.end();
      }
    },
  };
}
