import { randomBytes } from 'node:crypto';
import { StatementTimeoutError } from './pglite-client.js';

/**
 * A tenant's statement, run read-only under the tenant's role with every bound enforced by the database
 * itself, so that nothing larger than the bounds ever reaches the service's memory.
 */
export interface TenantQuery {
  /** One SELECT that the guard accepted; it is embedded as a subquery. */
  statement: string;
  /** `WITH step_1 AS (...), ...` (or ''), written before the wrapped statement, and its parameters. */
  relations: { prefix: string; params: string[] };
  /** The tenant's database role (SET LOCAL ROLE): it may only read its own schema. */
  role: string;
  /** The only schema unqualified names resolve in (besides pg_catalog). */
  searchPath: string;
  timeoutMs: number;
  /**
   * Aborting stops the statement in the database (PostgreSQL cancels it on the server; PGlite's worker is
   * restarted) and ends its transaction; the query then rejects with the signal's reason.
   */
  signal?: AbortSignal;
  limits: TenantQueryLimits;
}

export interface TenantQueryLimits {
  /** Rows read at most; one more is asked for, to tell that there were more. */
  rowCap: number;
  /** The text of one row may be at most this many bytes; the database refuses a larger row before sending it. */
  rowMaxBytes: number;
  /** The database sends rows only until their text adds up to this many bytes; the rows after are never read. */
  readMaxBytes: number;
  /** work_mem of the statement, in MB: how much a sort or hash may use before it spills to temporary files. */
  workMemMb: number;
  /** temp_file_limit of the statement, in MB: the temporary files it may write in all. */
  tempFileLimitMb: number;
}

export interface ResultColumn {
  name: string;
  typeOid: number;
}

export interface TenantQueryResult {
  rows: Record<string, unknown>[];
  columns: ResultColumn[];
  /** The statement had more rows than rowCap. */
  truncatedByRows: boolean;
  /** The rows' text passed readMaxBytes, and the rest was not read. */
  truncatedByBytes: boolean;
  /** Text bytes of the rows returned (as the database measured them). */
  bytes: number;
}

/** A row of the result is larger than TenantQueryLimits.rowMaxBytes; the database refused to send it. */
export class RowTooLargeError extends Error {
  override name = 'RowTooLargeError';
  constructor(
    readonly rowBytes: number,
    readonly limit: number,
  ) {
    super(`a row of the result is ${rowBytes} bytes, over the limit of ${limit} bytes per row`);
  }
}

/** The statement broke a database resource limit: its temporary files, or the server's memory. */
export class DatabaseResourceError extends Error {
  override name = 'DatabaseResourceError';
  constructor(
    readonly resource: 'temp-files' | 'memory',
    message: string,
  ) {
    super(message);
  }
}

// Our own names beside the statement's; the suffix keeps a statement's own column names from colliding
// with them (a statement with a column named like an alias would otherwise change what is measured).
const suffix = randomBytes(6).toString('hex');
const ROW_BYTES = `__stepcast_row_bytes_${suffix}`;
const READ_BYTES = `__stepcast_read_bytes_${suffix}`;
const ROW_CHECK = `__stepcast_row_check_${suffix}`;
const READ_CHECK = `__stepcast_read_check_${suffix}`;
const OWN_COLUMNS: readonly string[] = [ROW_BYTES, READ_BYTES, ROW_CHECK, READ_CHECK];
const STATEMENT = `__stepcast_statement_${suffix}`;
const MEASURED = `__stepcast_measured_${suffix}`;
const CHECKED = `__stepcast_checked_${suffix}`;
const SUMMED = `__stepcast_summed_${suffix}`;
const CURSOR = `__stepcast_rows_${suffix}`;
// A cast of this text to integer is how the statement stops itself: plain SQL has no RAISE.
const ROW_TOO_LARGE_MARKER = `stepcast_row_too_large_${suffix}:`;
const READ_LIMIT_MARKER = `stepcast_read_limit_${suffix}:`;
// Matched without the quotes around them, which a server's language may write otherwise.
const ROW_TOO_LARGE_MESSAGE = new RegExp(`${ROW_TOO_LARGE_MARKER}(\\d+)`);
/** Rows a FETCH asks for at most, and at first; fewer while the result nears the read limit. */
const MAX_FETCH_ROWS = 1_000;
const FIRST_FETCH_ROWS = 16;

const integerSetting = (value: number) => String(Math.max(1, Math.floor(value)));

/**
 * The statement as the database runs it: `${before}${statement}${after}`. Every row's text size is measured in the
 * database (octet_length of the row as text, what the wire carries), and
 * - a row over rowMaxBytes fails the statement before the row goes any further (it is never sent),
 * - the first row that starts past readMaxBytes stops the statement, so at most one row past the
 *   limit is ever sent, and nothing after it is computed,
 * - at most rowCap + 1 rows are computed.
 * Each level is fenced (OFFSET 0) so that the measure is computed once and the row check runs before
 * the running sum, a window with a ROWS frame that PostgreSQL computes without keeping the rows.
 */
export function wrapTenantStatement(query: Pick<TenantQuery, 'relations' | 'limits'>): { before: string; after: string } {
  const { rowCap, rowMaxBytes, readMaxBytes } = query.limits;
  const before = `${query.relations.prefix}SELECT ${SUMMED}.*,
  CASE WHEN ${SUMMED}."${READ_BYTES}" - ${SUMMED}."${ROW_BYTES}" > ${integerSetting(readMaxBytes)} THEN ('${READ_LIMIT_MARKER}' || ${SUMMED}."${READ_BYTES}")::int END AS "${READ_CHECK}"
FROM (
  SELECT ${CHECKED}.*, sum(${CHECKED}."${ROW_BYTES}") OVER (ROWS UNBOUNDED PRECEDING) AS "${READ_BYTES}"
  FROM (
    SELECT ${MEASURED}.*, CASE WHEN ${MEASURED}."${ROW_BYTES}" > ${integerSetting(rowMaxBytes)} THEN ('${ROW_TOO_LARGE_MARKER}' || ${MEASURED}."${ROW_BYTES}")::int END AS "${ROW_CHECK}"
    FROM (SELECT ${STATEMENT}.*, octet_length(${STATEMENT}.*::text) AS "${ROW_BYTES}" FROM (
`;
  const after = `
) AS ${STATEMENT} OFFSET 0) AS ${MEASURED} OFFSET 0
  ) AS ${CHECKED}
  LIMIT ${integerSetting(rowCap + 1)}
) AS ${SUMMED}`;
  return { before, after };
}

/**
 * What a driver does for TenantRowReader, inside the statement's READ ONLY transaction, where the tenant's
 * settings were sent first. The first FETCH is asked for before the DECLARE is answered: the driver sends the
 * statements in order without waiting between them (one flight), and the transaction keeps one that follows a
 * failed statement from running (it fails as well, and the first failure is the one that stands).
 */
export interface TenantCursor {
  /** Runs DECLARE … CURSOR FOR the wrapped statement, with the step relations' parameters, within timeoutMs. */
  declare(sql: string, params: string[], timeoutMs: number): Promise<void>;
  /** Runs a FETCH, within timeoutMs. */
  fetch(sql: string, timeoutMs: number): Promise<{ rows: Record<string, unknown>[]; columns: ResultColumn[] }>;
}

/**
 * Reads a tenant's statement through a cursor, a batch at a time, and stops as soon as the result
 * passes the read limit: the database computes no more than it sends. Batches are sized so that, with
 * rows no larger than the largest seen so far, none would pass the limit; a larger row may make a batch
 * pass it, and then the statement stops itself on the first row past the limit (the read-limit check),
 * which ends the transaction with an error and loses that batch: the rows read before it stand, and
 * `stoppedAtReadLimit` tells that error from any other.
 */
export class TenantRowReader {
  private readonly rows: Record<string, unknown>[] = [];
  private columns: ResultColumn[] = [];
  private readBytes = 0;
  /** The largest row read so far; before the first, batches assume rows as large as allowed. */
  private largestRow = 0;
  private truncatedByBytes = false;
  private truncatedByRows = false;

  constructor(
    private readonly query: TenantQuery,
    private readonly deadline = Date.now() + query.timeoutMs,
  ) {}

  async read(cursor: TenantCursor): Promise<void> {
    const { limits, signal } = this.query;
    signal?.throwIfAborted();
    const timeoutMs = this.deadline - Date.now();
    if (timeoutMs <= 0) throw new StatementTimeoutError(this.query.timeoutMs);
    const { before, after } = wrapTenantStatement(this.query);
    const declarePrefix = `DECLARE ${CURSOR} NO SCROLL CURSOR FOR ${before}`;
    const declared = cursor
      .declare(`${declarePrefix}${this.query.statement}${after}`, this.query.relations.params, timeoutMs)
      .catch((error: unknown) => {
        throw withStatementPosition(error, declarePrefix, this.query.statement);
      });
    // Sent behind the DECLARE without waiting for it: a small result costs no round trip of its own. Should the
    // DECLARE fail, this FETCH fails too, and the DECLARE's error is the one thrown (with the same time, the
    // DECLARE's runs out first).
    let batch = this.fetchBatch(cursor, timeoutMs);
    batch.fetched.catch(() => undefined);
    await declared;
    for (;;) {
      const fetched = await batch.fetched;
      if (this.columns.length === 0) this.columns = fetched.columns.filter((column) => !OWN_COLUMNS.includes(column.name));
      for (const row of fetched.rows) {
        const rowBytes = Number(row[ROW_BYTES]);
        const readBytes = Number(row[READ_BYTES]);
        if (this.rows.length === limits.rowCap) {
          this.truncatedByRows = true;
          return;
        }
        if (readBytes > limits.readMaxBytes) {
          this.truncatedByBytes = true;
          return;
        }
        this.largestRow = Math.max(this.largestRow, rowBytes);
        this.readBytes = readBytes;
        for (const name of OWN_COLUMNS) delete row[name];
        this.rows.push(row);
      }
      if (fetched.rows.length < batch.count) return;
      signal?.throwIfAborted();
      batch = this.fetchBatch(cursor);
    }
  }

  /** Asks for the next batch, sized by what was read so far. */
  private fetchBatch(cursor: TenantCursor, timeoutMs = this.deadline - Date.now()) {
    const { limits } = this.query;
    const room = Math.max(0, limits.readMaxBytes - this.readBytes);
    const fitting = Math.max(1, Math.floor(room / (this.largestRow || limits.rowMaxBytes)));
    // Batches grow with what was read, so that a row larger than any before costs at most a batch that
    // is not larger than twice the rows read (the statement stops itself there, and the batch is lost).
    const count = Math.min(MAX_FETCH_ROWS, FIRST_FETCH_ROWS + 2 * this.rows.length, fitting);
    const fetched =
      timeoutMs <= 0 ? Promise.reject(new StatementTimeoutError(this.query.timeoutMs)) : cursor.fetch(`FETCH ${count} FROM ${CURSOR}`, timeoutMs);
    return { count, fetched };
  }

  /** The statement stopped itself on its first row past the read limit: what was read before it stands. */
  stoppedAtReadLimit(error: unknown): boolean {
    const message = (error as { message?: unknown } | null)?.message;
    if (typeof message !== 'string' || !message.includes(READ_LIMIT_MARKER)) return false;
    // With rowCap rows read, the row that stopped it is the one past the cap.
    if (this.rows.length === this.query.limits.rowCap) this.truncatedByRows = true;
    else this.truncatedByBytes = true;
    return true;
  }

  result(): TenantQueryResult {
    return {
      rows: this.rows,
      columns: this.columns,
      truncatedByRows: this.truncatedByRows,
      truncatedByBytes: this.truncatedByBytes,
      bytes: this.readBytes,
    };
  }
}

/**
 * An error the database placed at a character of what it ran (`position`, 1-based, in characters) is given
 * `statementPosition`: the same place in the tenant's statement, when it falls there.
 */
function withStatementPosition(error: unknown, prefix: string, statement: string): unknown {
  const position = Number((error as { position?: unknown } | null)?.position);
  if (!Number.isInteger(position) || typeof error !== 'object' || error === null) return error;
  const statementPosition = position - [...prefix].length;
  if (statementPosition >= 1 && statementPosition <= [...statement].length) Object.assign(error, { statementPosition });
  return error;
}

/**
 * What every read-only statement starts with, after READ ONLY: the role, then the search path. Both are
 * SET LOCAL, so they end with the transaction (commit or rollback) and a pooled connection carries
 * neither to the next statement.
 */
export function readOnlySettings(query: { role?: string; searchPath: string }): string[] {
  return [
    ...(query.role === undefined ? [] : [`SET LOCAL ROLE ${quoteIdentifier(query.role)}`]),
    `SET LOCAL search_path TO ${quoteIdentifier(query.searchPath)}`,
  ];
}

/** SET LOCAL statements for the transaction a tenant statement runs in: its resource limits, then its role and search path. */
export function tenantTransactionSettings(query: Pick<TenantQuery, 'role' | 'searchPath' | 'limits'>): string[] {
  return [
    `SET LOCAL work_mem = '${integerSetting(query.limits.workMemMb)}MB'`,
    `SET LOCAL temp_file_limit = '${integerSetting(query.limits.tempFileLimitMb)}MB'`,
    ...readOnlySettings(query),
  ];
}

export function quoteIdentifier(identifier: string): string {
  return `"${identifier.replaceAll('"', '""')}"`;
}

/** The error a tenant statement failed with, as one of ours when it is a limit the database enforced. */
export function tenantQueryError(
  error: { code?: string; message: string },
  limits: TenantQueryLimits,
): RowTooLargeError | DatabaseResourceError | undefined {
  if (error.code === '22P02') {
    const match = ROW_TOO_LARGE_MESSAGE.exec(error.message);
    if (match) return new RowTooLargeError(Number(match[1]), limits.rowMaxBytes);
  }
  if (error.code === '53400') {
    return new DatabaseResourceError('temp-files', `the statement wrote more temporary files than its limit of ${limits.tempFileLimitMb} MB`);
  }
  if (error.code === '53200') return new DatabaseResourceError('memory', `the database ran out of memory running the statement`);
  return undefined;
}
