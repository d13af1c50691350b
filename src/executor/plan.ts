import { randomUUID } from 'node:crypto';
import type { InputLimits } from '../config.js';
import type { StoredExecuteOptions, StoredPlan, StoredPlanStep } from '../db/tables.js';
import { PlanValidationError } from './errors.js';
import { LONE_SURROGATE } from './storable-text.js';
import { STEP_KINDS, type StepKind } from './step-update.js';

export interface PlanDefaults {
  sampleSize: number;
  stepTimeoutMs: number;
  /** The server's ceiling for stepTimeoutMs (STEPCAST_MAX_STEP_TIMEOUT_MS). */
  maxStepTimeoutMs: number;
  /** How many steps a plan may hold and how long its texts may be (STEPCAST_PLAN_MAX_STEPS and friends). */
  limits: InputLimits;
}

export interface PlanStepInput {
  kind: string;
  queryContext: string;
  entity?: string | null;
  reasoning?: string | null;
  critical?: boolean | null;
  sql?: string | null;
  code?: string | null;
  approval?: boolean | null;
  approvalTimeoutMs?: number | null;
}

/** How long an approval may wait at most (approvalTimeoutMs): a week. */
export const MAX_APPROVAL_TIMEOUT_MS = 7 * 24 * 3_600_000;
const MIN_APPROVAL_TIMEOUT_MS = 1_000;

export interface PlanInput {
  query: string;
  reasoning?: string | null;
  steps: readonly PlanStepInput[];
}

export interface ExecuteOptionsInput {
  correlationId?: string | null;
  sampleSize?: number | null;
  stepTimeoutMs?: number | null;
  idempotencyKey?: string | null;
}

export interface ValidatedPlan {
  plan: StoredPlan;
  options: StoredExecuteOptions;
  correlationId: string;
  /** The client's key for submitting this request once (not stored with the execution). */
  idempotencyKey: string | null;
}

/** The options of an execution as checked; the correlationId is generated when the client gave none. */
export type ValidatedOptions = Omit<ValidatedPlan, 'plan'>;

const CORRELATION_ID_PATTERN = /^[A-Za-z0-9._:-]+$/;

function checkText(
  problems: string[],
  field: string,
  value: string | null | undefined,
  { required, max }: { required: boolean; max: number },
): string | null {
  if (value === null || value === undefined) {
    if (required) problems.push(`${field} is required`);
    return null;
  }
  if (required && value.trim().length === 0) problems.push(`${field} must not be empty`);
  if (value.includes('\u0000')) problems.push(`${field} must not contain NUL characters`);
  if (LONE_SURROGATE.test(value)) {
    problems.push(`${field} holds a lone UTF-16 surrogate (\\uD800 to \\uDFFF without its pair), which cannot be stored`);
  }
  if (value.length > max) problems.push(`${field} is ${value.length} characters; the limit is ${max}`);
  return value;
}

function validateStep(problems: string[], step: PlanStepInput, position: number, limits: InputLimits): StoredPlanStep {
  const field = (name: string) => `plan.steps[${position}].${name}`;
  if (!STEP_KINDS.includes(step.kind as StepKind)) {
    problems.push(`${field('kind')} must be one of ${STEP_KINDS.join(', ')}`);
  }
  const queryContext = checkText(problems, field('queryContext'), step.queryContext, {
    required: true,
    max: limits.maxQueryContextChars,
  });
  const sql = checkText(problems, field('sql'), step.sql, { required: false, max: limits.maxSqlChars });
  const code = checkText(problems, field('code'), step.code, { required: false, max: limits.maxCodeChars });
  if (step.kind === 'SQL' && code !== null) problems.push(`${field('code')} belongs to API steps; a SQL step takes sql`);
  if (step.kind === 'API' && sql !== null) problems.push(`${field('sql')} belongs to SQL steps; an API step takes code`);
  if (sql !== null && sql.trim().length === 0) problems.push(`${field('sql')} must not be empty when given`);
  if (code !== null && code.trim().length === 0) problems.push(`${field('code')} must not be empty when given`);
  const approval = step.approval ?? false;
  const approvalTimeoutMs = step.approvalTimeoutMs ?? null;
  if (approvalTimeoutMs !== null) {
    if (!approval) problems.push(`${field('approvalTimeoutMs')} applies to approval steps only; set approval: true`);
    if (!Number.isInteger(approvalTimeoutMs) || approvalTimeoutMs < MIN_APPROVAL_TIMEOUT_MS || approvalTimeoutMs > MAX_APPROVAL_TIMEOUT_MS) {
      problems.push(`${field('approvalTimeoutMs')} must be between ${MIN_APPROVAL_TIMEOUT_MS} and ${MAX_APPROVAL_TIMEOUT_MS} (a week)`);
    }
  }
  return {
    kind: step.kind as StepKind,
    queryContext: queryContext ?? '',
    entity: checkText(problems, field('entity'), step.entity, { required: false, max: limits.entityChars }),
    reasoning: checkText(problems, field('reasoning'), step.reasoning, {
      required: false,
      max: limits.reasoningChars,
    }),
    critical: step.critical ?? true,
    sql,
    code,
    // Stored only when set, so that plans without approvals read as before.
    ...(approval ? { approval: true } : {}),
    ...(approval && approvalTimeoutMs !== null ? { approvalTimeoutMs } : {}),
  };
}

function checkOptions(
  problems: string[],
  optionsInput: ExecuteOptionsInput | null | undefined,
  defaults: PlanDefaults,
): ValidatedOptions {
  const options = optionsInput ?? {};
  const { limits } = defaults;
  const sampleSize = options.sampleSize ?? defaults.sampleSize;
  if (!Number.isInteger(sampleSize) || sampleSize < 0 || sampleSize > limits.maxSampleSize) {
    problems.push(`options.sampleSize must be between 0 and ${limits.maxSampleSize}`);
  }
  const stepTimeoutMs = options.stepTimeoutMs ?? defaults.stepTimeoutMs;
  if (
    !Number.isInteger(stepTimeoutMs) ||
    stepTimeoutMs < limits.minStepTimeoutMs ||
    stepTimeoutMs > defaults.maxStepTimeoutMs
  ) {
    problems.push(
      `options.stepTimeoutMs must be between ${limits.minStepTimeoutMs} and ${defaults.maxStepTimeoutMs}`,
    );
  }
  const correlationId = options.correlationId ?? randomUUID();
  checkCorrelationId(problems, 'options.correlationId', correlationId, limits);
  const idempotencyKey = checkText(problems, 'options.idempotencyKey', options.idempotencyKey, {
    required: false,
    max: limits.idempotencyKeyChars,
  });
  if (idempotencyKey === '') problems.push(`options.idempotencyKey must be 1 to ${limits.idempotencyKeyChars} characters`);
  return { options: { sampleSize, stepTimeoutMs }, correlationId, idempotencyKey };
}

function checkCorrelationId(problems: string[], field: string, correlationId: string, limits: InputLimits): void {
  if (correlationId.length === 0 || correlationId.length > limits.correlationIdChars) {
    problems.push(`${field} must be 1 to ${limits.correlationIdChars} characters`);
  } else if (!CORRELATION_ID_PATTERN.test(correlationId)) {
    problems.push(`${field} may hold only letters, digits and . _ : -`);
  }
}

/** Problems with a correlation id given elsewhere (a history filter), worded like the options' check. */
export function correlationIdProblems(field: string, correlationId: string, limits: InputLimits): string[] {
  const problems: string[] = [];
  checkCorrelationId(problems, field, correlationId, limits);
  return problems;
}

/** Checks the options of an execution on their own (executeQuery, before the planner runs). */
export function validateExecuteOptions(
  optionsInput: ExecuteOptionsInput | null | undefined,
  defaults: PlanDefaults,
): ValidatedOptions {
  const problems: string[] = [];
  const checked = checkOptions(problems, optionsInput, defaults);
  if (problems.length > 0) throw new PlanValidationError(problems);
  return checked;
}

/** Problems with a question given to the planner, worded like plan validation's. */
export function queryProblems(query: string, limits: InputLimits): string[] {
  const problems: string[] = [];
  checkText(problems, 'query', query, { required: true, max: limits.queryChars });
  return problems;
}

/** Checks a client's plan and options; throws PlanValidationError listing every problem at once. */
export function validatePlan(
  input: PlanInput,
  optionsInput: ExecuteOptionsInput | null | undefined,
  defaults: PlanDefaults,
): ValidatedPlan {
  const problems: string[] = [];
  const { limits } = defaults;
  const query = checkText(problems, 'plan.query', input.query, { required: true, max: limits.queryChars });
  const reasoning = checkText(problems, 'plan.reasoning', input.reasoning, {
    required: false,
    max: limits.reasoningChars,
  });
  if (input.steps.length === 0) problems.push('plan.steps must hold at least one step');
  if (input.steps.length > limits.maxSteps) {
    problems.push(`plan.steps holds ${input.steps.length} steps; the limit is ${limits.maxSteps}`);
  }
  const steps = input.steps.slice(0, limits.maxSteps).map((step, i) => validateStep(problems, step, i, limits));

  const options = checkOptions(problems, optionsInput, defaults);
  if (problems.length > 0) throw new PlanValidationError(problems);
  return { plan: { query: query ?? '', reasoning, steps }, ...options };
}
