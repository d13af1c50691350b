import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { trackService } from './process.js';

export const redisUrl = process.env.TEST_REDIS_URL;
export const redisSkipReason = redisUrl ? null : 'skipped: TEST_REDIS_URL is not set';
/** Tests that stop and start a Redis of their own need the server itself, not only a Redis to talk to. */
export const redisServerSkipReason =
  redisSkipReason ?? (spawnSync('redis-server', ['--version']).error ? 'skipped: redis-server is not on the PATH' : null);

export interface RedisServer {
  port: number;
  url: string;
  /** Kills it (SIGKILL, as a crash would) and waits until it has exited. */
  stop(): Promise<void>;
  /** Starts it again on the same port, empty, and waits until it accepts connections. */
  start(): Promise<void>;
}

/** A port nothing listens on (taken, then given back). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * A Redis of the test's own, on a free port, keeping nothing on disk. Stop it in `finally`; one a failed test left
 * running is stopped after the file (test/support/setup.ts).
 */
export async function startRedisServer(): Promise<RedisServer> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  let exited: Promise<unknown> = Promise.resolve();
  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    async start() {
      const started = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child = started;
      exited = trackService(started);
      const output: string[] = [];
      started.stderr!.on('data', (chunk: Buffer) => output.push(chunk.toString()));
      await new Promise<void>((resolve, reject) => {
        createInterface({ input: started.stdout! }).on('line', (line) => {
          output.push(line);
          if (line.includes('Ready to accept connections')) resolve();
        });
        void exited.then(() => reject(new Error(`redis-server exited before it was ready: ${output.join('\n')}`)));
      });
    },
    async stop() {
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
  await server.start();
  return server;
}
