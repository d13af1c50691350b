// The service the evaluation runs against: started in this process on a database of its own (a fresh PGlite
// directory, or a fresh PostgreSQL database beside EVAL_DATABASE_URL), with the demo tenant and the model
// settings of the environment.
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { LlmClient } from '../src/agents/llm-client.js';
import type { StepcastApp } from '../src/app.js';
import { loadConfig, type Config } from '../src/config.js';
import { DEMO_TENANT_ID, DEMO_TENANT_SCHEMA } from '../src/db/demo-data.js';
import { tenants } from '../src/db/tables.js';
import { ALLOWED_FUNCTIONS } from '../src/guard/sql-guard.js';
import { tenantRolePrefix } from '../src/db/tenant-roles.js';
import { describeColumns, toJsonRecords } from '../src/executor/records.js';
import { buildStepRelations, stepRelationName } from '../src/executor/steps/sql.js';
import { createLogger } from '../src/logger.js';
import { resultSetOf, type ResultSet } from './compare.js';
import { RefusedStatementNotRun, type EarlierRecords, type EvaluationHooks, type FailedAttempt } from './harness.js';

/** The message the SQL step logs for each agent-written statement that failed (src/executor/steps/sql.ts). */
const FAILED_ATTEMPT_MESSAGE = 'agent-written statement failed';
const REFUSED_STATEMENT_TIMEOUT_MS = 10_000;
/**
 * Settings of the environment that the evaluation sets itself, or drops: it runs one private service on loopback,
 * which must not take the ports of a service the environment configures (metrics, demo API: it may be running).
 */
const REPLACED = [
  'DATABASE_URL',
  'REDIS_URL',
  'DATA_DIR',
  'PORT',
  'HOST',
  'NODE_ENV',
  'STEPCAST_ROLE',
  'STEPCAST_AUTH',
  'STEPCAST_DEMO',
  'STEPCAST_METRICS_PORT',
  'STEPCAST_METRICS_HOST',
  'STEPCAST_DEMO_API_PORT',
];

/** The evaluation cannot run: nothing it measured would mean anything. */
export class EvalSetupError extends Error {
  override name = 'EvalSetupError';
}

export interface EvalServiceOptions {
  /** The environment the model settings come from (OPENAI_*, STEPCAST_MODEL, ...). */
  env: NodeJS.ProcessEnv;
  concurrency: number;
  stepTimeoutMs: number;
  /** A PostgreSQL server to make the evaluation's database on; PGlite in a temporary directory when absent. */
  databaseUrl?: string;
  /** Where the service's log lines go (JSON lines); nowhere when absent. */
  logFile?: string;
  /** The embedded database's directory, prepared by the caller and left to it; a new temporary one when absent. */
  dataDir?: string;
}

export interface EvalService {
  url: string;
  backend: 'pglite' | 'postgres';
  config: Config;
  hooks: EvaluationHooks;
  close(): Promise<void>;
}

/** The service's configuration for an evaluation: the environment's model settings, and quotas that never get in the way. */
export function evalConfig(env: NodeJS.ProcessEnv, { dataDir, databaseUrl, concurrency, stepTimeoutMs }: { dataDir: string; databaseUrl?: string; concurrency: number; stepTimeoutMs: number }): Config {
  const kept = Object.fromEntries(Object.entries(env).filter(([name]) => !REPLACED.includes(name)));
  const maxStepTimeoutMs = Math.max(stepTimeoutMs, Number(env.STEPCAST_MAX_STEP_TIMEOUT_MS ?? 0) || 0);
  return loadConfig({
    ...kept,
    NODE_ENV: 'development',
    PORT: '0',
    HOST: '127.0.0.1',
    DATA_DIR: dataDir,
    ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
    STEPCAST_AUTH: 'off',
    STEPCAST_DEMO: 'on',
    STEPCAST_MAX_CONCURRENT_EXECUTIONS: String(Math.max(concurrency, 4)),
    STEPCAST_TENANT_MAX_CONCURRENT_EXECUTIONS: String(concurrency),
    STEPCAST_TENANT_RATE_PER_MINUTE: '1000000',
    STEPCAST_TENANT_RATE_BURST: '1000000',
    STEPCAST_TENANT_MODEL_CALLS_PER_MINUTE: '1000000',
    STEPCAST_TENANT_MODEL_CALLS_BURST: '1000000',
    STEPCAST_MAX_STEP_TIMEOUT_MS: String(maxStepTimeoutMs),
    // An execution still running when the evaluation closes the service was stopped with it (a signal): no wait.
    STEPCAST_SHUTDOWN_GRACE_MS: '1000',
  });
}

export function noModelMessage(): string {
  return 'no model is configured: set OPENAI_BASE_URL to an OpenAI-compatible server (vLLM, Ollama, llama.cpp, ...) or OPENAI_API_KEY for OpenAI, and STEPCAST_MODEL to its model name';
}

/** A fresh database beside `baseUrl`'s, and how to drop it with the tenant roles made for it (roles are server-wide). */
async function createDatabaseBeside(baseUrl: string): Promise<{ url: string; drop(): Promise<void> }> {
  const { default: postgres } = await import('postgres');
  const name = `stepcast_eval_${Date.now()}_${process.pid}`;
  const admin = postgres(baseUrl, { max: 1, onnotice: () => undefined });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } catch (error) {
    throw new EvalSetupError(`cannot create the evaluation's database on the server of --database-url (EVAL_DATABASE_URL): ${(error as Error).message}`, { cause: error });
  } finally {
    await admin.end();
  }
  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const cleanup = postgres(baseUrl, { max: 1, onnotice: () => undefined });
      try {
        await cleanup.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        const roles = await cleanup<{ rolname: string }[]>`SELECT rolname FROM pg_roles WHERE starts_with(rolname, ${tenantRolePrefix(name)})`;
        for (const { rolname } of roles) await cleanup.unsafe(`DROP ROLE IF EXISTS "${rolname}"`);
      } finally {
        await cleanup.end();
      }
    },
  };
}

/** The names of the functions a statement calls, as PostgreSQL's parser reads them; null when it does not parse. */
async function calledFunctions(sql: string): Promise<Set<string> | null> {
  const parser = await import('libpg-query');
  await parser.loadModule();
  let tree: unknown;
  try {
    tree = await parser.parse(sql);
  } catch {
    return null;
  }
  const names = new Set<string>();
  const pending: unknown[] = [tree];
  while (pending.length > 0) {
    const value = pending.pop();
    if (Array.isArray(value)) pending.push(...(value as unknown[]));
    else if (value !== null && typeof value === 'object') {
      for (const [key, child] of Object.entries(value)) {
        if (key === 'FuncCall' || key === 'funccall') {
          const parts = (child as { funcname?: { String?: { sval?: string } }[] }).funcname ?? [];
          names.add(parts.at(-1)?.String?.sval ?? '');
        }
        pending.push(child);
      }
    }
  }
  return names;
}

/**
 * Why a refused statement must not run, if it must not. It runs as the tenant's role, set with SET LOCAL ROLE on
 * the service's own connection: set_config('role', ...) would give the statement the service's role back (a
 * superuser, often, on PostgreSQL; always on PGlite), and read-only does not stop a superuser from reading the
 * server's files. So a statement that calls a volatile function the guard does not allow (set_config, pg_sleep,
 * pg_read_file, advisory locks, ...) is not run; one that calls a stable or immutable one (date(), ...) is.
 */
async function reasonNotToRun(database: StepcastApp['database'], sql: string): Promise<string | undefined> {
  const called = await calledFunctions(sql);
  if (!called) return 'it does not parse, so what it calls is not known: not run';
  const unlisted = [...called].filter((name) => !ALLOWED_FUNCTIONS.has(name));
  if (unlisted.length === 0) return undefined;
  const { rows } = await database.runReadOnly({
    sql: "SELECT DISTINCT proname FROM pg_catalog.pg_proc WHERE provolatile = 'v' AND proname IN (SELECT jsonb_array_elements_text($1::jsonb)) ORDER BY proname",
    params: [JSON.stringify(unlisted)],
    timeoutMs: REFUSED_STATEMENT_TIMEOUT_MS,
    searchPath: 'pg_catalog',
  });
  if (rows.length === 0) return undefined;
  return `it calls ${rows.map((row) => String(row.proname)).join(', ')}, volatile and not allowed by the guard: not run`;
}

/** Keeps the failed agent attempts the service logs, by execution; writes every line to the log file, if any. */
function attemptCollector(logFile: WriteStream | undefined) {
  const byExecution = new Map<string, FailedAttempt[]>();
  const destination = {
    write(line: string) {
      logFile?.write(line);
      if (!line.includes(FAILED_ATTEMPT_MESSAGE)) return;
      const entry = JSON.parse(line) as {
        msg?: string;
        executionId?: string;
        stepIndex?: number;
        attempt?: number;
        sql?: string;
        sqlChars?: number;
        error?: { code?: string; message?: string };
      };
      if (entry.msg !== FAILED_ATTEMPT_MESSAGE || !entry.executionId || entry.sql === undefined) return;
      const attempts = byExecution.get(entry.executionId) ?? [];
      attempts.push({
        stepIndex: entry.stepIndex ?? 0,
        attempt: entry.attempt ?? attempts.length + 1,
        sql: entry.sql,
        ...(entry.sqlChars === undefined ? {} : { sqlChars: entry.sqlChars }),
        code: entry.error?.code ?? '',
        message: entry.error?.message ?? '',
      });
      byExecution.set(entry.executionId, attempts);
    },
  };
  return { destination, failedAttempts: (executionId: string) => byExecution.get(executionId) ?? [] };
}

export async function startEvalService({ env, concurrency, stepTimeoutMs, databaseUrl, logFile, dataDir: givenDataDir }: EvalServiceOptions): Promise<EvalService> {
  const cleanups: (() => Promise<void>)[] = [];
  let cleaning: Promise<void> | undefined;
  // Once, however often it is asked for (a signal, then the end of the run).
  const cleanUp = () =>
    (cleaning ??= (async () => {
      for (const cleanup of cleanups.reverse()) await cleanup();
    })());
  try {
    const dataDir = givenDataDir ?? (await mkdtemp(join(tmpdir(), 'stepcast-eval-')));
    if (!givenDataDir) cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    // Checked before a database is made: without a model there is nothing to evaluate.
    let config = evalConfig(env, { dataDir, concurrency, stepTimeoutMs });
    if (!LlmClient.isConfigured(config.llm)) throw new EvalSetupError(noModelMessage());
    if (databaseUrl) {
      const database = await createDatabaseBeside(databaseUrl);
      cleanups.push(database.drop);
      config = evalConfig(env, { dataDir, databaseUrl: database.url, concurrency, stepTimeoutMs });
    }
    const logStream = logFile ? createWriteStream(logFile, { flags: 'w' }) : undefined;
    if (logStream) cleanups.push(() => new Promise<void>((resolve) => logStream.end(resolve)));
    const collector = attemptCollector(logStream);
    // Loaded once the model is known to be configured: a run that cannot start says so without loading the service.
    const { startStepcast } = await import('../src/app.js');
    // At debug: the SQL step logs its failed statements at that level.
    const app: StepcastApp = await startStepcast(config, createLogger('debug', collector.destination));
    cleanups.push(() => app.close());
    const [tenant] = await app.database.db.select({ dbRole: tenants.dbRole }).from(tenants).where(eq(tenants.id, DEMO_TENANT_ID));
    if (!tenant?.dbRole) throw new EvalSetupError('the demo tenant has no database role');
    const role = tenant.dbRole;
    const runRefusedStatement = async (sql: string, earlier: EarlierRecords[]): Promise<ResultSet> => {
      const notRun = await reasonNotToRun(app.database, sql);
      if (notRun) throw new RefusedStatementNotRun(notRun);
      const steps = earlier.map((step) => ({
        ...step,
        kind: 'SQL' as const,
        queryContext: '',
        entity: null,
        recordCount: step.records.length,
        sample: [],
        heapBytes: 0,
      }));
      const answer = await app.database.runTenantQuery({
        statement: sql.trim().replace(/;[\s;]*$/, ''),
        relations: buildStepRelations(steps, steps.map((step) => stepRelationName(step.index))),
        role,
        searchPath: DEMO_TENANT_SCHEMA,
        timeoutMs: REFUSED_STATEMENT_TIMEOUT_MS,
        limits: {
          rowCap: config.executor.rowCap,
          rowMaxBytes: config.executor.rowMaxBytes,
          readMaxBytes: config.executor.stepMaxBytes,
          workMemMb: config.executor.sqlWorkMemMb,
          tempFileLimitMb: config.executor.sqlTempFileLimitMb,
        },
      });
      const columns = describeColumns(answer.columns);
      return resultSetOf(
        columns.map((column) => column.name),
        toJsonRecords(answer.rows, columns),
      );
    };
    return {
      url: app.url,
      backend: app.database.kind,
      config,
      hooks: { failedAttempts: collector.failedAttempts, runRefusedStatement },
      close: cleanUp,
    };
  } catch (error) {
    await cleanUp();
    throw error;
  }
}
