import { isIPv4 } from 'node:net';
import { z } from 'zod';

/** STEP_PROGRESS updates a step publishes at most (sandbox.maxProgressReports); the query cost counts on it. */
export const MAX_PROGRESS_REPORTS = 100;

const integer = (fallback: number, min: number, max: number) =>
  z.coerce.number().int().min(min).max(max).default(fallback);

const onOff = z.enum(['on', 'off']);

/**
 * Unset: nothing is sent, and the model server uses its own default. Set but blank is refused: coerced, it would
 * be a temperature of 0 sent without a word.
 */
const sampling = (what: string, valid: (value: number) => boolean) =>
  z.string().trim().min(1, `must be ${what}, or unset`).transform(Number).refine(valid, `must be ${what}, or unset`).optional();
const temperature = sampling('a number from 0 to 2', (value) => value >= 0 && value <= 2);
const maxTokens = sampling('a whole number of tokens from 1 to 1000000', (value) => Number.isInteger(value) && value >= 1 && value <= 1_000_000);

/** The shortest stepTimeoutMs a client, or the settings, may ask for. */
const MIN_STEP_TIMEOUT_MS = 100;

const environmentSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  PORT: integer(4000, 0, 65535),
  HOST: z.string().min(1).default('127.0.0.1'),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL')
    .optional(),
  DATABASE_POOL_SIZE: integer(10, 1, 200),
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL')
    .optional(),
  STEPCAST_REDIS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9:_-]{1,64}$/, 'letters, digits, ":", "_" or "-", at most 64')
    .default('stepcast:'),
  STEPCAST_ROLE: z.enum(['all', 'api', 'worker']).default('all'),
  STEPCAST_QUEUE_POLL_MS: integer(2_000, 50, 60_000),
  DATA_DIR: z.string().min(1).default('./data'),
  STEPCAST_PGLITE_MAX_MEMORY_MB: integer(512, 256, 4096),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  STEPCAST_DEMO_USERS: integer(2000, 10, 5_000_000),
  STEPCAST_MAX_CONCURRENT_EXECUTIONS: integer(4, 1, 256),
  STEPCAST_STEP_TIMEOUT_MS: integer(10_000, MIN_STEP_TIMEOUT_MS, 600_000),
  STEPCAST_LEASE_TTL_MS: integer(10_000, 300, 600_000),
  STEPCAST_MAX_RESUMES: integer(3, 0, 1_000),
  STEPCAST_RECOVERY_INTERVAL_MS: integer(2_000, 0, 600_000),
  STEPCAST_ROW_CAP: integer(10_000, 1, 1_000_000),
  STEPCAST_RESULT_MAX_BYTES: integer(1_048_576, 1024, 64 * 1_048_576),
  STEPCAST_STEP_MAX_BYTES: integer(16 * 1_048_576, 1024, 1024 * 1_048_576),
  STEPCAST_ROW_MAX_BYTES: integer(1_048_576, 1024, 256 * 1_048_576),
  STEPCAST_EXECUTION_MAX_BYTES: integer(64 * 1_048_576, 1_048_576, 16 * 1024 * 1_048_576),
  STEPCAST_SQL_WORK_MEM_MB: integer(4, 1, 65_536),
  STEPCAST_SQL_TEMP_FILE_LIMIT_MB: integer(128, 1, 1_048_576),
  STEPCAST_MAX_STEP_TIMEOUT_MS: integer(120_000, MIN_STEP_TIMEOUT_MS, 3_600_000),
  STEPCAST_SHUTDOWN_GRACE_MS: integer(10_000, 0, 600_000),
  STEPCAST_IDEMPOTENCY_TTL_HOURS: integer(24, 1, 8_760),
  // Fractions of a day are allowed (0.5: twelve hours); 0 keeps every execution.
  STEPCAST_RETENTION_DAYS: z.coerce.number().min(0).max(36_500).default(0),
  STEPCAST_RETENTION_INTERVAL_MS: integer(600_000, 100, 86_400_000),
  STEPCAST_RETENTION_BATCH_SIZE: integer(200, 1, 10_000),
  OPENAI_API_KEY: z.string().min(1).optional(),
  OPENAI_BASE_URL: z.url({ protocol: /^https?$/ }).optional(),
  STEPCAST_MODEL: z.string().min(1).default('gpt-4o-mini'),
  STEPCAST_SQL_MODEL: z.string().min(1).optional(),
  STEPCAST_API_MODEL: z.string().min(1).optional(),
  STEPCAST_PLANNER_MODEL: z.string().min(1).optional(),
  STEPCAST_AGENT_TIMEOUT_MS: z.coerce.number().int().min(1_000).max(600_000).optional(),
  // Deprecated: the name STEPCAST_AGENT_TIMEOUT_MS had before it covered a whole agent call.
  STEPCAST_LLM_TIMEOUT_MS: z.coerce.number().int().min(1_000).max(600_000).optional(),
  STEPCAST_PLANNER_TIMEOUT_MS: integer(120_000, 1_000, 600_000),
  STEPCAST_LLM_MAX_RETRIES: integer(3, 0, 10),
  STEPCAST_LLM_OUTPUT: z.enum(['auto', 'json_schema', 'json_object', 'tools']).default('auto'),
  STEPCAST_TEMPERATURE: temperature,
  STEPCAST_SQL_TEMPERATURE: temperature,
  STEPCAST_API_TEMPERATURE: temperature,
  STEPCAST_PLANNER_TEMPERATURE: temperature,
  STEPCAST_MAX_TOKENS: maxTokens,
  STEPCAST_SQL_MAX_TOKENS: maxTokens,
  STEPCAST_API_MAX_TOKENS: maxTokens,
  STEPCAST_PLANNER_MAX_TOKENS: maxTokens,
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
  STEPCAST_API_MAX_PAGES: integer(20, 1, 1_000),
  // Metrics, traces and health (README: Metrics, traces and health).
  STEPCAST_METRICS: onOff.optional(),
  STEPCAST_METRICS_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  // Blank is unset: z.coerce would read '' (or '  ') as port 0, a random port.
  STEPCAST_METRICS_PORT: z.preprocess(
    (value) => (typeof value === 'string' && value.trim() === '' ? undefined : value),
    z.coerce.number().int().min(0).max(65535).optional(),
  ),
  STEPCAST_METRICS_HOST: z.string().trim().min(1).default('127.0.0.1'),
  OTEL_EXPORTER_OTLP_ENDPOINT: z.url({ protocol: /^https?$/ }).optional(),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: z.url({ protocol: /^https?$/ }).optional(),
  OTEL_SERVICE_NAME: z.string().min(1).default('stepcast'),
  // Authentication and secrets.
  STEPCAST_AUTH: onOff.optional(),
  STEPCAST_ENCRYPTION_KEY: z.string().min(1).optional(),
  STEPCAST_JWT_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  STEPCAST_JWT_JWKS_URL: z.url({ protocol: /^https?$/ }).optional(),
  STEPCAST_JWT_TENANT_CLAIM: z.string().min(1).default('stepcast_tenant'),
  STEPCAST_JWT_ISSUER: z.string().min(1).optional(),
  STEPCAST_JWT_AUDIENCE: z.string().min(1).optional(),
  STEPCAST_AUTH_RECHECK_MS: integer(5_000, 100, 300_000),
  STEPCAST_DEMO: onOff.optional(),
  // The admin API's credential (a token file in DATA_DIR when unset, outside production), and where the admin CLI finds the server.
  STEPCAST_ADMIN_TOKEN: z.string().min(32, 'must be at least 32 characters').optional(),
  STEPCAST_URL: z.url({ protocol: /^https?$/ }).optional(),
  // GraphQL limits.
  STEPCAST_GRAPHQL_MAX_DEPTH: integer(8, 1, 100),
  STEPCAST_GRAPHQL_MAX_COST: integer(5_000, 1, 1_000_000),
  STEPCAST_GRAPHQL_MAX_ALIASES: integer(15, 0, 1_000),
  STEPCAST_GRAPHQL_MAX_TOKENS: integer(2_000, 10, 1_000_000),
  STEPCAST_GRAPHQL_MAX_DIRECTIVES: integer(50, 0, 1_000),
  STEPCAST_GRAPHQL_MAX_MODEL_CALLS: integer(1, 1, 100),
  STEPCAST_MAX_BODY_BYTES: integer(1_048_576, 1_024, 64 * 1_048_576),
  STEPCAST_INTROSPECTION: onOff.optional(),
  STEPCAST_GRAPHIQL: onOff.optional(),
  // WebSocket limits.
  STEPCAST_WS_MAX_PAYLOAD_BYTES: integer(65_536, 1_024, 16 * 1_048_576),
  STEPCAST_WS_MAX_SUBSCRIPTIONS: integer(20, 1, 10_000),
  STEPCAST_WS_INIT_TIMEOUT_MS: integer(3_000, 100, 60_000),
  STEPCAST_WS_KEEPALIVE_MS: integer(15_000, 100, 600_000),
  // Origins whose pages may call the API from a browser (CORS), comma-separated.
  STEPCAST_CORS_ORIGINS: z.string().default(''),
  // Per-tenant shares of open connections.
  STEPCAST_TENANT_MAX_SOCKETS: integer(25, 1, 100_000),
  STEPCAST_TENANT_MAX_SUBSCRIPTIONS: integer(100, 1, 1_000_000),
  // Per-tenant limits.
  STEPCAST_TENANT_RATE_PER_MINUTE: integer(60, 1, 1_000_000),
  STEPCAST_TENANT_RATE_BURST: integer(10, 1, 1_000_000),
  STEPCAST_TENANT_MAX_CONCURRENT_EXECUTIONS: integer(2, 1, 256),
  // A call every 2 s sustained; the burst covers a whole executeQuery of 50 agent-written steps (1 + 50 calls).
  STEPCAST_TENANT_MODEL_CALLS_PER_MINUTE: integer(30, 1, 1_000_000),
  STEPCAST_TENANT_MODEL_CALLS_BURST: integer(60, 1, 1_000_000),
  // Input sizes.
  STEPCAST_PLAN_MAX_STEPS: integer(50, 1, 1_000),
  STEPCAST_MAX_QUERY_CONTEXT_CHARS: integer(4_000, 100, 1_000_000),
  STEPCAST_MAX_SQL_CHARS: integer(20_000, 100, 1_000_000),
  STEPCAST_MAX_CODE_CHARS: integer(50_000, 100, 1_000_000),
});

export interface Config {
  env: 'development' | 'production' | 'test';
  /**
   * What this process does (STEPCAST_ROLE): `all` serves GraphQL and runs executions; in a cluster, `api` only serves
   * GraphQL and `worker` only runs executions.
   */
  role: 'all' | 'api' | 'worker';
  /**
   * Set with DATABASE_URL and REDIS_URL: processes share the work through pg-boss on the PostgreSQL database and
   * their live updates and signals through Redis. Unset: one process, with its queue and bus in memory.
   */
  cluster: {
    redisUrl: string;
    /** Starts every Redis key and channel of this deployment: deployments (and test runs) sharing a Redis stay apart. */
    redisPrefix: string;
    queuePollMs: number;
  } | undefined;
  http: HttpConfig;
  observability: ObservabilityConfig;
  database:
    | {
        kind: 'pglite';
        dataDir: string | undefined;
        /** The embedded database's memory is the process's: past this, it is restarted to give it back. */
        maxMemoryMb: number;
      }
    | { kind: 'postgres'; url: string; poolSize: number };
  /** Where the embedded database and the development key file live. */
  dataDir: string;
  logLevel: string;
  /** enabled: the demo tenant and its dataset exist (always when auth is off: it is who every request acts as). */
  demo: { enabled: boolean; users: number; api: boolean; apiPort: number };
  executor: {
    maxConcurrentExecutions: number;
    stepTimeoutMs: number;
    rowCap: number;
    resultMaxBytes: number;
    /** Text bytes of a SQL result the database sends at most; the rest is not read (the step is truncated). */
    stepMaxBytes: number;
    /** Text bytes of one row of a SQL result; the database refuses a larger row (RESULT_TOO_LARGE). */
    rowMaxBytes: number;
    /** Heap bytes one execution may hold at once: records kept for later steps, and the running step's (RESULT_TOO_LARGE). */
    executionMaxBytes: number;
    /** work_mem and temp_file_limit of every tenant statement. */
    sqlWorkMemMb: number;
    sqlTempFileLimitMb: number;
    maxStepTimeoutMs: number;
    defaultSampleSize: number;
    /** JSON bytes of a step's sample at most (samples travel in every prompt and event). */
    sampleMaxBytes: number;
    /** How long an execution's lease holds unless its worker renews it; a lapsed one is continued by another. */
    leaseTtlMs: number;
    /** Resumes after interruptions an execution may have before it fails INTERRUPTED. */
    maxResumes: number;
    /**
     * How often a worker looks for executions to take up (lapsed leases, timed-out approvals, ones queued
     * elsewhere); 0: only when it starts.
     */
    recoveryIntervalMs: number;
    /** How long an idempotency key answers with the execution it made (STEPCAST_IDEMPOTENCY_TTL_HOURS). */
    idempotencyTtlMs: number;
    /**
     * The longest one planner call may take, every retry and the corrective round included: an executeQuery's
     * key still without its execution after this was left by a stopped process, and a new request may take it.
     */
    plannerMaxMs: number;
  };
  shutdownGraceMs: number;
  /** Deleting finished executions past an age (STEPCAST_RETENTION_DAYS); undefined: every execution is kept. */
  retention: RetentionConfig | undefined;
  llm: LlmConfig;
  sandbox: SandboxConfig;
  auth: AuthConfig;
  /** 32 bytes that encrypt tenant API credentials at rest; undefined: a key file in DATA_DIR (never in production). */
  encryptionKey: Buffer | undefined;
  admin: {
    /** The admin API's token (STEPCAST_ADMIN_TOKEN); undefined: a token file in DATA_DIR, or (in production) no admin API. */
    token: string | undefined;
    /** Where the admin CLI finds a running server (STEPCAST_URL); undefined: the record in DATA_DIR, if any. */
    serverUrl: string | undefined;
  };
  graphql: GraphQLLimits;
  websocket: WebSocketLimits;
  tenantLimits: TenantLimits;
  inputLimits: InputLimits;
  tenantConnections: TenantConnectionLimits;
}

export interface RetentionConfig {
  /** A finished execution is deleted, with its steps and events, this long after it finished. */
  maxAgeMs: number;
  /** How often a process looks for executions to delete (and once when it starts). */
  intervalMs: number;
  /** Executions deleted per statement: each is its own short transaction, so runs never wait long behind one. */
  batchSize: number;
}

export interface ObservabilityConfig {
  /** undefined: no /metrics anywhere (STEPCAST_METRICS=off; the default in production). */
  metrics:
    | {
        /** When set, a scrape must send `Authorization: Bearer <token>`. */
        token: string | undefined;
        /** When set, /metrics (with /health and /ready) is served on its own listener on this port, and not on PORT. */
        port: number | undefined;
        /** The address that listener binds to (STEPCAST_METRICS_HOST, loopback unless set). */
        host: string;
      }
    | undefined;
  /** undefined: no tracing SDK is started and every span is a no-op. */
  tracing: { tracesUrl: string; serviceName: string } | undefined;
}

export interface HttpConfig {
  port: number;
  host: string;
  /** Exact origins (scheme://host[:port]) whose pages may call the API from a browser; empty: none. */
  corsOrigins: string[];
}

/** Per tenant and per process, like the rate limits. */
export interface TenantConnectionLimits {
  /** Open graphql-ws sockets of one tenant; the next is closed after authentication. */
  maxSockets: number;
  /** Open subscriptions of one tenant, graphql-ws and SSE together; the next is answered with an error. */
  maxSubscriptions: number;
}

export interface AuthConfig {
  /** off: every request acts as the demo tenant (refused in production). */
  enabled: boolean;
  jwt: JwtConfig | undefined;
  /** How often open WebSockets re-check that their credential still stands (revoked keys, expired tokens). */
  recheckMs: number;
}

export interface JwtConfig {
  secret: string | undefined;
  jwksUrl: string | undefined;
  tenantClaim: string;
  issuer: string | undefined;
  audience: string | undefined;
}

export interface GraphQLLimits {
  maxDepth: number;
  maxCost: number;
  maxAliases: number;
  maxTokens: number;
  maxDirectives: number;
  /** Fields that call a model (planQuery, executeQuery) one operation may select. */
  maxModelCalls: number;
  maxBodyBytes: number;
  introspection: boolean;
  graphiql: boolean;
}

export interface WebSocketLimits {
  maxPayloadBytes: number;
  maxSubscriptions: number;
  initTimeoutMs: number;
  keepAliveMs: number;
}

export interface TenantLimits {
  /** executePlan calls a tenant may make per minute, refilled continuously (token bucket). */
  ratePerMinute: number;
  burst: number;
  /** Executions of one tenant that run at once; the rest wait QUEUED, in order. */
  maxConcurrentExecutions: number;
  /** Model requests a tenant may cause per minute (planner and agents, one per agent call), refilled continuously. */
  modelCallsPerMinute: number;
  modelCallsBurst: number;
}

export interface InputLimits {
  maxSteps: number;
  maxQueryContextChars: number;
  maxSqlChars: number;
  maxCodeChars: number;
  /** plan.query, and the question given to planQuery / executeQuery. */
  queryChars: number;
  reasoningChars: number;
  entityChars: number;
  correlationIdChars: number;
  idempotencyKeyChars: number;
  maxSampleSize: number;
  minStepTimeoutMs: number;
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
  /** Pages one `paginate: true` call follows; each page is also a request. */
  maxPages: number;
  /** progress() reports passed on per step; the engine publishes no more STEP_PROGRESS updates than this. */
  maxProgressReports: number;
  /** A progress message is cut to this many characters. */
  maxProgressChars: number;
}

export type AgentName = 'sql' | 'api' | 'planner';

/** How agents ask for structured output (STEPCAST_LLM_OUTPUT); auto falls back, per model, from json_schema to json_object to tools. */
export type LlmOutputMode = 'auto' | 'json_schema' | 'json_object' | 'tools';

/** What one agent sends besides its prompt; undefined: not sent, the model server's default applies. */
export interface AgentSampling {
  temperature: number | undefined;
  maxTokens: number | undefined;
}

export interface LlmConfig {
  apiKey: string | undefined;
  baseUrl: string | undefined;
  models: Record<AgentName, string>;
  sampling: Record<AgentName, AgentSampling>;
  output: LlmOutputMode;
  /**
   * The most one agent call of a step may take (STEPCAST_AGENT_TIMEOUT_MS), every request, retry and the
   * corrective round included; it does not count against the step's stepTimeoutMs.
   */
  agentTimeoutMs: number;
  /** The same for the planner (STEPCAST_PLANNER_TIMEOUT_MS): planQuery and the planning of executeQuery. */
  plannerTimeoutMs: number;
  /** The agent timeout was read from the deprecated STEPCAST_LLM_TIMEOUT_MS (the service says so at start). */
  deprecatedTimeoutSetting: boolean;
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
  const production = env.NODE_ENV === 'production';
  const authEnabled = (env.STEPCAST_AUTH ?? (production ? 'on' : 'off')) === 'on';
  if (production && !authEnabled) {
    throw new ConfigError('STEPCAST_AUTH=off is refused when NODE_ENV=production: every request would act as the demo tenant');
  }
  const encryptionKey = env.STEPCAST_ENCRYPTION_KEY === undefined ? undefined : parseKey(env.STEPCAST_ENCRYPTION_KEY);
  if (production && !encryptionKey) {
    throw new ConfigError('STEPCAST_ENCRYPTION_KEY is required when NODE_ENV=production (32 bytes, base64 or hex)');
  }
  const jwtConfigured = env.STEPCAST_JWT_SECRET !== undefined || env.STEPCAST_JWT_JWKS_URL !== undefined;
  if (env.STEPCAST_JWT_SECRET !== undefined && env.STEPCAST_JWT_JWKS_URL !== undefined) {
    throw new ConfigError('set one of STEPCAST_JWT_SECRET (HS256) and STEPCAST_JWT_JWKS_URL, not both');
  }
  if (env.STEPCAST_ROLE !== 'all' && !(env.DATABASE_URL && env.REDIS_URL)) {
    throw new ConfigError(
      `STEPCAST_ROLE=${env.STEPCAST_ROLE} needs DATABASE_URL and REDIS_URL: the processes of a cluster share one PostgreSQL (the store and the queue) and one Redis (the bus)`,
    );
  }
  if (env.REDIS_URL && !env.DATABASE_URL) {
    throw new ConfigError('REDIS_URL needs DATABASE_URL: a cluster shares one PostgreSQL, which the embedded PGlite cannot be');
  }
  return {
    env: env.NODE_ENV,
    role: env.STEPCAST_ROLE,
    cluster:
      env.DATABASE_URL && env.REDIS_URL
        ? { redisUrl: env.REDIS_URL, redisPrefix: env.STEPCAST_REDIS_PREFIX, queuePollMs: env.STEPCAST_QUEUE_POLL_MS }
        : undefined,
    http: { port: env.PORT, host: env.HOST, corsOrigins: parseOrigins(env.STEPCAST_CORS_ORIGINS) },
    observability: observabilityConfig(env, production),
    database: env.DATABASE_URL
      ? { kind: 'postgres', url: env.DATABASE_URL, poolSize: env.DATABASE_POOL_SIZE }
      : { kind: 'pglite', dataDir: env.DATA_DIR, maxMemoryMb: env.STEPCAST_PGLITE_MAX_MEMORY_MB },
    dataDir: env.DATA_DIR,
    logLevel: env.LOG_LEVEL,
    demo: {
      enabled: !authEnabled || (env.STEPCAST_DEMO ?? (production ? 'off' : 'on')) === 'on',
      users: env.STEPCAST_DEMO_USERS,
      api: env.STEPCAST_DEMO_API === 'on',
      apiPort: env.STEPCAST_DEMO_API_PORT,
    },
    executor: {
      maxConcurrentExecutions: env.STEPCAST_MAX_CONCURRENT_EXECUTIONS,
      stepTimeoutMs: env.STEPCAST_STEP_TIMEOUT_MS,
      rowCap: env.STEPCAST_ROW_CAP,
      resultMaxBytes: env.STEPCAST_RESULT_MAX_BYTES,
      stepMaxBytes: env.STEPCAST_STEP_MAX_BYTES,
      rowMaxBytes: env.STEPCAST_ROW_MAX_BYTES,
      executionMaxBytes: env.STEPCAST_EXECUTION_MAX_BYTES,
      sqlWorkMemMb: env.STEPCAST_SQL_WORK_MEM_MB,
      sqlTempFileLimitMb: env.STEPCAST_SQL_TEMP_FILE_LIMIT_MB,
      maxStepTimeoutMs: env.STEPCAST_MAX_STEP_TIMEOUT_MS,
      defaultSampleSize: 3,
      sampleMaxBytes: 64 * 1024,
      leaseTtlMs: env.STEPCAST_LEASE_TTL_MS,
      maxResumes: env.STEPCAST_MAX_RESUMES,
      recoveryIntervalMs: env.STEPCAST_RECOVERY_INTERVAL_MS,
      idempotencyTtlMs: env.STEPCAST_IDEMPOTENCY_TTL_HOURS * 3_600_000,
      plannerMaxMs: plannerMaxMs(env.STEPCAST_PLANNER_TIMEOUT_MS),
    },
    shutdownGraceMs: env.STEPCAST_SHUTDOWN_GRACE_MS,
    retention:
      env.STEPCAST_RETENTION_DAYS > 0
        ? {
            maxAgeMs: Math.max(1, Math.round(env.STEPCAST_RETENTION_DAYS * 86_400_000)),
            intervalMs: env.STEPCAST_RETENTION_INTERVAL_MS,
            batchSize: env.STEPCAST_RETENTION_BATCH_SIZE,
          }
        : undefined,
    llm: {
      apiKey: env.OPENAI_API_KEY,
      baseUrl: env.OPENAI_BASE_URL,
      models: {
        sql: env.STEPCAST_SQL_MODEL ?? env.STEPCAST_MODEL,
        api: env.STEPCAST_API_MODEL ?? env.STEPCAST_MODEL,
        planner: env.STEPCAST_PLANNER_MODEL ?? env.STEPCAST_MODEL,
      },
      sampling: {
        sql: { temperature: env.STEPCAST_SQL_TEMPERATURE ?? env.STEPCAST_TEMPERATURE, maxTokens: env.STEPCAST_SQL_MAX_TOKENS ?? env.STEPCAST_MAX_TOKENS },
        api: { temperature: env.STEPCAST_API_TEMPERATURE ?? env.STEPCAST_TEMPERATURE, maxTokens: env.STEPCAST_API_MAX_TOKENS ?? env.STEPCAST_MAX_TOKENS },
        planner: {
          temperature: env.STEPCAST_PLANNER_TEMPERATURE ?? env.STEPCAST_TEMPERATURE,
          maxTokens: env.STEPCAST_PLANNER_MAX_TOKENS ?? env.STEPCAST_MAX_TOKENS,
        },
      },
      output: env.STEPCAST_LLM_OUTPUT,
      agentTimeoutMs: env.STEPCAST_AGENT_TIMEOUT_MS ?? env.STEPCAST_LLM_TIMEOUT_MS ?? 60_000,
      plannerTimeoutMs: env.STEPCAST_PLANNER_TIMEOUT_MS,
      deprecatedTimeoutSetting: env.STEPCAST_AGENT_TIMEOUT_MS === undefined && env.STEPCAST_LLM_TIMEOUT_MS !== undefined,
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
      maxPages: env.STEPCAST_API_MAX_PAGES,
      maxProgressReports: MAX_PROGRESS_REPORTS,
      maxProgressChars: 1_000,
    },
    auth: {
      enabled: authEnabled,
      jwt: jwtConfigured
        ? {
            secret: env.STEPCAST_JWT_SECRET,
            jwksUrl: env.STEPCAST_JWT_JWKS_URL,
            tenantClaim: env.STEPCAST_JWT_TENANT_CLAIM,
            issuer: env.STEPCAST_JWT_ISSUER,
            audience: env.STEPCAST_JWT_AUDIENCE,
          }
        : undefined,
      recheckMs: env.STEPCAST_AUTH_RECHECK_MS,
    },
    encryptionKey,
    admin: { token: env.STEPCAST_ADMIN_TOKEN, serverUrl: env.STEPCAST_URL },
    graphql: {
      maxDepth: env.STEPCAST_GRAPHQL_MAX_DEPTH,
      maxCost: env.STEPCAST_GRAPHQL_MAX_COST,
      maxAliases: env.STEPCAST_GRAPHQL_MAX_ALIASES,
      maxTokens: env.STEPCAST_GRAPHQL_MAX_TOKENS,
      maxDirectives: env.STEPCAST_GRAPHQL_MAX_DIRECTIVES,
      maxModelCalls: env.STEPCAST_GRAPHQL_MAX_MODEL_CALLS,
      maxBodyBytes: env.STEPCAST_MAX_BODY_BYTES,
      introspection: (env.STEPCAST_INTROSPECTION ?? (production ? 'off' : 'on')) === 'on',
      graphiql: (env.STEPCAST_GRAPHIQL ?? (production ? 'off' : 'on')) === 'on',
    },
    websocket: {
      maxPayloadBytes: env.STEPCAST_WS_MAX_PAYLOAD_BYTES,
      maxSubscriptions: env.STEPCAST_WS_MAX_SUBSCRIPTIONS,
      initTimeoutMs: env.STEPCAST_WS_INIT_TIMEOUT_MS,
      keepAliveMs: env.STEPCAST_WS_KEEPALIVE_MS,
    },
    tenantLimits: {
      ratePerMinute: env.STEPCAST_TENANT_RATE_PER_MINUTE,
      burst: env.STEPCAST_TENANT_RATE_BURST,
      maxConcurrentExecutions: env.STEPCAST_TENANT_MAX_CONCURRENT_EXECUTIONS,
      modelCallsPerMinute: env.STEPCAST_TENANT_MODEL_CALLS_PER_MINUTE,
      modelCallsBurst: env.STEPCAST_TENANT_MODEL_CALLS_BURST,
    },
    inputLimits: {
      maxSteps: env.STEPCAST_PLAN_MAX_STEPS,
      maxQueryContextChars: env.STEPCAST_MAX_QUERY_CONTEXT_CHARS,
      maxSqlChars: env.STEPCAST_MAX_SQL_CHARS,
      maxCodeChars: env.STEPCAST_MAX_CODE_CHARS,
      queryChars: 4_000,
      reasoningChars: 10_000,
      entityChars: 200,
      correlationIdChars: 128,
      idempotencyKeyChars: 200,
      maxSampleSize: 100,
      minStepTimeoutMs: MIN_STEP_TIMEOUT_MS,
    },
    tenantConnections: {
      maxSockets: env.STEPCAST_TENANT_MAX_SOCKETS,
      maxSubscriptions: env.STEPCAST_TENANT_MAX_SUBSCRIPTIONS,
    },
  };
}

/** The planner's own deadline covers its requests, retries and corrective round; a minute more for the rest (the tenant's schema, the store). */
function plannerMaxMs(plannerTimeoutMs: number): number {
  return plannerTimeoutMs + 60_000;
}

/** Heap the service needs besides what executions hold (schema, connections, streams); it uses about 80 MiB idle. */
export const HEAP_HEADROOM_BYTES = 128 * 1_048_576;

/** The most that running executions may hold on the heap at once: each its budget, plus the text of the result it is reading. */
export function executionHeapBound(executor: Config['executor']): number {
  return executor.maxConcurrentExecutions * (executor.executionMaxBytes + executor.stepMaxBytes);
}

/** Refuses settings under which running executions could hold more than the heap may grow to (--max-old-space-size). */
export function checkHeapBound(config: Config, heapLimitBytes: number): void {
  const mib = (bytes: number) => `${Math.round(bytes / 1_048_576)} MiB`;
  const needed = executionHeapBound(config.executor) + HEAP_HEADROOM_BYTES;
  if (needed <= heapLimitBytes) return;
  throw new ConfigError(
    `STEPCAST_MAX_CONCURRENT_EXECUTIONS x (STEPCAST_EXECUTION_MAX_BYTES + STEPCAST_STEP_MAX_BYTES) + ${mib(HEAP_HEADROOM_BYTES)} is ` +
      `${mib(needed)}, more than this process's heap limit of ${mib(heapLimitBytes)}: lower them, or raise node's --max-old-space-size`,
  );
}

function observabilityConfig(env: z.infer<typeof environmentSchema>, production: boolean): ObservabilityConfig {
  const metricsOn = (env.STEPCAST_METRICS ?? (production ? 'off' : 'on')) === 'on';
  const port = env.STEPCAST_METRICS_PORT;
  const host = env.STEPCAST_METRICS_HOST;
  if (metricsOn && port !== undefined && port !== 0 && port === env.PORT) {
    throw new ConfigError(`STEPCAST_METRICS_PORT is ${port}, the same as PORT: give metrics a port of their own, or leave it unset to serve them on PORT`);
  }
  if (metricsOn && production && !env.STEPCAST_METRICS_TOKEN) {
    // Without a token, only a fixed port on a loopback address keeps the figures off the network.
    if (port === undefined) {
      throw new ConfigError(
        'STEPCAST_METRICS=on when NODE_ENV=production needs STEPCAST_METRICS_TOKEN (a bearer token scrapes must send) or STEPCAST_METRICS_PORT (a port of its own, on the loopback address STEPCAST_METRICS_HOST)',
      );
    }
    if (port === 0) {
      throw new ConfigError('STEPCAST_METRICS_PORT=0 (a random port) when NODE_ENV=production needs STEPCAST_METRICS_TOKEN: set a fixed port, or a token');
    }
    if (!isLoopback(host)) {
      throw new ConfigError(
        `STEPCAST_METRICS_HOST=${host} is not a loopback address: when NODE_ENV=production, metrics served there need STEPCAST_METRICS_TOKEN`,
      );
    }
  }
  // The OTLP convention: the traces-specific endpoint is used as it is, the general one gets /v1/traces appended.
  const tracesUrl =
    env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ??
    (env.OTEL_EXPORTER_OTLP_ENDPOINT ? `${env.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/+$/, '')}/v1/traces` : undefined);
  return {
    metrics: metricsOn ? { token: env.STEPCAST_METRICS_TOKEN, port, host } : undefined,
    tracing: tracesUrl ? { tracesUrl, serviceName: env.OTEL_SERVICE_NAME } : undefined,
  };
}

/** 127.0.0.0/8, ::1 and localhost: addresses only this machine reaches. */
function isLoopback(host: string): boolean {
  const name = host.toLowerCase();
  if (name === 'localhost' || name === '::1' || name === '0:0:0:0:0:0:0:1') return true;
  const v4 = name.replace(/^::ffff:/, '');
  return isIPv4(v4) && v4.startsWith('127.');
}

/** `https://app.example.com,http://localhost:5173`: each an exact origin, as a browser sends it in `Origin`. */
function parseOrigins(text: string): string[] {
  const origins = text
    .split(',')
    .map((origin) => origin.trim())
    .filter((origin) => origin.length > 0);
  for (const origin of origins) {
    let parsed: URL | undefined;
    try {
      parsed = new URL(origin);
    } catch {
      // reported below
    }
    if (!parsed || !/^https?:$/.test(parsed.protocol) || parsed.origin !== origin) {
      throw new ConfigError(
        `STEPCAST_CORS_ORIGINS: "${origin}" is not an exact origin; write scheme://host[:port] with no path or trailing slash, e.g. https://app.example.com`,
      );
    }
  }
  return origins;
}

/** A 32-byte key written as base64 (44 characters) or hex (64 characters). */
function parseKey(text: string): Buffer {
  const key = /^[0-9a-fA-F]{64}$/.test(text) ? Buffer.from(text, 'hex') : Buffer.from(text, 'base64');
  if (key.length !== 32) throw new ConfigError('STEPCAST_ENCRYPTION_KEY must be 32 bytes, written as base64 or hex');
  return key;
}
