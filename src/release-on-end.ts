/**
 * `source`, calling `release` once it ends however it ends: done, failed, or returned by its consumer (a client that
 * completed its subscription or went away). Not an async generator: a generator's return() waits for the pending
 * next(), which on a quiet stream may never settle, so the stream and what it holds would stay open.
 */
export function releaseOnEnd<T>(source: AsyncIterable<T>, release: () => void): AsyncIterableIterator<T> {
  const iterator = source[Symbol.asyncIterator]();
  let pending: (() => void) | undefined = release;
  // A shorthand method, not `const releaseOnce = () => …`: tsx names such a function with Object.defineProperty,
  // which costs it a dictionary of properties (about 250 bytes) per stream.
  const once = {
    release() {
      const releasing = pending;
      pending = undefined;
      releasing?.();
    },
  };
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    // Plain promise callbacks, not an async function: a quiet stream holds one reaction here, not a suspended frame.
    next() {
      return iterator.next().then(
        (result) => {
          if (result.done) once.release();
          return result;
        },
        (error: unknown) => {
          once.release();
          throw error;
        },
      );
    },
    async return(value?: unknown) {
      once.release();
      return (await iterator.return?.(value)) ?? { done: true, value: undefined };
    },
    async throw(error?: unknown) {
      once.release();
      if (iterator.throw) return iterator.throw(error);
      throw error;
    },
  };
}
