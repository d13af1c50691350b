import type { DataColumn, DataSchema, DataTable } from '../db/introspect.js';

/** What an agent is told about one earlier step: its purpose, its size and a few of its records. */
export interface EarlierStepSummary {
  index: number;
  kind: string;
  queryContext: string;
  entity: string | null;
  recordCount: number;
  sample: unknown[];
  columns: { name: string; type: string }[];
}

export interface SchemaDescriptionOptions {
  /** The longest description, in characters: tables that do not fit are named only, or counted, and the text says so. */
  maxChars?: number;
  /** The question and the step in words: when not every table fits, the tables they name (and their neighbours by key) come first. */
  focus?: readonly (string | null | undefined)[];
}

/** About 3,000 tokens: the tables of a typical tenant fit whole. */
export const DEFAULT_SCHEMA_CHARS = 12_000;
const MAX_COLUMNS_PER_TABLE = 60;
/** Room kept, when tables must be left out, for the names of those left out. */
const MAX_NAMED_ONLY_CHARS = 2_000;
const MAX_SAMPLE_CHARS = 1_500;
const MAX_SAMPLE_STRING = 200;

const sqlLiteral = (value: string) => `'${value.replaceAll("'", "''")}'`;

function describeColumn(column: DataColumn, withValues = true): string {
  const values = withValues && column.values
    ? ` (${column.values.complete ? 'values' : 'most common values'}: ${column.values.values.map(sqlLiteral).join(' | ')})`
    : '';
  return `${column.name} ${column.type}${column.nullable ? '' : ' not null'}${values}`;
}

const keyColumns = (table: string, columns: readonly string[]) =>
  columns.length === 1 ? `${table}.${columns[0]}` : `${table}.(${columns.join(', ')})`;

function describeKeys(table: DataTable): string[] {
  // A schema built without the structured keys (by hand) still has the constraints as Postgres prints them.
  if (table.primaryKey === undefined && table.foreignKeys === undefined && table.uniqueKeys === undefined) return table.keys;
  return [
    ...(table.primaryKey && table.primaryKey.length > 0 ? [`primary key (${table.primaryKey.join(', ')})`] : []),
    ...(table.uniqueKeys ?? []).map((columns) => `unique (${columns.join(', ')})`),
    ...(table.foreignKeys ?? []).map((key) => `${keyColumns(table.name, key.columns)} -> ${keyColumns(key.table, key.referencedColumns)}`),
  ];
}

function describeTable(table: DataTable, withValues = true): string {
  const count = table.rowCount >= 0 ? `~${table.rowCount} rows` : 'row count unknown';
  const columns = table.columns.slice(0, MAX_COLUMNS_PER_TABLE).map((column) => describeColumn(column, withValues));
  const hidden = table.columns.length - columns.length;
  if (hidden > 0) columns.push(`… and ${hidden} more columns, not shown`);
  const keys = describeKeys(table);
  return `- ${table.name} (${count}): ${columns.join(', ')}${keys.length > 0 ? `\n  keys: ${keys.join('; ')}` : ''}`;
}

const stem = (word: string) => word.replace(/s$/, '');

/** Table indexes, most relevant to the focus first: tables it names, then their neighbours by foreign key, then the rest. */
function rankTables(tables: readonly DataTable[], focus: readonly (string | null | undefined)[]): number[] {
  const words = new Set(
    focus
      .join(' ')
      .toLowerCase()
      .split(/[^\p{L}\p{N}_]+/u)
      .filter(Boolean)
      .flatMap((word) => [word, stem(word), ...word.split('_').map(stem)]),
  );
  const named = new Set(
    tables
      .filter((table) => {
        const name = table.name.toLowerCase();
        return words.has(name) || words.has(stem(name)) || name.split('_').every((part) => words.has(stem(part)));
      })
      .map((table) => table.name),
  );
  const neighbours = new Set<string>();
  for (const table of tables) {
    for (const key of table.foreignKeys ?? []) {
      if (named.has(table.name)) neighbours.add(key.table);
      if (named.has(key.table)) neighbours.add(table.name);
    }
  }
  const score = (table: DataTable) => (named.has(table.name) ? 2 : neighbours.has(table.name) ? 1 : 0);
  return tables.map((_, i) => i).sort((a, b) => score(tables[b]!) - score(tables[a]!) || a - b);
}

/**
 * The tenant's tables for a prompt: columns with types, nullability and the values of low-cardinality columns, and
 * keys. Bounded by maxChars: the tables that fit are described (the most relevant to the focus first), the others
 * named or counted, and the text says the schema is abridged.
 */
export function describeDataSchema(dataSchema: DataSchema, { maxChars = DEFAULT_SCHEMA_CHARS, focus = [] }: SchemaDescriptionOptions = {}): string {
  const { tables } = dataSchema;
  if (tables.length === 0) return '(this tenant has no tables)';
  const blocks = tables.map((table) => describeTable(table));
  if (blocks.reduce((chars, block) => chars + block.length + 1, 0) <= maxChars) return blocks.join('\n');
  const room = maxChars - Math.min(MAX_NAMED_ONLY_CHARS, Math.floor(maxChars / 5));
  // A table too large for what is left is described without its columns' values before it is only named.
  const described = new Map<number, string>();
  let withoutValues = 0;
  let used = 0;
  const ranked = rankTables(tables, focus);
  for (const i of ranked) {
    let block = blocks[i]!;
    if (used + block.length + 1 > room) {
      block = describeTable(tables[i]!, false);
      if (block === blocks[i] || used + block.length + 1 > room) continue;
      withoutValues++;
    }
    described.set(i, block);
    used += block.length + 1;
  }
  const rest = ranked.filter((i) => !described.has(i));
  const named: string[] = [];
  let namedChars = 0;
  for (const i of rest) {
    const name = tables[i]!.name;
    if (used + namedChars + name.length + 2 > maxChars - 200) break;
    named.push(name);
    namedChars += name.length + 2;
  }
  const uncounted = rest.length - named.length;
  const note = [
    `(The schema is abridged to fit: ${described.size} of ${tables.length} tables are described`,
    withoutValues > 0 ? ` (${withoutValues} without their columns' values)` : '',
    named.length > 0 ? `; named only, columns not shown: ${named.join(', ')}` : '',
    uncounted > 0 ? `; ${uncounted} more tables are not shown` : '',
    '.)',
  ].join('');
  return [...[...described].sort(([a], [b]) => a - b).map(([, block]) => block), note].join('\n');
}

/** A few of a step's records, as JSON, within MAX_SAMPLE_CHARS: long strings are cut, and records left out are counted. */
export function describeSample(sample: readonly unknown[]): string {
  const cut = (value: unknown): unknown =>
    typeof value === 'string' && value.length > MAX_SAMPLE_STRING
      ? `${value.slice(0, MAX_SAMPLE_STRING)}…`
      : Array.isArray(value)
        ? value.map(cut)
        : value !== null && typeof value === 'object'
          ? Object.fromEntries(Object.entries(value).map(([key, field]) => [key, cut(field)]))
          : value;
  const full = JSON.stringify(sample);
  if (full.length <= MAX_SAMPLE_CHARS) return full;
  const kept: unknown[] = [];
  for (const record of sample.map(cut)) {
    if (JSON.stringify([...kept, record]).length > MAX_SAMPLE_CHARS) break;
    kept.push(record);
  }
  const text = kept.length > 0 ? JSON.stringify(kept) : `${JSON.stringify(cut(sample[0])).slice(0, MAX_SAMPLE_CHARS)}…`;
  return `${text} (${kept.length} of ${sample.length} sample records shown, long strings cut)`;
}

const describeColumns = (columns: EarlierStepSummary['columns']) => columns.map((c) => `${c.name} ${c.type}`).join(', ');

/** Earlier steps as the SQL agent reads them: the relations step_N, with their columns, types and a sample. */
export function describeStepRelations(earlier: readonly EarlierStepSummary[]): string {
  if (earlier.length === 0) return '(none: this is the first step)';
  return earlier
    .map((step) => {
      const about = `step ${step.index}, ${step.kind}${step.entity ? `, ${step.entity}` : ''}`;
      if (step.columns.length === 0) {
        return `- step ${step.index} (${step.kind}): ${step.queryContext}\n  ${step.recordCount} records and no columns, so there is no relation step_${step.index}`;
      }
      return [
        `- step_${step.index} (${about}): ${step.queryContext}`,
        `  ${step.recordCount} rows; columns: ${describeColumns(step.columns)}`,
        `  sample: ${describeSample(step.sample)}`,
      ].join('\n');
    })
    .join('\n');
}

/** Earlier steps as a program reads them: steps[i].records, with their fields and a sample. */
export function describeEarlierSteps(earlier: readonly EarlierStepSummary[]): string {
  if (earlier.length === 0) return '(none: this is the first step)';
  return earlier
    .map((step, i) => {
      const columns = step.columns.length > 0 ? `; columns: ${describeColumns(step.columns)}` : '';
      return [
        `- steps[${i}] is step ${step.index} (${step.kind}${step.entity ? `, ${step.entity}` : ''}): ${step.queryContext}`,
        `  ${step.recordCount} records${columns}`,
        `  sample: ${describeSample(step.sample)}`,
      ].join('\n');
    })
    .join('\n');
}

export function describeStepTask(task: { queryContext: string; entity: string | null; reasoning: string | null }): string {
  return [
    `What this step must find: ${task.queryContext}`,
    task.entity ? `Entity: ${task.entity}` : null,
    task.reasoning ? `Planner's reasoning: ${task.reasoning}` : null,
  ]
    .filter((line) => line !== null)
    .join('\n');
}
