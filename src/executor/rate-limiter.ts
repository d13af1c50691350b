import { performance } from 'node:perf_hooks';

export type RateDecision = { allowed: true } | { allowed: false; retryAfterSeconds: number };

export interface TenantRateLimiter {
  /** Takes one token from the tenant's bucket; when it is empty, says in how many whole seconds (≥ 1) the next arrives. */
  take(tenantId: string): RateDecision;
  /** What take would answer now, without taking a token (to take from several buckets all or none). */
  peek(tenantId: string): RateDecision;
  /** Buckets held in memory: tenants whose bucket is not yet full again. */
  readonly size: number;
}

interface Bucket {
  tokens: number;
  /** When `tokens` was last brought up to date (ms on the `now` clock). */
  updatedAt: number;
}

/**
 * One token bucket per tenant, in this process: `burst` tokens at most, refilled continuously at
 * `ratePerMinute`. A bucket that has refilled to full is the same as no bucket, so buckets are dropped
 * once full: memory holds only tenants that called within the last burst / ratePerMinute minutes.
 */
export function createTenantRateLimiter({
  ratePerMinute,
  burst,
  now = () => performance.now(),
}: {
  ratePerMinute: number;
  burst: number;
  /** A monotonic clock in milliseconds (tests pass their own). */
  now?: () => number;
}): TenantRateLimiter {
  const tokensPerMs = ratePerMinute / 60_000;
  /** From empty to full; any bucket untouched this long is full. */
  const refillMs = burst / tokensPerMs;
  // Insertion order is last-update order: every take() moves its bucket to the end.
  const buckets = new Map<string, Bucket>();

  const dropFullBuckets = (at: number) => {
    for (const [tenantId, bucket] of buckets) {
      if (at - bucket.updatedAt < refillMs) break;
      buckets.delete(tenantId);
    }
  };

  const tokensAt = (tenantId: string, at: number) => {
    const bucket = buckets.get(tenantId);
    return bucket ? Math.min(burst, bucket.tokens + (at - bucket.updatedAt) * tokensPerMs) : burst;
  };
  const decide = (tokens: number): RateDecision => {
    if (tokens >= 1) return { allowed: true };
    const waitMs = (1 - tokens) / tokensPerMs;
    return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil(waitMs / 1000)) };
  };

  return {
    take(tenantId) {
      const at = now();
      dropFullBuckets(at);
      const tokens = tokensAt(tenantId, at);
      const decision = decide(tokens);
      buckets.delete(tenantId);
      buckets.set(tenantId, { tokens: decision.allowed ? tokens - 1 : tokens, updatedAt: at });
      return decision;
    },
    peek(tenantId) {
      return decide(tokensAt(tenantId, now()));
    },
    get size() {
      return buckets.size;
    },
  };
}
