import type { DataSchema } from '../db/introspect.js';

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

export function describeDataSchema(dataSchema: DataSchema): string {
  return dataSchema.tables
    .map((table) => {
      const columns = table.columns.map((c) => `${c.name} ${c.type}${c.nullable ? '' : ' not null'}`).join(', ');
      const keys = table.keys.length > 0 ? `\n  keys: ${table.keys.join('; ')}` : '';
      return `- ${table.name} (~${table.rowCount} rows): ${columns}${keys}`;
    })
    .join('\n');
}

export function describeEarlierSteps(earlier: readonly EarlierStepSummary[]): string {
  if (earlier.length === 0) return '(none: this is the first step)';
  return earlier
    .map((step) => {
      const columns = step.columns.length > 0 ? `; columns: ${step.columns.map((c) => `${c.name} ${c.type}`).join(', ')}` : '';
      return [
        `- step ${step.index} (${step.kind}${step.entity ? `, ${step.entity}` : ''}): ${step.queryContext}`,
        `  ${step.recordCount} records${columns}`,
        `  sample: ${JSON.stringify(step.sample)}`,
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
