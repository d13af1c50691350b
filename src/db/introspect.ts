import { quoteIdentifier, type Database } from './client.js';

/** The values a low-cardinality text column holds (statuses, types, roles), for the agents' prompts. */
export interface ColumnValues {
  /** Distinct values as text, most common first, each at most MAX_VALUE_LENGTH characters. */
  values: string[];
  /** Every value the column held when it was read is listed; otherwise these are the most common ones. */
  complete: boolean;
}

export interface DataColumn {
  name: string;
  /** As Postgres prints it (format_type): "integer", "text[]", "character varying(20)", an enum's name. */
  type: string;
  nullable: boolean;
  /** Set for a text or enum column with few distinct values (at most MAX_LISTED_VALUES). */
  values?: ColumnValues;
}

export interface ForeignKey {
  columns: string[];
  /** The referenced table, qualified only when it is in another schema. */
  table: string;
  referencedColumns: string[];
}

export interface DataTable {
  name: string;
  /** Estimated from the planner's statistics; -1 when the table was never analyzed. */
  rowCount: number;
  columns: DataColumn[];
  /** Constraint definitions as Postgres prints them: "PRIMARY KEY (id)", "FOREIGN KEY (user_id) REFERENCES users(id)". */
  keys: string[];
  primaryKey?: string[];
  foreignKeys?: ForeignKey[];
  uniqueKeys?: string[][];
}

export interface DataSchema {
  schema: string;
  tables: DataTable[];
}

export interface IntrospectOptions {
  /**
   * The tenant's role: example values are read as this role, so that they come only from rows and statistics its
   * statements could read themselves (row-level security applies). Without it no values are read.
   */
  role?: string;
}

const INTROSPECTION_TIMEOUT_MS = 10_000;
/** A column is listed with its values when it has at most this many distinct ones. */
export const MAX_LISTED_VALUES = 12;
/** Longer values are not categories: a column holding one is not listed. */
export const MAX_VALUE_LENGTH = 40;
/** Rows read from a table without statistics to find its columns' values (the first ones, not a random sample). */
export const SAMPLE_ROWS = 1_000;
const SAMPLE_TIMEOUT_MS = 2_000;
/** All the sampling of one schema stops after this long; the tables not reached have no values listed. */
const SAMPLING_BUDGET_MS = 5_000;
const MAX_SAMPLED_COLUMNS_PER_TABLE = 40;
/** Control and invisible characters, and the line and paragraph separators: a value holding one would break the prompt's lines. */
const FORBIDDEN_IN_VALUE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;

/**
 * Tables, columns, keys, (estimated) row counts and the values of low-cardinality text columns of one tenant
 * schema, for the guard and the agents.
 */
export async function introspectDataSchema(database: Database, schema: string, options: IntrospectOptions = {}): Promise<DataSchema> {
  const run = (sql: string) =>
    database.runReadOnly({ sql, params: [schema], timeoutMs: INTROSPECTION_TIMEOUT_MS, searchPath: schema });
  const [columns, keys, counts, statistics] = await Promise.all([
    run(`SELECT cl.relname AS table_name, a.attname AS column_name, format_type(a.atttypid, a.atttypmod) AS data_type,
                NOT a.attnotnull AS nullable, cl.relkind::text AS relkind, ty.typcategory::text AS category,
                CASE WHEN ty.typtype = 'e'
                     THEN (SELECT json_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = ty.oid)::text
                END AS enum_labels
           FROM pg_attribute a
           JOIN pg_class cl ON cl.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = cl.relnamespace
           JOIN pg_type ty ON ty.oid = a.atttypid
          WHERE n.nspname = $1 AND cl.relkind IN ('r', 'v', 'f', 'p') AND a.attnum > 0 AND NOT a.attisdropped
          ORDER BY cl.relname, a.attnum`),
    run(`SELECT cl.relname AS table_name, co.contype::text AS kind, pg_get_constraintdef(co.oid) AS definition,
                (SELECT json_agg(a.attname ORDER BY k.ord) FROM unnest(co.conkey) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = k.attnum)::text AS columns,
                rn.nspname AS referenced_schema, rcl.relname AS referenced_table,
                (SELECT json_agg(a.attname ORDER BY k.ord) FROM unnest(co.confkey) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = co.confrelid AND a.attnum = k.attnum)::text AS referenced_columns
           FROM pg_constraint co
           JOIN pg_class cl ON cl.oid = co.conrelid
           JOIN pg_namespace n ON n.oid = cl.relnamespace
           LEFT JOIN pg_class rcl ON rcl.oid = co.confrelid
           LEFT JOIN pg_namespace rn ON rn.oid = rcl.relnamespace
          WHERE n.nspname = $1 AND co.contype IN ('p', 'f', 'u')
          ORDER BY cl.relname, co.contype DESC, co.conname`),
    run(`SELECT cl.relname AS table_name, cl.reltuples::float8 AS row_count
           FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace
          WHERE n.nspname = $1 AND cl.relkind IN ('r', 'v', 'm', 'p')`),
    // Without statistics every table is sampled instead (within the budget).
    options.role === undefined ? Promise.resolve(undefined) : readStatistics(database, schema, options.role).catch((): Statistics => new Map()),
  ]);
  const tables = new Map<string, DataTable>();
  const details = new Map<DataColumn, { category: string; relkind: string }>();
  for (const row of columns.rows) {
    const name = String(row.table_name);
    let table = tables.get(name);
    if (!table) {
      table = { name, rowCount: -1, columns: [], keys: [], primaryKey: [], foreignKeys: [], uniqueKeys: [] };
      tables.set(name, table);
    }
    const column: DataColumn = { name: String(row.column_name), type: String(row.data_type), nullable: Boolean(row.nullable) };
    if (row.enum_labels) {
      const labels = JSON.parse(String(row.enum_labels)) as string[];
      if (!labels.some((label) => FORBIDDEN_IN_VALUE.test(label))) {
        column.values = { values: labels.slice(0, MAX_LISTED_VALUES), complete: labels.length <= MAX_LISTED_VALUES };
      }
    }
    table.columns.push(column);
    details.set(column, { category: String(row.category), relkind: String(row.relkind) });
  }
  for (const row of keys.rows) {
    const table = tables.get(String(row.table_name));
    if (!table) continue;
    table.keys.push(String(row.definition).replaceAll(`${schema}.`, ''));
    const keyColumns = JSON.parse(String(row.columns ?? '[]')) as string[];
    if (row.kind === 'p') table.primaryKey = keyColumns;
    else if (row.kind === 'u') table.uniqueKeys!.push(keyColumns);
    else if (row.kind === 'f') {
      const referencedSchema = String(row.referenced_schema);
      table.foreignKeys!.push({
        columns: keyColumns,
        table: referencedSchema === schema ? String(row.referenced_table) : `${referencedSchema}.${String(row.referenced_table)}`,
        referencedColumns: JSON.parse(String(row.referenced_columns ?? '[]')) as string[],
      });
    }
  }
  for (const row of counts.rows) {
    const table = tables.get(String(row.table_name));
    const estimate = Number(row.row_count);
    if (table) table.rowCount = estimate < 0 ? -1 : Math.round(estimate);
  }
  if (options.role !== undefined && statistics !== undefined) {
    await addColumnValues(database, schema, options.role, [...tables.values()], details, statistics);
  }
  return { schema, tables: [...tables.values()] };
}

type Statistics = Map<string, ColumnValues | null>;
const statisticsKey = (table: string, column: string) => JSON.stringify([table, column]);

/**
 * What the planner's statistics (pg_stats, filled by ANALYZE) say of the schema's text columns: the most common values
 * of those with few distinct ones, or null for a column whose statistics show many. A column missing from the map has
 * no statistics (never analyzed, or hidden from the role by row-level security).
 */
async function readStatistics(database: Database, schema: string, role: string): Promise<Statistics> {
  const result = await database.runReadOnly({
    sql: `SELECT s.tablename AS table_name, s.attname AS column_name, s.null_frac::float8 AS null_frac,
                 CASE WHEN s.most_common_vals IS NOT NULL
                       AND (CASE WHEN s.n_distinct >= 0 THEN s.n_distinct ELSE -s.n_distinct * greatest(c.reltuples, 0) END) <= ${MAX_LISTED_VALUES}
                      THEN array_to_json(s.most_common_vals::text::text[])::text END AS common_values,
                 CASE WHEN s.most_common_freqs IS NOT NULL THEN array_to_json(s.most_common_freqs)::text END AS frequencies
            FROM pg_stats s
            JOIN pg_namespace n ON n.nspname = s.schemaname
            JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = s.attname
            JOIN pg_type t ON t.oid = a.atttypid
           WHERE s.schemaname = $1 AND t.typcategory = 'S'
           ORDER BY s.inherited DESC`,
    params: [schema],
    timeoutMs: INTROSPECTION_TIMEOUT_MS,
    searchPath: schema,
    role,
  });
  const statistics: Statistics = new Map();
  for (const row of result.rows) {
    const key = statisticsKey(String(row.table_name), String(row.column_name));
    // A table with children has statistics of its whole hierarchy (inherited, first), which is what reading it reads.
    if (statistics.has(key)) continue;
    if (row.common_values === null || row.common_values === undefined) {
      statistics.set(key, null);
      continue;
    }
    const values = JSON.parse(String(row.common_values)) as string[];
    const frequencies = JSON.parse(String(row.frequencies ?? '[]')) as number[];
    const covered = frequencies.reduce((sum, frequency) => sum + frequency, Number(row.null_frac));
    statistics.set(key, listable(values) ? { values, complete: covered >= 0.999 } : null);
  }
  return statistics;
}

function listable(values: string[]): boolean {
  return (
    values.length > 0 &&
    values.length <= MAX_LISTED_VALUES &&
    values.every((value) => value.length > 0 && value.length <= MAX_VALUE_LENGTH && !FORBIDDEN_IN_VALUE.test(value))
  );
}

/**
 * Gives the low-cardinality text columns their values: from the statistics where there are some, else from the
 * first SAMPLE_ROWS rows of the table (tables only, never a view or foreign table, whose reading could cost anything),
 * read as the tenant's role, within a time budget. Values are a hint: a table that cannot be read in time has none.
 */
async function addColumnValues(
  database: Database,
  schema: string,
  role: string,
  tables: DataTable[],
  details: Map<DataColumn, { category: string; relkind: string }>,
  statistics: Statistics,
): Promise<void> {
  const deadline = Date.now() + SAMPLING_BUDGET_MS;
  for (const table of tables) {
    const identifying = new Set([table.primaryKey ?? [], ...(table.uniqueKeys ?? [])].filter((key) => key.length === 1).map((key) => key[0]!));
    const unsampled: DataColumn[] = [];
    for (const column of table.columns) {
      const detail = details.get(column);
      if (column.values || detail?.category !== 'S' || identifying.has(column.name)) continue;
      const key = statisticsKey(table.name, column.name);
      if (statistics.has(key)) {
        const values = statistics.get(key);
        if (values) column.values = values;
      } else if (detail.relkind === 'r' || detail.relkind === 'p') {
        unsampled.push(column);
      }
    }
    const remaining = deadline - Date.now();
    if (unsampled.length === 0 || remaining <= 0) continue;
    try {
      await sampleColumnValues(database, schema, role, table.name, unsampled.slice(0, MAX_SAMPLED_COLUMNS_PER_TABLE), Math.min(remaining, SAMPLE_TIMEOUT_MS));
    } catch {
      // Values are a hint: a table that cannot be read in time (or at all, as the tenant's role) is listed without them.
    }
  }
}

async function sampleColumnValues(
  database: Database,
  schema: string,
  role: string,
  table: string,
  columns: DataColumn[],
  timeoutMs: number,
): Promise<void> {
  const sampled = columns.map((column, i) => `left(${quoteIdentifier(column.name)}::text, ${MAX_VALUE_LENGTH + 1}) AS v${i}`);
  const distinct = columns.map(
    (_, i) =>
      `(SELECT json_agg(v)::text FROM (SELECT v${i} AS v FROM sample WHERE v${i} IS NOT NULL GROUP BY v${i} ORDER BY count(*) DESC, v${i} LIMIT ${MAX_LISTED_VALUES + 1}) AS d) AS v${i}`,
  );
  const result = await database.runReadOnly({
    sql: `WITH sample AS MATERIALIZED (SELECT ${sampled.join(', ')} FROM ${quoteIdentifier(schema)}.${quoteIdentifier(table)} LIMIT ${SAMPLE_ROWS})
          SELECT (SELECT count(*) FROM sample)::int AS sampled, ${distinct.join(', ')}`,
    params: [],
    timeoutMs,
    searchPath: schema,
    role,
  });
  const row = result.rows[0];
  if (!row) return;
  const rows = Number(row.sampled);
  columns.forEach((column, i) => {
    const values = JSON.parse(String(row[`v${i}`] ?? '[]')) as string[];
    // A value seen once per row is not a category: some value must repeat.
    if (listable(values) && values.length < rows) column.values = { values, complete: rows < SAMPLE_ROWS };
  });
}

/** Names of the functions of one schema: what attribute notation (`t.f`, `(expr).f`) could call there. */
export async function introspectFunctionNames(database: Database, schema: string): Promise<ReadonlySet<string>> {
  const result = await database.runReadOnly({
    sql: `SELECT DISTINCT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1`,
    params: [schema],
    timeoutMs: INTROSPECTION_TIMEOUT_MS,
    searchPath: schema,
  });
  return new Set(result.rows.map((row) => String(row.proname)));
}
