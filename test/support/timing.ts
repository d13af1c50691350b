import { availableParallelism, loadavg } from 'node:os';

/**
 * How much slower than idle this machine runs now: the load per core when the test file started, between 1
 * and 4. Tests wait on conditions, not on time; their timeouts only catch a hang, and must not catch a slow
 * start on a loaded 2-core machine (every service process compiles with tsx and opens its database).
 */
export const loadFactor = Math.min(4, Math.max(1, loadavg()[0]! / availableParallelism()));

/** A timeout of `ms` on an idle machine, stretched by the load factor. */
export const scaledTimeout = (ms: number): number => Math.round(ms * loadFactor);

/** Whether `promise` settles (fulfilled or rejected) within `ms`: it is awaited until then, and no longer. */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const settled = promise.then(
    () => true,
    () => true,
  );
  try {
    return await Promise.race([settled, new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
