import { DatabaseQueryError, quoteIdentifier, StatementTimeoutError, type Database } from '../../db/client.js';
import type { StoredColumn } from '../../db/tables.js';
import { guardSql, SqlRejectedError } from '../../guard/sql-guard.js';
import { StepFailure } from '../errors.js';
import { describeColumns, toJsonRecords } from '../records.js';
import type { EarlierStep, StepContext, StepHandler, StepOutcome } from './step-handler.js';

export interface SqlStepOptions {
  database: Database;
}

export function stepRelationName(index: number): string {
  return `step_${index}`;
}

/**
 * Earlier steps become relations the statement can join: `step_N` is a CTE over the records,
 * bound as one jsonb parameter each, typed with the columns the step produced.
 */
export function buildStepRelations(earlier: readonly EarlierStep[], referenced: readonly string[]) {
  const params: string[] = [];
  const definitions: string[] = [];
  for (const step of earlier) {
    const name = stepRelationName(step.index);
    if (!referenced.includes(name) || step.columns.length === 0) continue;
    params.push(JSON.stringify(step.records));
    const columnList = step.columns.map((c: StoredColumn) => `${quoteIdentifier(c.name)} ${c.type}`).join(', ');
    definitions.push(
      `${name} AS (SELECT * FROM jsonb_to_recordset($${params.length}::text::jsonb) AS r(${columnList}))`,
    );
  }
  return { params, prefix: definitions.length > 0 ? `WITH ${definitions.join(',\n')}\n` : '' };
}

export function createSqlStepHandler({ database }: SqlStepOptions): StepHandler {
  const tablesBySchema = new Map<string, Promise<ReadonlySet<string>>>();

  const tenantTables = (schema: string) => {
    let tables = tablesBySchema.get(schema);
    if (!tables) {
      tables = database
        .runReadOnly({
          sql: 'SELECT table_name FROM information_schema.tables WHERE table_schema = $1',
          params: [schema],
          timeoutMs: 10_000,
          searchPath: schema,
        })
        .then(({ rows }) => new Set(rows.map((row) => String(row.table_name).toLowerCase())));
      tables.catch(() => tablesBySchema.delete(schema));
      tablesBySchema.set(schema, tables);
    }
    return tables;
  };

  return async (context: StepContext): Promise<StepOutcome> => {
    const { step, tenant, earlier } = context;
    if (!step.sql) {
      throw new StepFailure(
        'AGENT_NOT_CONFIGURED',
        `step ${context.index} has no sql, and no SQL agent is configured to write it; give the step its sql`,
      );
    }
    const stepRelations = new Set(earlier.filter((e) => e.columns.length > 0).map((e) => stepRelationName(e.index)));
    let guarded;
    try {
      guarded = await guardSql(step.sql, {
        tenantSchema: tenant.dataSchema,
        tenantTables: await tenantTables(tenant.dataSchema),
        stepRelations,
      });
    } catch (error) {
      if (error instanceof SqlRejectedError) throw new StepFailure('SQL_REJECTED', error.message, { cause: error });
      throw error;
    }
    const { params, prefix } = buildStepRelations(earlier, guarded.stepRelations);
    const statement = `${prefix}SELECT * FROM (\n${guarded.statement}\n) AS step_query LIMIT ${context.rowCap + 1}`;
    let result;
    try {
      result = await database.runReadOnly({
        sql: statement,
        params,
        timeoutMs: context.timeoutMs,
        searchPath: tenant.dataSchema,
      });
    } catch (error) {
      if (error instanceof StatementTimeoutError) {
        throw new StepFailure('STEP_TIMEOUT', `the statement ran longer than ${context.timeoutMs} ms and was cancelled`, {
          cause: error,
        });
      }
      if (error instanceof DatabaseQueryError) {
        throw new StepFailure('SQL_ERROR', `the database rejected the statement: ${error.message}`, { cause: error });
      }
      throw error;
    }
    const columns = describeColumns(result.columns);
    const truncated = result.rows.length > context.rowCap;
    const rows = truncated ? result.rows.slice(0, context.rowCap) : result.rows;
    return { sql: step.sql, records: toJsonRecords(rows, columns), columns, truncated, attempts: 1 };
  };
}
