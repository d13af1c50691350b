import type { Authenticator, Principal } from './authenticator.js';
import type { Logger } from '../logger.js';

/**
 * The credentials that open WebSockets and streams still rely on. Every `intervalMs` it re-reads
 * their revocation state and calls the watchers of those that no longer stand (revoked, expired).
 */
export class LiveCredentials {
  private readonly watchers = new Map<symbol, { principal: Principal; onInvalid: () => void }>();
  private timer: NodeJS.Timeout | undefined;
  private sweeping = false;
  private sweepAgain = false;

  constructor(
    private readonly authenticator: Authenticator,
    private readonly logger: Logger,
  ) {}

  watch(principal: Principal, onInvalid: () => void): () => void {
    if (!this.authenticator.enabled) return () => undefined;
    const handle = Symbol('watch');
    this.watchers.set(handle, { principal, onInvalid });
    return () => this.watchers.delete(handle);
  }

  start(intervalMs: number): void {
    if (!this.authenticator.enabled || this.timer) return;
    this.timer = setInterval(() => void this.sweep(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  get size(): number {
    return this.watchers.size;
  }

  async sweep(): Promise<void> {
    // A sweep asked for during one may be about a revocation that one read too early: it runs again after.
    if (this.sweeping) {
      this.sweepAgain = true;
      return;
    }
    if (this.watchers.size === 0) return;
    this.sweeping = true;
    try {
      await this.authenticator.refresh([...this.watchers.values()].map((w) => w.principal));
      for (const [handle, { principal, onInvalid }] of this.watchers) {
        if (this.authenticator.stillValid(principal)) continue;
        this.watchers.delete(handle);
        this.logger.info({ tenantId: principal.tenantId, kind: principal.kind }, 'credential no longer stands; closing what relied on it');
        try {
          onInvalid();
        } catch (error) {
          this.logger.warn({ err: error }, 'closing a connection whose credential ended failed');
        }
      }
    } finally {
      this.sweeping = false;
    }
    if (this.sweepAgain) {
      this.sweepAgain = false;
      await this.sweep();
    }
  }
}
