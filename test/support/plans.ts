import { expect } from 'vitest';
import type {
  ExecutePlanMutationVariables,
  ExecutionQuery as ExecutionQueryResult,
  PlanInput,
  StepUpdatesSubscription as StepUpdatesResult,
} from '../generated/graphql.js';
import { ExecutePlanMutation, ExecutionQuery, StepUpdatesSubscription } from './operations.js';
import type { TestClient } from './server.js';

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
