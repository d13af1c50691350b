import postgres from 'postgres';
import { afterEach, describe, expect, it } from 'vitest';
import { TenantSessions } from '../src/db/tenant-sessions.js';
import { postgresUrl } from './support/database.js';

/**
 * The connections tenants' statements run on (PostgreSQL): one statement holds one at a time, and the transaction
 * it leaves behind ends before the next holder's statements run, though nobody waits for its COMMIT.
 */
describe.skipIf(!postgresUrl)(`tenant sessions${postgresUrl ? '' : ' (skipped: TEST_DATABASE_URL is not set)'}`, () => {
  let sessions: TenantSessions | undefined;
  afterEach(async () => {
    await sessions?.end(1);
    sessions = undefined;
  });
  const open = (size: number) => (sessions = new TenantSessions(size, () => postgres(postgresUrl!, { max: 1, onnotice: () => undefined })));

  it("ends a holder's transaction, settings and cursor before the next holder's statements run on the connection", async () => {
    const pool = open(1);
    const first = await pool.acquire();
    // The shape runTenantQuery sends: BEGIN with its settings in one statement, a cursor, a FETCH; then it lets go.
    const sent = first.unsafe("BEGIN READ ONLY; SET LOCAL search_path TO pg_catalog; SET LOCAL statement_timeout = 1234; SELECT pg_backend_pid() AS pid");
    const declared = first.unsafe('DECLARE c NO SCROLL CURSOR FOR SELECT g FROM generate_series(1, 100) g', [], { simple: false } as postgres.UnsafeQueryOptions);
    const fetched = first.unsafe('FETCH 3 FROM c');
    const backend = ((await sent) as unknown as postgres.Row[][]).at(-1)![0] as { pid: number };
    await declared;
    expect((await fetched).map((row) => row.g)).toEqual([1, 2, 3]);
    pool.release(first);

    const second = await pool.acquire();
    expect(second).toBe(first);
    // The same backend, no longer in the first holder's transaction (a SAVEPOINT outside one fails with 25P01): its
    // settings and its cursor are gone.
    await expect(second.unsafe('SAVEPOINT probe')).rejects.toMatchObject({ code: '25P01' });
    const [state] = await second<{ pid: number; timeout: string; readOnly: string; searchPath: string; cursors: number }[]>`
      SELECT pg_backend_pid() AS pid, current_setting('statement_timeout') AS timeout, current_setting('transaction_read_only') AS "readOnly",
        current_setting('search_path') AS "searchPath", (SELECT count(*)::int FROM pg_cursors WHERE name = 'c') AS cursors`;
    expect(state).toEqual({ pid: backend.pid, timeout: '0', readOnly: 'off', searchPath: expect.any(String), cursors: 0 });
    expect(state!.searchPath).not.toBe('pg_catalog');
    pool.release(second);
  });

  it('ends a failed transaction too (the settings fail, the statements behind them with it), and the next holder is served', async () => {
    const pool = open(1);
    const first = await pool.acquire();
    const sent = first.unsafe('BEGIN READ ONLY; SET LOCAL ROLE stepcast_no_such_role_anywhere; SELECT 1');
    const declared = first.unsafe('DECLARE c NO SCROLL CURSOR FOR SELECT 1', [], { simple: false } as postgres.UnsafeQueryOptions);
    await expect(sent).rejects.toMatchObject({ code: '22023' });
    // The transaction is aborted: the DECLARE behind the failed setting never runs.
    await expect(declared).rejects.toMatchObject({ code: '25P02' });
    pool.release(first);
    const second = await pool.acquire();
    // Out of the failed transaction: a statement runs (in one, it would fail with 25P02), and no transaction is open.
    await expect(second`SELECT 1 AS one`).resolves.toEqual([{ one: 1 }]);
    await expect(second.unsafe('SAVEPOINT probe')).rejects.toMatchObject({ code: '25P01' });
    pool.release(second);
  });

  it('holds each connection for one holder at a time, hands a freed one to the longest waiter, and lets an aborted waiter go', async () => {
    const pool = open(2);
    const a = await pool.acquire();
    const b = await pool.acquire();
    expect(a).not.toBe(b);
    const order: string[] = [];
    const gaveUp = new AbortController();
    const abandoned = pool.acquire(gaveUp.signal);
    const waiting = pool.acquire().then((session) => (order.push('waiter'), session));
    gaveUp.abort(new Error('the step was cancelled'));
    await expect(abandoned).rejects.toThrow('the step was cancelled');
    // Aborted before it waits: it rejects at once.
    await expect(pool.acquire(gaveUp.signal)).rejects.toThrow('the step was cancelled');
    pool.release(b);
    // The waiter that gave up took nothing: the one behind it gets the connection freed.
    expect(await waiting).toBe(b);
    expect(order).toEqual(['waiter']);
    pool.release(a);
    pool.release(b);
    const [x, y] = await Promise.all([pool.acquire(), pool.acquire()]);
    expect(new Set([x, y])).toEqual(new Set([a, b]));
    pool.release(x!);
    pool.release(y!);
  });

  it('refuses a statement still waiting for a connection when it closes, and any that asks after', async () => {
    const pool = open(1);
    const held = await pool.acquire();
    const waiting = pool.acquire();
    const ending = pool.end(1);
    await expect(waiting).rejects.toThrow('the database is closing');
    await expect(pool.acquire()).rejects.toThrow('the database is closing');
    pool.release(held);
    await ending;
  });

  it('after a cancel, hands the next holder a new connection (a new backend, which no cancel sent before names)', async () => {
    const pool = open(1);
    const first = await pool.acquire();
    const [before] = await first<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
    pool.release(first, { cancelSent: true });
    const second = await pool.acquire();
    expect(second).not.toBe(first);
    const [after] = await second<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
    expect(after!.pid).not.toBe(before!.pid);
    pool.release(second);
  });
});
