/** What the scheduling policy sees of one tenant that has executions running or waiting. */
export interface TenantLoad {
  tenantId: string;
  running: number;
  waiting: number;
  /** When the tenant last started an execution (a counter: higher is later); undefined if it has not since it became active. */
  lastStartedAt: number | undefined;
}

export interface SlotState {
  /** Executions that may run at once, across tenants. */
  slots: number;
  /** Executions of one tenant that may run at once. */
  perTenantCap: number;
  /** Active tenants, in the order they became active (it breaks ties between tenants that have not started yet). */
  tenants: readonly TenantLoad[];
}

/** Fewest running first (max-min fairness), then the tenant that started least recently (round robin). */
function goesBefore(a: TenantLoad, b: TenantLoad): boolean {
  if (a.running !== b.running) return a.running < b.running;
  return (a.lastStartedAt ?? -1) < (b.lastStartedAt ?? -1);
}

/**
 * The tenant whose oldest waiting execution starts next, or undefined when none may start now.
 * A tenant below its cap may start while a slot is free, except that a tenant already running
 * something never takes the last free slot: that one is kept for a tenant with nothing running.
 * Among the tenants that may start, the one running fewest goes first, so no tenant gets another
 * slot while a waiting tenant runs fewer; equals take turns.
 */
export function chooseNextTenant({ slots, perTenantCap, tenants }: SlotState): string | undefined {
  const free = slots - tenants.reduce((sum, tenant) => sum + tenant.running, 0);
  if (free <= 0) return undefined;
  let next: TenantLoad | undefined;
  for (const tenant of tenants) {
    if (tenant.waiting === 0 || tenant.running >= perTenantCap) continue;
    if (tenant.running > 0 && free === 1) continue;
    if (!next || goesBefore(tenant, next)) next = tenant;
  }
  return next?.tenantId;
}

interface ActiveTenant {
  running: number;
  /** Executions waiting to start, in submission order. */
  waiting: string[];
  lastStartedAt: number | undefined;
}

/**
 * The in-process bookkeeping around chooseNextTenant: a FIFO of waiting executions per tenant and
 * the running counts. It starts nothing itself; the dispatcher runs what `take()` hands out.
 */
export class FairShareQueue {
  /** Tenants with executions running or waiting, in the order they became active; idle tenants leave. */
  private readonly active = new Map<string, ActiveTenant>();
  private starts = 0;

  constructor(private readonly limits: { slots: number; perTenantCap: number }) {}

  add(executionId: string, tenantId: string): void {
    const tenant = this.active.get(tenantId);
    if (tenant) tenant.waiting.push(executionId);
    else this.active.set(tenantId, { running: 0, waiting: [executionId], lastStartedAt: undefined });
  }

  /** The execution that may start now, counted as running from here on; undefined when none may. */
  take(): { executionId: string; tenantId: string } | undefined {
    const tenantId = chooseNextTenant({
      ...this.limits,
      tenants: [...this.active].map(([tenantId, tenant]) => ({
        tenantId,
        running: tenant.running,
        waiting: tenant.waiting.length,
        lastStartedAt: tenant.lastStartedAt,
      })),
    });
    if (tenantId === undefined) return undefined;
    const tenant = this.active.get(tenantId)!;
    tenant.running++;
    tenant.lastStartedAt = this.starts++;
    return { executionId: tenant.waiting.shift()!, tenantId };
  }

  /** A running execution of the tenant ended (however it ended). */
  finished(tenantId: string): void {
    const tenant = this.active.get(tenantId);
    if (!tenant || tenant.running === 0) throw new Error(`tenant ${tenantId} has no running execution`);
    tenant.running--;
    if (tenant.running === 0 && tenant.waiting.length === 0) this.active.delete(tenantId);
  }

  /** Drops every waiting execution; running ones are still counted until they finish. */
  dropWaiting(): void {
    for (const [tenantId, tenant] of this.active) {
      tenant.waiting = [];
      if (tenant.running === 0) this.active.delete(tenantId);
    }
  }
}
