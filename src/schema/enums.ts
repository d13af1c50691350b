import { EXECUTION_STATUSES, STEP_KINDS, STEP_STATUSES, STEP_UPDATE_TYPES } from '../executor/step-update.js';
import { builder } from './builder.js';

export const StepKindEnum = builder.enumType('StepKind', {
  description: 'SQL: read-only SQL over the tenant data. API: a short program calling the tenant HTTP API.',
  values: STEP_KINDS,
});

export const ExecutionStatusEnum = builder.enumType('ExecutionStatus', {
  description:
    'Where an execution is in its life: QUEUED, then RUNNING (WAITING while an approval step waits for a person), then SUCCEEDED, FAILED or CANCELLED.',
  values: EXECUTION_STATUSES,
});

export const StepStatusEnum = builder.enumType('StepStatus', {
  description:
    'SKIPPED: an earlier critical step failed (or the execution was cancelled), so this one never ran. WAITING: an approval step waiting for approveStep or rejectStep.',
  values: STEP_STATUSES,
});

export const StepUpdateTypeEnum = builder.enumType('StepUpdateType', {
  description:
    'What happened in one StepUpdate. The EXECUTION_SUCCEEDED/FAILED/CANCELLED update is the last. EXECUTION_RESUMED: a server continued the execution after the one running it stopped; its step is the one run again.',
  values: STEP_UPDATE_TYPES,
});
