import type { KeptOnStepField, StepResultRow, StepRow, StepSnapshot, StoredStepDelta } from '../db/tables.js';

/** A step row with its records (read for a run), whatever their type. */
type StoredStepRow = StepRow & { records: unknown };

/** A change to a step: the columns of step_results a transition sets. */
export type StepChange = Partial<
  Omit<StepResultRow, 'executionId' | 'index' | 'tenantId' | 'correlationId' | 'kind' | 'queryContext'>
>;

/**
 * Fields a step gets once, kept only on its row: an event that sets one names it instead of copying it,
 * so that a 50 KB program is stored once, not once per progress update.
 */
const KEPT_ON_STEP: readonly KeptOnStepField[] = ['sql', 'code', 'sample', 'logs'];
export type KeptOnStep = Pick<StepSnapshot, KeptOnStepField>;

const iso = (value: Date | string | null | undefined) => (value instanceof Date ? value.toISOString() : (value ?? null));

/** A step row as an event shows it: without `result` and `records` (read from step_results on demand), dates as ISO text. */
export function snapshotOf(row: StepRow | StoredStepRow): StepSnapshot {
  const { result: _result, records: _records, startedAt, finishedAt, decidedAt, ...rest } = row as StepRow & { records?: unknown };
  return { ...rest, startedAt: iso(startedAt), finishedAt: iso(finishedAt), decidedAt: iso(decidedAt) };
}

export function stepDeltaOf(change: StepChange): StoredStepDelta {
  const { result: _result, records: _records, sql, code, sample, logs, startedAt, finishedAt, decidedAt, ...rest } = change;
  const delta: StoredStepDelta = { ...rest };
  if (startedAt !== undefined) delta.startedAt = iso(startedAt);
  if (finishedAt !== undefined) delta.finishedAt = iso(finishedAt);
  if (decidedAt !== undefined) delta.decidedAt = iso(decidedAt);
  const kept = { sql, code, sample, logs };
  const keptOnStep = KEPT_ON_STEP.filter((field) => kept[field] !== undefined);
  if (keptOnStep.length > 0) delta.keptOnStep = keptOnStep;
  return delta;
}

/** The step after an event: its delta applied, with the fields kept on the step taken from `step`. */
export function applyStepDelta(snapshot: StepSnapshot, delta: StoredStepDelta, step: KeptOnStep): StepSnapshot {
  const { keptOnStep = [], ...changed } = delta;
  const next: StepSnapshot = { ...snapshot, ...changed };
  for (const field of keptOnStep) Object.assign(next, { [field]: step[field] });
  return next;
}

/** The step after a change the engine makes (the values of the fields kept on the step are in the change). */
export function applyStepChange(snapshot: StepSnapshot, change: StepChange): StepSnapshot {
  return applyStepDelta(snapshot, stepDeltaOf(change), {
    sql: change.sql ?? null,
    code: change.code ?? null,
    sample: change.sample ?? null,
    logs: change.logs ?? null,
  });
}

/** A step before its first event: PENDING, with what the plan gave it. */
export function pendingSnapshot(
  row: Pick<
    StepResultRow,
    'executionId' | 'index' | 'tenantId' | 'correlationId' | 'kind' | 'queryContext' | 'entity' | 'reasoning' | 'critical' | 'approval'
  >,
  planned: Pick<StepSnapshot, 'sql' | 'code'>,
): StepSnapshot {
  return {
    executionId: row.executionId,
    index: row.index,
    tenantId: row.tenantId,
    correlationId: row.correlationId,
    kind: row.kind,
    status: 'PENDING',
    queryContext: row.queryContext,
    entity: row.entity,
    reasoning: row.reasoning,
    critical: row.critical,
    sql: planned.sql,
    code: planned.code,
    recordCount: null,
    columns: null,
    sample: null,
    truncated: false,
    error: null,
    attempts: 0,
    usage: null,
    logs: null,
    unsafeCalls: false,
    approval: row.approval,
    decision: null,
    decidedBy: null,
    decidedAt: null,
    decisionComment: null,
    startedAt: null,
    finishedAt: null,
  };
}
