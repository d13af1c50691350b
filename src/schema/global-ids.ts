import { brandWithType, type OutputType, type SchemaTypes } from '@pothos/core';
import { isUuid } from '../executor/ids.js';
import type { GraphQLContext } from './context.js';
import { badUserInput } from './errors.js';

/**
 * stepcast's global ids are its own keys, readable and unique without a type prefix: an execution's is its UUID (what
 * every operation already takes), a step's `<execution id>:step:<index>`, an update's `<execution id>:update:<sequence>`.
 * They never change: the same step has the same id in a query, in a replayed update and in a live one.
 */
export type GlobalId =
  | { type: 'Execution'; executionId: string }
  | { type: 'StepResult'; executionId: string; index: number }
  | { type: 'StepUpdate'; executionId: string; sequence: number };

export const stepId = (executionId: string, index: number): string => `${executionId}:step:${index}`;

export const stepUpdateId = (executionId: string, sequence: number): string => `${executionId}:update:${sequence}`;

const COMPOSITE_ID = /^([0-9a-f-]{36}):(step|update):([1-9][0-9]{0,9})$/;

/**
 * What a global id names, or undefined when it is not one this server gives out. Read in lower case, as the database
 * reads a UUID: execution(id:) takes one in capitals, so node(id) does too, and answers it with the id as given out.
 */
export function parseGlobalId(givenId: string): GlobalId | undefined {
  const globalId = givenId.toLowerCase();
  if (isUuid(globalId)) return { type: 'Execution', executionId: globalId };
  const match = COMPOSITE_ID.exec(globalId);
  if (!match || !isUuid(match[1]!)) return undefined;
  const executionId = match[1]!;
  const number = Number(match[3]);
  return match[2] === 'step' ? { type: 'StepResult', executionId, index: number } : { type: 'StepUpdate', executionId, sequence: number };
}

/** The relay plugin's encoding: the id is already global. */
export function encodeGlobalID(_typename: string, id: string | number | bigint): string {
  return String(id);
}

/** The relay plugin's decoding: the type an id names ('' for an id this server never gave out), and the id as is. */
export function decodeGlobalID(globalID: string): { typename: string; id: string } {
  return { typename: parseGlobalId(globalID)?.type ?? '', id: globalID };
}

/** nodes(ids): at most this many ids, the most a list of the schema holds (the cost limit counts on it). */
export const MAX_NODE_IDS = 100;

/**
 * The node a global id names, read like `execution(id:)` reads: only the tenant's own. Another tenant's id, an unknown
 * one and one that names no node (an update) all answer null. Reads go through the request's batch loaders, so
 * nodes(ids) is one read of executions and one of the steps named, only those rows and without their results (a
 * selected result is read by StepResult.result, step by step). Branded with their type, for the Node interface's resolveType.
 */
export async function loadNode(globalId: string, context: GraphQLContext): Promise<object | null> {
  const id = parseGlobalId(globalId);
  if (id?.type === 'Execution') {
    const execution = await context.loadExecution(id.executionId);
    return execution ? branded(execution, 'Execution') : null;
  }
  if (id?.type === 'StepResult') {
    const step = await context.loadStep(stepId(id.executionId, id.index));
    return step ? branded(step, 'StepResult') : null;
  }
  return null;
}

/** Marks a value with its GraphQL type, by name: this module cannot import the types' refs (builder.ts imports it). */
function branded<T extends object>(value: T, typename: GlobalId['type']): T {
  brandWithType(value, typename as OutputType<SchemaTypes>);
  return value;
}

export function loadNodes(globalIds: readonly string[], context: GraphQLContext): Promise<(object | null)[]> {
  if (globalIds.length > MAX_NODE_IDS) throw badUserInput(`nodes takes at most ${MAX_NODE_IDS} ids`);
  return Promise.all(globalIds.map((id) => loadNode(id, context)));
}
