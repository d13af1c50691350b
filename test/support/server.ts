import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, type Client, type ClientOptions } from 'graphql-ws';
import WebSocket from 'ws';
import { startStepcast, type StepcastApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import type { TypedDocumentString } from '../generated/graphql.js';
import { createTestDatabase, type Backend, type TestDatabase } from './database.js';
import { seedPgliteDataDir } from './pglite-template.js';

export interface GraphQLResponse<TResult> {
  data?: TResult | null;
  errors?: { message: string; extensions?: Record<string, unknown> }[];
}

export interface TestClient {
  request<TResult, TVariables>(
    document: TypedDocumentString<TResult, TVariables>,
    variables?: TVariables,
  ): Promise<GraphQLResponse<TResult>>;
  subscribeWs<TResult, TVariables>(
    document: TypedDocumentString<TResult, TVariables>,
    variables: TVariables,
  ): Promise<GraphQLResponse<TResult>[]>;
  subscribeSse<TResult, TVariables>(
    document: TypedDocumentString<TResult, TVariables>,
    variables: TVariables,
  ): Promise<GraphQLResponse<TResult>[]>;
  wsClient(options?: Partial<ClientOptions>): Client;
}

export interface TestServer extends TestClient {
  backend: Backend;
  /** The PostgreSQL database this server uses (undefined on PGlite). */
  databaseUrl: string | undefined;
  url: string;
  wsUrl: string;
  app: StepcastApp;
  /** The same helpers, sending this Authorization value (`Bearer <key or JWT>`). */
  as(authorization: string): TestClient;
  /** Stops the server and starts it again on the same database. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

export interface TestServerOptions {
  env?: Record<string, string>;
  /** Join the PostgreSQL database of another test server instead of creating a fresh one (a second replica). */
  joinDatabaseOf?: TestServer;
}

export async function startTestServer(backend: Backend, options: TestServerOptions = {}): Promise<TestServer> {
  const dataDir = await mkdtemp(join(tmpdir(), 'stepcast-test-'));
  // A DATA_DIR of the test's own is the test's to prepare (seedPgliteDataDir), or to leave empty.
  if (backend === 'pglite' && !options.env?.DATA_DIR) await seedPgliteDataDir(dataDir);
  let testDatabase: TestDatabase | undefined;
  if (backend === 'postgres' && !options.joinDatabaseOf) testDatabase = await createTestDatabase();
  const databaseUrl = options.joinDatabaseOf?.databaseUrl ?? testDatabase?.url;
  const config = loadConfig({
    NODE_ENV: 'test',
    PORT: '0',
    HOST: '127.0.0.1',
    DATA_DIR: dataDir,
    STEPCAST_DEMO_USERS: '200',
    STEPCAST_SHUTDOWN_GRACE_MS: '2000',
    ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
    ...options.env,
  });
  const logger = createLogger(process.env.TEST_LOG_LEVEL ?? 'silent');
  const clients: Client[] = [];

  /** The request helpers, sending `authorization` (HTTP header / connectionParams) when given. */
  const clientFor = (authorization: string | undefined): TestClient => {
    const headers = (accept: string): Record<string, string> => ({
      'content-type': 'application/json',
      accept,
      ...(authorization ? { authorization } : {}),
    });
    const client: TestClient = {
      async request(document, variables) {
        const response = await fetch(server.url, {
          method: 'POST',
          headers: headers('application/graphql-response+json'),
          body: JSON.stringify({ query: document.toString(), variables }),
        });
        return (await response.json()) as GraphQLResponse<never>;
      },
      wsClient(options = {}) {
        const ws = createClient({
          url: server.wsUrl,
          webSocketImpl: WebSocket,
          retryAttempts: 0,
          lazy: true,
          connectionParams: authorization ? { authorization } : undefined,
          ...options,
        });
        clients.push(ws);
        return ws;
      },
      async subscribeWs(document, variables) {
        const ws = client.wsClient();
        const results: GraphQLResponse<never>[] = [];
        await new Promise<void>((resolve, reject) => {
          ws.subscribe(
            { query: document.toString(), variables: variables as Record<string, unknown> },
            {
              next: (value) => results.push(value as GraphQLResponse<never>),
              error: (error) => {
                if (Array.isArray(error)) {
                  results.push({ errors: error });
                  resolve();
                } else reject(error instanceof Error ? error : new Error(JSON.stringify(error)));
              },
              complete: resolve,
            },
          );
        });
        await ws.dispose();
        return results;
      },
      async subscribeSse(document, variables) {
        const response = await fetch(server.url, {
          method: 'POST',
          headers: headers('text/event-stream'),
          body: JSON.stringify({ query: document.toString(), variables }),
        });
        return readSseEvents(response);
      },
    };
    return client;
  };

  const server: TestServer = {
    backend,
    databaseUrl,
    url: '',
    wsUrl: '',
    app: undefined as unknown as StepcastApp,
    ...clientFor(undefined),
    as: (authorization) => clientFor(authorization),
    async restart() {
      await server.app.close();
      await open();
    },
    async close() {
      await Promise.all(clients.map((client) => client.dispose()));
      await server.app.close();
      await testDatabase?.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };

  async function open() {
    server.app = await startStepcast(config, logger);
    server.url = server.app.url;
    server.wsUrl = server.app.url.replace(/^http/, 'ws');
  }
  try {
    await open();
  } catch (error) {
    await testDatabase?.drop();
    await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
  return server;
}

/** One operation over graphql-ws: its last result, or the errors it was answered with. */
export function overWs<TResult = Record<string, unknown>>(
  client: Client,
  query: string,
  variables?: Record<string, unknown>,
): Promise<GraphQLResponse<TResult>> {
  return new Promise((resolve, reject) => {
    let last: GraphQLResponse<TResult> = {};
    client.subscribe(
      { query, variables },
      {
        next: (value) => (last = value as GraphQLResponse<TResult>),
        error: (error) => (Array.isArray(error) ? resolve({ errors: error }) : reject(error as Error)),
        complete: () => resolve(last),
      },
    );
  });
}

/** Reads a GraphQL-over-SSE response until the server completes the stream. */
export async function readSseEvents<T>(response: Response): Promise<GraphQLResponse<T>[]> {
  const results: GraphQLResponse<T>[] = [];
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return results;
    buffer += value;
    let boundary;
    while ((boundary = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, boundary);
      buffer = buffer.slice(boundary + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = block
        .split('\n')
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).trimStart())
        .join('\n');
      if (event === 'complete') {
        await reader.cancel();
        return results;
      }
      if (event === 'next' && data) results.push(JSON.parse(data) as GraphQLResponse<T>);
    }
  }
}
