/**
 * Gathers the loads that resolvers ask for while one GraphQL execution walks a level of the result (the
 * `steps` of every execution on a page) into one call of `loadMany`, so a page costs a fixed number of
 * queries however many items it holds. Like dataloader's default scheduling, the batch is sent after the
 * promise jobs queued so far have run (then a process tick), so resolvers reached through resolved
 * promises still join it.
 *
 * Nothing is cached beyond a batch: a subscription's context lives as long as the subscription, and what it
 * loads later must be read again, not remembered.
 */
export function batchLoader<V>(
  loadMany: (keys: string[]) => Promise<ReadonlyMap<string, V>>,
  missing: () => V,
): (key: string) => Promise<V> {
  let pending: { keys: Set<string>; waiting: { key: string; resolve: (value: V) => void; reject: (error: unknown) => void }[] } | null =
    null;

  const dispatch = () => {
    const batch = pending!;
    pending = null;
    // Through a promise, so that loadMany throwing rejects the batch's loads instead of escaping the tick.
    void Promise.resolve()
      .then(() => loadMany([...batch.keys]))
      .then(
        (values) => {
          for (const { key, resolve } of batch.waiting) resolve(values.has(key) ? values.get(key)! : missing());
        },
        (error: unknown) => {
          for (const { reject } of batch.waiting) reject(error);
        },
      );
  };

  return (key) =>
    new Promise<V>((resolve, reject) => {
      if (!pending) {
        pending = { keys: new Set(), waiting: [] };
        void Promise.resolve().then(() => process.nextTick(dispatch));
      }
      pending.keys.add(key);
      pending.waiting.push({ key, resolve, reject });
    });
}
