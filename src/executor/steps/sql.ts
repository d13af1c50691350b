import { DatabaseQueryError, quoteIdentifier, StatementTimeoutError, type Database } from '../../db/client.js';
import { DatabaseResourceError, RowTooLargeError, type TenantQueryLimits } from '../../db/tenant-query.js';
import type { StoredColumn } from '../../db/tables.js';
import type { DataSchema } from '../../db/introspect.js';
import { guardSql, SqlRejectedError, type SqlGuardScope } from '../../guard/sql-guard.js';
import type { LlmClient } from '../../agents/llm-client.js';
import { writeSql, type SqlAttempt } from '../../agents/sql-agent.js';
import { asStepFailure, isTimeoutAbort, StepFailure } from '../errors.js';
import { heapBytesOf, stringHeapBytes } from '../../heap-bytes.js';
import { describeColumns, toJsonRecords } from '../records.js';
import type { TenantKnowledge } from '../tenant-knowledge.js';
import { inSpan } from '../../observability/spans.js';
import type { Logger } from '../../logger.js';
import { askAgent, workTimeoutMs, stoppedByCancel, type EarlierStep, type StepContext, type StepHandler, type StepOutcome } from './step-handler.js';

export interface SqlStepOptions {
  database: Database;
  knowledge: TenantKnowledge;
  llm: LlmClient;
  /** Times the agent may rewrite its SQL after the guard or the database rejected it. */
  repairRounds: number;
  /** What the database enforces on every statement (rowCap comes from the step's context). */
  limits: Omit<TenantQueryLimits, 'rowCap'>;
  /** The longest statement the guard accepts, written by the client or by the agent. */
  maxSqlChars: number;
  /** Told of every statement the guard refuses, by reason (metrics). */
  onSqlRejected?: (reason: string) => void;
  /**
   * Where each agent-written statement that failed is logged with its SQL (the step keeps only the last one), at
   * debug: the SQL and the database's error may hold tenant data (literals, values).
   */
  logger?: Logger;
}

/** The error message of a failed statement, in its log line, at most (a database error may quote a whole value). */
const MAX_LOGGED_ERROR_CHARS = 2_000;

/** A statement for a log line: whole up to maxSqlChars (longer is refused for its length alone), else cut, with its length. */
function boundedSql(sql: string, maxSqlChars: number): { sql: string; sqlChars?: number } {
  return sql.length <= maxSqlChars ? { sql } : { sql: sql.slice(0, maxSqlChars), sqlChars: sql.length };
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

function toStepFailure(error: unknown, timeoutMs: number, limits: SqlStepOptions['limits']): unknown {
  if (error instanceof SqlRejectedError) return new StepFailure('SQL_REJECTED', error.message, { cause: error });
  // The step's signal ran out of time while the statement ran: the database cancelled it, as its own timeout would.
  if (error instanceof StatementTimeoutError || isTimeoutAbort(error)) {
    return new StepFailure('STEP_TIMEOUT', `the statement ran longer than ${timeoutMs} ms and was cancelled`, {
      cause: error,
    });
  }
  if (error instanceof RowTooLargeError) {
    return new StepFailure(
      'RESULT_TOO_LARGE',
      `a row of the result is ${error.rowBytes} bytes, over the limit of ${limits.rowMaxBytes} bytes per row (STEPCAST_ROW_MAX_BYTES); the database refused to send it`,
      { cause: error },
    );
  }
  if (error instanceof DatabaseResourceError) {
    return error.resource === 'temp-files'
      ? new StepFailure(
          'TEMP_FILE_LIMIT',
          `the statement needed more than ${limits.tempFileLimitMb} MB of temporary files (STEPCAST_SQL_TEMP_FILE_LIMIT_MB) and was cancelled`,
          { cause: error },
        )
      : new StepFailure('SQL_OUT_OF_MEMORY', `the database ran out of memory running the statement`, { cause: error });
  }
  if (error instanceof DatabaseQueryError) {
    return new StepFailure('SQL_ERROR', `the database rejected the statement: ${error.message}`, { cause: error });
  }
  return asStepFailure(error);
}

const REPAIRABLE: ReadonlySet<string> = new Set(['SQL_REJECTED', 'SQL_ERROR']);

/** A refused statement for the agent's repair round, with the refusal exactly as the guard or the database worded it. */
function failedAttempt(sql: string, error: unknown, failure: StepFailure): SqlAttempt {
  if (error instanceof SqlRejectedError) return { sql, error: error.message, refusedBy: 'guard' };
  if (error instanceof DatabaseQueryError) {
    return {
      sql,
      error: error.message,
      refusedBy: 'database',
      sqlState: error.code,
      detail: error.detail,
      hint: error.hint,
      position: error.statementPosition,
    };
  }
  return { sql, error: failure.message };
}

export function createSqlStepHandler({
  database,
  knowledge,
  llm,
  repairRounds,
  limits,
  maxSqlChars,
  onSqlRejected,
  logger,
}: SqlStepOptions): StepHandler {
  const guardScope = async (context: StepContext, dataSchema: DataSchema): Promise<SqlGuardScope> => {
    const readable = context.earlier.filter((e) => e.columns.length > 0);
    return {
      tenantSchema: context.tenant.dataSchema,
      tenantTables: new Set(dataSchema.tables.map((table) => table.name.toLowerCase())),
      stepRelations: new Set(readable.map((e) => stepRelationName(e.index))),
      relationColumns: new Map([
        ...dataSchema.tables.map((table) => [table.name.toLowerCase(), new Set(table.columns.map((column) => column.name))] as const),
        ...readable.map((e) => [stepRelationName(e.index), new Set(e.columns.map((column) => column.name))] as const),
      ]),
      reachableFunctions: await knowledge.reachableFunctions(context.tenant),
      maxSqlChars,
    };
  };

  const runStatement = async (sql: string, context: StepContext, scope: SqlGuardScope, role: string): Promise<StepOutcome> => {
    const { earlier, tenant, memory } = context;
    let guarded;
    try {
      guarded = await guardSql(sql, scope);
    } catch (error) {
      if (error instanceof SqlRejectedError) onSqlRejected?.(error.reason);
      throw error;
    }
    const relations = buildStepRelations(earlier, guarded.stepRelations);
    const inputBytes = relations.params.reduce((bytes, param) => bytes + stringHeapBytes(param), 0);
    memory.take(inputBytes, "the earlier steps' records it reads as step_N");
    // What the database may send is bounded by what the execution may still hold, so an oversized
    // result stops in the database instead of in memory.
    const readMaxBytes = Math.min(limits.readMaxBytes, memory.remaining);
    let result;
    try {
      const statement = guarded.statement;
      result = await inSpan('stepcast.sql', { client: true, attributes: () => ({ 'db.system.name': 'postgresql' }) }, async (span) => {
        const answer = await database.runTenantQuery({
          statement,
          relations,
          role,
          searchPath: tenant.dataSchema,
          timeoutMs: workTimeoutMs(context),
          signal: context.signal,
          limits: { ...limits, readMaxBytes, rowCap: context.rowCap },
        });
        span.setAttribute('db.response.returned_rows', answer.rows.length);
        return answer;
      });
    } catch (error) {
      // The database placed its error in the statement the guard cut out of the SQL (without leading comments); the
      // agent is shown the SQL.
      if (error instanceof DatabaseQueryError && error.statementPosition !== undefined) {
        error.statementPosition += [...sql.slice(0, guarded.statementStart)].length;
      }
      throw error;
    } finally {
      memory.give(inputBytes);
    }
    // The database stopped at what this execution may still hold, and there was more.
    if (result.truncatedByBytes && readMaxBytes < limits.readMaxBytes) memory.overflow('its result');
    const columns = describeColumns(result.columns);
    const names = new Set<string>();
    const records = toJsonRecords(result.rows, columns, (record) => memory.take(heapBytesOf(record, names) + 8, 'its records'));
    const truncated = result.truncatedByRows || result.truncatedByBytes;
    return { sql, records, columns, truncated, attempts: 1 };
  };

  return stoppedByCancel(async (context: StepContext): Promise<StepOutcome> => {
    const { step, tenant } = context;
    // Never run a tenant's statement as the service, whose role reads every tenant and the service's tables.
    const role = tenant.dbRole;
    if (!role) {
      throw new StepFailure(
        'SQL_NOT_CONFIGURED',
        `step ${context.index} is a SQL step, and tenant ${tenant.id} has no database role (tenants.db_role) to run it as`,
      );
    }
    const dataSchema = await knowledge.dataSchema(tenant);
    const scope = await guardScope(context, dataSchema);
    if (step.sql) {
      try {
        return await runStatement(step.sql, context, scope, role);
      } catch (error) {
        throw toStepFailure(error, context.timeoutMs, limits);
      }
    }
    const promptSchema = await knowledge.promptDataSchema(tenant);
    const failedAttempts: SqlAttempt[] = [];
    for (let attempt = 1; ; attempt++) {
      let sql: string | undefined;
      try {
        const answer = await askAgent(llm, context, { field: 'sql', agent: 'SQL agent' }, () =>
          writeSql(llm, {
            planQuery: context.planQuery,
            index: context.index,
            task: step,
            dataSchema: promptSchema,
            earlier: context.earlier,
            failedAttempts,
            maxSqlChars,
            signal: context.signal,
          }),
        );
        sql = answer.sql;
        return { ...(await runStatement(sql, context, scope, role)), attempts: attempt };
      } catch (error) {
        const failure = toStepFailure(error, context.timeoutMs, limits);
        if (!(failure instanceof StepFailure)) throw failure;
        failure.artefact = { sql, attempts: attempt };
        if (sql === undefined) throw failure;
        const repair = REPAIRABLE.has(failure.code) && failedAttempts.length < repairRounds;
        logger?.debug(
          { attempt, ...boundedSql(sql, maxSqlChars), error: { code: failure.code, message: failure.message.slice(0, MAX_LOGGED_ERROR_CHARS) }, repair },
          'agent-written statement failed',
        );
        if (!repair) throw failure;
        failedAttempts.push(failedAttempt(sql, error, failure));
      }
    }
  });
}
