// Entry of a sandbox worker thread. Worker threads do not inherit the tsx loader of the main thread, so it is
// registered here before the TypeScript side of the worker is imported.
import { register } from 'tsx/esm/api';

register();
await import('./worker-main.ts');
