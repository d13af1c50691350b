import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { RateLimitSettings, TenantRateLimits } from '../src/executor/rate-limiter.js';
import { createRedisTenantLimits, fixedWindowFor } from '../src/executor/redis-rate-limits.js';

const redisUrl = process.env.TEST_REDIS_URL;
const skipReason = redisUrl ? null : '(skipped: TEST_REDIS_URL is not set)';

describe('fixed windows for a rate and a burst', () => {
  it('gives burst points per burst / rate minutes, so that both settings hold', () => {
    expect(fixedWindowFor({ ratePerMinute: 60, burst: 10 })).toEqual({ points: 10, durationSeconds: 10 });
    expect(fixedWindowFor({ ratePerMinute: 30, burst: 60 })).toEqual({ points: 60, durationSeconds: 120 });
    expect(fixedWindowFor({ ratePerMinute: 1, burst: 2 })).toEqual({ points: 2, durationSeconds: 120 });
  });

  it('rounds the window up to whole seconds (the rate comes out under the setting, never over)', () => {
    const window = fixedWindowFor({ ratePerMinute: 7, burst: 10 });
    expect(window).toEqual({ points: 10, durationSeconds: 86 });
    expect((window.points * 60) / window.durationSeconds).toBeLessThanOrEqual(7);
  });

  it('holds the rate of one second in a window of one second when the rate is above burst a second', () => {
    expect(fixedWindowFor({ ratePerMinute: 1_000, burst: 10 })).toEqual({ points: 16, durationSeconds: 1 });
  });
});

/** Log lines the limits write, parsed. */
function capturedLogger() {
  const lines: { level: number; msg: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line) as { level: number; msg: string }) });
  return { logger, lines };
}

describe.skipIf(skipReason !== null)(`rate limits shared in Redis ${skipReason ?? ''}`, () => {
  const clients: Redis[] = [];
  const servers: Server[] = [];
  const prefixes: string[] = [];

  afterEach(async () => {
    // The windows' keys would expire on their own; a test leaves none behind.
    const cleaner = new Redis(redisUrl!);
    try {
      for (const prefix of prefixes.splice(0)) {
        const keys = await cleaner.keys(`${prefix}:*`);
        if (keys.length > 0) await cleaner.del(...keys);
      }
    } finally {
      cleaner.disconnect();
    }
    for (const client of clients.splice(0)) client.disconnect();
    for (const server of servers.splice(0)) await new Promise((resolve) => server.close(resolve));
  });

  /** A Redis client of its own, as each process of a cluster has. */
  function client(url = redisUrl!): Redis {
    const redis = new Redis(url);
    // ioredis reports a connection it cannot make as 'error' events; the limits report outages themselves.
    redis.on('error', () => undefined);
    clients.push(redis);
    return redis;
  }

  /** A key prefix of the test's own: tests and runs sharing a Redis never meet. */
  function freshPrefix(): string {
    const prefix = `stepcast-test:${randomBytes(6).toString('hex')}`;
    prefixes.push(prefix);
    return prefix;
  }

  /** `count` replicas' limits on one Redis under one key prefix. */
  function replicas(count: number, settings: RateLimitSettings, keyPrefix = freshPrefix()) {
    return Array.from({ length: count }, () =>
      createRedisTenantLimits({ redis: client(), settings, keyPrefix, logger: pino({ level: 'silent' }) }),
    );
  }

  const settings: RateLimitSettings = {
    // Windows of 60 s and more: none ends while a test runs.
    executions: { ratePerMinute: 3, burst: 3 },
    modelCalls: { ratePerMinute: 1, burst: 1 },
  };

  it('gives a tenant one burst across two replicas: the next call on either is refused with retryAfter', async () => {
    const [a, b] = replicas(2, settings) as [TenantRateLimits, TenantRateLimits];
    expect(await a.take('tenant-1', ['executions'])).toEqual({ allowed: true });
    expect(await b.take('tenant-1', ['executions'])).toEqual({ allowed: true });
    expect(await a.take('tenant-1', ['executions'])).toEqual({ allowed: true });
    for (const replica of [a, b]) {
      const refused = await replica.take('tenant-1', ['executions']);
      expect(refused).toMatchObject({ allowed: false, budget: 'executions' });
      const { retryAfterSeconds } = refused as { retryAfterSeconds: number };
      expect(Number.isInteger(retryAfterSeconds)).toBe(true);
      expect(retryAfterSeconds).toBeGreaterThanOrEqual(1);
      expect(retryAfterSeconds).toBeLessThanOrEqual(60);
    }
    // Another tenant has a budget of its own.
    expect(await b.take('tenant-2', ['executions'])).toEqual({ allowed: true });
  });

  it('grants exactly the burst to calls that arrive at once on both replicas', async () => {
    const [a, b] = replicas(2, { ...settings, executions: { ratePerMinute: 10, burst: 10 } }) as [TenantRateLimits, TenantRateLimits];
    const decisions = await Promise.all(Array.from({ length: 30 }, (_, i) => (i % 2 ? a : b).take('tenant-1', ['executions'])));
    expect(decisions.filter((decision) => decision.allowed)).toHaveLength(10);
    // The refusals were not counted: once the burst is used up, nothing else is hidden or granted.
    expect(await a.take('tenant-1', ['executions'])).toMatchObject({ allowed: false });
  });

  it('takes from both budgets or neither: a refused model call gives the execution token back', async () => {
    const [a, b] = replicas(2, settings) as [TenantRateLimits, TenantRateLimits];
    expect(await a.take('tenant-1', ['executions', 'modelCalls'])).toEqual({ allowed: true });
    const refused = await b.take('tenant-1', ['executions', 'modelCalls']);
    expect(refused).toMatchObject({ allowed: false, budget: 'modelCalls' });
    expect((refused as { retryAfterSeconds: number }).retryAfterSeconds).toBeGreaterThanOrEqual(1);
    // Two of the three execution tokens are left, whichever replica takes them.
    expect(await b.take('tenant-1', ['executions'])).toEqual({ allowed: true });
    expect(await a.take('tenant-1', ['executions'])).toEqual({ allowed: true });
    expect(await b.take('tenant-1', ['executions'])).toMatchObject({ allowed: false, budget: 'executions' });
  });

  it('answers the longest wait when both budgets are empty', async () => {
    const [a] = replicas(1, { executions: { ratePerMinute: 1, burst: 1 }, modelCalls: { ratePerMinute: 2, burst: 1 } }) as [TenantRateLimits];
    expect(await a.take('tenant-1', ['executions', 'modelCalls'])).toEqual({ allowed: true });
    const refused = await a.take('tenant-1', ['modelCalls', 'executions']);
    // Executions: a window of 60 s; model calls: 30 s.
    expect(refused).toMatchObject({ allowed: false, budget: 'executions' });
    expect((refused as { retryAfterSeconds: number }).retryAfterSeconds).toBeGreaterThan(30);
  });

  it('keeps answering when Redis cannot be reached: each process holds the limits itself, and says so once', async () => {
    const free = await new Promise<Server>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => resolve(server));
    });
    const { port } = free.address() as { port: number };
    await new Promise((resolve) => free.close(resolve));
    const { logger, lines } = capturedLogger();
    const limits = createRedisTenantLimits({
      redis: client(`redis://127.0.0.1:${port}`),
      settings,
      keyPrefix: freshPrefix(),
      logger,
      timeoutMs: 200,
    });
    const started = performance.now();
    const decisions = [];
    // The first call may wait out timeoutMs for the first connection; once it has failed, calls do not wait.
    for (let i = 0; i < 4; i++) decisions.push(await limits.take('tenant-1', ['executions']));
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(decisions.map((decision) => decision.allowed)).toEqual([true, true, true, false]);
    expect(decisions[3]).toMatchObject({ budget: 'executions' });
    expect((decisions[3] as { retryAfterSeconds: number }).retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(lines.filter((line) => line.level === 40).map((line) => line.msg)).toEqual([
      'rate limits: Redis does not answer; each process counts its own calls until it does',
    ]);
  });

  it('does not wait on a Redis that takes calls and never answers: the process counts after timeoutMs', async () => {
    // Accepts connections and reads what it is sent, answering nothing.
    const sockets: Socket[] = [];
    const silent = await new Promise<Server>((resolve) => {
      const server = createServer((socket) => sockets.push(socket.resume())).listen(0, '127.0.0.1', () => resolve(server));
    });
    servers.push(silent);
    const { port } = silent.address() as { port: number };
    const redis = client(`redis://127.0.0.1:${port}`);
    await new Promise((resolve) => redis.once('connect', resolve));
    const { logger, lines } = capturedLogger();
    const limits = createRedisTenantLimits({ redis, settings, keyPrefix: freshPrefix(), logger, timeoutMs: 200 });
    const started = performance.now();
    expect(await limits.take('tenant-1', ['executions', 'modelCalls'])).toEqual({ allowed: true });
    expect(await limits.take('tenant-1', ['modelCalls'])).toMatchObject({ allowed: false, budget: 'modelCalls' });
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(lines.some((line) => line.level === 40)).toBe(true);
    for (const socket of sockets) socket.destroy();
  });

  it('goes back to the shared count once Redis answers again, and says so', async () => {
    const keyPrefix = freshPrefix();
    const { logger, lines } = capturedLogger();
    const redis = client();
    const a = createRedisTenantLimits({ redis, settings, keyPrefix, logger });
    const [b] = replicas(1, settings, keyPrefix) as [TenantRateLimits];
    expect(await a.take('tenant-1', ['executions'])).toEqual({ allowed: true });

    const ended = new Promise((resolve) => redis.once('end', resolve));
    redis.disconnect();
    await ended;
    expect(await a.take('tenant-1', ['executions'])).toEqual({ allowed: true });
    expect(lines.map((line) => line.msg)).toEqual(['rate limits: Redis does not answer; each process counts its own calls until it does']);

    await redis.connect();
    // Redis counted one call of the tenant's three (the other went to the process's own count while it was away).
    expect(await a.take('tenant-1', ['executions'])).toEqual({ allowed: true });
    expect(lines.at(-1)?.msg).toBe('rate limits: Redis answers again; calls are counted for the whole cluster');
    expect(await b.take('tenant-1', ['executions'])).toEqual({ allowed: true });
    expect(await b.take('tenant-1', ['executions'])).toMatchObject({ allowed: false });
  });
});
