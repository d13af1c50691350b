type Writable = NodeJS.WritableStream;

export interface Style {
  red(text: string): string;
  green(text: string): string;
  yellow(text: string): string;
  dim(text: string): string;
  bold(text: string): string;
}

/** Colours only on a terminal, and never with NO_COLOR set (https://no-color.org). */
export function styleFor(stream: Writable & { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): Style {
  const on = stream.isTTY === true && !env.NO_COLOR;
  const wrap = (open: number, close: number) => (text: string) => (on ? `\x1b[${open}m${text}\x1b[${close}m` : text);
  return { red: wrap(31, 39), green: wrap(32, 39), yellow: wrap(33, 39), dim: wrap(2, 22), bold: wrap(1, 22) };
}

const SPINNER_FRAMES = ['|', '/', '-', '\\'];

/** One line rewritten in place while something runs; only ever started on a terminal. */
export class Spinner {
  private timer: ReturnType<typeof setInterval> | undefined;
  private frame = 0;
  private text = '';
  private startedAt = 0;

  constructor(private readonly out: Writable) {}

  start(text: string): void {
    this.text = text;
    this.startedAt = Date.now();
    if (!this.timer) this.timer = setInterval(() => this.draw(), 100);
    this.draw();
  }

  update(text: string): void {
    this.text = text;
    this.draw();
  }

  /** Clears the line so that the next write starts on an empty one. */
  stop(): void {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
    this.out.write('\r\x1b[2K');
  }

  private draw(): void {
    this.frame = (this.frame + 1) % SPINNER_FRAMES.length;
    const seconds = ((Date.now() - this.startedAt) / 1000).toFixed(1);
    this.out.write(`\r\x1b[2K${SPINNER_FRAMES[this.frame]} ${this.text} ${seconds} s`);
  }
}

export function formatDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes} min ${Math.round((ms % 60_000) / 1000)} s`;
}

export function truncate(text: string, width: number): string {
  const oneLine = text.replace(/\s+/g, ' ');
  return oneLine.length <= width ? oneLine : `${oneLine.slice(0, width - 3)}...`;
}

function cellOf(value: unknown): string {
  if (value === null || value === undefined) return '';
  if (typeof value === 'string') return value;
  return JSON.stringify(value);
}

/** Rows of text under headers, columns padded to their widest cell. */
export function table(headers: string[], rows: string[][], indent = ''): string {
  const widths = headers.map((header, column) => Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: string[]) =>
    indent + cells.map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column]!))).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

/** Records (a step's sample) as a table, each cell cut to `cellWidth`. */
export function recordsTable(records: unknown, indent = '', cellWidth = 40): string {
  if (!Array.isArray(records) || records.length === 0) return `${indent}(no records)`;
  const columns: string[] = [];
  for (const record of records) {
    if (record && typeof record === 'object') for (const key of Object.keys(record)) if (!columns.includes(key)) columns.push(key);
  }
  if (columns.length === 0) return records.map((record) => indent + truncate(cellOf(record), cellWidth * 2)).join('\n');
  const rows = records.map((record) =>
    columns.map((column) => truncate(cellOf((record as Record<string, unknown>)?.[column]), cellWidth)),
  );
  return table(columns, rows, indent);
}
