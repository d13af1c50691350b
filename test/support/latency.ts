import { performance } from 'node:perf_hooks';

export interface ServedMeanwhile<T> {
  result: T;
  /** Milliseconds each probe took, in order. */
  latencies: number[];
  /** Probes that did not get a good answer. */
  failures: number;
}

/**
 * Runs `work` while another client keeps asking `probe` (one request at a time, back to back): what a
 * tenant sees of the server while another tenant attacks it. The probe resolves true for a good answer.
 */
export async function servedMeanwhile<T>(probe: () => Promise<boolean>, work: () => Promise<T>): Promise<ServedMeanwhile<T>> {
  const latencies: number[] = [];
  let failures = 0;
  let done = false;
  const probing = (async () => {
    while (!done || latencies.length === 0) {
      const started = performance.now();
      const good = await probe().catch(() => false);
      latencies.push(performance.now() - started);
      if (!good) failures += 1;
    }
  })();
  try {
    return { result: await work(), latencies, failures };
  } finally {
    done = true;
    await probing;
  }
}

export function percentile(values: readonly number[], fraction: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)] ?? Number.NaN;
}

/** "n=120 p50=4.1 ms p99=38.0 ms max=52.3 ms": how the other tenant was served, for the test's annotations. */
export function describeLatencies(latencies: readonly number[]): string {
  const ms = (value: number) => `${value.toFixed(1)} ms`;
  return `n=${latencies.length} p50=${ms(percentile(latencies, 0.5))} p99=${ms(percentile(latencies, 0.99))} max=${ms(Math.max(...latencies))}`;
}
