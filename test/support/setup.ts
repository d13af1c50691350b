import { afterAll, afterEach } from 'vitest';
import { killLeftoverProcesses } from './process.js';

// Runs in every test file (vitest setupFiles). A command (npm run admin) never outlives its test; a service
// process may serve a whole file. Whatever a failed or timed-out test left running is stopped here, and
// waited for, before the next test or file can trip over its data directory lock or its memory.
afterEach(() => killLeftoverProcesses('commands'));
afterAll(() => killLeftoverProcesses('services'));
