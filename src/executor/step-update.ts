import type { StepSnapshot } from '../db/tables.js';

export const EXECUTION_STATUSES = ['QUEUED', 'RUNNING', 'WAITING', 'SUCCEEDED', 'FAILED', 'CANCELLED'] as const;
export type ExecutionStatus = (typeof EXECUTION_STATUSES)[number];

export const STEP_STATUSES = ['PENDING', 'WAITING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'SKIPPED', 'CANCELLED'] as const;
export type StepStatus = (typeof STEP_STATUSES)[number];

export const STEP_KINDS = ['SQL', 'API'] as const;
export type StepKind = (typeof STEP_KINDS)[number];

export const STEP_UPDATE_TYPES = [
  'PLAN_CREATED',
  'EXECUTION_STARTED',
  'EXECUTION_RESUMED',
  'STEP_WAITING',
  'STEP_APPROVED',
  'STEP_REJECTED',
  'STEP_STARTED',
  'STEP_PROGRESS',
  'STEP_SUCCEEDED',
  'STEP_FAILED',
  'STEP_SKIPPED',
  'STEP_CANCELLED',
  'EXECUTION_SUCCEEDED',
  'EXECUTION_FAILED',
  'EXECUTION_CANCELLED',
] as const;
export type StepUpdateType = (typeof STEP_UPDATE_TYPES)[number];

const TERMINAL_UPDATE_TYPES: ReadonlySet<StepUpdateType> = new Set([
  'EXECUTION_SUCCEEDED',
  'EXECUTION_FAILED',
  'EXECUTION_CANCELLED',
]);

export function isTerminalUpdate(type: StepUpdateType): boolean {
  return TERMINAL_UPDATE_TYPES.has(type);
}

export function isFinished(status: ExecutionStatus): boolean {
  return status === 'SUCCEEDED' || status === 'FAILED' || status === 'CANCELLED';
}

/** One entry of an execution's append-only log, exactly as stored in step_events. */
export interface StepUpdate {
  executionId: string;
  tenantId: string;
  sequence: number;
  type: StepUpdateType;
  at: Date;
  status: ExecutionStatus;
  step: StepSnapshot | null;
  /** What a STEP_PROGRESS update says; null on other updates. */
  message: string | null;
}
