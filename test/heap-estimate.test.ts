import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { scaledTimeout } from './support/timing.js';

const projectRoot = fileURLToPath(new URL('../', import.meta.url));

interface Measurement {
  shape: string;
  measured: number;
  estimated: number;
}

/**
 * STEPCAST_EXECUTION_MAX_BYTES is only a bound on memory if what it counts is what records cost on the heap,
 * not their JSON text: `[{}, {}]` is 8 bytes of text and 144 of heap. The shapes are measured in a process of
 * their own (V8 with --expose-gc, a full collection before and after).
 */
describe('what the execution budget counts', () => {
  it('tracks the real heap cost of records within a factor of 1.5, whatever their shape', async ({ signal }) => {
    // The signal kills the probe if the test times out.
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--expose-gc', '--import', 'tsx', 'test/fixtures/heap-probe.ts'],
      { cwd: projectRoot, maxBuffer: 1_048_576, signal, killSignal: 'SIGKILL' },
    );
    const measurements = stdout.trim().split('\n').map((line) => JSON.parse(line) as Measurement);
    expect(measurements.map((m) => m.shape)).toHaveLength(11);
    for (const { shape, measured, estimated } of measurements) {
      expect(measured, shape).toBeGreaterThan(1_000_000);
      expect(estimated / measured, `${shape}: estimated ${estimated} for ${measured} measured`).toBeGreaterThan(0.75);
      expect(estimated / measured, `${shape}: estimated ${estimated} for ${measured} measured`).toBeLessThan(1.5);
    }
  }, scaledTimeout(60_000));
});
