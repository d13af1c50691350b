import { randomBytes } from 'node:crypto';

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

// Our own columns next to the statement's; the suffix keeps a statement's own column names from colliding.
const suffix = randomBytes(6).toString('hex');
const ROW_BYTES = `__stepcast_row_bytes_${suffix}`;
const READ_BYTES = `__stepcast_read_bytes_${suffix}`;
const ROW_CHECK = `__stepcast_row_check_${suffix}`;
const OWN_COLUMNS: ReadonlySet<string> = new Set([ROW_BYTES, READ_BYTES, ROW_CHECK]);
// A cast of this text to integer is how the statement stops itself: plain SQL has no RAISE.
const ROW_TOO_LARGE_MARKER = `stepcast_row_too_large_${suffix}:`;
const ROW_TOO_LARGE_MESSAGE = new RegExp(`"${ROW_TOO_LARGE_MARKER}(\\d+)"`);

const integerSetting = (value: number) => String(Math.max(1, Math.floor(value)));

/**
 * The statement as the database runs it. Every row's text size is measured in the database
 * (octet_length of the row as text, what the wire carries), and
 * - a row over rowMaxBytes fails the statement before the row goes any further (it is never sent),
 * - rows are sent only while the text before them is within readMaxBytes (so at most one row past it),
 * - at most rowCap + 1 rows are computed.
 * Each level is fenced (OFFSET 0) so that the measure is computed once and the check runs before the
 * running sum, a window with a ROWS frame that PostgreSQL computes without keeping the rows.
 */
export function wrapTenantStatement(query: Pick<TenantQuery, 'statement' | 'relations' | 'limits'>): string {
  const { rowCap, rowMaxBytes, readMaxBytes } = query.limits;
  return `${query.relations.prefix}SELECT * FROM (
  SELECT c.*, sum(c."${ROW_BYTES}") OVER (ROWS UNBOUNDED PRECEDING) AS "${READ_BYTES}"
  FROM (
    SELECT m.*, CASE WHEN m."${ROW_BYTES}" > ${integerSetting(rowMaxBytes)} THEN ('${ROW_TOO_LARGE_MARKER}' || m."${ROW_BYTES}")::int END AS "${ROW_CHECK}"
    FROM (SELECT q.*, octet_length(q::text) AS "${ROW_BYTES}" FROM (
${query.statement}
) AS q OFFSET 0) AS m OFFSET 0
  ) AS c
  LIMIT ${integerSetting(rowCap + 1)}
) AS w WHERE w."${READ_BYTES}" - w."${ROW_BYTES}" <= ${integerSetting(readMaxBytes)}`;
}

/** SET LOCAL statements for the transaction a tenant statement runs in (they end with it). */
export function tenantTransactionSettings(query: Pick<TenantQuery, 'role' | 'searchPath' | 'limits'>): string[] {
  return [
    `SET LOCAL work_mem = '${integerSetting(query.limits.workMemMb)}MB'`,
    `SET LOCAL temp_file_limit = '${integerSetting(query.limits.tempFileLimitMb)}MB'`,
    `SET LOCAL ROLE ${quoteIdentifier(query.role)}`,
    `SET LOCAL search_path TO ${quoteIdentifier(query.searchPath)}`,
  ];
}

export function quoteIdentifier(identifier: string): string {
  return `"${identifier.replaceAll('"', '""')}"`;
}

/** Takes our measuring columns off the rows the wrapped statement returned, and reads what they say. */
export function unwrapTenantResult(
  rawRows: Record<string, unknown>[],
  rawColumns: ResultColumn[],
  limits: TenantQueryLimits,
): TenantQueryResult {
  const columns = rawColumns.filter((column) => !OWN_COLUMNS.has(column.name));
  const rows: Record<string, unknown>[] = [];
  let bytes = 0;
  let truncatedByBytes = false;
  for (const row of rawRows) {
    const readBytes = Number(row[READ_BYTES]);
    if (readBytes > limits.readMaxBytes) {
      truncatedByBytes = true;
      break;
    }
    if (rows.length === limits.rowCap) break;
    bytes = readBytes;
    for (const name of OWN_COLUMNS) delete row[name];
    rows.push(row);
  }
  return { rows, columns, truncatedByRows: rawRows.length > limits.rowCap && !truncatedByBytes, truncatedByBytes, bytes };
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
