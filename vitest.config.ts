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
    pool: 'forks',
    reporters: ['default'],
  },
});
