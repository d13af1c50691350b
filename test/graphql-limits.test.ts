import { setTimeout as sleep } from 'node:timers/promises';
import {
  getIntrospectionQuery,
  getNamedType,
  getNullableType,
  isCompositeType,
  isIntrospectionType,
  isListType,
  isObjectType,
  parse,
  type GraphQLObjectType,
} from 'graphql';
import type { Client } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import { mostUpdatesOfARun, queryCost, stepcastCostModel } from '../src/limits/query-cost.js';
import { schema } from '../src/schema/index.js';
import { ExecutionQuery, ExecutionsQuery, PlanQueryQuery, ExecuteQueryMutation, StepUpdatesSubscription } from './support/operations.js';
import { runPlan, sqlStep, storeQueuedExecution, type StepUpdateEvent } from './support/plans.js';
import { overWs, startTestServer, type GraphQLResponse, type TestServer } from './support/server.js';

// These limits sit in front of the schema and do not depend on the database, so PGlite alone is enough.

type Result = GraphQLResponse<Record<string, unknown>>;

const LIMIT_CODES = ['QUERY_TOO_DEEP', 'QUERY_TOO_COSTLY', 'TOO_MANY_ALIASES', 'TOO_MANY_TOKENS', 'TOO_MANY_DIRECTIVES'];
const MAX_BODY = 1_048_576;
const MAX_FRAME = 65_536;

async function overHttp(server: TestServer, query: string, variables?: Record<string, unknown>): Promise<Result & { status: number }> {
  const response = await fetch(server.url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
    body: JSON.stringify({ query, variables }),
  });
  return { status: response.status, ...((await response.json()) as Result) };
}


const codesOf = (result: Result) => (result.errors ?? []).map((error) => error.extensions?.code);

/** Depth `depth`: inline fragments count as a level for armor, so nest them around one field. */
const documentOfDepth = (depth: number) => `{ ${'... on Query { '.repeat(depth - 1)}__typename${' }'.repeat(depth - 1)} }`;

/**
 * The cost model (src/limits/query-cost.ts): a leaf costs 1 (a step's result and an execution's finalResult 10), an
 * object 1 plus what is selected in it, a list of objects that times its largest size: a page at its `first`
 * (default 20), the steps of an execution at 50 (STEPCAST_PLAN_MAX_STEPS).
 * executions(first: 100) { edges { node { id × 47 } } } costs 1 + 100 × (1 + 1 + 47) = 4901; `__typename`s fill up.
 */
const documentOfCost = (typenames: number) =>
  `{ executions(first: 100) { edges { node { ${'id '.repeat(47)}} } } ${'__typename '.repeat(typenames)}}`;

/** 1 + first × (1 + 1 + 50 × (1 + 10)) = 1 + 552 × first: 4969 for 9 executions, 5521 for 10. */
const STEPS_WITH_RESULTS = 'edges { node { steps { result } } }';
const costOfStepsWithResults = (first: number) => 1 + 552 * first;

const documentWithAliases = (aliases: number) =>
  `{ executions(first: 1) { pageInfo { ${Array.from({ length: aliases }, (_, i) => `a${i}: hasNextPage`).join(' ')} } } }`;

/**
 * Exactly `tokens` tokens: 19 around a list of statuses, one token each. (Not thousands of repeated fields:
 * graphql-js stops comparing overlapping fields past its own budget, "Validation aborted.")
 */
const documentOfTokens = (tokens: number) =>
  `{ executions(filter: { status: [${' QUEUED'.repeat(tokens - 19)} ] }) { pageInfo { hasNextPage } } }`;

const documentWithDirectives = (directives: number) => `{ ${'__typename @include(if: true) '.repeat(directives)}}`;

const limits = [
  { name: 'depth', code: 'QUERY_TOO_DEEP', bound: 8, under: documentOfDepth(8), over: documentOfDepth(9) },
  { name: 'cost', code: 'QUERY_TOO_COSTLY', bound: 5000, under: documentOfCost(99), over: documentOfCost(100) },
  { name: 'aliases', code: 'TOO_MANY_ALIASES', bound: 15, under: documentWithAliases(15), over: documentWithAliases(16) },
  { name: 'tokens', code: 'TOO_MANY_TOKENS', bound: 2000, under: documentOfTokens(2000), over: documentOfTokens(2001) },
  { name: 'directives', code: 'TOO_MANY_DIRECTIVES', bound: 50, under: documentWithDirectives(50), over: documentWithDirectives(51) },
];

/** A raw graphql-transport-ws socket, for what the graphql-ws client would never do. */
function rawSocket(server: TestServer, options: WebSocket.ClientOptions = {}) {
  const socket = new WebSocket(server.wsUrl, 'graphql-transport-ws', options);
  const messages: { type: string; id?: string; payload?: unknown }[] = [];
  let pings = 0;
  const pingWaiters: { count: number; resolve: () => void }[] = [];
  socket.on('message', (data) => messages.push(JSON.parse(String(data)) as (typeof messages)[number]));
  socket.on('ping', () => {
    pings += 1;
    for (const waiter of pingWaiters.filter((w) => pings >= w.count)) waiter.resolve();
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.on('close', (code, reason) => resolve({ code, reason: String(reason) })),
  );
  const opened = new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  const nextMessage = (type: string) =>
    new Promise<(typeof messages)[number]>((resolve, reject) => {
      const found = messages.find((message) => message.type === type);
      if (found) return resolve(found);
      const onMessage = (data: WebSocket.RawData) => {
        const message = JSON.parse(String(data)) as (typeof messages)[number];
        if (message.type === type) {
          socket.off('message', onMessage);
          resolve(message);
        }
      };
      socket.on('message', onMessage);
      void closed.then(({ code }) => reject(new Error(`socket closed (${code}) before a ${type} message`)));
    });
  return {
    socket,
    opened,
    closed,
    nextMessage,
    send: (message: unknown) => socket.send(typeof message === 'string' ? message : JSON.stringify(message)),
    /** Resolves once the server has pinged `count` times in all. */
    pinged: (count: number) => new Promise<void>((resolve) => (pings >= count ? resolve() : pingWaiters.push({ count, resolve }))),
    async init() {
      await opened;
      socket.send(JSON.stringify({ type: 'connection_init' }));
      await nextMessage('connection_ack');
    },
  };
}

describe('GraphQL limits (defaults)', () => {
  let server: TestServer;
  let ws: Client;
  beforeAll(async () => {
    server = await startTestServer('pglite', { env: { STEPCAST_RECOVERY_INTERVAL_MS: '0' } });
    ws = server.wsClient();
  });
  afterAll(async () => {
    await server?.close();
  });

  for (const limit of limits) {
    it(`${limit.name}: a document at the bound (${limit.bound}) runs, over HTTP and graphql-ws`, async () => {
      const http = await overHttp(server, limit.under);
      expect(http.errors).toBeUndefined();
      expect(http.data).toBeTruthy();
      const overSocket = await overWs(ws, limit.under);
      expect(overSocket.errors).toBeUndefined();
      expect(overSocket.data).toEqual(http.data);
    });

    it(`${limit.name}: one past the bound fails with ${limit.code} and says the bound, over HTTP and graphql-ws`, async () => {
      const http = await overHttp(server, limit.over);
      expect(http.status).toBe(400);
      for (const result of [http, await overWs(ws, limit.over)]) {
        expect(result.data ?? undefined).toBeUndefined();
        expect(codesOf(result)).toEqual([limit.code]);
        const [error] = result.errors!;
        expect(error!.message).toContain(String(limit.bound));
        expect(error!.message).not.toMatch(/Syntax Error/);
        expect(error!.extensions).toMatchObject({ code: limit.code, limit: limit.bound });
      }
    });
  }

  it('reports every limit a document breaks, each with its own code', async () => {
    const deepAndAliased = `{ executions(first: 1) { pageInfo { ${Array.from({ length: 16 }, (_, i) => `a${i}: hasNextPage`).join(' ')} } } ${
      documentOfDepth(9).slice(1, -1)
    } }`;
    for (const result of [await overHttp(server, deepAndAliased), await overWs(ws, deepAndAliased)]) {
      expect(codesOf(result).sort()).toEqual(['QUERY_TOO_DEEP', 'TOO_MANY_ALIASES']);
    }
  });

  it('keeps the socket usable after an operation is refused for a limit', async () => {
    expect(codesOf(await overWs(ws, limits[0]!.over))).toEqual(['QUERY_TOO_DEEP']);
    expect(await overWs(ws, '{ __typename }')).toEqual({ data: { __typename: 'Query' } });
  });

  it('lets every operation the clients use, with their variables, and GraphiQL\'s introspection, through the default limits', async () => {
    // The largest execution a plan can make (50 steps, each with its result): executePlan, stepUpdates and execution.
    const plan = { query: 'fifty steps', steps: Array.from({ length: 50 }, () => sqlStep('SELECT id, email, name FROM users ORDER BY id LIMIT 20')) };
    const { id, updates, execution } = await runPlan(server, plan);
    expect(updates.at(-1)!.type).toBe('EXECUTION_SUCCEEDED');
    expect(execution.steps).toHaveLength(50);
    expect(execution.steps.every((step) => Array.isArray(step.result) && step.result.length === 20)).toBe(true);
    const overSocket = await overWs(ws, ExecutionQuery.toString(), { id });
    expect(overSocket.errors).toBeUndefined();
    expect(overSocket.data).toEqual({ execution });

    // History pages of 20 (the default) to 100 executions: every field but the steps.
    const historyPage = `query ($first: Int) { executions(first: $first) { edges { cursor node {
      id correlationId status totalSteps successfulSteps failedSteps finalResult lastSequence createdAt startedAt finishedAt durationMs
      usage { totalTokens } error { code message } plan { query } } } pageInfo { hasNextPage endCursor } } }`;
    for (const [query, variables] of [
      [ExecutionsQuery.toString(), {}],
      [ExecutionsQuery.toString(), { first: 100 }],
      [historyPage, { first: 20 }],
      [historyPage, { first: 100 }],
    ] as const) {
      for (const result of [await overHttp(server, query, variables), await overWs(ws, query, variables)]) {
        expect(result.errors).toBeUndefined();
        expect(result.data).toHaveProperty('executions.edges');
      }
    }

    // No model is configured: these fail with the agent's error, past the limits.
    // executeQuery selecting its whole execution: a model call (1,000) plus the largest execution.
    const wholeExecution = ExecutionQuery.toString()
      .replace('query Execution($id: ID!)', 'mutation ($query: String!)')
      .replace('execution(id: $id)', 'executeQuery(query: $query)');
    for (const [document, variables] of [
      [PlanQueryQuery, { query: 'how many users?' }],
      [ExecuteQueryMutation, { query: 'how many users?' }],
      [wholeExecution, { query: 'how many users?' }],
    ] as const) {
      const result = await overHttp(server, document.toString(), variables);
      expect(result.errors?.length, document.toString().slice(0, 40)).toBeGreaterThan(0);
      expect(codesOf(result).filter((code) => LIMIT_CODES.includes(code as string))).toEqual([]);
    }

    const introspection = getIntrospectionQuery({
      descriptions: true,
      specifiedByUrl: true,
      directiveIsRepeatable: true,
      schemaDescription: true,
      inputValueDeprecation: true,
      oneOf: true,
    });
    for (const result of [await overHttp(server, introspection), await overWs(ws, introspection)]) {
      expect(result.errors).toBeUndefined();
      expect(result.data).toHaveProperty('__schema.queryType.name', 'Query');
    }
  });

  describe('query cost', () => {
    const refusedFor = (result: Result, cost: number) => {
      expect(result.data ?? undefined).toBeUndefined();
      expect(codesOf(result)).toEqual(['QUERY_TOO_COSTLY']);
      expect(result.errors![0]!.message).toBe(`Query cost is ${cost}, over the limit of 5000.`);
      expect(result.errors![0]!.extensions).toMatchObject({ code: 'QUERY_TOO_COSTLY', cost, limit: 5000 });
    };
    const passes = (result: Result, field = 'executions') => {
      expect(result.errors).toBeUndefined();
      expect(result.data).toHaveProperty(`${field}.edges`);
    };

    it('refuses 100 executions × 50 steps × result, whether the page size is written out or passed as a variable', async () => {
      const cost = costOfStepsWithResults(100);
      for (const [query, variables] of [
        [`{ executions(first: 100) { ${STEPS_WITH_RESULTS} } }`, undefined],
        [`query ($first: Int) { executions(first: $first) { ${STEPS_WITH_RESULTS} } }`, { first: 100 }],
        [`query ($first: Int = 100) { executions(first: $first) { ${STEPS_WITH_RESULTS} } }`, undefined],
      ] as const) {
        const http = await overHttp(server, query, variables);
        expect(http.status).toBe(400);
        refusedFor(http, cost);
        refusedFor(await overWs(ws, query, variables), cost);
      }
    });

    it('gives a page size passed as a variable the verdict of the same number written out, over HTTP and graphql-ws', async () => {
      const spellings = (first: number): [string, Record<string, unknown> | undefined][] => [
        [`{ executions(first: ${first}) { ${STEPS_WITH_RESULTS} } }`, undefined],
        [`query ($first: Int) { executions(first: $first) { ${STEPS_WITH_RESULTS} } }`, { first }],
        [`query ($first: Int = ${first}) { executions(first: $first) { ${STEPS_WITH_RESULTS} } }`, undefined],
        // The same selections through named and inline fragments (two at most: armor counts each as a level of depth).
        [
          `query ($first: Int!) { executions(first: $first) { edges { node { ... on Execution { steps { ...Result } } } } } }
           fragment Result on StepResult { result }`,
          { first },
        ],
        [
          `query ($first: Int!) { executions(first: $first) { ...Page } }
           fragment Page on ExecutionConnection { edges { node { ... on Execution { steps { result } } } } }`,
          { first },
        ],
      ];
      for (const [query, variables] of spellings(9)) {
        passes(await overHttp(server, query, variables));
        passes(await overWs(ws, query, variables));
      }
      for (const [query, variables] of spellings(10)) {
        refusedFor(await overHttp(server, query, variables), costOfStepsWithResults(10));
        refusedFor(await overWs(ws, query, variables), costOfStepsWithResults(10));
      }
      // No `first` at all is the default page, 20.
      refusedFor(await overHttp(server, `{ executions { ${STEPS_WITH_RESULTS} } }`), costOfStepsWithResults(20));
      refusedFor(await overWs(ws, `query ($first: Int) { executions(first: $first) { ${STEPS_WITH_RESULTS} } }`), costOfStepsWithResults(20));
    });

    it('adds up aliased copies, and leaves out what @skip and @include leave out', async () => {
      const half = `executions(first: 5) { ${STEPS_WITH_RESULTS} }`;
      passes(await overHttp(server, `{ a: ${half} }`), 'a');
      refusedFor(await overHttp(server, `{ a: ${half} b: ${half} }`), 2 * costOfStepsWithResults(5));
      refusedFor(await overWs(ws, `{ a: ${half} b: ${half} }`), 2 * costOfStepsWithResults(5));

      const optionalSteps = `query ($lean: Boolean!) { executions(first: 100) { edges { node { id steps @skip(if: $lean) { result } } } } }`;
      passes(await overHttp(server, optionalSteps, { lean: true }));
      passes(await overWs(ws, optionalSteps, { lean: true }));
      refusedFor(await overHttp(server, optionalSteps, { lean: false }), 1 + 100 * (1 + 1 + 1 + 50 * 11));
      const includedSteps = optionalSteps.replace('@skip(if: $lean)', '@include(if: $lean)');
      refusedFor(await overWs(ws, includedSteps, { lean: true }), 1 + 100 * (1 + 1 + 1 + 50 * 11));
    });

    it('is checked before anything runs: a refused mutation stores nothing', async () => {
      const correlationId = 'refused-for-its-cost';
      const plan = { query: 'q', steps: [sqlStep('SELECT count(*) AS n FROM users')] };
      // Each copy asks for the steps and the plan steps of its execution: 1 + 50 × 11 + 1 + 50 × 2 = 652, eight of them 5216.
      const copies = Array.from({ length: 8 }, (_, i) => `e${i}: executePlan(plan: $plan, options: $options) { steps { result } plan { steps { sql } } }`);
      const mutation = `mutation ($plan: PlanInput!, $options: ExecuteOptions) { ${copies.join(' ')} }`;
      const variables = { plan, options: { correlationId } };
      refusedFor(await overHttp(server, mutation, variables), 8 * 652);
      refusedFor(await overWs(ws, mutation, variables), 8 * 652);
      const stored = await overHttp(server, ExecutionsQuery.toString(), { filter: { correlationId } });
      expect(stored.data).toEqual({ executions: { edges: [], pageInfo: { hasNextPage: false, endCursor: null } } });
    });

    it("prices what an update's execution reads once per update a run may publish, and what the update carries once", () => {
      const model = stepcastCostModel(50);
      // 3 + 50 × (4 + 100 progress reports).
      const updates = mostUpdatesOfARun(50);
      expect(updates).toBe(5203);
      const cost = (selection: string, fragments = '') =>
        queryCost(schema, parse(`subscription { stepUpdates(executionId: "x") { execution { ${selection} } } } ${fragments}`), undefined, {}, model);
      // stepUpdates 1, execution 1, then its fields.
      expect(cost('id status lastSequence __typename')).toBe(2 + 4);
      expect(cost('id ... on Execution { status } ...Carried', 'fragment Carried on Execution { lastSequence }')).toBe(2 + 3);
      expect(cost('id correlationId')).toBe(2 + 1 + updates);
      expect(cost('finalResult')).toBe(2 + 10 * updates);
      expect(cost('steps { id }')).toBe(2 + 50 * 2 * updates);
      expect(cost('status ...Read ...Read', 'fragment Read on Execution { plan { query } }')).toBe(2 + 1 + 2 * 2 * updates);
      // The same fields anywhere else are read once.
      expect(queryCost(schema, parse('{ execution(id: "x") { id correlationId } }'), undefined, {}, model)).toBe(3);
    });

    it("refuses a subscription whose update's execution reads past the limit per update, over graphql-ws and HTTP alike", async () => {
      const executionId = '00000000-0000-4000-8000-000000000000';
      const reading = `subscription ($id: ID!) { stepUpdates(executionId: $id) { sequence execution { id correlationId } } }`;
      refusedFor(await overWs(ws, reading, { id: executionId }), 1 + 1 + 1 + 1 + mostUpdatesOfARun(50));
      refusedFor(await overHttp(server, reading, { id: executionId }), 1 + 1 + 1 + 1 + mostUpdatesOfARun(50));
      // What the update carries passes the limit (and then finds no such execution).
      const carried = await overWs(ws, `subscription ($id: ID!) { stepUpdates(executionId: $id) { sequence execution { id status lastSequence } } }`, {
        id: executionId,
      });
      expect(codesOf(carried)).toEqual(['NOT_FOUND']);
    });
  });

  it('sends no `http` extension over graphql-ws, while HTTP keeps answering with its status', async () => {
    const cases: [string, string, Record<string, unknown> | undefined, string][] = [
      ['syntax', '{ executions( }', undefined, 'GRAPHQL_PARSE_FAILED'],
      ['validation', '{ executionz { pageInfo { hasNextPage } } }', undefined, 'GRAPHQL_VALIDATION_FAILED'],
      ['a limit in validation', documentOfDepth(9), undefined, 'QUERY_TOO_DEEP'],
      ['cost', `{ executions(first: 100) { ${STEPS_WITH_RESULTS} } }`, undefined, 'QUERY_TOO_COSTLY'],
      ['a variable of the wrong type', 'query ($first: Int) { executions(first: $first) { pageInfo { hasNextPage } } }', { first: 'ten' }, 'BAD_USER_INPUT'],
      ['a resolver refusing input', '{ executions(first: 1000) { pageInfo { hasNextPage } } }', undefined, 'BAD_USER_INPUT'],
    ];
    for (const [name, query, variables, code] of cases) {
      // The socket first: yoga caches validation errors, and HTTP must still find its status on them afterwards.
      const overSocket = await overWs(ws, query, variables);
      expect(codesOf(overSocket), name).toEqual([code]);
      for (const error of overSocket.errors!) expect(error.extensions, name).not.toHaveProperty('http');
      const http = await overHttp(server, query, variables);
      expect(http.status, name).toBe(400);
      expect(codesOf(http), name).toEqual([code]);
    }
  });

  it('prices every list of objects in the schema (a new list must say how long it can be)', () => {
    const model = stepcastCostModel(50);
    const unpriced = Object.values(schema.getTypeMap())
      .filter((type) => isObjectType(type) && !isIntrospectionType(type))
      .flatMap((type) =>
        Object.values((type as GraphQLObjectType).getFields())
          .filter((field) => isListType(getNullableType(field.type)) && isCompositeType(getNamedType(field.type)))
          .map((field) => `${type.name}.${field.name}`),
      )
      .filter((key) => !(key in model.listSizes));
    expect(unpriced).toEqual([]);
  });

  it('serves GraphiQL when STEPCAST_GRAPHIQL is on (the default outside production)', async () => {
    const response = await fetch(server.url, { headers: { accept: 'text/html' } });
    expect(response.status).toBe(200);
    expect(await response.text()).toMatch(/graphiql/i);
  });

  it('answers introspection when STEPCAST_INTROSPECTION is on (the default outside production)', async () => {
    const query = '{ __schema { queryType { name } } __type(name: "Execution") { name } }';
    const expected = { __schema: { queryType: { name: 'Query' } }, __type: { name: 'Execution' } };
    expect((await overHttp(server, query)).data).toEqual(expected);
    expect((await overWs(ws, query)).data).toEqual(expected);
    // armor leaves __schema out of depth and cost; graphql-js's own rule stops circular introspection instead.
    const circular = '{ __schema { types { fields { type { fields { type { fields { type { fields { name } } } } } } } } } }';
    expect((await overHttp(server, circular)).errors?.[0]?.message).toMatch(/Maximum introspection depth exceeded/);
    expect((await overWs(ws, circular)).errors?.[0]?.message).toMatch(/Maximum introspection depth exceeded/);
  });

  it('never suggests names ("Did you mean"), in validation or in variables, over HTTP and graphql-ws', async () => {
    const filterQuery = 'query ($f: ExecutionFilter) { executions(filter: $f) { pageInfo { hasNextPage } } }';
    // [document, variables, the name graphql-js would suggest]
    const cases: [string, Record<string, unknown> | undefined, string][] = [
      ['{ executionz { pageInfo { hasNextPage } } }', undefined, '"executions"'],
      ['{ executions(firts: 1) { pageInfo { hasNextPage } } }', undefined, '"first"'],
      ['{ executions(filter: { status: [SUCCEEDEDD] }) { pageInfo { hasNextPage } } }', undefined, '"SUCCEEDED"'],
      ['{ executions(filter: { statuss: [SUCCEEDED] }) { pageInfo { hasNextPage } } }', undefined, '"status"'],
      ['query ($f: ExecutionFilte) { executions(filter: $f) { pageInfo { hasNextPage } } }', undefined, '"ExecutionFilter"'],
      [filterQuery, { f: { status: ['SUCCEEDEDD'] } }, '"SUCCEEDED"'],
      [filterQuery, { f: { statuss: ['SUCCEEDED'] } }, '"status"'],
    ];
    for (const [query, variables, suggestion] of cases) {
      for (const result of [await overHttp(server, query, variables), await overWs(ws, query, variables)]) {
        expect(result.errors?.length, query).toBeGreaterThan(0);
        for (const error of result.errors!) {
          expect(error.message, query).not.toMatch(/did you mean/i);
          expect(error.message, query).not.toContain(suggestion);
        }
      }
    }
  });

  it('answers a body over 1 MiB with 413 PAYLOAD_TOO_LARGE, with or without Content-Length, and goes on serving', async () => {
    const query = JSON.stringify({ query: '{ __typename }' });
    const padded = (size: number) => query + ' '.repeat(size - query.length);
    const post = (body: BodyInit) =>
      fetch(server.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body, duplex: 'half' } as RequestInit);

    const atLimit = await post(padded(MAX_BODY));
    expect(atLimit.status).toBe(200);
    expect(await atLimit.json()).toEqual({ data: { __typename: 'Query' } });

    const chunked = () =>
      new ReadableStream<Uint8Array>({
        start(controller) {
          // 64 KiB at a time, 2 MiB in all; no Content-Length, so the server must count.
          const text = new TextEncoder().encode(padded(2 * MAX_BODY));
          for (let offset = 0; offset < text.length; offset += 65_536) controller.enqueue(text.slice(offset, offset + 65_536));
          controller.close();
        },
      });
    for (const body of [padded(MAX_BODY + 1), padded(8 * MAX_BODY), chunked()]) {
      const response = await post(body);
      expect(response.status).toBe(413);
      const json = (await response.json()) as Result;
      expect(json.errors).toHaveLength(1);
      expect(json.errors![0]!.extensions).toMatchObject({ code: 'PAYLOAD_TOO_LARGE', limit: MAX_BODY });
      expect(json.errors![0]!.message).toContain(String(MAX_BODY));

      const next = await overHttp(server, '{ __typename }');
      expect(next.data).toEqual({ __typename: 'Query' });
    }
  });

  it('answers 413 before the body has arrived and closes the connection: it does not wait for, or buffer, what it refuses', async () => {
    const { connect } = await import('node:net');
    const port = Number(new URL(server.url).port);
    const head = (framing: string) =>
      `POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n${framing}\r\n\r\n`;
    const chunk = (bytes: Buffer) => Buffer.concat([Buffer.from(`${bytes.length.toString(16)}\r\n`), bytes, Buffer.from('\r\n')]);
    const requests = [
      // Announces 100 MiB and sends a few bytes of it.
      Buffer.from(`${head(`Content-Length: ${100 * MAX_BODY}`)}{"query":`),
      // Chunked, 1 MiB + 64 KiB sent, never terminated.
      Buffer.concat([Buffer.from(head('Transfer-Encoding: chunked')), ...Array.from({ length: 17 }, () => chunk(Buffer.alloc(65_536, 0x20)))]),
    ];
    for (const request of requests) {
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = connect(port, '127.0.0.1');
        let received = '';
        socket.on('data', (data) => (received += String(data)));
        socket.on('end', () => resolve(received));
        socket.on('error', reject);
        socket.write(request);
      });
      expect(answer).toMatch(/^HTTP\/1\.1 413 /);
      expect(answer).toMatch(/"code":"PAYLOAD_TOO_LARGE"/);
    }
  });

  it('closes a WebSocket that sends a frame over 64 KiB with 1009; frames up to the limit are fine', async () => {
    const consoleError = vi.spyOn(console, 'error');
    try {
      const client = rawSocket(server);
      await client.init();
      const pingOfSize = (size: number) => {
        const frame = JSON.stringify({ type: 'ping', payload: { pad: '' } });
        return JSON.stringify({ type: 'ping', payload: { pad: 'x'.repeat(size - frame.length) } });
      };
      client.send(pingOfSize(MAX_FRAME));
      await client.nextMessage('pong');
      client.send(pingOfSize(MAX_FRAME + 1));
      expect((await client.closed).code).toBe(1009);
      // A client's oversized frame is not an internal error of the server.
      expect(consoleError).not.toHaveBeenCalled();
    } finally {
      consoleError.mockRestore();
    }
    expect((await overHttp(server, '{ __typename }')).data).toEqual({ __typename: 'Query' });
  });

  it('holds at most 20 subscriptions per socket: the 21st gets TOO_MANY_SUBSCRIPTIONS, the 20 go on, freed slots are reused', async () => {
    /** A QUEUED execution no one has dispatched: its subscribers wait, with nothing to time, until recover() starts it. */
    const waitingExecution = async () => (await storeQueuedExecution(server.app.database, ['SELECT count(*) AS n FROM users'])).id;
    const client = server.wsClient();
    const follow = (executionId: string) => {
      const types: string[] = [];
      let unsubscribe!: () => void;
      const done = new Promise<{ types: string[]; errors?: { message: string; extensions?: Record<string, unknown> }[] }>(
        (resolve, reject) => {
          unsubscribe = client.subscribe(
            { query: StepUpdatesSubscription.toString(), variables: { executionId } },
            {
              next: (value) => types.push((value.data as { stepUpdates: StepUpdateEvent }).stepUpdates.type),
              error: (errors) => (Array.isArray(errors) ? resolve({ types, errors }) : reject(errors as Error)),
              complete: () => resolve({ types }),
            },
          );
        },
      );
      return { done, unsubscribe };
    };
    const everyUpdate = ['EXECUTION_STARTED', 'STEP_STARTED', 'STEP_SUCCEEDED', 'EXECUTION_SUCCEEDED'];

    /** Until the server has opened this many stepUpdates streams: the subscriptions hold their slots by then. */
    const streamsOpen = async (count: number) => {
      for (let i = 0; i < 250 && server.app.executor.openStreamCount !== count; i++) await sleep(20);
      expect(server.app.executor.openStreamCount).toBe(count);
    };

    const first = await waitingExecution();
    const twenty = Array.from({ length: 20 }, () => follow(first));
    await streamsOpen(20);
    const refused = await follow(first).done;
    expect(refused.types).toEqual([]);
    expect(refused.errors).toMatchObject([{ extensions: { code: 'TOO_MANY_SUBSCRIPTIONS', limit: 20 } }]);
    expect(refused.errors![0]!.message).toContain('20');
    // Queries are not subscriptions: the full socket still answers them.
    expect(await overWs(client, '{ __typename }')).toEqual({ data: { __typename: 'Query' } });

    // The client completes one of the twenty: its slot takes the next.
    twenty[0]!.unsubscribe();
    const replacement = follow(first);

    await server.app.executor.recover();
    for (const { types, errors } of await Promise.all([...twenty.slice(1), replacement].map((s) => s.done))) {
      expect(errors).toBeUndefined();
      expect(types).toEqual(everyUpdate);
    }

    // Every finished subscription gave its slot back: twenty fit again, and the 21st does not.
    const second = await waitingExecution();
    const again = Array.from({ length: 20 }, () => follow(second));
    await streamsOpen(20);
    expect((await follow(second).done).errors).toMatchObject([{ extensions: { code: 'TOO_MANY_SUBSCRIPTIONS' } }]);
    await server.app.executor.recover();
    for (const { types, errors } of await Promise.all(again.map((s) => s.done))) {
      expect(errors).toBeUndefined();
      expect(types).toEqual(everyUpdate);
    }
  });
});

// A second server (each PGlite start costs seconds) for the settings that differ from the defaults.
describe('STEPCAST_INTROSPECTION=off, STEPCAST_GRAPHIQL=off, STEPCAST_WS_INIT_TIMEOUT_MS=200, STEPCAST_WS_KEEPALIVE_MS=200, STEPCAST_GRAPHQL_MAX_MODEL_CALLS=100', () => {
  let server: TestServer;
  let ws: Client;
  beforeAll(async () => {
    server = await startTestServer('pglite', {
      env: {
        STEPCAST_INTROSPECTION: 'off',
        STEPCAST_GRAPHIQL: 'off',
        STEPCAST_WS_INIT_TIMEOUT_MS: '200',
        STEPCAST_WS_KEEPALIVE_MS: '200',
        STEPCAST_GRAPHQL_MAX_MODEL_CALLS: '100',
      },
    });
    ws = server.wsClient();
  });
  afterAll(async () => {
    await server?.close();
  });

  it('refuses __schema and __type with INTROSPECTION_DISABLED over HTTP and graphql-ws; __typename still works', async () => {
    for (const query of ['{ __schema { queryType { name } } }', '{ __type(name: "Execution") { name } }', getIntrospectionQuery()]) {
      for (const result of [await overHttp(server, query), await overWs(ws, query)]) {
        expect(result.data ?? undefined).toBeUndefined();
        expect(new Set(codesOf(result))).toEqual(new Set(['INTROSPECTION_DISABLED']));
        expect(result.errors![0]!.message).toMatch(/introspection is disabled/i);
      }
    }
    expect((await overHttp(server, '{ __typename }')).data).toEqual({ __typename: 'Query' });
    expect((await overWs(ws, '{ __typename }')).data).toEqual({ __typename: 'Query' });
  });

  it('does not serve GraphiQL', async () => {
    const response = await fetch(server.url, { headers: { accept: 'text/html' } });
    expect(await response.text()).not.toMatch(/graphiql/i);
  });

  it('closes a socket that never sends connection_init with 4408; one that does stays open', async () => {
    const silent = rawSocket(server);
    const polite = rawSocket(server);
    await polite.init();
    expect(await silent.closed).toEqual({ code: 4408, reason: 'Connection initialisation timeout' });
    // Three keep-alive pings (600 ms and more) later, well past the 200 ms timeout, the initialised socket is open.
    await polite.pinged(3);
    expect(polite.socket.readyState).toBe(WebSocket.OPEN);
    polite.socket.close();
  });

  it('pings every socket and terminates one that stops answering with pongs', async () => {
    const answering = rawSocket(server);
    const deaf = rawSocket(server, { autoPong: false });
    await Promise.all([answering.init(), deaf.init()]);
    await deaf.pinged(1);
    // Terminated, not closed: no close frame, so the client sees 1006.
    expect((await deaf.closed).code).toBe(1006);
    await answering.pinged(4);
    expect(answering.socket.readyState).toBe(WebSocket.OPEN);
    expect(await overWs(ws, '{ __typename }')).toEqual({ data: { __typename: 'Query' } });
    answering.socket.close();
  });

  it('prices a model call at 1,000: past the model-call limit, the cost limit alone refuses a fifth planQuery, over HTTP and graphql-ws', async () => {
    const planQueries = (n: number) => `{ ${Array.from({ length: n }, (_, i) => `p${i}: planQuery(query: "q") { __typename }`).join(' ')} }`;
    // Four fit (4 × 1,001): they reach the resolvers, which find no model configured.
    for (const result of [await overHttp(server, planQueries(4)), await overWs(ws, planQueries(4))]) {
      expect(new Set(codesOf(result))).toEqual(new Set(['AGENT_NOT_CONFIGURED']));
    }
    for (const [n, cost] of [[5, 5_005], [15, 15_015]] as const) {
      for (const result of [await overHttp(server, planQueries(n)), await overWs(ws, planQueries(n))]) {
        expect(result.data ?? undefined).toBeUndefined();
        expect(codesOf(result)).toEqual(['QUERY_TOO_COSTLY']);
        expect(result.errors![0]!.extensions).toMatchObject({ cost, limit: 5000 });
      }
    }
  });
});
