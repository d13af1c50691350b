#!/usr/bin/env node
// Runs the CLI's TypeScript source through tsx, so that `npx stepcast` works after a plain npm install.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2), { out: process.stdout, err: process.stderr, env: process.env });
