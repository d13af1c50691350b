import { createServer } from 'node:net';
import postgres from 'postgres';
import { describe, expect, it } from 'vitest';
import { DatabaseUnavailableError, isDatabaseUnavailable } from '../src/db/unavailable.js';
import { postgresUrl } from './support/database.js';

async function errorOf(url: string, query: (sql: postgres.Sql) => Promise<unknown>): Promise<unknown> {
  const sql = postgres(url, { max: 1, onnotice: () => undefined, connect_timeout: 5 });
  try {
    await query(sql);
    throw new Error('the query succeeded');
  } catch (error) {
    return error;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** A port nothing listens on (taken, then given back). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('which database errors mean "unreachable, retry later"', () => {
  it('a refused connection is, also wrapped as a cause', async () => {
    const error = await errorOf(`postgres://postgres@127.0.0.1:${await closedPort()}/x`, (sql) => sql`SELECT 1`);
    expect(isDatabaseUnavailable(error)).toBe(true);
    expect(isDatabaseUnavailable(new Error('Failed query', { cause: error }))).toBe(true);
    expect(isDatabaseUnavailable(new DatabaseUnavailableError())).toBe(true);
  });

  it('other errors are not', () => {
    expect(isDatabaseUnavailable(new Error('anything'))).toBe(false);
    expect(isDatabaseUnavailable(undefined)).toBe(false);
  });

  it.skipIf(!postgresUrl)('a statement that fails, or a database that does not exist, is not (skipped without TEST_DATABASE_URL)', async () => {
    if (!postgresUrl) return;
    const syntax = await errorOf(postgresUrl, (sql) => sql.unsafe('SELEC 1'));
    expect((syntax as { code?: string }).code).toBe('42601');
    expect(isDatabaseUnavailable(syntax)).toBe(false);
    const url = new URL(postgresUrl);
    url.pathname = '/stepcast_no_such_database';
    const missing = await errorOf(url.toString(), (sql) => sql`SELECT 1`);
    expect((missing as { code?: string }).code).toBe('3D000');
    expect(isDatabaseUnavailable(missing)).toBe(false);
  });

  it.skipIf(!postgresUrl)('a backend terminated by an administrator is (skipped without TEST_DATABASE_URL)', async () => {
    if (!postgresUrl) return;
    const terminated = await errorOf(postgresUrl, (sql) => sql`SELECT pg_terminate_backend(pg_backend_pid())`);
    expect(isDatabaseUnavailable(terminated)).toBe(true);
  });
});
