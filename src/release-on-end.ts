/**
 * `source`, calling `release` once it ends however it ends: done, failed, or returned by its consumer (a client that
 * completed its subscription or went away). Not an async generator: a generator's return() waits for the pending
 * next(), which on a quiet stream may never settle, so the stream and what it holds would stay open.
 */
export function releaseOnEnd<T>(source: AsyncIterable<T>, release: () => void): AsyncIterableIterator<T> {
  const iterator = source[Symbol.asyncIterator]();
  let released = false;
  const releaseOnce = () => {
    if (released) return;
    released = true;
    release();
  };
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    // Plain promise callbacks, not an async function: a quiet stream holds one reaction here, not a suspended frame.
    next() {
      return iterator.next().then(
        (result) => {
          if (result.done) releaseOnce();
          return result;
        },
        (error: unknown) => {
          releaseOnce();
          throw error;
        },
      );
    },
    async return(value?: unknown) {
      releaseOnce();
      return (await iterator.return?.(value)) ?? { done: true, value: undefined };
    },
    async throw(error?: unknown) {
      releaseOnce();
      if (iterator.throw) return iterator.throw(error);
      throw error;
    },
  };
}
