import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  execute,
  getOperationAST,
  GraphQLError,
  subscribe,
  type ExecutionArgs,
  type ExecutionResult,
  type GraphQLFormattedError,
} from 'graphql';
import { usePrometheus } from '@graphql-yoga/plugin-prometheus';
import { useServer } from 'graphql-ws/use/ws';
import { createYoga, maskError, useReadinessCheck, type YogaServerInstance } from 'graphql-yoga';
import { WebSocketServer, type WebSocket } from 'ws';
import { useAdminApi, type AdminApiOptions } from './admin/admin-api.js';
import { AuthenticationError, type Authenticator, type Principal } from './auth/authenticator.js';
import { LiveCredentials } from './auth/live-credentials.js';
import { isDatabaseUnavailable } from './db/unavailable.js';
import { readinessResponse, useMetricsEndpoint, type MetricsEndpointOptions, type Readiness } from './observability/endpoints.js';
import { serviceUnavailable, unauthenticated } from './schema/errors.js';
import type { GraphQLLimits, InputLimits, TenantConnectionLimits, WebSocketLimits } from './config.js';
import type { Executor } from './executor/executor.js';
import { graphqlWebSocketClass, GraphqlWsSubscriptionRoot } from './limits/coalesced-websocket.js';
import { corsForOrigins, varyOnOrigin } from './limits/cors.js';
import { csrfPreventionPlugin } from './limits/csrf-prevention.js';
import { graphqlLimitPlugins } from './limits/graphql-limits.js';
import { stepcastCostModel } from './limits/query-cost.js';
import { CLOSE_TOO_MANY_SOCKETS, TenantConnectionShares, tenantSubscriptionLimitPlugin } from './limits/tenant-connections.js';
import { webSocketServerOptions, withWebSocketLimits } from './limits/websocket-limits.js';
import type { Logger } from './logger.js';
import type { GraphQLContext } from './schema/context.js';
import { graphQLContext } from './schema/request-context.js';
import { schema } from './schema/index.js';
import { sharedEventExecutionPlugin } from './schema/shared-event-execution.js';
import { runPagesPlugin } from './web/run-pages.js';

export interface GraphQLServerOptions {
  executor: Executor;
  logger: Logger;
  /** Who a request acts for: checked on every HTTP request and once per WebSocket, in connection_init. */
  authenticator: Authenticator;
  /** How often open WebSockets and streams re-check that their credential still stands. */
  credentialRecheckMs: number;
  graphiql?: boolean;
  /**
   * config.graphql and config.websocket: enforced over HTTP and graphql-ws alike (src/limits). The query cost
   * counts the steps of an execution or a plan at inputLimits.maxSteps, the most a plan may have.
   * tenantConnections: each tenant's share of open sockets and subscriptions.
   */
  limits: {
    graphql: GraphQLLimits;
    websocket: WebSocketLimits;
    inputLimits: Pick<InputLimits, 'maxSteps'>;
    tenantConnections: TenantConnectionLimits;
  };
  /** Origins whose pages may call the API from a browser (config.http.corsOrigins); none by default. */
  corsOrigins?: readonly string[];
  /** Backs GET /ready: 200 when ready, 503 with the reason otherwise (or when it throws). */
  checkReadiness?: () => Promise<Readiness>;
  /**
   * The registry GraphQL's metrics (yoga's Prometheus plugin) are recorded in; `endpoint`: GET /metrics is served on
   * this port too (not when STEPCAST_METRICS_PORT gives metrics a listener of their own). Unset: no metrics.
   */
  metrics?: MetricsEndpointOptions & { endpoint: boolean };
  /** The admin API under /admin/ (src/admin/admin-api.ts); off when undefined. */
  admin?: Pick<AdminApiOptions, 'token' | 'instanceId' | 'operations'>;
}

export interface GraphQLServer {
  httpServer: Server;
  yoga: YogaServerInstance<Record<string, unknown>, GraphQLContext>;
  listen(port: number, host: string): Promise<AddressInfo>;
  /** graphql-ws sockets open now. */
  openSockets(): number;
  /** Stops accepting connections and closes the open ones (call after open subscriptions have completed). */
  close(): Promise<void>;
}

/** graphql-ws's own code for a refused connection_init. */
const CLOSE_FORBIDDEN = 4403;
const CLOSE_TRY_AGAIN_LATER = 1013;

/** connectionParams.authorization (or Authorization), as sent by the client in connection_init. */
function connectionAuthorization(params: Readonly<Record<string, unknown>> | undefined): string | undefined {
  const value = params?.authorization ?? params?.Authorization;
  return typeof value === 'string' ? value : undefined;
}

/**
 * The database being unreachable is not the request's fault nor a bug: the client is told to retry (503, Retry-After)
 * instead of getting the masked "Unexpected error.", whichever resolver, context or stream met it.
 */
function maskStepcastError(error: unknown, message: string, isDev?: boolean): Error {
  if (isDatabaseUnavailable(error)) return serviceUnavailable({ located: error instanceof GraphQLError ? error : undefined });
  return markBadVariables(error, message, isDev);
}

/**
 * graphql-js reports a variable that does not fit its type ("Variable "$plan" got invalid value …")
 * with no code; it is the client's input that is wrong, so it gets BAD_USER_INPUT like our own checks.
 */
function markBadVariables(error: unknown, message: string, isDev?: boolean): Error {
  if (
    error instanceof GraphQLError &&
    (error.originalError === undefined || error.originalError instanceof GraphQLError) &&
    !error.path &&
    error.extensions?.code === undefined &&
    error.message.startsWith('Variable "$')
  ) {
    Object.assign(error.extensions, { code: 'BAD_USER_INPUT', http: { status: 400 } });
    return error;
  }
  return maskError(error, message, isDev);
}

/**
 * extensions.http is how an error tells yoga the HTTP status and headers of the response (yoga leaves it out of the
 * body); on a socket it means nothing. graphql-ws sends errors as they are, so they go out as copies without it
 * (copies: yoga caches validation errors and shares them with HTTP requests, which still need it).
 */
function withoutHttpExtension(error: GraphQLError): GraphQLFormattedError {
  const formatted = error.toJSON();
  if (!formatted.extensions || !('http' in formatted.extensions)) return formatted;
  const { http: _http, ...extensions } = formatted.extensions;
  const { extensions: _all, ...rest } = formatted;
  return Object.keys(extensions).length > 0 ? { ...rest, extensions } : rest;
}

/**
 * yoga gives a syntax error its code (and its HTTP status) only when an HTTP request parses it, and caches the error
 * for both transports: parsed first over graphql-ws, a document's syntax error would go without a code there, and
 * without its 400 to the HTTP requests after. So it is completed here the way yoga does it, in place (onError
 * leaves the http extension out of what the socket sends).
 */
function parseFailed(error: GraphQLError): GraphQLError {
  const extensions = error.extensions as Record<string, unknown>;
  extensions.code ??= 'GRAPHQL_PARSE_FAILED';
  extensions.http ??= { spec: true, status: 400 };
  return error;
}

const hasHttpExtension = (error: GraphQLError) => error.extensions?.http !== undefined;

/**
 * yoga's Prometheus plugin into the service's registry, without the labels a client chooses (operation names, URLs,
 * paths), which would grow a series for every value; and GET /metrics when it is served on this port.
 */
function graphqlMetricsPlugins({ endpoint, ...options }: MetricsEndpointOptions & { endpoint: boolean }) {
  return [
    usePrometheus({
      registry: options.registry,
      endpoint: false,
      skipIntrospection: true,
      labels: { operationName: false, url: false, path: false },
      metrics: {
        graphql_envelop_request_time_summary: false,
        graphql_envelop_deprecated_field: false,
        graphql_envelop_schema_change: false,
        // Nothing in the subscribe phase: its onSubscribe hook would allocate handler lists and closures for every
        // subscription and wrap its iterator for as long as it is open (~2 KB per idle subscription), and a
        // subscription's duration is how long a client stayed, not a cost. Subscriptions still count in the parse,
        // validate and context phases, and stepcast_subscriptions_open counts them open.
        graphql_envelop_phase_subscribe: false,
        graphql_envelop_request_duration: ['execute'],
        graphql_envelop_request: ['execute'],
        graphql_envelop_error_result: ['parse', 'validate', 'context', 'execute'],
      },
    }),
    ...(endpoint ? [useMetricsEndpoint(options)] : []),
  ];
}

/** graphql-yoga over HTTP (queries, mutations, SSE subscriptions) and graphql-ws on the same port and path. */
export function createGraphQLServer({
  executor,
  logger,
  authenticator,
  credentialRecheckMs,
  graphiql = true,
  limits,
  corsOrigins = [],
  checkReadiness = async () => ({ ready: true, reason: 'ready' }),
  metrics,
  admin,
}: GraphQLServerOptions): GraphQLServer {
  const liveCredentials = new LiveCredentials(authenticator, logger);
  const shares = new TenantConnectionShares(limits.tenantConnections);
  const services = { executor, authenticator, liveCredentials };
  const contextFor = (principal: Principal): GraphQLContext => graphQLContext(services, principal);

  const yoga = createYoga<Record<string, unknown>, GraphQLContext>({
    schema,
    graphiql: graphiql ? { subscriptionsProtocol: 'WS', title: 'stepcast' } : false,
    // The bundled GraphiQL (yoga's default page loads its scripts from a CDN, which offline machines cannot reach),
    // with stepcast's welcome and a fetcher that authenticates its WebSockets (src/web/graphiql-page.ts).
    // Its module is 9 MB of JavaScript, loaded when the page is first asked for rather than at every start.
    renderGraphiQL: async (options) => (await import('./web/graphiql-page.js')).renderStepcastGraphiQL(options),
    landingPage: false,
    maskedErrors: { isDev: false, maskError: maskStepcastError },
    cors: corsForOrigins(corsOrigins),
    plugins: [
      // A revoked key's sockets close at once here; other processes of a cluster close theirs at their next sweep.
      ...(admin ? [useAdminApi({ ...admin, logger, onKeyRevoked: () => void liveCredentials.sweep() })] : []),
      useReadinessCheck({
        endpoint: '/ready',
        check: async ({ fetchAPI }) => {
          const { status, headers, body } = readinessResponse(await checkReadiness());
          return new fetchAPI.Response(body, { status, headers });
        },
      }),
      ...(metrics ? graphqlMetricsPlugins(metrics) : []),
      // GET /runs and /runs/<id>: the history and live run pages (src/web).
      runPagesPlugin(),
      ...(corsOrigins.length > 0 ? [varyOnOrigin] : []),
      csrfPreventionPlugin(),
      ...graphqlLimitPlugins(limits.graphql, stepcastCostModel(limits.inputLimits.maxSteps)),
      // One execution of a live update per distinct selection, variables and tenant, not one per subscriber.
      sharedEventExecutionPlugin({ fields: ['stepUpdates'], contextKey: (context) => (context as GraphQLContext).tenantId }),
      // Last, so that a subscription the limits above refuse takes no slot.
      tenantSubscriptionLimitPlugin(shares, (context) => (context as GraphQLContext).tenantId),
    ],
    // graphqlLimitPlugins limits the body with its own code (PAYLOAD_TOO_LARGE).
    maxRequestBodySize: false,
    context: async ({ request, socketContext }) => {
      // graphql-ws authenticated the socket in onConnect; an HTTP request brings its own credential.
      if (socketContext) return socketContext as GraphQLContext;
      try {
        return { ...contextFor(await authenticator.authenticate(request.headers.get('authorization'))), signal: request.signal };
      } catch (error) {
        if (error instanceof AuthenticationError) throw unauthenticated(error.message);
        throw error;
      }
    },
    logging: {
      debug: (...args) => logger.debug({ yoga: args.map(String) }, 'graphql-yoga'),
      info: (...args) => logger.info({ yoga: args.map(String) }, 'graphql-yoga'),
      warn: (...args) => logger.warn({ yoga: args.map(String) }, 'graphql-yoga'),
      error: (...args) => {
        const err = args.find((a) => a instanceof Error);
        if (isDatabaseUnavailable(err)) {
          logger.warn({ reason: err instanceof Error ? err.message : undefined }, 'request answered SERVICE_UNAVAILABLE: the database cannot be reached');
          return;
        }
        // Errors the API raises on purpose (NOT_FOUND, BAD_USER_INPUT) are answers, not faults.
        const expected = err instanceof GraphQLError && err.extensions?.code && !err.extensions.unexpected;
        if (expected) logger.debug({ err }, 'graphql-yoga');
        else logger.error({ err, yoga: args.map(String) }, 'graphql-yoga');
      },
    },
  });

  const httpServer = createServer(yoga);
  /**
   * Per authenticated socket, the context its subscriptions share (built once in onConnect): each subscription's
   * context refers to these functions instead of making its own (a thousand idle subscriptions are held at once).
   */
  const socketContexts = new WeakMap<WebSocket, GraphQLContext>();
  // Upgrades are handed over here rather than with `server: httpServer`, which would also pass the HTTP server's
  // errors (a port in use) to graphql-ws, which prints them to the console as its own.
  const wsServer = new WebSocketServer({
    noServer: true,
    path: yoga.graphqlEndpoint,
    // What a burst sends to a socket leaves in one write; clients that break the protocol are logged, not printed.
    WebSocket: graphqlWebSocketClass(logger),
    ...webSocketServerOptions(limits.websocket, corsOrigins),
  });
  httpServer.on('upgrade', (request, socket, head) =>
    wsServer.handleUpgrade(request, socket, head, (ws) => wsServer.emit('connection', ws, request)),
  );
  const wsHandle = useServer<Record<string, unknown>>(
    withWebSocketLimits({
      execute: (args: ExecutionArgs) => (args.rootValue as { execute: typeof execute }).execute(args),
      subscribe: (args: ExecutionArgs) => (args.rootValue as { subscribe: typeof subscribe }).subscribe(args),
      onError: (_context, _id, _payload, errors) => (errors.some(hasHttpExtension) ? errors.map(withoutHttpExtension) : undefined),
      onNext: (_context, _id, _payload, _args, result: ExecutionResult) =>
        result.errors?.some(hasHttpExtension) ? { ...result, errors: result.errors.map(withoutHttpExtension) } : undefined,
      onConnect: async (context) => {
        const { socket } = context.extra;
        try {
          const principal = await authenticator.authenticate(connectionAuthorization(context.connectionParams));
          // Gone while it was authenticated: its 'close' has passed, so nothing taken now would be given back.
          if (socket.readyState !== socket.OPEN) return false;
          const releaseSocket = shares.takeSocket(principal.tenantId);
          if (!releaseSocket) {
            logger.info({ tenantId: principal.tenantId, limit: limits.tenantConnections.maxSockets }, 'WebSocket refused: tenant socket limit');
            socket.close(CLOSE_TOO_MANY_SOCKETS, shares.socketRefusal());
            return false;
          }
          socketContexts.set(socket, contextFor(principal));
          // Nothing reads the upgrade request after this (the credential came in connection_init): let it go rather
          // than keep it, its headers and its stream state for the socket's whole life.
          (context.extra as { request?: unknown }).request = undefined;
          const unwatch = liveCredentials.watch(principal, () =>
            socket.close(CLOSE_FORBIDDEN, 'Forbidden: the credential was revoked or has expired'),
          );
          socket.once('close', () => {
            releaseSocket();
            unwatch();
            socketContexts.delete(socket);
          });
          return true;
        } catch (error) {
          if (isDatabaseUnavailable(error)) {
            // 1013 is the WebSocket code for "try again later"; graphql-ws clients retry on it.
            logger.warn({ reason: error instanceof Error ? error.message : undefined }, 'WebSocket refused: the database cannot be reached');
            socket.close(CLOSE_TRY_AGAIN_LATER, 'SERVICE_UNAVAILABLE: the database cannot be reached');
            return false;
          }
          if (!(error instanceof AuthenticationError)) throw error;
          logger.info({ reason: error.message }, 'WebSocket connection refused: not authenticated');
          socket.close(CLOSE_FORBIDDEN, `Forbidden: ${error.message}`.slice(0, 120));
          return false;
        }
      },
      onSubscribe: async (context, id, payload) => {
        const socketContext = socketContexts.get(context.extra.socket);
        // graphql-ws only lets a subscription through after connection_ack, so this cannot be missing.
        if (!socketContext) return [unauthenticated('the connection is not authenticated')];
        // Only what the plugins and the context function read: the socket's context (yoga's context function
        // returns it), the operation's parameters. Not graphql-ws's connection context, which no resolver reads.
        const enveloped = yoga.getEnveloped({ params: payload, socketContext });
        let document;
        try {
          document = enveloped.parse(payload.query);
        } catch (error) {
          // Answer this subscription with the syntax error; letting it throw would close the whole socket.
          if (error instanceof GraphQLError) return [parseFailed(error)];
          throw error;
        }
        // The context first: envelop builds it onto the object that validation's hooks see.
        const contextValue = await enveloped.contextFactory();
        const errors = enveloped.validate(enveloped.schema, document);
        if (errors.length > 0) return errors;
        const operation = getOperationAST(document, payload.operationName);
        // graphql-ws would answer an unknown operationName (or several unnamed operations) with no code.
        if (!operation) {
          return [
            new GraphQLError('Could not determine what operation to execute.', {
              extensions: { code: 'OPERATION_RESOLUTION_FAILURE' },
            }),
          ];
        }
        return {
          schema: enveloped.schema,
          operationName: payload.operationName,
          document,
          variableValues: payload.variables,
          contextValue,
          // A subscription's root can also write its results straight to the socket (src/schema/shared-event-execution.ts).
          rootValue:
            operation.operation === 'subscription'
              ? new GraphqlWsSubscriptionRoot(enveloped.execute, enveloped.subscribe, context.extra.socket, id)
              : { execute: enveloped.execute, subscribe: enveloped.subscribe },
        } satisfies ExecutionArgs;
      },
    }, limits.websocket),
    wsServer,
    limits.websocket.keepAliveMs,
  );

  liveCredentials.start(credentialRecheckMs);

  return {
    httpServer,
    yoga,
    openSockets: () => wsServer.clients.size,
    listen: (port, host) =>
      new Promise((resolve, reject) => {
        httpServer.once('error', reject);
        httpServer.listen(port, host, () => {
          httpServer.off('error', reject);
          // With noServer, ws attaches no 'error' listener of its own: without this one an error of the listening
          // socket (EMFILE on accept) would throw from emit and end the process.
          httpServer.on('error', (error) => logger.error({ err: error }, 'HTTP server error'));
          resolve(httpServer.address() as AddressInfo);
        });
      }),
    close: async () => {
      liveCredentials.stop();
      const closed = new Promise<void>((resolve) => httpServer.close(() => resolve()));
      // Lets graphql-ws and SSE flush the "complete" of streams that just ended before sockets close.
      await new Promise((resolve) => setImmediate(resolve));
      // A client that ignores the close handshake would hold dispose() for ws's 30 s; past a second, cut it off.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([wsHandle.dispose(), new Promise((resolve) => (timer = setTimeout(resolve, 1_000)))]);
      clearTimeout(timer);
      for (const socket of wsServer.clients) socket.terminate();
      httpServer.closeAllConnections();
      await closed;
    },
  };
}
