/** A result as rows of values, with its columns in order (names are kept for messages only). */
export interface ResultSet {
  columns: string[];
  rows: unknown[][];
}

export type Verdict = 'match' | 'match-with-extra-columns' | 'mismatch';

export interface Comparison {
  verdict: Verdict;
  /** Why it does not match, or which answer column stands for which gold column. */
  reason: string;
}

const NUMERIC_TEXT = /^-?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;
const ISO_TIMESTAMP = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)$/;
/** Numbers are compared to this many significant digits: 2.0 and 2 are equal, and so are two roundings of one average. */
const SIGNIFICANT_DIGITS = 10;
/** Column pairings tried at most when several answer columns hold the same values as a gold column. */
const MAX_PAIRINGS = 10_000;

function canonicalNumber(value: number): string {
  if (!Number.isFinite(value)) return `n:${value}`;
  if (Number.isInteger(value)) return `n:${value}`;
  return `n:${Number(value.toPrecision(SIGNIFICANT_DIGITS))}`;
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([key, item]) => `${JSON.stringify(key)}:${canonicalJson(item)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/**
 * One value as a comparable key: numbers (and text that is a number, such as a numeric the service could not
 * hold exactly) by value to 10 significant digits, timestamps as UTC ISO 8601, json by content.
 */
export function normalizeValue(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'number') return canonicalNumber(value);
  if (typeof value === 'bigint') return `n:${value}`;
  if (typeof value === 'boolean') return `b:${value}`;
  if (typeof value === 'string') {
    if (NUMERIC_TEXT.test(value.trim())) return canonicalNumber(Number(value));
    if (ISO_TIMESTAMP.test(value)) {
      const time = new Date(value);
      if (!Number.isNaN(time.getTime())) return `t:${time.toISOString()}`;
    }
    return `s:${value}`;
  }
  return `j:${canonicalJson(value)}`;
}

const rowKey = (row: readonly string[]) => JSON.stringify(row);

function sameRows(gold: readonly string[][], answer: readonly string[][], ordered: boolean): boolean {
  const goldKeys = gold.map(rowKey);
  const answerKeys = answer.map(rowKey);
  if (!ordered) {
    goldKeys.sort();
    answerKeys.sort();
  }
  return goldKeys.every((key, i) => key === answerKeys[i]);
}

function columnValues(rows: readonly string[][], column: number, ordered: boolean): string {
  const values = rows.map((row) => row[column]!);
  return JSON.stringify(ordered ? values : [...values].sort());
}

/**
 * Whether an answer holds the gold result. Rows are compared as tuples of normalized values; column names are
 * ignored (a model names columns as it likes), and so is the order of the columns: each gold column is paired
 * with an answer column that holds the same values. Row order counts only when `ordered`. Every row counts
 * (duplicates too). An answer with every gold column and more is `match-with-extra-columns`; one with fewer
 * columns, other rows or another row count is a mismatch.
 */
export function compareResults(gold: ResultSet, answer: ResultSet, { ordered }: { ordered: boolean }): Comparison {
  const goldRows = gold.rows.map((row) => row.map(normalizeValue));
  const answerRows = answer.rows.map((row) => row.map(normalizeValue));
  const goldWidth = gold.columns.length;
  const answerWidth = answer.columns.length;
  if (answerWidth < goldWidth) {
    return { verdict: 'mismatch', reason: `${answerWidth} column(s) where the gold answer has ${goldWidth}` };
  }
  if (answerRows.length !== goldRows.length) {
    return { verdict: 'mismatch', reason: `${answerRows.length} row(s) where the gold answer has ${goldRows.length}` };
  }
  const answerColumns = answer.columns.map((_, column) => columnValues(answerRows, column, ordered));
  const candidates = gold.columns.map((_, goldColumn) => {
    const values = columnValues(goldRows, goldColumn, ordered);
    return answerColumns.flatMap((answerValues, answerColumn) => (answerValues === values ? [answerColumn] : []));
  });
  const missing = candidates.findIndex((columns) => columns.length === 0);
  if (missing >= 0) {
    return {
      verdict: 'mismatch',
      reason: `no column holds the values of gold column ${missing + 1} (${gold.columns[missing]})${ordered ? ' in that order' : ''}`,
    };
  }
  let tried = 0;
  const pairing: number[] = [];
  const pair = (goldColumn: number): boolean => {
    if (goldColumn === goldWidth) {
      tried += 1;
      return sameRows(goldRows, answerRows.map((row) => pairing.map((column) => row[column]!)), ordered);
    }
    for (const column of candidates[goldColumn]!) {
      if (pairing.includes(column)) continue;
      pairing.push(column);
      if (pair(goldColumn + 1)) return true;
      pairing.pop();
      if (tried >= MAX_PAIRINGS) return false;
    }
    return false;
  };
  if (!pair(0)) {
    return { verdict: 'mismatch', reason: ordered ? 'the rows differ, or come in another order' : 'the rows differ' };
  }
  const names = pairing.map((column) => answer.columns[column]).join(', ');
  return answerWidth === goldWidth
    ? { verdict: 'match', reason: `columns ${names}` }
    : { verdict: 'match-with-extra-columns', reason: `columns ${names}, and ${answerWidth - goldWidth} more` };
}

/** Records (JSON objects, as a step's result holds them) as a result set, in the order of `columns`. */
export function resultSetOf(columns: readonly string[], records: readonly Record<string, unknown>[]): ResultSet {
  return { columns: [...columns], rows: records.map((record) => columns.map((column) => record[column])) };
}
