import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import { openDatabase, type Database, type DatabaseConnections } from './client.js';
import type { OpenedPgliteDirectory } from './pglite-open.js';
import { DatabaseUnavailableError, isDatabaseUnavailable } from './unavailable.js';

export interface DatabaseWhenReachable {
  /** Usable at once: until the database is open, every call fails with DatabaseUnavailableError. */
  database: Database;
  /** Whether the database has been opened (connected and migrated). */
  isOpen(): boolean;
  /** Resolves once the database is open; rejects only when stop() was called first. */
  opened: Promise<void>;
  /** Stops retrying (the service is closing). */
  stop(): void;
}

/**
 * Opens the database as openDatabase does, but when the server cannot be reached it hands back a stand-in at once
 * and keeps trying in the background (backoff from initialDelayMs doubling to maxDelayMs), so that the service
 * can listen, say it is not ready and answer 503 until the database comes up. Any other failure on the first try
 * (a migration that fails, a role that may not set temp_file_limit) is thrown as before: retrying cannot mend it.
 */
export async function openDatabaseWhenReachable(
  config: Config['database'],
  connections: DatabaseConnections,
  logger: Logger,
  {
    initialDelayMs = 500,
    maxDelayMs = 15_000,
    pglite,
  }: { initialDelayMs?: number; maxDelayMs?: number; pglite?: Promise<OpenedPgliteDirectory> } = {},
): Promise<DatabaseWhenReachable> {
  try {
    const database = await openDatabase(config, connections, pglite);
    return { database, isOpen: () => true, opened: Promise.resolve(), stop: () => undefined };
  } catch (error) {
    if (!isDatabaseUnavailable(error)) throw error;
    logger.warn({ reason: (error as Error).message }, 'the database cannot be reached: listening anyway, not ready until it can');
  }

  let real: Database | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  const unavailable = () => new DatabaseUnavailableError('the database cannot be reached (the service is still connecting to it)');
  const opened = (async () => {
    for (let attempt = 1, delayMs = initialDelayMs; ; attempt++, delayMs = Math.min(maxDelayMs, delayMs * 2)) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, delayMs);
      });
      if (stopped) throw new Error('stopped before the database could be opened');
      try {
        real = await openDatabase(config, connections);
        logger.info({ attempts: attempt }, 'the database is reachable again: connected and migrated');
        return;
      } catch (error) {
        // Not only unavailability: a server that is still starting can fail in other ways, and nothing else will retry.
        const level = isDatabaseUnavailable(error) ? 'warn' : 'error';
        logger[level]({ reason: (error as Error).message, attempt, retryInMs: Math.min(maxDelayMs, delayMs * 2) }, 'the database cannot be opened yet');
      }
    }
  })();
  // Nobody may be waiting on it (a service closed before the database came up).
  opened.catch(() => undefined);

  const database: Database = {
    kind: config.kind,
    // Drizzle's builders are reached through the real database once there is one; before, they fail as a query would.
    db: new Proxy({} as Database['db'], {
      get: (_target, property) => {
        if (!real) throw unavailable();
        const value = Reflect.get(real.db, property, real.db) as unknown;
        return typeof value === 'function' ? value.bind(real.db) : value;
      },
    }),
    query: (text, params) => (real ? real.query(text, params) : Promise.reject(unavailable())),
    runReadOnly: (query) => (real ? real.runReadOnly(query) : Promise.reject(unavailable())),
    runTenantQuery: (query) => (real ? real.runTenantQuery(query) : Promise.reject(unavailable())),
    ping: (timeoutMs) => (real ? real.ping(timeoutMs) : Promise.resolve(false)),
    runScriptInTransaction: (script) => (real ? real.runScriptInTransaction(script) : Promise.reject(unavailable())),
    close: async (graceMs) => {
      stopped = true;
      clearTimeout(timer);
      wake?.();
      await opened.catch(() => undefined);
      await real?.close(graceMs);
    },
  };
  return {
    database,
    isOpen: () => real !== undefined,
    opened,
    stop: () => {
      stopped = true;
      clearTimeout(timer);
      wake?.();
    },
  };
}
