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
  type Batch = { keys: Set<string>; waiting: { key: string; resolve: (value: V) => void; reject: (error: unknown) => void }[] };
  let pending: Batch | null = null;

  // Inline, not `const dispatch = () => …`: tsx names such a function with Object.defineProperty, which costs it a
  // dictionary of properties (about 250 bytes) per loader, and a graphql-ws socket keeps its loader while it is open.
  return (key) =>
    new Promise<V>((resolve, reject) => {
      if (!pending) {
        const batch: Batch = (pending = { keys: new Set(), waiting: [] });
        void Promise.resolve().then(() =>
          process.nextTick(() => {
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
          }),
        );
      }
      pending.keys.add(key);
      pending.waiting.push({ key, resolve, reject });
    });
}
