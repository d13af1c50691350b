import type { Config } from './config.js';
import type { Database } from './db/client.js';
import { DEMO_TENANT_ID, ensureDemoTenant } from './db/demo-data.js';
import type { OpenedPgliteDirectory } from './db/pglite-open.js';
import { openDatabaseWhenReachable } from './db/reconnect.js';
import { RetentionSweeper } from './db/retention.js';
import { isDatabaseUnavailable } from './db/unavailable.js';
import { startDemoTenantApi } from './demo-api/demo-tenant.js';
import { LlmClient } from './agents/llm-client.js';
import { loadAdminToken } from './admin/admin-token.js';
import { databaseIdentity, newInstanceId, recordRunningServer } from './admin/server-record.js';
import { databaseAdmin } from './admin/tenants.js';
import { createAuthenticator } from './auth/authenticator.js';
import { loadSecretBox, type SecretBox } from './auth/secrets.js';
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import { DrizzleExecutionStore } from './db/execution-store.js';
import { createClusterDispatcher } from './cluster/cluster-dispatcher.js';
import { createRedisBus, type RedisBus } from './cluster/redis-bus.js';
import { startWorkQueue, type WorkQueue } from './cluster/work-queue.js';
import type { Redis } from 'ioredis';
import { rateLimitSettings } from './executor/rate-limiter.js';
import { createRedisTenantLimits } from './executor/redis-rate-limits.js';
import { createInProcessDispatcher } from './executor/dispatcher.js';
import { Executor } from './executor/executor.js';
import { IdempotentSubmits } from './executor/idempotency.js';
import { createInProcessStepUpdateBus } from './executor/step-update-bus.js';
import { createApiStepHandler } from './executor/steps/api.js';
import { createSqlStepHandler } from './executor/steps/sql.js';
import { TenantKnowledge } from './executor/tenant-knowledge.js';
import type { Logger } from './logger.js';
import { startObservabilityListener, type ObservabilityListener, type Readiness } from './observability/endpoints.js';
import { StepcastMetrics } from './observability/metrics.js';
import { startTracing } from './observability/tracing-sdk.js';
import { createGraphQLServer } from './server.js';

const READINESS_TIMEOUT_MS = 2_000;
/** Past the count's statement_timeout, for the database's cancel to come back before the scrape gives up on it. */
const COUNT_GRACE_MS = 250;
/** Between tries of the work that needs the database at start, when it went away again meanwhile. */
const PREPARE_RETRY_MS = 2_000;

export interface StepcastApp {
  /** Where GraphQL is served ('' for a worker, which serves none). */
  url: string;
  port: number;
  database: Database;
  /** Seals and opens tenant API credentials (the admin functions take it). */
  secrets: SecretBox;
  executor: Executor;
  /** The port of the metrics listener (STEPCAST_METRICS_PORT), when there is one. */
  metricsPort: number | undefined;
  /** The HTTP server GraphQL listens on (none for a worker). */
  httpServer?: import('node:http').Server;
  /** The address the metrics listener is bound to (STEPCAST_METRICS_HOST), when there is one. */
  metricsAddress: string | undefined;
  close(): Promise<void>;
}

/** What the processes of a cluster share besides the database: pg-boss's queue on it, and the Redis bus. */
interface ClusterParts {
  queue: WorkQueue;
  redis: RedisBus;
  /** The connection the shared rate limits count on. */
  limitsClient: Redis;
}

/** The executor and what it stands on: the store, the bus, the dispatcher and the step handlers. */
function composeExecutor(
  config: Config,
  database: Database,
  llm: LlmClient,
  secrets: SecretBox,
  logger: Logger,
  cluster: ClusterParts | undefined,
  metrics: StepcastMetrics | undefined,
): Executor {
  const store = new DrizzleExecutionStore(database.db, database.query, metrics?.transitionCommitted);
  const knowledge = new TenantKnowledge(database, secrets);
  const settings = {
    ...config.executor,
    // Only workers look for work to take up.
    ...(config.role === 'api' ? { recoveryIntervalMs: 0 } : {}),
    sqlRepairRounds: config.llm.sqlRepairRounds,
    agentTimeoutMs: config.llm.agentTimeoutMs,
    sandbox: config.sandbox,
    tenantLimits: config.tenantLimits,
    inputLimits: config.inputLimits,
    // PostgreSQL: a tenant's statement has a connection of its own, and runs while the store's commit does.
    beginSqlStepsEarly: database.kind === 'postgres',
  };
  return new Executor({
    store,
    leases: store,
    tenants: store,
    bus: cluster ? cluster.redis.updates : createInProcessStepUpdateBus(),
    ...(cluster
      ? {
          admission: store,
          rateLimits: createRedisTenantLimits({
            redis: cluster.limitsClient,
            settings: rateLimitSettings(config.tenantLimits),
            logger,
            keyPrefix: `${config.cluster!.redisPrefix}rate`,
          }),
        }
      : {}),
    handlers: {
      SQL: createSqlStepHandler({
        database,
        knowledge,
        llm,
        repairRounds: config.llm.sqlRepairRounds,
        maxSqlChars: config.inputLimits.maxSqlChars,
        onSqlRejected: metrics?.sqlRefused,
        logger,
        limits: {
          rowMaxBytes: config.executor.rowMaxBytes,
          readMaxBytes: config.executor.stepMaxBytes,
          workMemMb: config.executor.sqlWorkMemMb,
          tempFileLimitMb: config.executor.sqlTempFileLimitMb,
        },
      }),
      API: createApiStepHandler({ knowledge, llm, sandbox: config.sandbox, onSandboxRefused: metrics?.sandboxStopped }),
    },
    dispatcher: (run, engine) =>
      cluster
        ? createClusterDispatcher({
            queue: cluster.queue,
            signals: cluster.redis.signals,
            engine,
            // An API replica runs no execution: it stores them with their jobs, and workers take them.
            slots: config.role === 'api' ? 0 : config.executor.maxConcurrentExecutions,
            perTenantConcurrency: config.tenantLimits.maxConcurrentExecutions,
            pollMs: config.cluster!.queuePollMs,
            logger,
          })
        : createInProcessDispatcher({
            concurrency: config.executor.maxConcurrentExecutions,
            perTenantConcurrency: config.tenantLimits.maxConcurrentExecutions,
            runExecution: run,
            logger,
          }),
    knowledge,
    llm,
    settings,
    logger,
    workerId: `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`,
    isUnavailable: isDatabaseUnavailable,
    idempotency: ({ findExecution, logger: executorLogger, shutdown }) =>
      new IdempotentSubmits(
        database.db,
        { ttlMs: config.executor.idempotencyTtlMs, plannerMaxMs: config.executor.plannerMaxMs },
        findExecution,
        executorLogger,
        shutdown,
      ),
  });
}

/**
 * Opens the database (migrating it), loads the demo tenant, recovers unfinished executions, and listens. When the
 * database cannot be reached it listens anyway, not ready and answering SERVICE_UNAVAILABLE, and does the rest
 * in the background once the database comes up.
 */
export async function startStepcast(
  config: Config,
  logger: Logger,
  /** The embedded database's directory, already being opened (see src/db/pglite-open.ts). */
  { pglite }: { pglite?: Promise<OpenedPgliteDirectory> } = {},
): Promise<StepcastApp> {
  if (!config.auth.enabled) {
    logger.warn(
      { tenantId: DEMO_TENANT_ID },
      'AUTHENTICATION IS OFF (STEPCAST_AUTH=off): every request acts as the demo tenant. Never expose this server.',
    );
  }
  const { box: secrets, source: keySource } = await loadSecretBox(config.encryptionKey, config.dataDir);
  if (keySource === 'key-file') {
    logger.warn({ keyId: secrets.keyId }, 'STEPCAST_ENCRYPTION_KEY is not set: tenant credentials are encrypted with a key file in DATA_DIR');
  }
  // One connection for the statement of each running execution, apart from the service's own pool.
  const opening = await openDatabaseWhenReachable(
    config.database,
    { tenantStatements: config.executor.maxConcurrentExecutions },
    logger,
    { pglite },
  );
  const { database } = opening;
  let cluster: ClusterParts | undefined;
  let executor: Executor | undefined;
  // Off unless STEPCAST_RETENTION_DAYS is set; it starts with the executor, once the database is open.
  const retention =
    // Only processes that run executions sweep (in one process, that is this one).
    config.retention && config.role !== 'api'
      ? new RetentionSweeper(new DrizzleExecutionStore(database.db, database.query), config.retention, logger)
      : undefined;
  let demoApi: Awaited<ReturnType<typeof startDemoTenantApi>> | undefined;
  let ready = false;
  let closed = false;
  let server: ReturnType<typeof createGraphQLServer> | undefined;
  let listener: ObservabilityListener | undefined;
  let forgetServer: (() => Promise<void>) | undefined;
  const metricsConfig = config.observability.metrics;
  const metrics = metricsConfig
    ? new StepcastMetrics({
        unfinishedExecutions: () => (opening.isOpen() ? countUnfinished(database) : Promise.resolve(undefined)),
        runningInProcess: () => executor?.runningExecutionCount ?? 0,
        openSubscriptions: () => executor?.openStreamCount ?? 0,
        openSockets: () => server?.openSockets() ?? 0,
      })
    : undefined;
  // Accepting work: prepared (migrated, demo data, recovery), not draining, and the database answers.
  const readiness = async (): Promise<Readiness> => {
    if (closed) return { ready: false, reason: 'draining: the service is shutting down' };
    if (!ready) return { ready: false, reason: 'starting: the database has not been reached, migrated and prepared yet' };
    if (!(await database.ping(READINESS_TIMEOUT_MS))) return { ready: false, reason: `the database did not answer within ${READINESS_TIMEOUT_MS} ms` };
    return { ready: true, reason: 'ready' };
  };
  // Before anything runs, so that every span is recorded; stopped last, so that the last ones are sent.
  const tracing = config.observability.tracing ? startTracing(config.observability.tracing, logger) : undefined;
  // What needs the database before the service is ready: the demo tenant and its API, and the executions a
  // previous process left unfinished.
  const prepare = async (running: Executor) => {
    if (config.demo.enabled) await ensureDemoTenant(database, { users: config.demo.users });
    demoApi ??=
      config.demo.enabled && config.demo.api ? await startDemoTenantApi(database, config.demo.apiPort, secrets) : undefined;
    if (demoApi) logger.info({ url: demoApi.url }, 'demo tenant API is listening');
    await running.start();
    retention?.start();
    ready = true;
  };
  try {
    // First: probes get their answers (503 "starting") while the database, the queue and recovery are awaited.
    if (metrics && metricsConfig?.port !== undefined) {
      listener = await startObservabilityListener({
        port: metricsConfig.port,
        host: metricsConfig.host,
        metrics: { registry: metrics.registry, token: metricsConfig.token },
        readiness,
        logger,
      });
      logger.info({ host: metricsConfig.host, port: listener.port }, 'metrics, health and readiness are served on their own port');
    } else if (metrics && config.role === 'worker') {
      logger.warn('STEPCAST_METRICS_PORT is not set: a worker serves no GraphQL port, so its metrics cannot be scraped');
    }
    if (config.cluster) cluster = await startCluster(config, config.cluster, opening, logger);
    const llm = new LlmClient(config.llm, logger, metrics?.modelCalled);
    if (!llm.configured) logger.info('no model configured (OPENAI_API_KEY / OPENAI_BASE_URL): steps need their sql or code');
    if (config.llm.deprecatedTimeoutSetting) {
      logger.warn('STEPCAST_LLM_TIMEOUT_MS is deprecated: set STEPCAST_AGENT_TIMEOUT_MS, the time limit of a whole agent call');
    }
    executor = composeExecutor(config, database, llm, secrets, logger, cluster, metrics);
    if (opening.isOpen()) await prepare(executor);
    /**
     * Stops listening, lets running executions finish (the grace period), ends the streams, then closes what they stood
     * on: the cluster's queue and bus, the demo API, the database.
     */
    const closer = (running: Executor) => {
      let closing: Promise<void> | undefined;
      return () =>
        (closing ??= (async () => {
          closed = true;
          await forgetServer?.();
          opening.stop();
          server?.httpServer.close();
          await retention?.stop();
          await running.stop(config.shutdownGraceMs);
          await server?.close();
          await closeCluster(cluster);
          await demoApi?.close();
          await database.close(config.shutdownGraceMs);
          await listener?.close();
          await tracing?.shutdown();
          logger.info(server ? 'stepcast stopped' : 'stepcast worker stopped');
        })());
    };
    if (config.role === 'worker') {
      logger.info({ workerId: executor.workerId, ready }, 'stepcast worker is ready');
      return { url: '', port: 0, database, secrets, executor, metricsPort: listener?.port, metricsAddress: listener?.address, close: closer(executor) };
    }
    const instanceId = newInstanceId();
    const adminToken = await loadAdminToken(config.admin.token, config.dataDir, { production: config.env === 'production' });
    if (!adminToken) logger.info('the admin API is off: set STEPCAST_ADMIN_TOKEN to use npm run admin against the running server');
    server = createGraphQLServer({
      executor,
      logger,
      authenticator: createAuthenticator({
        database,
        config: config.auth,
        anonymousTenantId: DEMO_TENANT_ID,
        logger,
      }),
      credentialRecheckMs: config.auth.recheckMs,
      graphiql: config.graphql.graphiql,
      limits: {
        graphql: config.graphql,
        websocket: config.websocket,
        inputLimits: config.inputLimits,
        tenantConnections: config.tenantConnections,
      },
      corsOrigins: config.http.corsOrigins,
      checkReadiness: readiness,
      metrics: metrics && { registry: metrics.registry, token: metricsConfig?.token, endpoint: metricsConfig?.port === undefined },
      admin: adminToken && { token: adminToken.token, instanceId, operations: databaseAdmin(database, async () => secrets) },
    });
    const address = await server.listen(config.http.port, config.http.host);
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    const url = `http://${host}:${address.port}${server.yoga.graphqlEndpoint}`;
    logger.info({ url, database: database.kind, ready }, 'stepcast is listening');
    // How `npm run admin` finds this server; a data directory it cannot write (read-only in production) only loses that.
    const record = { instanceId, url, adminApi: adminToken !== undefined, database: await databaseIdentity(config.database) };
    // A PostgreSQL URL whose database cannot be named is not recorded: no CLI could tell it is the one it means.
    forgetServer = await (record.database ? recordRunningServer(config.dataDir, { ...record, database: record.database }) : Promise.resolve(undefined)).catch((error: unknown) => {
      logger.info({ err: error }, 'could not record the server in DATA_DIR: npm run admin needs STEPCAST_URL to find it');
      return undefined;
    });

    const running = executor;
    if (!ready) {
      void opening.opened.then(async () => {
        while (!closed) {
          try {
            await prepare(running);
            logger.info('stepcast is ready');
            return;
          } catch (error) {
            logger.warn({ err: error }, 'preparing the service failed; trying again');
            await new Promise((resolve) => setTimeout(resolve, PREPARE_RETRY_MS));
          }
        }
      }, () => undefined);
    }

    return { url, port: address.port, database, secrets, executor: running, metricsPort: listener?.port, metricsAddress: listener?.address, httpServer: server.httpServer, close: closer(running) };
  } catch (error) {
    await listener?.close();
    await tracing?.shutdown();
    await retention?.stop();
    await executor?.stop(0);
    await closeCluster(cluster);
    await demoApi?.close();
    await database.close();
    throw error;
  }
}

/**
 * Unfinished executions by status in the whole database, for the gauges; undefined when it does not answer in time.
 * The statement has a statement_timeout of the same bound, so a count that waits (a lock, a slow disk) is cancelled
 * by the database rather than left running after the scrape gave up on it; the timer still bounds the scrape when no
 * connection can be had at all.
 */
async function countUnfinished(database: Database): Promise<ReadonlyMap<string, number> | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const result = await Promise.race([
      database.runReadOnly({
        sql: `SELECT status, count(*)::int AS n FROM executions WHERE status IN ('QUEUED', 'RUNNING', 'WAITING') GROUP BY status`,
        params: [],
        timeoutMs: READINESS_TIMEOUT_MS,
        searchPath: 'public',
      }),
      new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), READINESS_TIMEOUT_MS + COUNT_GRACE_MS))),
    ]);
    return result && new Map(result.rows.map((row) => [String(row.status), Number(row.n)]));
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The queue (pg-boss, which needs the database: the process waits for it) and the Redis bus of a cluster's process.
 */
async function startCluster(
  config: Config,
  cluster: NonNullable<Config['cluster']>,
  opening: Awaited<ReturnType<typeof openDatabaseWhenReachable>>,
  logger: Logger,
): Promise<ClusterParts> {
  if (!opening.isOpen()) logger.info('waiting for the database: the work queue lives in it');
  await opening.opened;
  if (config.database.kind !== 'postgres') throw new Error('a cluster needs DATABASE_URL');
  const queue = await startWorkQueue({ url: config.database.url, logger });
  try {
    const redis = await createRedisBus({ url: cluster.redisUrl, logger, channelPrefix: cluster.redisPrefix });
    const { Redis } = await import('ioredis');
    const limitsClient = new Redis(cluster.redisUrl);
    // ioredis reports a connection it cannot make as 'error' events; the limits log an outage themselves.
    limitsClient.on('error', () => undefined);
    logger.info({ role: config.role }, 'cluster mode: pg-boss queue on the database, Redis bus');
    return { queue, redis, limitsClient };
  } catch (error) {
    await queue.stop();
    throw error;
  }
}

async function closeCluster(cluster: ClusterParts | undefined): Promise<void> {
  if (!cluster) return;
  await cluster.queue.stop();
  await cluster.redis.close();
  cluster.limitsClient.disconnect();
}
