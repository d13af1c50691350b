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
  STEPCAST_STEP_MAX_BYTES: integer(16 * 1_048_576, 1024, 1024 * 1_048_576),
  STEPCAST_MAX_STEP_TIMEOUT_MS: integer(120_000, 100, 3_600_000),
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
  STEPCAST_DEMO_API: z.enum(['on', 'off']).default('on'),
  STEPCAST_DEMO_API_PORT: integer(0, 0, 65535),
  STEPCAST_SANDBOX_MEMORY_MB: integer(64, 8, 4096),
  STEPCAST_SANDBOX_CPU_MS: integer(5_000, 10, 600_000),
  STEPCAST_SANDBOX_MAX_RESULT_BYTES: integer(5 * 1_048_576, 1024, 256 * 1_048_576),
  STEPCAST_API_MAX_REQUESTS: integer(200, 1, 100_000),
  STEPCAST_API_MAX_CONCURRENT_REQUESTS: integer(5, 1, 100),
  STEPCAST_API_MAX_RESPONSE_BYTES: integer(5 * 1_048_576, 1024, 256 * 1_048_576),
  STEPCAST_API_REQUEST_TIMEOUT_MS: integer(10_000, 100, 600_000),
});

export interface Config {
  env: 'development' | 'production' | 'test';
  http: { port: number; host: string };
  database:
    | { kind: 'pglite'; dataDir: string | undefined }
    | { kind: 'postgres'; url: string; poolSize: number };
  logLevel: string;
  demo: { users: number; api: boolean; apiPort: number };
  executor: {
    maxConcurrentExecutions: number;
    stepTimeoutMs: number;
    rowCap: number;
    resultMaxBytes: number;
    stepMaxBytes: number;
    maxStepTimeoutMs: number;
    defaultSampleSize: number;
  };
  shutdownGraceMs: number;
  llm: LlmConfig;
  sandbox: SandboxConfig;
}

export interface SandboxConfig {
  memoryBytes: number;
  cpuTimeMs: number;
  maxResultBytes: number;
  maxLogBytes: number;
  maxRequests: number;
  maxConcurrentRequests: number;
  maxResponseBytes: number;
  requestTimeoutMs: number;
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
    demo: { users: env.STEPCAST_DEMO_USERS, api: env.STEPCAST_DEMO_API === 'on', apiPort: env.STEPCAST_DEMO_API_PORT },
    executor: {
      maxConcurrentExecutions: env.STEPCAST_MAX_CONCURRENT_EXECUTIONS,
      stepTimeoutMs: env.STEPCAST_STEP_TIMEOUT_MS,
      rowCap: env.STEPCAST_ROW_CAP,
      resultMaxBytes: env.STEPCAST_RESULT_MAX_BYTES,
      stepMaxBytes: env.STEPCAST_STEP_MAX_BYTES,
      maxStepTimeoutMs: env.STEPCAST_MAX_STEP_TIMEOUT_MS,
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
    sandbox: {
      memoryBytes: env.STEPCAST_SANDBOX_MEMORY_MB * 1_048_576,
      cpuTimeMs: env.STEPCAST_SANDBOX_CPU_MS,
      maxResultBytes: env.STEPCAST_SANDBOX_MAX_RESULT_BYTES,
      maxLogBytes: 64 * 1024,
      maxRequests: env.STEPCAST_API_MAX_REQUESTS,
      maxConcurrentRequests: env.STEPCAST_API_MAX_CONCURRENT_REQUESTS,
      maxResponseBytes: env.STEPCAST_API_MAX_RESPONSE_BYTES,
      requestTimeoutMs: env.STEPCAST_API_REQUEST_TIMEOUT_MS,
    },
  };
}
