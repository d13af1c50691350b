import type { Database } from './client.js';

export interface DataColumn {
  name: string;
  type: string;
  nullable: boolean;
}

export interface DataTable {
  name: string;
  rowCount: number;
  columns: DataColumn[];
  /** Constraint definitions as Postgres prints them: "PRIMARY KEY (id)", "FOREIGN KEY (user_id) REFERENCES users(id)". */
  keys: string[];
}

export interface DataSchema {
  schema: string;
  tables: DataTable[];
}

const INTROSPECTION_TIMEOUT_MS = 10_000;

/** Tables, columns, keys and (estimated) row counts of one tenant schema, for the guard and the agents. */
export async function introspectDataSchema(database: Database, schema: string): Promise<DataSchema> {
  const run = (sql: string) =>
    database.runReadOnly({ sql, params: [schema], timeoutMs: INTROSPECTION_TIMEOUT_MS, searchPath: schema });
  const [columns, keys, counts] = await Promise.all([
    run(`SELECT c.table_name, c.column_name, c.data_type, c.is_nullable = 'YES' AS nullable
           FROM information_schema.columns c
           JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
          WHERE c.table_schema = $1
          ORDER BY c.table_name, c.ordinal_position`),
    run(`SELECT cl.relname AS table_name, pg_get_constraintdef(co.oid) AS definition
           FROM pg_constraint co
           JOIN pg_class cl ON cl.oid = co.conrelid
           JOIN pg_namespace n ON n.oid = cl.relnamespace
          WHERE n.nspname = $1 AND co.contype IN ('p', 'f', 'u')
          ORDER BY cl.relname, co.contype DESC, co.conname`),
    run(`SELECT cl.relname AS table_name, greatest(cl.reltuples, 0)::bigint AS row_count
           FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace
          WHERE n.nspname = $1 AND cl.relkind IN ('r', 'v', 'm', 'p')`),
  ]);
  const tables = new Map<string, DataTable>();
  for (const row of columns.rows) {
    const name = String(row.table_name);
    let table = tables.get(name);
    if (!table) {
      table = { name, rowCount: 0, columns: [], keys: [] };
      tables.set(name, table);
    }
    table.columns.push({ name: String(row.column_name), type: String(row.data_type), nullable: Boolean(row.nullable) });
  }
  for (const row of keys.rows) {
    const definition = String(row.definition).replaceAll(`${schema}.`, '');
    tables.get(String(row.table_name))?.keys.push(definition);
  }
  for (const row of counts.rows) {
    const table = tables.get(String(row.table_name));
    if (table) table.rowCount = Number(row.row_count);
  }
  return { schema, tables: [...tables.values()] };
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
