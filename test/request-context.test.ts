import { describe, expect, it, vi } from 'vitest';
import type { Principal } from '../src/auth/authenticator.js';
import type { Executor } from '../src/executor/executor.js';
import { graphQLContext } from '../src/schema/request-context.js';

// Every batch loader made, counted: a graphql-ws socket keeps its context while it is open, and an idle one (or one
// whose updates carry all they select) should keep no loader.
const made = vi.hoisted(() => ({ loaders: 0 }));
vi.mock('../src/schema/batch.js', async (importOriginal) => {
  const actual = await importOriginal<typeof import('../src/schema/batch.js')>();
  return {
    batchLoader: (...args: Parameters<typeof actual.batchLoader>) => {
      made.loaders += 1;
      return actual.batchLoader(...args);
    },
  };
});

describe('the context of a request or a socket', () => {
  it('makes each batch loader at its first load, then keeps it; loads of one tick are still one read', async () => {
    const executor = {
      listExecutionSummaries: vi.fn(async (_tenantId: string, ids: readonly string[]) => new Map(ids.map((id) => [id, { id }]))),
      listStepsOfExecutions: vi.fn(async () => new Map()),
      findSteps: vi.fn(async () => []),
      listExecutionDetails: vi.fn(async () => new Map()),
    };
    const principal = { tenantId: 'tenant' } as Principal;
    const services = { executor: executor as unknown as Executor, authenticator: { stillValid: () => true }, liveCredentials: { watch: () => () => {} } };
    made.loaders = 0;
    const contexts = Array.from({ length: 3 }, () => graphQLContext(services, principal));
    expect(made.loaders).toBe(0);

    const [context] = contexts;
    const [a, b] = await Promise.all([context!.loadExecution('a'), context!.loadExecution('b')]);
    expect([a, b]).toEqual([{ id: 'a' }, { id: 'b' }]);
    expect(executor.listExecutionSummaries.mock.calls).toEqual([['tenant', ['a', 'b']]]);
    expect(made.loaders).toBe(1);
    await context!.loadExecution('c');
    expect(executor.listExecutionSummaries).toHaveBeenCalledTimes(2);
    expect(made.loaders).toBe(1);

    expect(await context!.loadSteps('a')).toEqual([]);
    expect(await context!.loadStep('a:step:1')).toBeUndefined();
    expect(await context!.loadExecutionDetails('a')).toBeUndefined();
    // One each, for this context alone: the other two, never asked to load, still have none.
    expect(made.loaders).toBe(4);
    // An id that names no step is not sent to the store.
    expect(executor.findSteps.mock.calls).toEqual([['tenant', []]]);
  });
});
