import type { Authenticator, Principal } from '../auth/authenticator.js';
import type { LiveCredentials } from '../auth/live-credentials.js';
import type { StepRow, StepState } from '../db/tables.js';
import type { Executor } from '../executor/executor.js';
import type { ExecutionDetails, ExecutionSummary } from '../executor/store.js';
import { batchLoader } from './batch.js';
import type { GraphQLContext } from './context.js';
import { parseGlobalId, stepId } from './global-ids.js';

/** What every context of a server acts with. */
export interface ContextServices {
  executor: Executor;
  authenticator: Pick<Authenticator, 'stillValid'>;
  liveCredentials: Pick<LiveCredentials, 'watch'>;
}

type Loader<V> = (key: string) => Promise<V>;

/**
 * The context of a request, or of a socket (built once in onConnect and shared by its subscriptions). Its batch loaders
 * are made at their first load, not with it: an idle socket, or one whose updates carry all they select, keeps only
 * this object and its methods (the memory of an idle subscription is a measured bar, bench/fanout-memory.ts).
 */
export function graphQLContext({ executor, authenticator, liveCredentials }: ContextServices, principal: Principal): GraphQLContext {
  const { tenantId } = principal;
  let steps: Loader<StepRow[]> | undefined;
  let step: Loader<StepState | undefined> | undefined;
  let summary: Loader<ExecutionSummary | undefined> | undefined;
  let details: Loader<ExecutionDetails | undefined> | undefined;
  return {
    executor,
    principal,
    tenantId,
    // Shorthand methods: tsx names a `key: () => …` function with Object.defineProperty, at ~250 bytes each, and a
    // socket's subscriptions share these for its whole life.
    stillAuthorized() {
      return authenticator.stillValid(principal);
    },
    watchCredential(onInvalid) {
      return liveCredentials.watch(principal, onInvalid);
    },
    loadSteps(executionId) {
      steps ??= batchLoader(
        (executionIds) => executor.listStepsOfExecutions(tenantId, executionIds),
        () => [],
      );
      return steps(executionId);
    },
    loadStep(globalId) {
      step ??= batchLoader<StepState | undefined>(
        async (stepIds) => {
          const keys = stepIds.flatMap((id) => {
            const parsed = parseGlobalId(id);
            return parsed?.type === 'StepResult' ? [{ executionId: parsed.executionId, index: parsed.index }] : [];
          });
          const found = await executor.findSteps(tenantId, keys);
          return new Map(found.map((state) => [stepId(state.executionId, state.index), state]));
        },
        () => undefined,
      );
      return step(globalId);
    },
    loadExecution(executionId) {
      summary ??= batchLoader<ExecutionSummary | undefined>(
        (executionIds) => executor.listExecutionSummaries(tenantId, executionIds),
        () => undefined,
      );
      return summary(executionId);
    },
    loadExecutionDetails(executionId) {
      details ??= batchLoader<ExecutionDetails | undefined>(
        (executionIds) => executor.listExecutionDetails(tenantId, executionIds),
        () => undefined,
      );
      return details(executionId);
    },
  };
}
