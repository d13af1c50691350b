import type { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, RLWrapperTimeouts } from 'rate-limiter-flexible';
import type { Logger } from '../logger.js';
import type { BudgetLimits, BudgetName, RateLimitSettings, TenantRateLimits } from './rate-limiter.js';

/** Redis answers a take in well under a millisecond; a request waits no longer than this for it. */
const REDIS_TIMEOUT_MS = 1_000;

/**
 * ioredis's states of a connection that was lost (or closed): calls go straight to the insurance rather than
 * waiting out the timeout in ioredis's offline queue. Not `wait`/`connecting` before the first connection:
 * calls made while the process starts wait for it, as they are to be counted for the cluster.
 */
const DISCONNECTED = new Set(['reconnecting', 'close', 'end']);

/** A budget as rate-limiter-flexible counts it: `points` calls in a window of `durationSeconds`. */
export interface FixedWindow {
  points: number;
  durationSeconds: number;
}

/**
 * rate-limiter-flexible counts in fixed windows, not token buckets: a tenant's window opens at its first
 * call and lasts `durationSeconds`, during which it may make `points` calls; then the count starts again.
 * One window of `burst` points lasting burst / ratePerMinute minutes keeps both settings:
 * - at most `burst` calls at once, and `ratePerMinute` sustained (60/min with bursts of 10: 10 calls per
 *   10 s; model calls, 30/min with bursts of 60: 60 calls per 120 s);
 * - over any stretch of time t, at most burst × (⌈t / window⌉ + 1) calls. The token bucket of one process
 *   allows burst + rate × t: the same at every whole number of windows, but a tenant that waits for the
 *   end of a window may make 2 × burst calls in a moment, where the bucket allows burst;
 * - a refusal's retryAfter is the time left in the window (up to its length: 10 s and 120 s by default),
 *   after which the whole burst is back; the bucket answers the time to its next token (1 s and 2 s).
 * BurstyRateLimiter (a short window plus a long window of extra points) was not used: its steady rate is
 * the short window's plus the extra points spread over the long one, so it either exceeds ratePerMinute
 * or gives the burst back only once per long window however long the tenant stayed idle.
 * Windows are whole seconds: the window is rounded up (the rate then comes out slightly under the
 * setting, 10 calls per 86 s for 7/min with bursts of 10), and at least 1 s, holding the calls of one
 * second at the rate when the rate is above burst a second (1,000/min with bursts of 10: 16 per 1 s).
 */
export function fixedWindowFor({ ratePerMinute, burst }: BudgetLimits): FixedWindow {
  const durationSeconds = Math.max(1, Math.ceil((60 * burst) / ratePerMinute));
  return { points: Math.max(burst, Math.floor((ratePerMinute * durationSeconds) / 60)), durationSeconds };
}

/**
 * Keeps track of whether Redis answers, from the insurance limiters: each use of one is a call Redis
 * did not answer. Logs once when the limits go per process, and once when they are shared again.
 */
class Outage {
  fallbacks = 0;
  private down = false;

  constructor(
    private readonly redis: Redis,
    private readonly logger: Logger,
  ) {}

  fellBack(): void {
    this.fallbacks += 1;
    if (this.down) return;
    this.down = true;
    this.logger.warn(
      { redisStatus: this.redis.status },
      'rate limits: Redis does not answer; each process counts its own calls until it does',
    );
  }

  /** A take during which no call fell back: Redis answered all of it. */
  answered(fallbacksBefore: number): void {
    if (!this.down || this.fallbacks !== fallbacksBefore) return;
    this.down = false;
    this.logger.info('rate limits: Redis answers again; calls are counted for the whole cluster');
  }
}

/** rate-limiter-flexible's in-memory limiter, telling the outage when Redis's calls come to it. */
class InsuranceLimiter extends RateLimiterMemory {
  constructor(
    options: { keyPrefix: string; points: number; duration: number },
    private readonly outage: Outage,
  ) {
    super(options);
  }

  override consume(key: string | number, points?: number, options?: Record<string, unknown>): Promise<RateLimiterRes> {
    this.outage.fellBack();
    return super.consume(key, points, options);
  }

  override reward(key: string | number, points?: number, options?: Record<string, unknown>): Promise<RateLimiterRes> {
    this.outage.fellBack();
    return super.reward(key, points, options);
  }
}

/**
 * The tenants' budgets in Redis, shared by every process that passes the same Redis and key prefix
 * (RateLimiterRedis: one atomic script per call). Each budget counts in fixed windows (fixedWindowFor).
 * When Redis does not answer (its connection is lost, or a call takes longer than timeoutMs), the call
 * is counted by an insurance RateLimiterMemory with the same window: each process then holds the limits
 * on its own (a tenant may reach them once per process) until Redis answers again, when counting goes
 * back to Redis (what the processes counted meanwhile is not carried over). The client belongs to the
 * caller, who closes it; nothing here needs closing. Calls made before its first connection wait for it
 * (up to timeoutMs): a client with lazyConnect connects on the first take.
 */
export function createRedisTenantLimits({
  redis,
  settings,
  logger,
  keyPrefix = 'stepcast:rate',
  timeoutMs = REDIS_TIMEOUT_MS,
}: {
  redis: Redis;
  settings: RateLimitSettings;
  logger: Logger;
  /** Prefix of the keys in Redis: deployments (and tests) sharing one Redis use their own. */
  keyPrefix?: string;
  timeoutMs?: number;
}): TenantRateLimits {
  const outage = new Outage(redis, logger);
  const limiterFor = (budget: BudgetName) => {
    const { points, durationSeconds: duration } = fixedWindowFor(settings[budget]);
    const prefix = `${keyPrefix}:${budget}`;
    const insurance = new InsuranceLimiter({ keyPrefix: prefix, points, duration }, outage);
    // Errors and calls Redis does not answer within timeoutMs are counted by the insurance.
    const shared = new RLWrapperTimeouts({
      limiter: new RateLimiterRedis({ storeClient: redis, keyPrefix: prefix, points, duration }),
      timeoutMs,
      insuranceLimiter: insurance,
    });
    return () => (DISCONNECTED.has(redis.status) ? insurance : shared);
  };
  const limiters: Record<BudgetName, () => RateLimiterMemory | RLWrapperTimeouts> = {
    executions: limiterFor('executions'),
    modelCalls: limiterFor('modelCalls'),
  };

  return {
    async take(tenantId, budgets) {
      const fallbacksBefore = outage.fallbacks;
      const chosen = budgets.map((budget) => limiters[budget]());
      const outcomes = await Promise.allSettled(chosen.map((limiter) => limiter.consume(tenantId)));
      let refused: { budget: BudgetName; msBeforeNext: number } | undefined;
      let failure: { error: unknown } | undefined;
      for (const [i, outcome] of outcomes.entries()) {
        if (outcome.status === 'fulfilled') continue;
        // Only a bug gets here: the insurance answers whatever Redis does.
        if (!(outcome.reason instanceof RateLimiterRes)) failure ??= { error: outcome.reason };
        else if (!refused || outcome.reason.msBeforeNext > refused.msBeforeNext) {
          refused = { budget: budgets[i]!, msBeforeNext: outcome.reason.msBeforeNext };
        }
      }
      if (refused || failure) {
        // All or none: the budgets that gave a token get it back. A refused call was counted too (the window's
        // count goes past its points): it is taken off again, or a token another take gave back meanwhile would
        // stay hidden behind it. A give-back that lands after its window ended opens the next window one token
        // up: at most one call more, and only then.
        await Promise.all(
          outcomes.map((outcome, i) =>
            outcome.status === 'fulfilled' || outcome.reason instanceof RateLimiterRes
              ? chosen[i]!.reward(tenantId).catch((error: unknown) =>
                  logger.warn({ err: error, tenantId, budget: budgets[i] }, 'rate limits: could not give a token back'),
                )
              : undefined,
          ),
        );
      }
      if (failure) throw failure.error;
      outage.answered(fallbacksBefore);
      if (!refused) return { allowed: true };
      return { allowed: false, budget: refused.budget, retryAfterSeconds: Math.max(1, Math.ceil(refused.msBeforeNext / 1000)) };
    },
  };
}
