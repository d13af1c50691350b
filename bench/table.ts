// The one table `npm run bench` prints: every stepcast figure beside its floor, measured in the same run on
// the same database, with the ratio and the machine's load at the time.
import { readFile } from 'node:fs/promises';
import { loadavg } from 'node:os';

export interface BenchRow {
  /** What was measured, e.g. 'sequential: µs per step (10 trivial SQL steps)'. */
  name: string;
  /** Which backend: 'PostgreSQL' or 'PGlite'. */
  backend: string;
  value: number;
  unit: string;
  /** The floor measured in the same run (same unit), when there is one. */
  floor?: number;
  /** The bar, as text: '≤ 1.5x', '≥ 0.6x', 'p99 ≤ 50 ms'. */
  bar?: string;
  /** Whether the figure meets the bar (undefined: no bar). */
  meets?: boolean;
  /** Anything else worth printing beside it (CPU per step, p50/p99, query plans). */
  note?: string;
  /** The 1-minute load average when it was measured. */
  load?: number;
}

export const currentLoad = (): number => loadavg()[0]!;

/** The machine's CPU time so far, all cores, in clock ticks, and the part not idle (Linux /proc/stat); undefined elsewhere. */
export async function machineTicks(): Promise<{ busy: number; total: number } | undefined> {
  const line = (await readFile('/proc/stat', 'utf8').catch(() => '')).split('\n')[0];
  if (!line?.startsWith('cpu ')) return undefined;
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: idle and iowait are the idle time.
  const total = ticks.slice(0, 8).reduce((sum, tick) => sum + tick, 0);
  return { busy: total - ticks[3]! - ticks[4]!, total };
}

export function ratio(row: BenchRow): number | undefined {
  return row.floor === undefined || row.floor === 0 ? undefined : row.value / row.floor;
}

const fixed = (value: number) => (Math.abs(value) >= 100 ? value.toFixed(0) : Math.abs(value) >= 10 ? value.toFixed(1) : value.toFixed(2));

export function formatTable(rows: readonly BenchRow[]): string {
  const header = ['backend', 'measure', 'stepcast', 'floor', 'ratio', 'bar', 'meets', 'load', 'note'];
  const lines = rows.map((row) => {
    const r = ratio(row);
    return [
      row.backend,
      row.name,
      // NaN: a part that was not run (its note says why).
      Number.isNaN(row.value) ? 'skipped' : `${fixed(row.value)} ${row.unit}`,
      row.floor === undefined ? '' : `${fixed(row.floor)} ${row.unit}`,
      r === undefined ? '' : `${r.toFixed(2)}x`,
      row.bar ?? '',
      row.meets === undefined ? '' : row.meets ? 'yes' : 'NO',
      row.load === undefined ? '' : row.load.toFixed(2),
      row.note ?? '',
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((line) => line[i]!.length)));
  const render = (cells: string[]) => `| ${cells.map((cell, i) => cell.padEnd(widths[i]!)).join(' | ')} |`;
  return [render(header), render(widths.map((w) => '-'.repeat(w))), ...lines.map(render)].join('\n');
}
