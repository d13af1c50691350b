import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from '../src/db/client.js';
import type { TenantQuery } from '../src/db/tenant-query.js';
import { createTestDatabase, postgresUrl, type TestDatabase } from './support/database.js';
import { settlesWithin } from './support/timing.js';

/**
 * A tenant statement cancelled on PostgreSQL, with one connection for tenant statements so that every statement
 * shares it: a cancel stops only the statement it was sent for, whenever it comes (while the connection opens, while
 * the statement runs, after it ended), and the connection serves the next statement.
 */
describe.skipIf(!postgresUrl)(`cancelling tenant statements on one connection${postgresUrl ? '' : ' (skipped: TEST_DATABASE_URL is not set)'}`, () => {
  let testDatabase: TestDatabase;
  // The tenant's role the statements run as: one that may read nothing, which these statements do not need.
  const role = `stepcast_test_cancel_${randomBytes(4).toString('hex')}`;
  const admin = () => postgres(postgresUrl!, { max: 1, onnotice: () => undefined });
  beforeAll(async () => {
    testDatabase = await createTestDatabase();
    const sql = admin();
    await sql.unsafe(`CREATE ROLE ${role} NOLOGIN`).finally(() => sql.end());
  });
  afterAll(async () => {
    await testDatabase?.drop();
    const sql = admin();
    await sql.unsafe(`DROP ROLE IF EXISTS ${role}`).finally(() => sql.end());
  });

  const open = () => openDatabase({ kind: 'postgres', url: testDatabase.url, poolSize: 2 } as never, { tenantStatements: 1 });
  const tenantQuery = (database: Database, statement: string, signal?: AbortSignal) =>
    database.runTenantQuery({
      statement,
      role,
      relations: { prefix: '', params: [] },
      searchPath: 'public',
      timeoutMs: 5_000,
      signal,
      limits: { rowCap: 100, rowMaxBytes: 1_000_000, readMaxBytes: 10_000_000, workMemMb: 4, tempFileLimitMb: 16 },
    } satisfies TenantQuery);
  const outcome = (promise: Promise<unknown>) =>
    promise.then(
      () => 'ok',
      (error: Error) => `${error.name}: ${error.message}`,
    );

  it('an abort at any moment of a statement on a connection still opening (or reopening) ends it, and the next statement is served', async () => {
    // Each delay lands the abort at another moment: before the statements are sent, while the connection opens (they
    // wait for it), while they run. The connection opens at the first statement of each database opened here.
    const delays: (() => Promise<void>)[] = [
      async () => undefined,
      ...[1, 2, 3, 5, 8].map((depth) => async () => {
        for (let i = 0; i < depth; i++) await Promise.resolve();
      }),
      () => new Promise((resolve) => setImmediate(resolve)),
      ...[0, 1, 3].map((ms) => () => new Promise<void>((resolve) => setTimeout(resolve, ms))),
    ];
    for (const [i, delay] of delays.entries()) {
      const database = await open();
      try {
        const aborting = new AbortController();
        const aborted = outcome(tenantQuery(database, 'SELECT pg_sleep(0.05) AS slept', aborting.signal));
        await delay();
        aborting.abort(new Error('the step was cancelled'));
        expect(await settlesWithin(aborted, 2_000), `abort ${i}`).toBe(true);
        expect(await aborted, `abort ${i}`).toMatch(/^(ok|Error: the step was cancelled)$/);
        const next = outcome(tenantQuery(database, 'SELECT 1 AS one'));
        expect(await settlesWithin(next, 2_000), `the statement after abort ${i}`).toBe(true);
        expect(await next, `the statement after abort ${i}`).toBe('ok');
      } finally {
        await database.close(1_000);
      }
    }
  });

  it("a cancel that reaches the connection after its statement ended does not stop the next holder's statement", async () => {
    const database = await open();
    try {
      await tenantQuery(database, 'SELECT 1 AS warm');
      for (let i = 0; i < 5; i++) {
        const aborting = new AbortController();
        const first = outcome(tenantQuery(database, 'SELECT pg_sleep(0.1) AS first', aborting.signal));
        // Another step's statement, waiting for the one connection.
        const second = outcome(tenantQuery(database, 'SELECT pg_sleep(0.2) AS second'));
        // The event loop is held past the end of the first statement, so that its answer waits unread when the abort
        // comes: the cancel goes out for a statement the server has finished, and arrives while the connection is
        // (were it handed on at once) running the second.
        setTimeout(() => {
          const until = Date.now() + 150;
          while (Date.now() < until);
          aborting.abort(new Error('the step was cancelled'));
        }, 20);
        expect(await first).toMatch(/^(ok|Error: the step was cancelled)$/);
        expect(await second, `round ${i}`).toBe('ok');
      }
    } finally {
      await database.close(1_000);
    }
  });
});
