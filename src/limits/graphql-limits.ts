import { blockFieldSuggestionsPlugin } from '@escape.tech/graphql-armor-block-field-suggestions';
import { maxAliasesPlugin } from '@escape.tech/graphql-armor-max-aliases';
import { maxDepthPlugin } from '@escape.tech/graphql-armor-max-depth';
import { maxDirectivesPlugin } from '@escape.tech/graphql-armor-max-directives';
import { maxTokensPlugin } from '@escape.tech/graphql-armor-max-tokens';
import {
  getNamedType,
  GraphQLError,
  isIntrospectionType,
  type ExecutionResult,
  type ValidationContext,
  type ValidationRule,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { GraphQLLimits } from '../config.js';
import { modelCallLimitPlugin, TOO_MANY_MODEL_CALLS } from './model-calls.js';
import { costLimitPlugin, QUERY_TOO_COSTLY, type CostModel } from './query-cost.js';

/** extensions.code of each rejection; every limit has its own. */
export const LimitCode = {
  depth: 'QUERY_TOO_DEEP',
  cost: QUERY_TOO_COSTLY,
  aliases: 'TOO_MANY_ALIASES',
  tokens: 'TOO_MANY_TOKENS',
  directives: 'TOO_MANY_DIRECTIVES',
  modelCalls: TOO_MANY_MODEL_CALLS,
  introspection: 'INTROSPECTION_DISABLED',
  payload: 'PAYLOAD_TOO_LARGE',
} as const;

/** What armor's messages look like ("Syntax Error: Query depth limit of 8 exceeded, found 9."): we keep the number found. */
const FOUND = /found (\d+(?:\.\d+)?)/;

/**
 * Armor throws its own uncoded "Syntax Error: …" by default, and a throw out of validate stops at the first
 * rejection (over graphql-ws it would even close the socket). Instead each rejection is reported as an ordinary
 * validation error with its own code, so a document over several limits hears about all of them.
 */
function reportAs(code: string, describe: (found: string | undefined) => string, limit: number) {
  return (context: ValidationContext | null, armorError: GraphQLError) => {
    const error = new GraphQLError(describe(FOUND.exec(armorError.message)?.[1]), { extensions: { code, limit } });
    // The token limit fires while parsing, where there is no validation context: the parse fails with it.
    if (context) context.reportError(error);
    else throw error;
  };
}

const over = (what: string, limit: number, found: string | undefined) =>
  `${what}${found === undefined ? '' : ` is ${found}`}, over the limit of ${limit}.`;

/**
 * The options every armor plugin here takes: the bound, limits exposed, no throw on rejection, and the
 * rejection reported with `code` and a message naming `what` was counted (or `describe`'s own).
 */
function armorLimit(code: string, limit: number, what: string, describe = (found: string | undefined) => over(what, limit, found)) {
  return { exposeLimits: true, propagateOnRejection: false, n: limit, onReject: [reportAs(code, describe, limit)] };
}

/** Rejects __schema and __type (not __typename) with INTROSPECTION_DISABLED. */
export const introspectionDisabledRule: ValidationRule = (context) => ({
  Field(node) {
    const type = context.getType();
    if (type && isIntrospectionType(getNamedType(type))) {
      context.reportError(
        new GraphQLError(`Introspection is disabled on this server; the document asks for "${node.name.value}".`, {
          nodes: node,
          extensions: { code: LimitCode.introspection },
        }),
      );
    }
  },
});

const SUGGESTION = /\s*Did you mean .+?\?/g;
const HIDDEN = ' [Suggestion hidden]';

/**
 * graphql-js suggests names in more places than armor's filter covers: enum values ("Did you mean the enum
 * value …?") in validation, and field or enum names when coercing variables, which happens at execution.
 */
function hideSuggestionsIn(errors: readonly Error[] | undefined): void {
  for (const error of errors ?? []) error.message = error.message.replace(SUGGESTION, HIDDEN);
}

function hideSuggestionsPlugin(): Plugin {
  const onResult = ({ result }: { result: unknown }) => {
    // Streams carry resolver errors, which masking already handles; only single results can hold coercion errors.
    if (result && typeof result === 'object' && 'errors' in result) hideSuggestionsIn((result as ExecutionResult).errors);
  };
  return {
    onValidate: () => ({ result }) => hideSuggestionsIn(result),
    onExecute: () => ({ onExecuteDone: onResult }),
    onSubscribe: () => ({ onSubscribeResult: onResult }),
  };
}

function payloadTooLarge(limit: number): GraphQLError {
  return new GraphQLError(`The request body is over the limit of ${limit} bytes.`, {
    extensions: { code: LimitCode.payload, limit, http: { status: 413, headers: { connection: 'close' } } },
  });
}

/**
 * Refuses a request body over `limit` bytes with 413 PAYLOAD_TOO_LARGE: at once when Content-Length says so
 * (nothing is read), and for a body without one (chunked) by counting the bytes as they stream in and failing
 * the parse as soon as the count passes the limit, so at most `limit` bytes plus one chunk are ever held.
 * The 413 says Connection: close: the rest of the body is never read, so that connection cannot serve another
 * request (keeping it alive made clients reuse a socket the server was tearing down).
 * Replaces yoga's own maxRequestBodySize (same technique, but its code is REQUEST_ENTITY_TOO_LARGE).
 */
export function bodyLimitPlugin(limit: number): Plugin {
  return {
    onRequestParse({ request, requestParser, setRequestParser, fetchAPI }) {
      const contentLength = request.headers.get('content-length');
      if (contentLength !== null && Number(contentLength) > limit) throw payloadTooLarge(limit);
      if (!requestParser || !request.body) return;
      const parse = requestParser;
      setRequestParser((incoming) => {
        // As in yoga: a native stream needs the native TransformStream, the ponyfill's needs the ponyfill's.
        const Transform =
          incoming.body instanceof globalThis.ReadableStream ? globalThis.TransformStream : fetchAPI.TransformStream;
        let bytes = 0;
        const body = incoming.body!.pipeThrough(
          new Transform<Uint8Array, Uint8Array>({
            transform(chunk, controller) {
              bytes += chunk.byteLength;
              if (bytes > limit) controller.error(payloadTooLarge(limit));
              else controller.enqueue(chunk);
            },
          }),
        );
        const limited = new fetchAPI.Request(incoming.url, {
          method: incoming.method,
          headers: incoming.headers,
          signal: incoming.signal,
          body,
          duplex: 'half',
        } as RequestInit);
        return parse(limited);
      });
    },
  };
}

/**
 * The yoga/envelop plugins that enforce config.graphql. They hook parse, validate, execute and subscribe, so they
 * hold wherever yoga's getEnveloped runs: over HTTP and SSE, and over graphql-ws (server.ts's onSubscribe uses it).
 * The cost limit prices fields with `costModel` (query-cost.ts's stepcastCostModel for stepcast's schema), which also
 * names the fields that ask a model: an operation may select limits.maxModelCalls of them.
 */
export function graphqlLimitPlugins(limits: GraphQLLimits, costModel: CostModel): Plugin[] {
  return [
    bodyLimitPlugin(limits.maxBodyBytes),
    maxTokensPlugin(
      armorLimit(LimitCode.tokens, limits.maxTokens, 'tokens', () => `The document has more than ${limits.maxTokens} tokens, the limit.`),
    ),
    maxDepthPlugin(armorLimit(LimitCode.depth, limits.maxDepth, 'Query depth')),
    // Not armor's cost limit: it has no per-field weights, and counts `first: $first` as a page of one.
    costLimitPlugin(limits.maxCost, costModel),
    maxAliasesPlugin(armorLimit(LimitCode.aliases, limits.maxAliases, 'The number of aliases')),
    maxDirectivesPlugin(armorLimit(LimitCode.directives, limits.maxDirectives, 'The number of directives')),
    modelCallLimitPlugin(limits.maxModelCalls, costModel.modelCallingFields),
    ...(limits.introspection
      ? []
      : [{ onValidate: ({ addValidationRule }) => addValidationRule(introspectionDisabledRule) } satisfies Plugin]),
    blockFieldSuggestionsPlugin(),
    hideSuggestionsPlugin(),
  ] as Plugin[];
}
