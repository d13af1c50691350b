import { EXECUTION_STATUSES, STEP_KINDS, STEP_STATUSES, STEP_UPDATE_TYPES } from '../executor/step-update.js';
import { builder } from './builder.js';

export const StepKindEnum = builder.enumType('StepKind', {
  description: 'SQL: read-only SQL over the tenant data. API: a short program calling the tenant HTTP API.',
  values: STEP_KINDS,
});

export const ExecutionStatusEnum = builder.enumType('ExecutionStatus', {
  description: 'Where an execution is in its life: QUEUED, then RUNNING, then one of the finished states.',
  values: EXECUTION_STATUSES,
});

export const StepStatusEnum = builder.enumType('StepStatus', {
  description: 'SKIPPED: an earlier critical step failed, so this one never ran.',
  values: STEP_STATUSES,
});

export const StepUpdateTypeEnum = builder.enumType('StepUpdateType', {
  description: 'What happened in one StepUpdate. The EXECUTION_SUCCEEDED/FAILED/CANCELLED update is the last.',
  values: STEP_UPDATE_TYPES,
});
