import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Database } from '../src/db/client.js';
import type { TenantQuery } from '../src/db/tenant-query.js';
import { createTestDatabase, postgresUrl, type TestDatabase } from './support/database.js';
import { scaledTimeout, settlesWithin } from './support/timing.js';

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

  /** Longer than any wait of the test (2 s, stretched by the load at most 4 times). */
  const BUSY_SECONDS = 20;
  const open = () => openDatabase({ kind: 'postgres', url: testDatabase.url, poolSize: 2 } as never, { tenantStatements: 1 });
  const tenantQuery = (database: Database, statement: string, signal?: AbortSignal) =>
    database.runTenantQuery({
      statement,
      role,
      relations: { prefix: '', params: [] },
      searchPath: 'public',
      timeoutMs: 30_000,
      signal,
      limits: { rowCap: 100, rowMaxBytes: 1_000_000, readMaxBytes: 10_000_000, workMemMb: 4, tempFileLimitMb: 16 },
    } satisfies TenantQuery);
  const outcome = (promise: Promise<unknown>) =>
    promise.then(
      () => 'ok',
      (error: Error) => `${error.name}: ${error.message}`,
    );

  it('an abort at any moment stops the statement within 2 s: while its connection opens, behind the last holder\'s COMMIT, while it runs, with the service\'s pool busy or not; the next statement is served', async () => {
    // Each delay lands the abort at another moment: before the statements are sent, while they wait (for the
    // connection to open, or behind the COMMIT of the statement before), while they run.
    const delays: [string, () => Promise<void>][] = [
      ['at once', async () => undefined],
      ...[1, 3, 8].map((depth): [string, () => Promise<void>] => [
        `after ${depth} microtasks`,
        async () => {
          for (let i = 0; i < depth; i++) await Promise.resolve();
        },
      ]),
      ['after setImmediate', () => new Promise((resolve) => setImmediate(resolve))],
      ['after 5 ms', () => new Promise((resolve) => setTimeout(resolve, 5))],
    ];
    for (const warm of [false, true]) {
      for (const busy of [false, true]) {
        for (const [when, delay] of delays) {
          const label = `${warm ? 'warm' : 'opening'} connection, ${busy ? 'busy' : 'idle'} pool, abort ${when}`;
          const database = await open();
          try {
            if (warm) await tenantQuery(database, 'SELECT 1 AS warm');
            // The service's pool (2 connections) taken for longer than the test waits: pg_cancel_backend cannot be sent.
            if (busy) for (let i = 0; i < 2; i++) database.query(`SELECT pg_sleep(${BUSY_SECONDS})`, []).catch(() => undefined);
            const aborting = new AbortController();
            const started = performance.now();
            const aborted = outcome(tenantQuery(database, 'SELECT pg_sleep(10) AS slept', aborting.signal));
            await delay();
            aborting.abort(new Error('the step was cancelled'));
            expect(await settlesWithin(aborted, scaledTimeout(2_000)), label).toBe(true);
            expect(await aborted, label).toBe('Error: the step was cancelled');
            expect(performance.now() - started, label).toBeLessThan(scaledTimeout(2_000));
            const next = outcome(tenantQuery(database, 'SELECT 1 AS one'));
            expect(await settlesWithin(next, scaledTimeout(2_000)), `the statement after: ${label}`).toBe(true);
            expect(await next, `the statement after: ${label}`).toBe('ok');
          } finally {
            await database.close(100);
            // The server does not notice that a sleeping statement's connection closed.
            if (busy) {
              const sql = admin();
              await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${testDatabase.name} AND query = ${`SELECT pg_sleep(${BUSY_SECONDS})`}`.finally(() => sql.end());
            }
          }
        }
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
