// Entry of a sandbox worker thread. Built (dist/), the worker's side is JavaScript beside this file. From the
// source, worker threads do not inherit the tsx loader of the main thread, so it is registered here before the
// TypeScript side of the worker is imported.
import { existsSync } from 'node:fs';

const built = new URL('./worker-main.js', import.meta.url);
if (existsSync(built)) {
  await import(built.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('./worker-main.ts');
}
