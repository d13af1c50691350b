import SchemaBuilder from '@pothos/core';
import RelayPlugin from '@pothos/plugin-relay';
import type { GraphQLContext } from './context.js';
import { decodeGlobalID, encodeGlobalID, loadNode, loadNodes, MAX_NODE_IDS } from './global-ids.js';

export const builder = new SchemaBuilder<{
  Context: GraphQLContext;
  DefaultFieldNullability: false;
  Scalars: {
    DateTime: { Input: Date; Output: Date | string };
    JSON: { Input: unknown; Output: unknown };
  };
}>({
  defaultFieldNullability: false,
  plugins: [RelayPlugin],
  relay: {
    encodeGlobalID,
    decodeGlobalID,
    nodeTypeOptions: { description: 'An object with an id that names it across the whole API, for client caches and refetching.' },
    nodeQueryOptions: {
      description:
        "The execution or step this id names, if it is your tenant's; any other id (unknown, another tenant's, an update's) answers null.",
      resolve: (_root, { id }, context) => loadNode(id.id, context),
    },
    nodesQueryOptions: {
      description: `node(id) for each of up to ${MAX_NODE_IDS} ids, in their order.`,
      resolve: (_root, { ids }, context) => loadNodes(ids.map((id) => id.id), context),
    },
  },
});
