import { performance } from 'node:perf_hooks';

export type RateDecision = { allowed: true } | { allowed: false; retryAfterSeconds: number };

/** A tenant's budgets: executions (executePlan, executeQuery) and model calls (the planner and each agent call). */
export type BudgetName = 'executions' | 'modelCalls';

/** Refused: the longest wait among the budgets that were empty, and the budget that set it. */
export type BudgetDecision = { allowed: true } | { allowed: false; retryAfterSeconds: number; budget: BudgetName };

/** What the settings say of one budget: `burst` calls at once, `ratePerMinute` sustained. */
export interface BudgetLimits {
  ratePerMinute: number;
  burst: number;
}

export type RateLimitSettings = Record<BudgetName, BudgetLimits>;

/**
 * Every tenant's budgets, as the executor and the engine take from them: in this process
 * (createMemoryTenantLimits, the default) or shared by a cluster (createRedisTenantLimits).
 */
export interface TenantRateLimits {
  /**
   * Takes one token from each of the budgets, or none: when any is empty, nothing is taken and the
   * answer is the longest wait, in whole seconds (≥ 1).
   */
  take(tenantId: string, budgets: readonly BudgetName[]): Promise<BudgetDecision>;
}

/** The budgets as the settings (STEPCAST_TENANT_RATE_*, STEPCAST_TENANT_MODEL_CALLS_*) give them. */
export function rateLimitSettings(limits: {
  ratePerMinute: number;
  burst: number;
  modelCallsPerMinute: number;
  modelCallsBurst: number;
}): RateLimitSettings {
  return {
    executions: { ratePerMinute: limits.ratePerMinute, burst: limits.burst },
    modelCalls: { ratePerMinute: limits.modelCallsPerMinute, burst: limits.modelCallsBurst },
  };
}

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

/**
 * The budgets of one process: a token bucket per budget and tenant (createTenantRateLimiter). Nothing
 * is awaited between looking at the buckets and taking from them, so all or none holds without a lock.
 */
export function createMemoryTenantLimits(settings: RateLimitSettings, { now }: { now?: () => number } = {}): TenantRateLimits {
  const limiters: Record<BudgetName, TenantRateLimiter> = {
    executions: createTenantRateLimiter({ ...settings.executions, now }),
    modelCalls: createTenantRateLimiter({ ...settings.modelCalls, now }),
  };
  return {
    take(tenantId, budgets) {
      let refused: { budget: BudgetName; retryAfterSeconds: number } | undefined;
      for (const budget of budgets) {
        const decision = limiters[budget].peek(tenantId);
        if (!decision.allowed && decision.retryAfterSeconds > (refused?.retryAfterSeconds ?? 0)) {
          refused = { budget, retryAfterSeconds: decision.retryAfterSeconds };
        }
      }
      if (refused) return Promise.resolve({ allowed: false, ...refused });
      for (const budget of budgets) limiters[budget].take(tenantId);
      return Promise.resolve({ allowed: true });
    },
  };
}
