import type { ResultColumn } from '../db/client.js';
import type { StoredColumn } from '../db/tables.js';
import { isStorableText } from './storable-text.js';
import type { JsonRecord } from './steps/step-handler.js';

const TYPE_NAMES: Record<number, string> = {
  16: 'boolean',
  20: 'bigint',
  21: 'smallint',
  23: 'integer',
  25: 'text',
  700: 'real',
  701: 'double precision',
  1700: 'numeric',
  1042: 'text',
  1043: 'text',
  1082: 'date',
  1083: 'time',
  1114: 'timestamp',
  1184: 'timestamptz',
  1186: 'interval',
  2950: 'uuid',
  114: 'jsonb',
  3802: 'jsonb',
  1000: 'boolean[]',
  1005: 'smallint[]',
  1007: 'integer[]',
  1016: 'bigint[]',
  1009: 'text[]',
  1015: 'text[]',
  2951: 'uuid[]',
};

export function describeColumns(columns: readonly ResultColumn[]): StoredColumn[] {
  const seen = new Set<string>();
  const described: StoredColumn[] = [];
  for (const column of columns) {
    if (seen.has(column.name)) continue;
    seen.add(column.name);
    described.push({ name: column.name, type: TYPE_NAMES[column.typeOid] ?? 'text' });
  }
  return described;
}

/** "0012.500" and "12.5" are the same decimal; "-0.0" is "0". */
function canonicalDecimal(text: string): string {
  const match = /^(-?)0*(\d*?)(?:\.(\d*?)0*)?$/.exec(text.trim());
  if (!match) return text;
  const [, sign, whole, fraction] = match;
  const digits = `${whole || '0'}${fraction ? `.${fraction}` : ''}`;
  return digits === '0' ? '0' : `${sign}${digits}`;
}

/** A number only where JSON can hold the value exactly; otherwise the decimal text, unrounded. */
function toJsonNumber(value: string | number | bigint): number | string {
  if (typeof value === 'number') return value;
  const asNumber = Number(value);
  if (typeof value === 'bigint') return Number.isSafeInteger(asNumber) ? asNumber : value.toString();
  return Number.isFinite(asNumber) && String(asNumber) === canonicalDecimal(value) ? asNumber : value;
}

function toJsonValue(value: unknown, type: string): unknown {
  if (value === null || value === undefined) return null;
  // Tenants' statements hand json and jsonb over as text, so that each value is parsed (and counted) on its own.
  if (type === 'jsonb' && typeof value === 'string') return JSON.parse(value) as unknown;
  if (type === 'bigint' || type === 'numeric') {
    return typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint'
      ? toJsonNumber(value)
      : value;
  }
  if (type === 'timestamptz' && typeof value === 'string') {
    const parsed = new Date(value);
    return Number.isNaN(parsed.getTime()) ? value : parsed.toISOString();
  }
  if (value instanceof Date) return value.toISOString();
  if (typeof value === 'bigint') return toJsonNumber(value);
  if (value instanceof Uint8Array) return Buffer.from(value).toString('base64');
  return value;
}

/**
 * Rows become plain JSON: counts and numerics as numbers where exact, timestamps as ISO 8601, json as
 * values. `onRecord` sees each record as soon as it is made (to count it before the next one is).
 */
export function toJsonRecords(
  rows: readonly Record<string, unknown>[],
  columns: readonly StoredColumn[],
  onRecord: (record: JsonRecord) => void = () => undefined,
): JsonRecord[] {
  // Adding properties one by one by name turns an object of more than a dozen into a hash table (4x the
  // memory); copies of an object that already has them all stay compact.
  const template: JsonRecord = Object.fromEntries(columns.map((column) => [column.name, null]));
  return rows.map((row) => {
    const record: JsonRecord = { ...template };
    for (const column of columns) record[column.name] = toJsonValue(row[column.name], column.type);
    onRecord(record);
    return record;
  });
}

/** Keeps whole records while their JSON fits in maxBytes. */
export function capRecords(records: readonly JsonRecord[], maxBytes: number): { kept: JsonRecord[]; truncated: boolean } {
  let bytes = 2;
  for (let i = 0; i < records.length; i++) {
    bytes += Buffer.byteLength(JSON.stringify(records[i])) + 1;
    if (bytes > maxBytes) return { kept: records.slice(0, i), truncated: true };
  }
  return { kept: [...records], truncated: false };
}

function isPostgresIdentifier(name: string): boolean {
  const bytes = Buffer.byteLength(name);
  return bytes > 0 && bytes <= MAX_IDENTIFIER_BYTES && isStorableText(name);
}

const ISO_TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/;

function jsonTypeOf(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  if (typeof value === 'boolean') return 'boolean';
  if (typeof value === 'number') return Number.isSafeInteger(value) ? 'bigint' : 'double precision';
  if (typeof value === 'string') return ISO_TIMESTAMP.test(value) ? 'timestamptz' : 'text';
  return 'jsonb';
}

function widen(a: string | null, b: string | null): string | null {
  if (a === null) return b;
  if (b === null || a === b) return a;
  if ((a === 'bigint' && b === 'double precision') || (a === 'double precision' && b === 'bigint')) {
    return 'double precision';
  }
  if ((a === 'timestamptz' && b === 'text') || (a === 'text' && b === 'timestamptz')) return 'text';
  return 'jsonb';
}

const MAX_INFERRED_COLUMNS = 200;
const MAX_IDENTIFIER_BYTES = 63;

/**
 * Columns for records that came from a program (API steps): the first-seen key order, types widened
 * over all records. Keys Postgres could not name (empty, over 63 bytes) and keys past the 200th are
 * left out of step_N; the records keep them.
 */
export function inferColumns(records: readonly JsonRecord[]): StoredColumn[] {
  const types = new Map<string, string | null>();
  for (const record of records) {
    for (const [name, value] of Object.entries(record)) {
      const known = types.has(name);
      if (!known && (types.size >= MAX_INFERRED_COLUMNS || !isPostgresIdentifier(name))) continue;
      types.set(name, widen(types.get(name) ?? null, jsonTypeOf(value)));
    }
  }
  return [...types].map(([name, type]) => ({ name, type: type ?? 'text' }));
}

/** A program may return an array of records, one object, or a single value; later steps always get records. */
export function toRecords(value: unknown): JsonRecord[] {
  const items = Array.isArray(value) ? value : value === null || value === undefined ? [] : [value];
  return items.map((item) =>
    item !== null && typeof item === 'object' && !Array.isArray(item) ? (item as JsonRecord) : { value: item },
  );
}
