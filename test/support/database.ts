import { randomBytes } from 'node:crypto';
import postgres from 'postgres';

export type Backend = 'pglite' | 'postgres';

export const postgresUrl = process.env.TEST_DATABASE_URL;

/** PGlite always; PostgreSQL too when TEST_DATABASE_URL is set (CI sets it). */
export const backends: { backend: Backend; skipReason: string | null }[] = [
  { backend: 'pglite', skipReason: null },
  { backend: 'postgres', skipReason: postgresUrl ? null : 'skipped: TEST_DATABASE_URL is not set' },
];

export interface TestDatabase {
  url: string;
  drop(): Promise<void>;
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
    drop: async () => {
      const cleanup = postgres(postgresUrl, { max: 1, onnotice: () => undefined });
      await cleanup.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await cleanup.end();
    },
  };
}
