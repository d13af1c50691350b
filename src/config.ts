import { z } from 'zod';

const integer = (fallback: number, min: number, max: number) =>
  z.coerce.number().int().min(min).max(max).default(fallback);

const environmentSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  PORT: integer(4000, 0, 65535),
  HOST: z.string().min(1).default('127.0.0.1'),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL')
    .optional(),
  DATABASE_POOL_SIZE: integer(10, 1, 200),
  DATA_DIR: z.string().min(1).default('./data'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  STEPCAST_DEMO_USERS: integer(2000, 10, 5_000_000),
  STEPCAST_MAX_CONCURRENT_EXECUTIONS: integer(4, 1, 256),
  STEPCAST_STEP_TIMEOUT_MS: integer(10_000, 100, 600_000),
  STEPCAST_ROW_CAP: integer(10_000, 1, 1_000_000),
  STEPCAST_RESULT_MAX_BYTES: integer(1_048_576, 1024, 64 * 1_048_576),
  STEPCAST_SHUTDOWN_GRACE_MS: integer(10_000, 0, 600_000),
  OPENAI_API_KEY: z.string().min(1).optional(),
  OPENAI_BASE_URL: z.url({ protocol: /^https?$/ }).optional(),
  STEPCAST_MODEL: z.string().min(1).default('gpt-4o-mini'),
  STEPCAST_SQL_MODEL: z.string().min(1).optional(),
  STEPCAST_API_MODEL: z.string().min(1).optional(),
  STEPCAST_PLANNER_MODEL: z.string().min(1).optional(),
  STEPCAST_LLM_TIMEOUT_MS: integer(60_000, 1_000, 600_000),
  STEPCAST_LLM_MAX_RETRIES: integer(3, 0, 10),
  STEPCAST_SQL_REPAIR_ROUNDS: integer(1, 0, 5),
});

export interface Config {
  env: 'development' | 'production' | 'test';
  http: { port: number; host: string };
  database:
    | { kind: 'pglite'; dataDir: string | undefined }
    | { kind: 'postgres'; url: string; poolSize: number };
  logLevel: string;
  demo: { users: number };
  executor: {
    maxConcurrentExecutions: number;
    stepTimeoutMs: number;
    rowCap: number;
    resultMaxBytes: number;
    defaultSampleSize: number;
  };
  shutdownGraceMs: number;
  llm: LlmConfig;
}

export type AgentName = 'sql' | 'api' | 'planner';

export interface LlmConfig {
  apiKey: string | undefined;
  baseUrl: string | undefined;
  models: Record<AgentName, string>;
  timeoutMs: number;
  maxRetries: number;
  sqlRepairRounds: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Reads the environment once; nothing else in the service looks at process.env. */
export function loadConfig(environment: NodeJS.ProcessEnv = process.env): Config {
  const parsed = environmentSchema.safeParse(environment);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
    throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
  }
  const env = parsed.data;
  return {
    env: env.NODE_ENV,
    http: { port: env.PORT, host: env.HOST },
    database: env.DATABASE_URL
      ? { kind: 'postgres', url: env.DATABASE_URL, poolSize: env.DATABASE_POOL_SIZE }
      : { kind: 'pglite', dataDir: env.DATA_DIR },
    logLevel: env.LOG_LEVEL,
    demo: { users: env.STEPCAST_DEMO_USERS },
    executor: {
      maxConcurrentExecutions: env.STEPCAST_MAX_CONCURRENT_EXECUTIONS,
      stepTimeoutMs: env.STEPCAST_STEP_TIMEOUT_MS,
      rowCap: env.STEPCAST_ROW_CAP,
      resultMaxBytes: env.STEPCAST_RESULT_MAX_BYTES,
      defaultSampleSize: 3,
    },
    shutdownGraceMs: env.STEPCAST_SHUTDOWN_GRACE_MS,
    llm: {
      apiKey: env.OPENAI_API_KEY,
      baseUrl: env.OPENAI_BASE_URL,
      models: {
        sql: env.STEPCAST_SQL_MODEL ?? env.STEPCAST_MODEL,
        api: env.STEPCAST_API_MODEL ?? env.STEPCAST_MODEL,
        planner: env.STEPCAST_PLANNER_MODEL ?? env.STEPCAST_MODEL,
      },
      timeoutMs: env.STEPCAST_LLM_TIMEOUT_MS,
      maxRetries: env.STEPCAST_LLM_MAX_RETRIES,
      sqlRepairRounds: env.STEPCAST_SQL_REPAIR_ROUNDS,
    },
  };
}
