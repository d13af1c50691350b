import { GraphQLError, Kind, type FragmentDefinitionNode, type SelectionSetNode, type ValidationRule } from 'graphql';
import type { Plugin } from 'graphql-yoga';

export const TOO_MANY_MODEL_CALLS = 'TOO_MANY_MODEL_CALLS';

/**
 * Refuses an operation that selects more than `maxModelCalls` of the root fields `modelCallingFields` ("Type.field")
 * with TOO_MANY_MODEL_CALLS. Aliases and fragments count where they are written; @skip and @include do not lower the
 * count (their variables are not known during validation), so the verdict never depends on the variables.
 */
export function modelCallLimitRule(maxModelCalls: number, modelCallingFields: readonly string[]): ValidationRule {
  return (context) => {
    const fragments = new Map(context.getDocument().definitions.flatMap((d) => (d.kind === Kind.FRAGMENT_DEFINITION ? [[d.name.value, d]] : [])));
    return {
      OperationDefinition(operation) {
        const root = context.getSchema().getRootType(operation.operation);
        if (!root) return;
        // Per fragment, walked once; a fragment in a cycle (refused by its own rule) counts 0 where it recurs.
        const fragmentCalls = new Map<string, number>();
        const callsIn = (selectionSet: SelectionSetNode): number => {
          let calls = 0;
          for (const selection of selectionSet.selections) {
            if (selection.kind === Kind.FIELD) {
              if (modelCallingFields.includes(`${root.name}.${selection.name.value}`)) calls += 1;
            } else if (selection.kind === Kind.INLINE_FRAGMENT) {
              calls += callsIn(selection.selectionSet);
            } else {
              calls += callsInFragment(fragments.get(selection.name.value));
            }
          }
          return calls;
        };
        const callsInFragment = (fragment: FragmentDefinitionNode | undefined): number => {
          if (!fragment) return 0;
          const name = fragment.name.value;
          const known = fragmentCalls.get(name);
          if (known !== undefined) return known;
          fragmentCalls.set(name, 0);
          const calls = callsIn(fragment.selectionSet);
          fragmentCalls.set(name, calls);
          return calls;
        };
        const calls = callsIn(operation.selectionSet);
        if (calls <= maxModelCalls) return;
        context.reportError(
          new GraphQLError(
            `The operation asks a model ${calls} times (${modelCallingFields.map((field) => field.split('.')[1]).join(', ')}), over the limit of ${maxModelCalls} per request.`,
            { nodes: operation, extensions: { code: TOO_MANY_MODEL_CALLS, limit: maxModelCalls } },
          ),
        );
      },
    };
  };
}

/** modelCallLimitRule as a yoga plugin: validation runs over HTTP, SSE and graphql-ws alike (server.ts). */
export function modelCallLimitPlugin(maxModelCalls: number, modelCallingFields: readonly string[]): Plugin {
  const rule = modelCallLimitRule(maxModelCalls, modelCallingFields);
  return { onValidate: ({ addValidationRule }) => addValidationRule(rule) };
}
