import { describe, expect, it } from 'vitest';
import { createMemoryTenantLimits, createTenantRateLimiter } from '../src/executor/rate-limiter.js';

/** The limiter on a clock the test moves by hand. */
function limiter(ratePerMinute: number, burst: number) {
  let now = 1_000_000;
  const limit = createTenantRateLimiter({ ratePerMinute, burst, now: () => now });
  return {
    limit,
    advance: (ms: number) => (now += ms),
    takeMany: (tenantId: string, n: number) => Array.from({ length: n }, () => limit.take(tenantId).allowed),
  };
}

describe('tenant rate limiter (token bucket)', () => {
  it('allows a burst, then refuses with the whole seconds until the next token', () => {
    const { limit, takeMany } = limiter(60, 3);
    expect(takeMany('a', 3)).toEqual([true, true, true]);
    expect(limit.take('a')).toEqual({ allowed: false, retryAfterSeconds: 1 });
  });

  it('refills continuously at ratePerMinute, never above burst', () => {
    const { limit, advance, takeMany } = limiter(6, 2); // one token every 10 s
    expect(takeMany('a', 2)).toEqual([true, true]);
    advance(4_000);
    expect(limit.take('a')).toEqual({ allowed: false, retryAfterSeconds: 6 });
    advance(5_500);
    expect(limit.take('a')).toEqual({ allowed: false, retryAfterSeconds: 1 });
    advance(600);
    expect(takeMany('a', 2)).toEqual([true, false]);
    advance(3_600_000);
    expect(takeMany('a', 3)).toEqual([true, true, false]);
  });

  it('does not count refused calls against the tenant', () => {
    const { limit, advance, takeMany } = limiter(6, 1);
    expect(takeMany('a', 1)).toEqual([true]);
    for (let i = 0; i < 9; i++) {
      advance(1_000);
      expect(limit.take('a').allowed).toBe(false);
    }
    advance(1_100);
    expect(limit.take('a').allowed).toBe(true);
  });

  it('keeps one bucket per tenant', () => {
    const { limit, takeMany } = limiter(1, 2);
    expect(takeMany('a', 3)).toEqual([true, true, false]);
    expect(takeMany('b', 2)).toEqual([true, true]);
    expect(limit.take('a')).toMatchObject({ allowed: false, retryAfterSeconds: 60 });
  });

  it('forgets tenants whose bucket has refilled, so memory holds only recent callers', () => {
    const { limit, advance } = limiter(60, 10); // full again 10 s after the last call
    for (let i = 0; i < 1_000; i++) limit.take(`tenant-${i}`);
    expect(limit.size).toBe(1_000);
    advance(5_000);
    limit.take('late');
    expect(limit.size).toBe(1_001);
    advance(5_000);
    limit.take('later');
    expect(limit.size).toBe(2);
    // A forgotten tenant starts again with a full bucket.
    expect(Array.from({ length: 11 }, () => limit.take('tenant-0').allowed)).toEqual([...Array(10).fill(true), false]);
  });

  it('peeks without taking: the answer take would give, and the bucket stays as it was', () => {
    const { limit, advance } = limiter(6, 1); // one token every 10 s
    expect(limit.peek('a')).toEqual({ allowed: true });
    expect(limit.peek('a')).toEqual({ allowed: true });
    expect(limit.take('a')).toEqual({ allowed: true });
    advance(4_000);
    expect(limit.peek('a')).toEqual({ allowed: false, retryAfterSeconds: 6 });
    expect(limit.take('a')).toEqual({ allowed: false, retryAfterSeconds: 6 });
    advance(6_000);
    expect(limit.peek('a')).toEqual({ allowed: true });
    expect(limit.take('a')).toEqual({ allowed: true });
    expect(limit.peek('b')).toEqual({ allowed: true });
    expect(limit.size).toBe(1);
  });
});

describe('tenant rate limits in one process (all budgets or none)', () => {
  /** Both budgets, on a clock the test moves by hand. */
  function limits() {
    let now = 1_000_000;
    const rateLimits = createMemoryTenantLimits(
      { executions: { ratePerMinute: 6, burst: 2 }, modelCalls: { ratePerMinute: 1, burst: 1 } },
      { now: () => now },
    );
    return { rateLimits, advance: (ms: number) => (now += ms) };
  }

  it('takes from every budget named, or from none: a refused budget leaves the others as they were', async () => {
    const { rateLimits } = limits();
    expect(await rateLimits.take('a', ['executions', 'modelCalls'])).toEqual({ allowed: true });
    expect(await rateLimits.take('a', ['executions', 'modelCalls'])).toEqual({ allowed: false, budget: 'modelCalls', retryAfterSeconds: 60 });
    // The refusal took no execution token: one of the two is left.
    expect(await rateLimits.take('a', ['executions'])).toEqual({ allowed: true });
    expect(await rateLimits.take('a', ['executions'])).toEqual({ allowed: false, budget: 'executions', retryAfterSeconds: 10 });
  });

  it('answers the longest wait when several budgets are empty', async () => {
    const { rateLimits, advance } = limits();
    await rateLimits.take('a', ['executions', 'modelCalls']);
    await rateLimits.take('a', ['executions']);
    advance(5_000);
    expect(await rateLimits.take('a', ['executions', 'modelCalls'])).toEqual({ allowed: false, budget: 'modelCalls', retryAfterSeconds: 55 });
    expect(await rateLimits.take('a', ['executions'])).toEqual({ allowed: false, budget: 'executions', retryAfterSeconds: 5 });
  });
});
