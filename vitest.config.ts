import { createRequire } from 'node:module';
import { defineConfig } from 'vitest/config';

const require = createRequire(import.meta.url);

export default defineConfig({
  resolve: {
    // graphql 16 ships CJS (main) and ESM (module); Node loads the CJS build for graphql-yoga,
    // so the tests must too, or GraphQLError from two copies fails yoga's instanceof checks.
    alias: { graphql: require.resolve('graphql') },
  },
  test: {
    include: ['test/**/*.test.ts'],
    // Migrates one PGlite template per run; every PGlite the tests start is a copy of it.
    globalSetup: ['test/support/global-setup.ts'],
    // Stops child processes a failed or timed-out test left running (see test/support/process.ts).
    setupFiles: ['test/support/setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // One file at a time on 2 cores (vitest's default, cores - 1 workers): two at once was no faster on
    // the busy 2-core machine (85 s against 79 s for 8 files) and made each file 2 to 3 times slower,
    // which is what turns waits into timeouts. Forks as before: each file in a process of its own.
    pool: 'forks',
    reporters: ['default'],
  },
});
