import type postgres from 'postgres';

/**
 * The connections tenants' statements run on (PostgreSQL): each a postgres.js client of one connection, held by one
 * statement at a time.
 *
 * Why not one pool: postgres.js accepts a `BEGIN` sent as a plain statement only from a client of one connection (in
 * a pool it could not tell which connection the next statement goes to), and `sql.begin()` waits for the BEGIN's
 * answer before it sends anything else, then for the COMMIT's before it lets the connection go: two round trips of
 * the three a small read took. On a connection of its own, a tenant statement's transaction is sent as BEGIN, its
 * settings, the DECLARE and the first FETCH in one flight, and its COMMIT is sent without waiting for it: the next
 * statement on the connection is sent behind it, and runs after it.
 */
export class TenantSessions {
  /** Idle sessions; the one freed last is taken first, so that a quiet service keeps few connections warm. */
  private readonly idle: postgres.Sql[];
  private readonly all: postgres.Sql[];
  private readonly waiting: { resolve: (session: postgres.Sql) => void; reject: (error: Error) => void }[] = [];
  private ended = false;

  constructor(
    size: number,
    private readonly open: () => postgres.Sql,
  ) {
    this.all = Array.from({ length: Math.max(1, size) }, () => open());
    this.idle = [...this.all];
  }

  /** A session to itself; aborted while it waits, it rejects with the signal's reason and takes none. */
  acquire(signal?: AbortSignal): Promise<postgres.Sql> {
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    if (this.ended) return Promise.reject(new Error('the database is closing'));
    const session = this.idle.pop();
    if (session) return Promise.resolve(session);
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (taken: postgres.Sql) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(taken);
        },
        reject: (error: Error) => {
          signal?.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
      const onAbort = () => {
        const at = this.waiting.indexOf(waiter);
        if (at >= 0) this.waiting.splice(at, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(waiter);
    });
  }

  /**
   * Ends the session's transaction and hands the session on. The COMMIT (a ROLLBACK for a transaction that failed, or
   * a warning where a dead connection took the transaction with it) is not waited for: whoever takes the session
   * next has its statements sent after it, on the same connection.
   *
   * After a cancel (`cancelSent`) the connection is closed instead, and a new one takes its place: a cancel acts on
   * whatever its backend runs when it arrives, which may be the next holder's statement, and postgres.js does not
   * tell when its CancelRequest has gone out. A new connection is a new backend, which no cancel sent before names.
   */
  release(session: postgres.Sql, { cancelSent = false } = {}): void {
    if (!cancelSent) {
      session.unsafe('COMMIT').catch(() => undefined);
      return this.handOn(session);
    }
    session.end({ timeout: 0 }).catch(() => undefined);
    const at = this.all.indexOf(session);
    if (this.ended || at < 0) return;
    const fresh = this.open();
    this.all[at] = fresh;
    this.handOn(fresh);
  }

  /** Closes every connection; a statement still waiting for one is refused. */
  async end(timeoutSeconds: number): Promise<void> {
    this.ended = true;
    for (const waiter of this.waiting.splice(0)) waiter.reject(new Error('the database is closing'));
    await Promise.all(this.all.map((session) => session.end({ timeout: timeoutSeconds })));
  }

  private handOn(session: postgres.Sql): void {
    const next = this.waiting.shift();
    if (next) next.resolve(session);
    else this.idle.push(session);
  }
}
