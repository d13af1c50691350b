import { expect } from 'vitest';
import type {
  ExecutePlanMutationVariables,
  ExecutionQuery as ExecutionQueryResult,
  PlanInput,
  StepUpdatesSubscription as StepUpdatesResult,
} from '../generated/graphql.js';
import { ExecutePlanMutation, ExecutionQuery, StepUpdatesSubscription } from './operations.js';
import type { TestClient } from './server.js';
import { loadConfig } from '../../src/config.js';
import type { Database } from '../../src/db/client.js';
import { DEMO_TENANT_ID } from '../../src/db/demo-data.js';
import type { ExecutionRow } from '../../src/db/tables.js';
import { validatePlan, type ValidatedPlan } from '../../src/executor/plan.js';
import { DrizzleExecutionStore } from '../../src/db/execution-store.js';

export type ExecutionDetails = NonNullable<ExecutionQueryResult['execution']>;
export type StepUpdateEvent = StepUpdatesResult['stepUpdates'];

export function sqlStep(sql: string, extra: Partial<PlanInput['steps'][number]> = {}): PlanInput['steps'][number] {
  return { kind: 'SQL', queryContext: `run: ${sql.slice(0, 60)}`, sql, ...extra };
}

export async function submitPlan(
  server: TestClient,
  plan: PlanInput,
  options?: ExecutePlanMutationVariables['options'],
): Promise<string> {
  const response = await server.request(ExecutePlanMutation, { plan, options });
  expect(response.errors).toBeUndefined();
  return response.data!.executePlan.id;
}

export async function fetchExecution(server: TestClient, id: string): Promise<ExecutionDetails> {
  const response = await server.request(ExecutionQuery, { id });
  expect(response.errors).toBeUndefined();
  return response.data!.execution!;
}

/** Follows the execution over graphql-ws until its terminal update, then reads it back. */
export async function runPlan(
  server: TestClient,
  plan: PlanInput,
  options?: ExecutePlanMutationVariables['options'],
): Promise<{ id: string; updates: StepUpdateEvent[]; execution: ExecutionDetails }> {
  const id = await submitPlan(server, plan, options);
  const results = await server.subscribeWs(StepUpdatesSubscription, { executionId: id });
  const updates = results.map((result) => {
    expect(result.errors).toBeUndefined();
    return result.data!.stepUpdates;
  });
  return { id, updates, execution: await fetchExecution(server, id) };
}

export function describeUpdates(updates: readonly StepUpdateEvent[]): string[] {
  return updates.map((update) => (update.step ? `${update.type}:${update.step.index}` : update.type));
}

/**
 * Stores a plan of SQL steps as a QUEUED execution of the demo tenant (or `tenantId`), past the executor: no
 * dispatcher runs it (until recover()), so its streams wait, and tests can drive it themselves.
 */
export async function storeQueuedExecution(
  database: Database,
  sqls: string[] = ['SELECT 1'],
  tenantId: string = DEMO_TENANT_ID,
): Promise<ExecutionRow> {
  return (await new DrizzleExecutionStore(database.db, database.query).createExecution(tenantId, validatedSqlPlan(sqls))).execution;
}

/** A plan of SQL steps, validated with the default settings: what a store's createExecution takes. */
export function validatedSqlPlan(sqls: string[] = ['SELECT 1']): ValidatedPlan {
  const { executor, inputLimits } = loadConfig({});
  return validatePlan({ query: 'stored directly', steps: sqls.map((sql) => sqlStep(sql)) }, null, {
    sampleSize: executor.defaultSampleSize,
    stepTimeoutMs: executor.stepTimeoutMs,
    maxStepTimeoutMs: executor.maxStepTimeoutMs,
    limits: inputLimits,
  });
}
