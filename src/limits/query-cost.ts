import {
  getArgumentValues,
  getDirectiveValues,
  getNamedType,
  getNullableType,
  getOperationAST,
  getVariableValues,
  GraphQLError,
  GraphQLIncludeDirective,
  GraphQLSkipDirective,
  isCompositeType,
  isInterfaceType,
  isListType,
  isObjectType,
  Kind,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  type FieldNode,
  type GraphQLCompositeType,
  type GraphQLSchema,
  type SelectionNode,
  type SelectionSetNode,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE } from '../schema/execution.js';
import { MAX_NODE_IDS } from '../schema/global-ids.js';
import { MAX_PROGRESS_REPORTS } from '../config.js';

/** Arguments of a field, as the resolver will see them (variables substituted, defaults applied). */
export type FieldArguments = Readonly<Record<string, unknown>>;

/**
 * What the fields of a schema cost. A leaf (scalar, enum, or a list of them) costs its weight; an object costs its
 * weight plus what is selected in it; a list of objects costs that times the most items it can hold.
 */
export interface CostModel {
  /** By "Type.field"; 1 when not listed. */
  weights: Readonly<Record<string, number>>;
  /**
   * The most items a list of objects holds, by "Type.field": a number, or a function of the arguments of the field
   * that returned the parent object (a connection's `edges` get the `first` of the field that returned the connection).
   */
  listSizes: Readonly<Record<string, number | ((parentArguments: FieldArguments) => number)>>;
  /** For a list of objects not in listSizes: on the high side, so a list added to the schema is not free. */
  defaultListSize: number;
  /**
   * Objects a subscription resolves again on every event, by "Type.field": what is selected in one costs `times`
   * over (the most events it resolves for), except the fields named in `free`, which the event itself answers.
   */
  perEvent?: Readonly<Record<string, { times: number; free: readonly string[] }>>;
  /** The root fields that ask a model ("Type.field"); an operation may select few of them (model-calls.ts). */
  modelCallingFields: readonly string[];
}

/** The page a connection returns: `first`, default 20; a value outside 1 to 100 is refused by the resolver itself. */
export function pageSize(first: unknown): number {
  return typeof first === 'number' ? Math.max(0, Math.min(first, MAX_PAGE_SIZE)) : DEFAULT_PAGE_SIZE;
}

/**
 * What a field that asks a model weighs: a model request takes seconds and is billed by the token, far more than
 * anything read from the store. At 1,000 the cost limit (5,000) alone admits at most four of them per document, while
 * executeQuery selecting its whole execution (every step and result, about 3,600) still fits beside its own call.
 */
export const MODEL_CALL_WEIGHT = 1_000;

const MODEL_CALLING_FIELDS = ['Query.planQuery', 'Mutation.executeQuery'];

/**
 * The most updates one run publishes (not counting a resume's): PLAN_CREATED, EXECUTION_STARTED and the outcome, and
 * per step WAITING, APPROVED or REJECTED, STARTED, its outcome and up to maxProgressReports STEP_PROGRESS updates.
 * 5,203 at the defaults (50 steps, 100 reports).
 */
export function mostUpdatesOfARun(maxPlanSteps: number, maxProgressReports = MAX_PROGRESS_REPORTS): number {
  return 3 + maxPlanSteps * (4 + maxProgressReports);
}

/**
 * stepcast's costs. Lists are scored at their largest: a page at its `first`, the steps of an execution or a plan at
 * the most a plan may have (STEPCAST_PLAN_MAX_STEPS). The JSON blobs weigh by their size cap: a step's result and the
 * execution's finalResult (up to STEPCAST_RESULT_MAX_BYTES, 1 MiB by default) 10, a step's sample and logs (64 KiB)
 * 2. A step's columns are counted at 10: two short strings each, nothing heavy hangs off them. planQuery and
 * executeQuery weigh MODEL_CALL_WEIGHT. An update's execution is read again for every update of the subscription:
 * what it selects beyond what the update carries (id, status, lastSequence) costs that many times over, the most
 * updates of a run (mostUpdatesOfARun), which at the defaults puts any such field over the limit.
 */
export function stepcastCostModel(maxPlanSteps: number): CostModel {
  return {
    weights: {
      ...Object.fromEntries(MODEL_CALLING_FIELDS.map((field) => [field, MODEL_CALL_WEIGHT])),
      'StepResult.result': 10,
      'Execution.finalResult': 10,
      'StepResult.sample': 2,
      'StepResult.logs': 2,
    },
    listSizes: {
      'ExecutionConnection.edges': (connection) => pageSize(connection.first),
      'Execution.steps': maxPlanSteps,
      'Plan.steps': maxPlanSteps,
      // The earlier steps of a waiting step: fewer than the plan's.
      'StepUpdate.findings': maxPlanSteps,
      'StepResult.columns': 10,
      // At the most ids it takes (more are refused).
      'Query.nodes': MAX_NODE_IDS,
    },
    defaultListSize: MAX_PAGE_SIZE,
    perEvent: {
      'StepUpdate.execution': { times: mostUpdatesOfARun(maxPlanSteps), free: ['id', 'status', 'lastSequence', '__typename'] },
    },
    modelCallingFields: MODEL_CALLING_FIELDS,
  };
}

const NO_ARGUMENTS: FieldArguments = Object.freeze({});

/**
 * What the operation `operationName` of `document` costs under `model`, with these (coerced) variable values.
 * Counts every selection as written (a field selected twice costs twice; fragments count where they are spread),
 * leaves out what @skip/@include leave out, and counts introspection (__schema, __type) as free: its answer is
 * bounded by the schema, and graphql-js's own rule stops circular introspection queries.
 * The document must have passed validation (known fields, no fragment cycles).
 */
export function queryCost(
  schema: GraphQLSchema,
  document: DocumentNode,
  operationName: string | null | undefined,
  variables: Readonly<Record<string, unknown>>,
  model: CostModel,
): number {
  const operation = getOperationAST(document, operationName);
  const root = operation && schema.getRootType(operation.operation);
  if (!operation || !root) return 0;
  const fragments = new Map(
    document.definitions.flatMap((definition) => (definition.kind === Kind.FRAGMENT_DEFINITION ? [[definition.name.value, definition]] : [])),
  );
  // A fragment spread many times over is walked once per parent arguments (nested spreads would otherwise multiply).
  const fragmentCosts = new Map<string, Map<FieldArguments, number>>();

  const included = (selection: SelectionNode) => {
    try {
      return (
        getDirectiveValues(GraphQLSkipDirective, selection, variables)?.if !== true &&
        getDirectiveValues(GraphQLIncludeDirective, selection, variables)?.if !== false
      );
    } catch {
      // A value the directive refuses (null for Boolean!): counted as included; execution answers the error itself.
      return true;
    }
  };

  const typeOf = (name: string | undefined, fallback: GraphQLCompositeType): GraphQLCompositeType => {
    const type = name === undefined ? undefined : schema.getType(name);
    return type && isCompositeType(type) ? type : fallback;
  };

  function selectionSetCost(selectionSet: SelectionSetNode, type: GraphQLCompositeType, parentArguments: FieldArguments): number {
    let cost = 0;
    for (const selection of selectionSet.selections) {
      if (!included(selection)) continue;
      if (selection.kind === Kind.FIELD) {
        cost += fieldCost(selection, type, parentArguments);
      } else if (selection.kind === Kind.INLINE_FRAGMENT) {
        cost += selectionSetCost(selection.selectionSet, typeOf(selection.typeCondition?.name.value, type), parentArguments);
      } else {
        const name = selection.name.value;
        const fragment = fragments.get(name);
        if (!fragment) continue;
        let byArguments = fragmentCosts.get(name);
        if (!byArguments) fragmentCosts.set(name, (byArguments = new Map()));
        let fragmentCost = byArguments.get(parentArguments);
        if (fragmentCost === undefined) {
          fragmentCost = selectionSetCost(fragment.selectionSet, typeOf(fragment.typeCondition.name.value, type), parentArguments);
          byArguments.set(parentArguments, fragmentCost);
        }
        cost += fragmentCost;
      }
    }
    return cost;
  }

  function fieldCost(node: FieldNode, parentType: GraphQLCompositeType, parentArguments: FieldArguments): number {
    const name = node.name.value;
    if (name === '__schema' || name === '__type') return 0;
    const field = isObjectType(parentType) || isInterfaceType(parentType) ? parentType.getFields()[name] : undefined;
    // __typename, and anything validation would have refused.
    if (!field) return 1;
    const key = `${parentType.name}.${name}`;
    const weight = model.weights[key] ?? 1;
    const type = getNamedType(field.type);
    if (!node.selectionSet || !isCompositeType(type)) return weight;
    let fieldArguments = NO_ARGUMENTS;
    try {
      if (field.args.length > 0) fieldArguments = getArgumentValues(field, node, variables);
    } catch {
      // Arguments execute cannot coerce make the field an error: nothing under it is resolved.
      return weight;
    }
    const perEvent = model.perEvent?.[key];
    const itemCost =
      weight +
      (perEvent
        ? perEventCost(node.selectionSet, type, fieldArguments, new Set(perEvent.free), perEvent.times)
        : selectionSetCost(node.selectionSet, type, fieldArguments));
    if (!isListType(getNullableType(field.type))) return itemCost;
    const size = model.listSizes[key] ?? model.defaultListSize;
    return itemCost * (typeof size === 'function' ? size(parentArguments) : size);
  }

  /**
   * A selection resolved again on every event: its fields named in `free` once, the others `times` over. Fragments
   * at its level are walked for their own fields (each once, however often it is spread there).
   */
  function perEventCost(
    selectionSet: SelectionSetNode,
    type: GraphQLCompositeType,
    parentArguments: FieldArguments,
    free: ReadonlySet<string>,
    times: number,
  ): number {
    const walked = new Map<string, number>();
    const walk = (selections: SelectionSetNode, within: GraphQLCompositeType): number => {
      let cost = 0;
      for (const selection of selections.selections) {
        if (!included(selection)) continue;
        if (selection.kind === Kind.FIELD) {
          const fieldCostOnce = fieldCost(selection, within, parentArguments);
          cost += free.has(selection.name.value) ? fieldCostOnce : fieldCostOnce * times;
        } else if (selection.kind === Kind.INLINE_FRAGMENT) {
          cost += walk(selection.selectionSet, typeOf(selection.typeCondition?.name.value, within));
        } else {
          const name = selection.name.value;
          const fragment = fragments.get(name);
          if (!fragment) continue;
          let fragmentCost = walked.get(name);
          if (fragmentCost === undefined) {
            fragmentCost = walk(fragment.selectionSet, typeOf(fragment.typeCondition.name.value, within));
            walked.set(name, fragmentCost);
          }
          cost += fragmentCost;
        }
      }
      return cost;
    };
    return walk(selectionSet, type);
  }

  return selectionSetCost(operation.selectionSet, root, NO_ARGUMENTS);
}

export const QUERY_TOO_COSTLY = 'QUERY_TOO_COSTLY';

/**
 * Refuses an operation whose cost under `model` is over `maxCost` with QUERY_TOO_COSTLY (HTTP 400), before any
 * resolver runs. It runs where execute and subscribe start, not in validation, because only there are the variable
 * values known: `executions(first: $first)` costs what $first asks for, exactly as `first: 100` written out would.
 * Being an envelop hook, it holds wherever yoga's getEnveloped runs: HTTP, SSE and graphql-ws (server.ts).
 */
export function costLimitPlugin(maxCost: number, model: CostModel): Plugin {
  const check = (args: ExecutionArgs): ExecutionResult | undefined => {
    const operation = getOperationAST(args.document, args.operationName);
    if (!operation) return undefined; // execute answers that itself
    const variables = getVariableValues(args.schema, operation.variableDefinitions ?? [], args.variableValues ?? {});
    // Variables that do not fit their types: execute refuses them before anything runs.
    if (!variables.coerced) return undefined;
    const cost = queryCost(args.schema, args.document, args.operationName, variables.coerced, model);
    if (cost <= maxCost) return undefined;
    return {
      errors: [
        new GraphQLError(`Query cost is ${cost}, over the limit of ${maxCost}.`, {
          extensions: { code: QUERY_TOO_COSTLY, cost, limit: maxCost, http: { status: 400 } },
        }),
      ],
    };
  };
  return {
    onExecute({ args, setResultAndStopExecution }) {
      const refused = check(args);
      if (refused) setResultAndStopExecution(refused);
    },
    onSubscribe({ args, setResultAndStopExecution }) {
      const refused = check(args);
      if (refused) setResultAndStopExecution(refused);
    },
  };
}
