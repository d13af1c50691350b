import { GraphQLError, type ExecutionArgs, type ExecutionResult } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { TenantConnectionLimits } from '../config.js';
import { releaseOnEnd } from '../release-on-end.js';

export const TOO_MANY_TENANT_SUBSCRIPTIONS = 'TOO_MANY_TENANT_SUBSCRIPTIONS';

/**
 * graphql-ws's client gives up on a close code from 1000 to 1999 other than a few transient ones (it retries 4403),
 * so a tenant over its share is not reconnected in a loop. 1008 is the WebSocket code for "policy violation".
 */
export const CLOSE_TOO_MANY_SOCKETS = 1008;

/** Gives the slot back; calling it again does nothing. */
export type Release = () => void;

/** Counts per tenant, in this process, up to a limit. */
class TenantCounter {
  private readonly counts = new Map<string, number>();

  constructor(readonly limit: number) {}

  take(tenantId: string): Release | undefined {
    const held = this.counts.get(tenantId) ?? 0;
    if (held >= this.limit) return undefined;
    this.counts.set(tenantId, held + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const now = (this.counts.get(tenantId) ?? 1) - 1;
      if (now > 0) this.counts.set(tenantId, now);
      else this.counts.delete(tenantId);
    };
  }
}

/**
 * Each tenant's share of open connections (config.tenantConnections): graphql-ws sockets, and subscriptions over
 * graphql-ws and SSE together. One tenant at its limits takes nothing from another's.
 */
export class TenantConnectionShares {
  private readonly sockets: TenantCounter;
  private readonly subscriptions: TenantCounter;

  constructor(readonly limits: TenantConnectionLimits) {
    this.sockets = new TenantCounter(limits.maxSockets);
    this.subscriptions = new TenantCounter(limits.maxSubscriptions);
  }

  /** A slot for an authenticated socket, or undefined when the tenant holds maxSockets already. */
  takeSocket(tenantId: string): Release | undefined {
    return this.sockets.take(tenantId);
  }

  /** A slot for a subscription, or undefined when the tenant holds maxSubscriptions already. */
  takeSubscription(tenantId: string): Release | undefined {
    return this.subscriptions.take(tenantId);
  }

  socketRefusal(): string {
    return `Too many sockets: this tenant already has ${this.limits.maxSockets} open, the limit; close one first.`;
  }
}

const isAsyncIterable = (value: unknown): value is AsyncIterable<unknown> =>
  typeof value === 'object' && value !== null && Symbol.asyncIterator in value;

/**
 * Holds every tenant to maxSubscriptions open subscriptions. An envelop hook on subscribe, so it counts SSE streams
 * (yoga) and graphql-ws subscriptions (server.ts's onSubscribe uses yoga's getEnveloped) together. The one over the
 * limit is answered with TOO_MANY_TENANT_SUBSCRIPTIONS (HTTP 429 over SSE); the socket and the tenant's other
 * subscriptions go on. Put it after the other limits, so that an operation they refuse takes no slot.
 */
export function tenantSubscriptionLimitPlugin(
  shares: TenantConnectionShares,
  tenantOf: (context: unknown) => string,
): Plugin {
  const limit = shares.limits.maxSubscriptions;
  return {
    onSubscribe({ args, subscribeFn, setSubscribeFn, setResultAndStopExecution }) {
      const release = shares.takeSubscription(tenantOf(args.contextValue));
      if (!release) {
        setResultAndStopExecution({
          errors: [
            new GraphQLError(
              `This tenant already has ${limit} open subscriptions, the limit; complete one before starting another.`,
              { extensions: { code: TOO_MANY_TENANT_SUBSCRIPTIONS, limit, http: { status: 429 } } },
            ),
          ],
        });
        return;
      }
      setSubscribeFn(async (subscribeArgs: ExecutionArgs) => {
        let result: AsyncIterable<ExecutionResult> | ExecutionResult;
        try {
          result = await subscribeFn(subscribeArgs);
        } catch (error) {
          release();
          throw error;
        }
        // An error result (an unknown execution, say) opened no stream.
        if (!isAsyncIterable(result)) {
          release();
          return result;
        }
        return releaseOnEnd(result, release);
      });
    },
  };
}
