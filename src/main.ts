import { startStepcast } from './app.js';
import { ConfigError, loadConfig } from './config.js';
import { createLogger } from './logger.js';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    createLogger('error').fatal(error.message);
    process.exitCode = 1;
    return;
  }
  const logger = createLogger(config.logLevel);
  const app = await startStepcast(config, logger);
  let shuttingDown = false;
  const shutdown = (signal: NodeJS.Signals) => {
    // npm and terminals often deliver the same signal twice; the grace period already bounds shutdown.
    if (shuttingDown) return;
    shuttingDown = true;
    logger.info({ signal }, 'shutting down');
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

main().catch((error: unknown) => {
  createLogger('error').fatal({ err: error }, 'stepcast failed to start');
  process.exit(1);
});
