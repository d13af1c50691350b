import module from 'node:module';
import { resolve } from 'node:path';
import { getHeapStatistics } from 'node:v8';
import { checkHeapBound, ConfigError, loadConfig, type Config } from './config.js';
import { DataDirInUseError } from './db/data-dir-lock.js';
import { openPgliteDirectory } from './db/pglite-open.js';
import { createLogger } from './logger.js';

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
  const app = await startStepcast(config, logger, { pglite });
  let shuttingDown = false;
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
    app.close().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

/** A start that failed for a reason the user can mend: one line saying how, instead of a stack trace. */
function startFailure(error: unknown, config: Config | undefined): string | undefined {
  if (error instanceof DataDirInUseError) return error.message;
  const { code, port, address } = error as { code?: string; port?: number; address?: string };
  const setting = port !== undefined && port === config?.demo.apiPort ? 'STEPCAST_DEMO_API_PORT' : 'PORT';
  if (code === 'EADDRINUSE') return `port ${port} is in use; set ${setting}`;
  if (code === 'EACCES' && port !== undefined) return `port ${port} needs privileges this process lacks; set ${setting}`;
  if (code === 'EADDRNOTAVAIL') return `${address ?? 'HOST'} is not an address of this machine; set HOST`;
  const { path, syscall } = error as { path?: string; syscall?: string };
  if (code && path && syscall) {
    const inDataDir = config && resolve(path).startsWith(resolve(config.dataDir));
    return `cannot ${syscall} ${path} (${code})${inDataDir ? '; set DATA_DIR to a directory this process can write' : ''}`;
  }
  return undefined;
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
