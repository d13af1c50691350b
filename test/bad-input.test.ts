import type { AddressInfo } from 'node:net';
import { count } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { executions, stepResults } from '../src/db/tables.js';
import { loadConfig } from '../src/config.js';
import type { Executor } from '../src/executor/executor.js';
import { createLogger } from '../src/logger.js';
import { createAuthenticator } from '../src/auth/authenticator.js';
import { createGraphQLServer, type GraphQLServer } from '../src/server.js';
import { backends } from './support/database.js';
import { ExecutePlanMutation, ExecuteQueryMutation, ExecutionQuery, ExecutionsQuery, PlanQueryQuery } from './support/operations.js';
import { runPlan, sqlStep } from './support/plans.js';
import { startTestServer, type TestServer } from './support/server.js';

interface RawResponse {
  status: number;
  text: string;
  json: {
    data?: Record<string, unknown> | null;
    errors?: { message: string; extensions?: Record<string, unknown> }[];
  };
}

/** Posts a body exactly as given, so the test can send what no typed client would. */
async function post(url: string, body: string): Promise<RawResponse> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
    body,
  });
  const text = await response.text();
  return { status: response.status, text, json: JSON.parse(text) as RawResponse['json'] };
}

/** What a stack trace or an internal location looks like in a response body. */
const INTERNALS = /\n\s+at\s|node_modules|\/src\/|\.ts:\d+|"stack"/;

const step = sqlStep('SELECT id FROM users ORDER BY id LIMIT 2');
const plan = (overrides: Record<string, unknown> = {}) => ({ query: 'which users?', steps: [step], ...overrides });
const executePlanBody = (variables: Record<string, unknown>) =>
  JSON.stringify({ query: ExecutePlanMutation.toString(), variables });
const executionsBody = (variables: Record<string, unknown>) =>
  JSON.stringify({ query: ExecutionsQuery.toString(), variables });
const questionBody = (document: typeof PlanQueryQuery | typeof ExecuteQueryMutation, query: string) =>
  JSON.stringify({ query: document.toString(), variables: { query } });
/** Half of a surrogate pair, alone: JSON carries it ("\ud800"), PostgreSQL text and jsonb cannot hold it. */
const HIGH = '\uD800';
const LOW = '\uDC00';
const apiStep = { kind: 'API', queryContext: 'one user', code: "return [await api.call('getUser', { id: 1 })];" };
const cursorOf = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
/** A valid read-only SELECT of exactly `length` characters. */
const sqlOfLength = (length: number) => {
  const [prefix, suffix] = ["SELECT '", "' AS padding"];
  return `${prefix}${'x'.repeat(length - prefix.length - suffix.length)}${suffix}`;
};

interface BadInputCase {
  /** Completes "rejects ..." */
  name: string;
  body: string;
  /** The message must say what to fix. */
  message: RegExp;
  code?: string;
}

const badPlans: BadInputCase[] = [
  {
    name: 'a plan with no steps',
    body: executePlanBody({ plan: plan({ steps: [] }) }),
    message: /plan\.steps must hold at least one step/,
  },
  {
    name: 'a plan with 51 steps',
    body: executePlanBody({ plan: plan({ steps: Array.from({ length: 51 }, () => step) }) }),
    message: /plan\.steps holds 51 steps; the limit is 50/,
  },
  {
    name: 'an unknown step kind sent in variables',
    body: executePlanBody({ plan: plan({ steps: [{ ...step, kind: 'GRAPHQL' }] }) }),
    message: /plan\.steps\[0\]\.kind.*"GRAPHQL" does not exist in "StepKind" enum/,
  },
  {
    name: 'a step without a kind',
    body: executePlanBody({ plan: plan({ steps: [{ queryContext: 'ids', sql: step.sql }] }) }),
    message: /plan\.steps\[0\].*"kind" of required type "StepKind!" was not provided/,
  },
  {
    name: 'steps of the wrong type ("x" instead of a list of steps)',
    body: executePlanBody({ plan: plan({ steps: 'x' }) }),
    message: /plan\.steps.*StepInput/,
  },
  {
    name: 'an empty queryContext',
    body: executePlanBody({ plan: plan({ steps: [{ ...step, queryContext: '' }] }) }),
    message: /steps\[0\]\.queryContext must not be empty/,
  },
  {
    name: 'a whitespace-only queryContext',
    body: executePlanBody({ plan: plan({ steps: [{ ...step, queryContext: ' \n\t ' }] }) }),
    message: /steps\[0\]\.queryContext must not be empty/,
  },
  {
    name: 'a queryContext over 4,000 characters',
    body: executePlanBody({ plan: plan({ steps: [{ ...step, queryContext: 'q'.repeat(4_001) }] }) }),
    message: /steps\[0\]\.queryContext is 4001 characters; the limit is 4000/,
  },
  {
    name: 'sql over 20,000 characters',
    body: executePlanBody({
      plan: plan({ steps: [{ ...step, sql: sqlOfLength(20_001) }] }),
    }),
    message: /steps\[0\]\.sql is 20001 characters; the limit is 20000/,
  },
  {
    name: 'an empty plan.query',
    body: executePlanBody({ plan: plan({ query: '' }) }),
    message: /plan\.query must not be empty/,
  },
  {
    name: 'sampleSize -1',
    body: executePlanBody({ plan: plan(), options: { sampleSize: -1 } }),
    message: /options\.sampleSize must be between 0 and 100/,
  },
  {
    name: 'sampleSize 101',
    body: executePlanBody({ plan: plan(), options: { sampleSize: 101 } }),
    message: /options\.sampleSize must be between 0 and 100/,
  },
  {
    name: 'stepTimeoutMs 0',
    body: executePlanBody({ plan: plan(), options: { stepTimeoutMs: 0 } }),
    message: /options\.stepTimeoutMs must be between 100 and 120000/,
  },
  {
    name: 'stepTimeoutMs above the server ceiling (STEPCAST_MAX_STEP_TIMEOUT_MS, default 120000)',
    body: executePlanBody({ plan: plan(), options: { stepTimeoutMs: 120_001 } }),
    message: /options\.stepTimeoutMs must be between 100 and 120000/,
  },
  {
    name: 'a correlationId with spaces and newlines',
    body: executePlanBody({ plan: plan(), options: { correlationId: 'my trace\nid' } }),
    message: /options\.correlationId may hold only letters, digits and \. _ : -/,
  },
  {
    name: 'a correlationId over 128 characters',
    body: executePlanBody({ plan: plan(), options: { correlationId: 'c'.repeat(129) } }),
    message: /options\.correlationId must be 1 to 128 characters/,
  },
  {
    name: 'code on a SQL step',
    body: executePlanBody({ plan: plan({ steps: [{ ...step, code: 'return 1' }] }) }),
    message: /steps\[0\]\.code belongs to API steps; a SQL step takes sql/,
  },
  {
    name: 'a NUL character in queryContext (Postgres text cannot hold it)',
    body: executePlanBody({ plan: plan({ steps: [{ ...step, queryContext: 'ids\u0000' }] }) }),
    message: /steps\[0\]\.queryContext/,
  },
  {
    name: 'a lone surrogate in sql (it used to answer INTERNAL_SERVER_ERROR: jsonb refuses it)',
    body: executePlanBody({ plan: plan({ steps: [{ ...step, sql: `SELECT '${HIGH}' AS x` }] }) }),
    message: /plan\.steps\[0\]\.sql holds a lone UTF-16 surrogate/,
  },
  {
    name: 'a NUL character in sql',
    body: executePlanBody({ plan: plan({ steps: [{ ...step, sql: "SELECT 'a\u0000' AS x" }] }) }),
    message: /plan\.steps\[0\]\.sql must not contain NUL/,
  },
  {
    name: 'a lone surrogate in code',
    body: executePlanBody({ plan: plan({ steps: [{ ...apiStep, code: `return ['${LOW}'];` }] }) }),
    message: /plan\.steps\[0\]\.code holds a lone UTF-16 surrogate/,
  },
  {
    name: 'a NUL character in code',
    body: executePlanBody({ plan: plan({ steps: [{ ...apiStep, code: "return ['\u0000'];" }] }) }),
    message: /plan\.steps\[0\]\.code must not contain NUL/,
  },
  {
    name: 'a lone surrogate in queryContext, entity and reasoning, each named',
    body: executePlanBody({ plan: plan({ steps: [{ ...step, queryContext: `ids ${LOW}`, entity: `users${HIGH}`, reasoning: `${LOW}${HIGH}` }] }) }),
    message: /steps\[0\]\.queryContext holds a lone.*steps\[0\]\.entity holds a lone.*steps\[0\]\.reasoning holds a lone/,
  },
  {
    name: 'a lone surrogate in plan.query and plan.reasoning, each named',
    body: executePlanBody({ plan: plan({ query: `which ${HIGH}users?`, reasoning: `because${LOW}` }) }),
    message: /plan\.query holds a lone.*plan\.reasoning holds a lone/,
  },
  {
    name: 'a lone surrogate in options.correlationId',
    body: executePlanBody({ plan: plan(), options: { correlationId: `trace-${HIGH}` } }),
    message: /options\.correlationId may hold only letters, digits and \. _ : -/,
  },
  {
    name: 'a NUL character in options.correlationId',
    body: executePlanBody({ plan: plan(), options: { correlationId: 'trace\u0000' } }),
    message: /options\.correlationId may hold only letters, digits and \. _ : -/,
  },
  {
    name: "a lone surrogate in executeQuery's query",
    body: questionBody(ExecuteQueryMutation, `which users${HIGH}?`),
    message: /query holds a lone UTF-16 surrogate/,
  },
  {
    name: "a NUL character in executeQuery's options.correlationId",
    body: JSON.stringify({ query: ExecuteQueryMutation.toString(), variables: { query: 'which users?', options: { correlationId: 'a\u0000' } } }),
    message: /options\.correlationId may hold only/,
  },
  {
    name: "a lone surrogate in planQuery's query",
    body: questionBody(PlanQueryQuery, `${LOW}which users?`),
    message: /query holds a lone UTF-16 surrogate/,
  },
  {
    name: "a NUL character in planQuery's query",
    body: questionBody(PlanQueryQuery, 'which users?\u0000'),
    message: /query must not contain NUL/,
  },
];

const badHistoryArguments: BadInputCase[] = [
  {
    name: 'an after cursor whose date Postgres cannot hold',
    body: executionsBody({
      first: 2,
      after: cursorOf(['-100000-01-01T00:00:00.000Z', '00000000-0000-4000-8000-000000000000']),
    }),
    message: /endCursor/,
  },
  {
    name: 'a createdAfter in year 0, which Postgres cannot hold',
    body: executionsBody({ first: 2, filter: { createdAfter: '0000-01-01T00:00:00Z' } }),
    message: /createdAfter/,
  },
  {
    name: 'a NUL character in filter.correlationId, which Postgres text cannot hold',
    body: executionsBody({ first: 2, filter: { correlationId: 'bad-input-baseline\u0000' } }),
    message: /filter\.correlationId may hold only letters, digits and \. _ : -/,
  },
  {
    name: 'a lone surrogate in filter.correlationId',
    body: executionsBody({ first: 2, filter: { correlationId: `bad-input-${HIGH}` } }),
    message: /filter\.correlationId may hold only letters, digits and \. _ : -/,
  },
];

const badRequests: BadInputCase[] = [
  {
    name: 'a query for a field that does not exist, as a validation error naming the field',
    body: JSON.stringify({ query: '{ executions(first: 1) { edges { cursor } } nope }' }),
    message: /Cannot query field "nope" on type "Query"/,
    code: 'GRAPHQL_VALIDATION_FAILED',
  },
];

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`bad input on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;

    beforeAll(async () => {
      server = await startTestServer(backend);
      // One stored execution, so that "unchanged" is not trivially "still empty".
      const baseline = await runPlan(server, plan(), { correlationId: 'bad-input-baseline' });
      expect(baseline.execution.status).toBe('SUCCEEDED');
    });

    afterAll(async () => {
      await server?.close();
    });

    /** What the client can see (executions(first: 100)) and what the tables hold; asking also proves the server still answers. */
    async function stored() {
      const response = await server.request(ExecutionsQuery, { first: 100 });
      expect(response.errors, 'the server must still answer after bad input').toBeUndefined();
      const { db } = server.app.database;
      const [[executionRows], [stepRows]] = await Promise.all([
        db.select({ n: count() }).from(executions),
        db.select({ n: count() }).from(stepResults),
      ]);
      return { listed: response.data!.executions.edges.length, executions: executionRows!.n, stepResults: stepRows!.n };
    }

    async function expectRejectedAndNothingStored({ body, message, code = 'BAD_USER_INPUT' }: BadInputCase) {
      const before = await stored();
      expect(before.listed).toBeGreaterThan(0);
      const response = await post(server.url, body);
      const [error, ...more] = response.json.errors ?? [];
      expect(error, `expected a GraphQL error, got ${response.text}`).toBeDefined();
      expect(more, 'one error per bad request').toEqual([]);
      expect.soft(error!.extensions?.code, `extensions.code of ${response.text}`).toBe(code);
      expect.soft(error!.message).toMatch(message);
      expect(response.json.data ?? null).toBeNull();
      expect(response.text).not.toMatch(INTERNALS);
      expect(await stored()).toEqual(before);
    }

    for (const badInput of [...badPlans, ...badHistoryArguments, ...badRequests]) {
      it(`rejects ${badInput.name}, stores nothing and keeps answering`, async () => {
        await expectRejectedAndNothingStored(badInput);
      });
    }

    it('lists every problem of a plan in one error, so the client can fix them all at once', async () => {
      await expectRejectedAndNothingStored({
        name: 'many problems',
        body: executePlanBody({
          plan: { query: ' ', steps: [{ ...step, queryContext: '', code: 'x' }] },
          options: { sampleSize: 500, stepTimeoutMs: 1, correlationId: 'a b' },
        }),
        message:
          /plan\.query must not be empty.*steps\[0\]\.queryContext must not be empty.*steps\[0\]\.code belongs to API steps.*options\.sampleSize.*options\.stepTimeoutMs.*options\.correlationId/,
      });
    });

    it('answers a malformed JSON body with HTTP 400 and an error, stores nothing and keeps answering', async () => {
      const before = await stored();
      const response = await post(server.url, '{"query": ');
      expect(response.status).toBe(400);
      expect(response.json.errors).toHaveLength(1);
      expect(response.json.errors![0]!.message).toMatch(/invalid JSON/);
      expect(response.json.errors![0]!.extensions?.code).toBe('BAD_REQUEST');
      expect(response.text).not.toMatch(INTERNALS);
      expect(await stored()).toEqual(before);
    });

    it('accepts a plan at every upper limit, so the limits are not off by one', async () => {
      const before = await stored();
      const atLimits = {
        query: 'q'.repeat(4_000),
        steps: [
          { ...step, queryContext: 'c'.repeat(4_000), sql: sqlOfLength(20_000) },
          ...Array.from({ length: 49 }, () => sqlStep('SELECT 1 AS one')),
        ],
      };
      expect(atLimits.steps[0]!.sql).toHaveLength(20_000);
      const response = await post(
        server.url,
        executePlanBody({
          plan: atLimits,
          options: { sampleSize: 100, stepTimeoutMs: 120_000, correlationId: 'c'.repeat(128) },
        }),
      );
      expect(response.json.errors).toBeUndefined();
      expect(response.json.data).toMatchObject({ executePlan: { totalSteps: 50 } });
      expect((await stored()).listed).toBe(before.listed + 1);
    });

    it('accepts a plan at every lower limit', async () => {
      const before = await stored();
      const response = await post(
        server.url,
        executePlanBody({
          plan: { query: 'q', steps: [{ ...step, queryContext: 'c' }] },
          options: { sampleSize: 0, stepTimeoutMs: 100, correlationId: 'c' },
        }),
      );
      expect(response.json.errors).toBeUndefined();
      expect(response.json.data).toMatchObject({ executePlan: { totalSteps: 1, correlationId: 'c' } });
      expect((await stored()).listed).toBe(before.listed + 1);
    });
  });
}

describe('unexpected internal errors', () => {
  const SECRET = 'connect ECONNREFUSED 10.1.2.3:5432 password=hunter2';
  let server: GraphQLServer;
  let url: string;

  beforeAll(async () => {
    // The real yoga server and schema over an executor that fails the way a broken dependency would.
    const fail = () => Promise.reject(new Error(SECRET));
    const executor = { findExecution: fail, listExecutions: fail, submitPlan: fail } as unknown as Executor;
    server = createGraphQLServer({
      executor,
      logger: createLogger('silent'),
      authenticator: createAuthenticator({
        database: undefined as never,
        config: { enabled: false, jwt: undefined, recheckMs: 1_000 },
        anonymousTenantId: 'demo',
        logger: createLogger('silent'),
      }),
      credentialRecheckMs: 1_000,
      graphiql: false,
      limits: loadConfig({ NODE_ENV: 'test' }),
    });
    const address: AddressInfo = await server.listen(0, '127.0.0.1');
    url = `http://127.0.0.1:${address.port}${server.yoga.graphqlEndpoint}`;
  });

  afterAll(async () => {
    await server?.close();
  });

  const operations: [string, string][] = [
    ['a query', JSON.stringify({ query: ExecutionQuery.toString(), variables: { id: '00000000-0000-4000-8000-000000000000' } })],
    ['a paged query', executionsBody({ first: 2 })],
    ['a mutation', executePlanBody({ plan: plan() })],
  ];

  for (const [kind, body] of operations) {
    it(`masks an internal error in ${kind}: generic message, no internal detail, no stack trace`, async () => {
      const response = await post(url, body);
      expect(response.json.errors).toHaveLength(1);
      expect(response.json.errors![0]!.message).toBe('Unexpected error.');
      expect(response.json.errors![0]!.extensions?.code).toBe('INTERNAL_SERVER_ERROR');
      expect(response.text).not.toContain('hunter2');
      expect(response.text).not.toContain('10.1.2.3');
      expect(response.text).not.toContain('originalError');
      expect(response.text).not.toMatch(INTERNALS);
    });
  }
});
