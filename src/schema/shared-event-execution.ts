import {
  createSourceEventStream,
  execute,
  getOperationAST,
  getVariableValues,
  GraphQLError,
  Kind,
  visit,
  type ASTNode,
  type DocumentNode,
  type ExecutionArgs,
  type ExecutionResult,
  type OperationDefinitionNode,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { liveUpdateTaker, offersLiveUpdates } from '../executor/step-update-stream.js';

export interface SharedEventExecutionOptions {
  /**
   * Root subscription fields whose `resolve` passes the event on without reading its arguments (stepUpdates): their
   * arguments only choose the stream, so variables used nowhere else leave the key and resuming subscribers
   * (another afterSequence) share too.
   */
  fields: readonly string[];
  /**
   * Everything in the context that a resolver under these fields reads, as a string: subscribers whose contexts give
   * different strings never share a result. For stepcast, the tenant (StepUpdate.findings and StepResult.result read
   * context.executor, one per server, and context.tenantId; StepUpdate.execution's other fields the tenant's loaders).
   */
  contextKey: (context: unknown) => string;
}

type MaybePromise<T> = T | Promise<T>;

/**
 * A subscription's rootValue that can write its results at once, exactly as its transport would write them: server.ts
 * gives each graphql-ws subscription one.
 */
export interface DirectResultSink {
  /** Writes the result (`payload.json`); false when it cannot now, and the result then goes the usual way. */
  sendResultDirectly(payload: SharedPayload): boolean;
}

/**
 * One shared result's JSON, handed to every sink it goes to. `utf8` is its bytes, for a sink that writes bytes: the
 * first such sink encodes them, and the rest reuse them.
 */
export interface SharedPayload {
  readonly json: string;
  utf8?: Buffer;
}

const isSink = (rootValue: unknown): rootValue is DirectResultSink =>
  typeof (rootValue as Partial<DirectResultSink> | null)?.sendResultDirectly === 'function';

const isPromise = (value: unknown): value is Promise<unknown> => typeof (value as { then?: unknown } | null)?.then === 'function';

/**
 * graphql-js maps every event of a subscription through its own `execute`: one update published to 1,000
 * subscribers ran 1,000 identical executions. This plugin replaces the subscribe function for the given root fields
 * with one that executes an event once per distinct (document, operation, variables that matter, context key) and
 * hands the same result to every subscriber that asked the same thing.
 *
 * Sharing is keyed on the event object's identity: the in-process bus publishes one object to all listeners, so live
 * updates are shared, while replayed ones (read from the store per subscriber) are executed per subscriber as
 * before. A StreamDenied item is a fresh object per subscriber, so its error never reaches another. Results are
 * held in a WeakMap on the event, and go when the event does. The result is shared, so later hooks must not mutate
 * it (the masking and server.ts's onNext build new ones).
 *
 * Anything this does not handle exactly as before (another field, variables that do not coerce, an unknown
 * operation) goes to the subscribe function it replaces. Covers graphql-ws and SSE alike (both subscribe through
 * yoga's envelop).
 *
 * Handed over, not passed up: a live update that reaches a thousand graphql-ws subscribers would otherwise go up a
 * thousand chains of promises (this mapping, the limits' and yoga's wrappers, graphql-ws's loop), several microtasks
 * each, for one identical frame apiece. So where the rootValue is a DirectResultSink and the stream offers its
 * live updates (streamStepUpdates' [liveUpdateTaker]), each live update the stream could hand out at once is
 * executed (shared, as above), serialized once per result, and written by the sink straight away, in the bus
 * listener. Only a result that is ready and has no errors goes that way: the layers it skips change nothing else
 * (yoga's masking and server.ts's onNext touch only errors), so the frame is what graphql-ws would have sent. A
 * result that is a promise, has errors, or that the sink cannot write now (a slow client) goes the usual way.
 */
export function sharedEventExecutionPlugin({ fields, contextKey }: SharedEventExecutionOptions): Plugin {
  const shareable = new Set(fields);
  /** Per event: results by key. */
  const results = new WeakMap<object, Map<string, MaybePromise<ExecutionResult>>>();
  /** Per document and operation: which variables the per-event execution can read, or undefined: not shareable. */
  const shapes = new WeakMap<DocumentNode, Map<string, { id: number; variables: string[] } | null>>();
  /** Per shared result: its JSON, for the subscribers it is handed over to. */
  const payloads = new WeakMap<ExecutionResult, SharedPayload>();
  let nextDocumentId = 0;

  const shapeOf = (document: DocumentNode, operationName: string | null | undefined) => {
    let byOperation = shapes.get(document);
    if (!byOperation) shapes.set(document, (byOperation = new Map()));
    const name = operationName ?? '';
    let shape = byOperation.get(name);
    if (shape === undefined) {
      const operation = getOperationAST(document, operationName);
      shape =
        operation?.operation === 'subscription' && rootFieldIs(operation, shareable)
          ? { id: nextDocumentId++, variables: variablesReadByEvents(document, operation) }
          : null;
      byOperation.set(name, shape);
    }
    return shape;
  };

  return {
    onSubscribe({ args, subscribeFn, setSubscribeFn }) {
      const shape = shapeOf(args.document, args.operationName);
      if (!shape) return;
      setSubscribeFn(async (subscribeArgs: ExecutionArgs) => {
        const operation = getOperationAST(subscribeArgs.document, subscribeArgs.operationName);
        // Errors in variables answer exactly as the executor it replaces answers them.
        const coercion = operation && variablesOf(subscribeArgs, operation);
        if (!operation || !coercion || 'errors' in coercion) return subscribeFn(subscribeArgs);
        const source = await createSourceEventStream(subscribeArgs);
        if (!isAsyncIterable(source)) return source;
        // The values the execution sees (defaults applied), and an omitted variable told apart from an explicit null.
        const variables = coercion.coerced;
        const key = JSON.stringify([
          shape.id,
          subscribeArgs.operationName ?? '',
          shape.variables.map((name) => (Object.hasOwn(variables, name) ? [variables[name] ?? null] : 'omitted')),
          contextKey(subscribeArgs.contextValue),
        ]);
        // Inline, not `const executeEvent = …`: tsx names such a function with Object.defineProperty, which costs it a
        // dictionary of properties (about 250 bytes) per subscription.
        const iterator = source[Symbol.asyncIterator]();
        const sink = subscribeArgs.rootValue;
        if (isSink(sink) && offersLiveUpdates(iterator)) {
          iterator[liveUpdateTaker] = (update) => {
            const result = sharedResult(subscribeArgs, key, update);
            if (isPromise(result) || result.errors) return false;
            let payload = payloads.get(result);
            if (payload === undefined) payloads.set(result, (payload = { json: JSON.stringify(result) }));
            return sink.sendResultDirectly(payload);
          };
        }
        return mapEvents(iterator, (event: unknown) => sharedResult(subscribeArgs, key, event), operation);
      });
    },
  };

  /** The event's result for subscribers with `key`, executed by the first of them to ask. */
  function sharedResult(args: ExecutionArgs, key: string, event: unknown): MaybePromise<ExecutionResult> {
    if (typeof event !== 'object' || event === null) return executeWith(args, event);
    let byKey = results.get(event);
    if (!byKey) results.set(event, (byKey = new Map()));
    let result = byKey.get(key);
    if (result === undefined) byKey.set(key, (result = executeWith(args, event)));
    return result;
  }
}

function executeWith(args: ExecutionArgs, event: unknown): MaybePromise<ExecutionResult> {
  return execute({ ...args, rootValue: event }) as MaybePromise<ExecutionResult>;
}

function variablesOf(args: ExecutionArgs, operation: OperationDefinitionNode) {
  return getVariableValues(args.schema, operation.variableDefinitions ?? [], args.variableValues ?? {}, { maxErrors: 1 });
}

function rootFieldIs(operation: OperationDefinitionNode, names: ReadonlySet<string>): boolean {
  const [selection, ...others] = operation.selectionSet.selections;
  return others.length === 0 && selection?.kind === Kind.FIELD && names.has(selection.name.value);
}

/**
 * The variables an event's execution can read: all but those used only in the root field's arguments (which chose
 * the stream, and which its resolve does not read). Sorted, so the key does not depend on their order.
 */
function variablesReadByEvents(document: DocumentNode, operation: OperationDefinitionNode): string[] {
  const used = new Set<string>();
  const collect = (node: ASTNode) =>
    visit(node, {
      Variable(variable) {
        used.add(variable.name.value);
      },
    });
  for (const definition of document.definitions) if (definition.kind === Kind.FRAGMENT_DEFINITION) collect(definition);
  for (const directive of operation.directives ?? []) collect(directive);
  for (const selection of operation.selectionSet.selections) {
    if (selection.kind !== Kind.FIELD) {
      collect(selection);
      continue;
    }
    for (const directive of selection.directives ?? []) collect(directive);
    if (selection.selectionSet) collect(selection.selectionSet);
  }
  // Variables not defined by the operation fail validation before this runs; keep only defined ones.
  const defined = (operation.variableDefinitions ?? []).map((definition) => definition.variable.name.value);
  return defined.filter((name) => used.has(name)).sort();
}

const done = (): IteratorResult<ExecutionResult> => ({ done: true, value: undefined });

const locatedAt = (operation: OperationDefinitionNode, error: unknown) =>
  new GraphQLError(error instanceof Error ? error.message : String(error), {
    originalError: error instanceof Error ? error : undefined,
    nodes: [operation],
  });

const isAsyncIterable = (value: unknown): value is AsyncIterable<unknown> =>
  typeof value === 'object' && value !== null && Symbol.asyncIterator in value;

/**
 * Each event of `source` through `map`. Not an async generator: its return() would wait for a pending next(), which
 * on a quiet stream may never settle. An error of the stream itself is located at the operation, as yoga's executor
 * does it.
 */
function mapEvents(
  iterator: AsyncIterator<unknown>,
  map: (event: unknown) => MaybePromise<ExecutionResult>,
  operation: OperationDefinitionNode,
): AsyncIterableIterator<ExecutionResult> {
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    // Plain promise callbacks, not an async function: a quiet stream holds one reaction here, not a suspended frame.
    next() {
      return iterator.next().then(
        (step) =>
          step.done
            ? done()
            : Promise.resolve(map(step.value)).then(
                (value) => ({ done: false, value }),
                // A failed execution ends the stream: its source is closed (bus listener, credential watch), as graphql-js does.
                async (error: unknown) => {
                  await iterator.return?.();
                  throw error;
                },
              ),
        (error: unknown) => {
          throw locatedAt(operation, error);
        },
      );
    },
    async return() {
      await iterator.return?.();
      return done();
    },
    async throw(error?: unknown) {
      if (iterator.throw) await iterator.throw(error);
      throw error;
    },
  };
}
