import module from 'node:module';
import { getHeapStatistics } from 'node:v8';
import { checkHeapBound, ConfigError, loadConfig, type Config } from './config.js';
import { openPgliteDirectory } from './db/pglite-open.js';
import { createLogger } from './logger.js';
import { startFailure } from './start-failure.js';

const SHUTDOWN_OVERRUN_MS = 15_000;
let loadedConfig: Config | undefined;

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
    checkHeapBound(config, getHeapStatistics().heap_size_limit);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    createLogger('error').fatal(error.message);
    process.stderr.write(`${error.message}\n`);
    process.exitCode = 1;
    return;
  }
  loadedConfig = config;
  const logger = createLogger(config.logLevel);
  // PGlite boots in its worker thread while this thread loads the service's modules (about a second each).
  const pglite = config.database.kind === 'pglite' ? openPgliteDirectory(config.database.dataDir ?? './data') : undefined;
  // Whoever awaits it sees its failure; this keeps it from being reported as unhandled while the modules load.
  pglite?.catch(() => undefined);
  // Node 22.1 and later keep V8's compiled code of the modules on disk (the OS temp dir) for the next start.
  (module as { enableCompileCache?: () => unknown }).enableCompileCache?.();
  const { startStepcast } = await import('./app.js');
  type App = Awaited<ReturnType<typeof startStepcast>>;
  const service: { app?: App } = {};
  let shuttingDown = false;
  const close = (started: App) =>
    started.close().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  const shutdown = (signal: NodeJS.Signals) => {
    // npm and terminals often deliver the same signal twice; the grace period already bounds shutdown.
    if (shuttingDown) return;
    shuttingDown = true;
    logger.info({ signal }, 'shutting down');
    // Whatever hangs, the process is gone a few seconds after the grace period.
    setTimeout(() => {
      logger.error('shutdown took too long; exiting');
      process.exit(1);
    }, config.shutdownGraceMs + SHUTDOWN_OVERRUN_MS).unref();
    if (service.app) void close(service.app);
  };
  // Before the start, not after it: a signal between "listening" and the start's end would otherwise kill the
  // process without closing what it opened. A signal during the start closes the service once it has started.
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  service.app = await startStepcast(config, logger, { pglite });
  if (shuttingDown) void close(service.app);
}

main().catch((error: unknown) => {
  const reason = startFailure(error, loadedConfig);
  if (reason) {
    createLogger('error').fatal({ reason }, 'stepcast failed to start');
    process.stderr.write(`${reason}\n`);
  } else {
    createLogger('error').fatal({ err: error }, 'stepcast failed to start');
  }
  process.exit(1);
});
