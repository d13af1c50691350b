import type { Principal } from '../auth/authenticator.js';
import type { StepRow, StepState } from '../db/tables.js';
import type { Executor } from '../executor/executor.js';
import type { ExecutionDetails, ExecutionSummary } from '../executor/store.js';

/**
 * What a request or subscription acts with. Live updates of `stepUpdates` are executed once per tenant and selection
 * (src/schema/shared-event-execution.ts keys them on tenantId only): a resolver under StepUpdate that reads anything
 * else of the context (the principal, its key) must be added to that key in src/server.ts.
 */
export interface GraphQLContext {
  executor: Executor;
  /** Who the request acts for (an API key, a JWT, or the demo tenant when authentication is off). */
  principal: Principal;
  /** The tenant every operation of this request acts for; it comes from the credential, never an argument. */
  tenantId: string;
  /**
   * An HTTP request's signal, aborted when its client goes away before the answer (absent over graphql-ws).
   * Follow it (followClientSignal) rather than read it: whatwg-node's lazy signal can keep `aborted` false when
   * its request was aborted.
   */
  signal?: AbortSignal;
  /** Whether the credential still stands (not revoked, not expired); asked again before every streamed update. */
  stillAuthorized: () => boolean;
  /** Calls onInvalid once the credential stops standing; returns the function that stops watching. */
  watchCredential: (onInvalid: () => void) => () => void;
  /**
   * The steps of one of the tenant's executions (none if it is not the tenant's). The loads of one tick are
   * one read of the store (src/schema/batch.ts): a page of executions with their steps is one query, not one per
   * execution.
   */
  loadSteps: (executionId: string) => Promise<StepRow[]>;
  /**
   * One of the tenant's steps by its global id (`<execution id>:step:<index>`), without its result (read by itself
   * when selected), batched the same way: node(id) and nodes(ids) read only the steps they name.
   */
  loadStep: (stepId: string) => Promise<StepState | undefined>;
  /**
   * One of the tenant's executions without its plan and final result (undefined if it is not the tenant's), batched
   * the same way: what node(id) and an update's execution read for the fields the update does not carry.
   */
  loadExecution: (executionId: string) => Promise<ExecutionSummary | undefined>;
  /** The plan and final result of one of the tenant's executions listed without them (batched the same way). */
  loadExecutionDetails: (executionId: string) => Promise<ExecutionDetails | undefined>;
}

/**
 * A signal of our own that aborts when the request's does. whatwg-node hands yoga a lazy signal whose `aborted`
 * stays false once something follows it (Node 20), or even a signal that follows it (AbortSignal.any, Node 24),
 * though its abort reaches what follows it: only a plain AbortController's signal can be read.
 */
export function followClientSignal(signal: AbortSignal): AbortSignal {
  const followed = new AbortController();
  const abort = () => {
    if (!followed.signal.aborted) followed.abort(signal.reason ?? new DOMException('The client went away', 'AbortError'));
  };
  if (signal.aborted) {
    abort();
    return followed.signal;
  }
  signal.addEventListener('abort', abort, { once: true });
  AbortSignal.any([signal]).addEventListener('abort', abort, { once: true });
  return followed.signal;
}
