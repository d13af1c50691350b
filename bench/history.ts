// History at scale (issue 10, bar 4): `executions(first: 50)` with 1,000,000 stored executions of 10 steps
// each, on PostgreSQL only. Creates its own database, seeds it with set-based SQL, measures pages through
// the real HTTP server against the same SQL sent from a bare postgres.js client (the floor), and EXPLAINs
// every statement the store sends. BENCH_HISTORY_EXECUTIONS overrides the count.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { drizzle } from 'drizzle-orm/postgres-js';
import postgres from 'postgres';
import { createApiKey, createTenant } from '../src/admin/tenants.js';
import { startStepcast, type StepcastApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import type { Db } from '../src/db/client.js';
import { DrizzleExecutionStore } from '../src/db/execution-store.js';
import * as tables from '../src/db/tables.js';
import type { ExecutionPageRequest } from '../src/executor/store.js';
import { createLogger } from '../src/logger.js';
import { encodeCursor } from '../src/schema/cursor.js';
import { withBenchDatabase } from './client.js';
import { currentLoad, type BenchRow } from './table.js';

const EXECUTIONS = Number(process.env.BENCH_HISTORY_EXECUTIONS ?? 1_000_000);
const STEPS = 10;
const SAMPLES = Number(process.env.BENCH_HISTORY_SAMPLES ?? 30);
const WARMUP = 5;
const TENANT = 'history';
/** Executions inserted per statement while seeding (each with its steps), so progress can be printed. */
const SEED_CHUNK = 100_000;
/** One execution in this many FAILED (0.1 %): the rare status. */
const FAILED_EVERY = 1_000;
const BAR_MS = 10;

/** A realistic small plan: 10 SQL steps, each reading the previous step's records. */
const PLAN = {
  query: 'weekly revenue of the most active customers, by region',
  reasoning: 'Find the active customers first, then narrow step by step to the figures asked for.',
  steps: Array.from({ length: STEPS }, (_, i) => ({
    kind: 'SQL',
    queryContext: `step ${i + 1}: narrow the previous result`,
    entity: i === 0 ? 'customers' : null,
    reasoning: null,
    critical: true,
    sql:
      i === 0
        ? "SELECT id, region, last_order_at FROM customers WHERE last_order_at > now() - interval '7 days' ORDER BY id LIMIT 500"
        : `SELECT s.id, s.region, count(*) AS n FROM step_${i} s JOIN orders o ON o.customer_id = s.id GROUP BY s.id, s.region ORDER BY n DESC LIMIT 200`,
    code: null,
  })),
};

const PAGE_FIELDS = 'edges { cursor node { id correlationId status createdAt finishedAt totalSteps } } pageInfo { hasNextPage endCursor }';
const PAGE = `query Page($first: Int, $after: String, $filter: ExecutionFilter) { executions(first: $first, after: $after, filter: $filter) { ${PAGE_FIELDS} } }`;
const WITH_STEPS = `query WithSteps($first: Int) { executions(first: $first) { edges { node { id status steps { index status sql recordCount startedAt finishedAt } } } } }`;

interface Case {
  name: string;
  query: string;
  variables: Record<string, unknown>;
  /** The store calls that answer it, replayed for the floor and EXPLAINed. */
  store: (store: DrizzleExecutionStore) => Promise<unknown>;
  /** What every answer must hold (a page of the right size). */
  check: (data: unknown) => void;
}

const percentile = (sorted: readonly number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

function summary(samples: number[]): { p50: number; p99: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
}

async function timed(run: () => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < WARMUP; i++) await run();
  const samples: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    const t0 = performance.now();
    await run();
    samples.push(performance.now() - t0);
  }
  return samples;
}

interface PlanNode {
  'Node Type': string;
  'Index Name'?: string;
  'Relation Name'?: string;
  Plans?: PlanNode[];
}

/** The plan's nodes, outermost first, e.g. "Limit > Index Scan (executions_tenant_created_idx)". */
function describePlan(node: PlanNode): { text: string; types: string[] } {
  const types: string[] = [];
  const parts: string[] = [];
  const walk = (n: PlanNode, depth: number) => {
    types.push(n['Node Type']);
    const on = n['Index Name'] ?? n['Relation Name'];
    parts.push(`${depth > 0 ? '>' : ''}${n['Node Type']}${on ? `(${on})` : ''}`);
    for (const child of n.Plans ?? []) walk(child, depth + 1);
  };
  walk(node, 0);
  return { text: parts.join(' '), types };
}

export function benchHistory(baseUrl: string): Promise<BenchRow[]> {
  return withBenchDatabase(baseUrl, 'stepcast_history', (databaseUrl) => measureHistory(new URL(databaseUrl)));
}

async function measureHistory(url: URL): Promise<BenchRow[]> {
  const dataDir = await mkdtemp(join(tmpdir(), 'stepcast-bench-history-'));
  let app: StepcastApp | undefined;
  let bare: postgres.Sql | undefined;
  try {
    // Started once to migrate and to hold the tenant; it serves the measured requests too.
    app = await startStepcast(
      loadConfig({
        PORT: '0',
        HOST: '127.0.0.1',
        DATA_DIR: dataDir,
        DATABASE_URL: url.toString(),
        STEPCAST_AUTH: 'on',
        STEPCAST_DEMO: 'off',
        STEPCAST_TENANT_RATE_BURST: '1000000',
        STEPCAST_TENANT_RATE_PER_MINUTE: '1000000',
      }),
      createLogger('warn'),
    );
    await createTenant(app.database, app.secrets, { name: 'History', id: TENANT });
    const authorization = `Bearer ${(await createApiKey(app.database, TENANT)).token}`;

    bare = postgres(url.toString(), { max: 1, onnotice: () => undefined });
    await seed(bare);

    const graphql = async (query: string, variables: Record<string, unknown>) => {
      const response = await fetch(app!.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json', authorization },
        body: JSON.stringify({ query, variables }),
      });
      const body = (await response.json()) as { data?: { executions: unknown }; errors?: unknown };
      if (!body.data || body.errors) throw new Error(`executions failed: ${JSON.stringify(body.errors)}`);
      return body.data.executions;
    };

    const [deep] = await bare<{ id: string; created_at: Date }[]>`
      SELECT id, created_at FROM executions WHERE tenant_id = ${TENANT}
      ORDER BY created_at DESC, id DESC OFFSET ${Math.floor(EXECUTIONS * 0.9)} LIMIT 1`;
    const deepCursor = { createdAt: deep!.created_at, id: deep!.id };
    const edgesOf = (data: unknown) => (data as { edges: { node: { status: string; steps?: unknown[] } }[] }).edges;
    const pageOf = (size: number, status?: string) => (data: unknown) => {
      const edges = edgesOf(data);
      if (edges.length !== size) throw new Error(`expected a page of ${size}, got ${edges.length}`);
      if (status && edges.some((edge) => edge.node.status !== status)) throw new Error(`a page filtered on ${status} held another status`);
    };
    const page = (request: Partial<ExecutionPageRequest>) => (store: DrizzleExecutionStore) =>
      store.listExecutions(TENANT, { first: 50, after: null, filter: null, ...request });

    const cases: Case[] = [
      { name: 'newest page', query: PAGE, variables: { first: 50 }, store: page({}), check: pageOf(50) },
      {
        name: 'status filter (SUCCEEDED)',
        query: PAGE,
        variables: { first: 50, filter: { status: ['SUCCEEDED'] } },
        store: page({ filter: { status: ['SUCCEEDED'] } }),
        check: pageOf(50, 'SUCCEEDED'),
      },
      {
        name: 'cursor at 90 % depth',
        query: PAGE,
        variables: { first: 50, after: encodeCursor(deepCursor) },
        store: page({ after: deepCursor }),
        check: pageOf(50),
      },
      {
        name: `rare status (FAILED, ${100 / FAILED_EVERY} %)`,
        query: PAGE,
        variables: { first: 50, filter: { status: ['FAILED'] } },
        store: page({ filter: { status: ['FAILED'] } }),
        check: pageOf(Math.min(50, Math.floor(EXECUTIONS / FAILED_EVERY)), 'FAILED'),
      },
      {
        name: '10 executions with their steps',
        query: WITH_STEPS,
        variables: { first: 10 },
        store: async (store) => {
          const { executions } = await store.listExecutions(TENANT, { first: 10 });
          return store.listStepsOfExecutions(TENANT, executions.map((execution) => execution.id));
        },
        check: (data) => {
          pageOf(10)(data);
          if (edgesOf(data).some((edge) => edge.node.steps?.length !== STEPS)) throw new Error(`an execution came without its ${STEPS} steps: ${JSON.stringify(edgesOf(data)[0])}`);
        },
      },
    ];

    // The statements the store sends for each case, as drizzle hands them to postgres.js.
    const captured: { query: string; params: unknown[] }[] = [];
    const capturing = new DrizzleExecutionStore(
      drizzle({ client: bare, schema: tables, logger: { logQuery: (query, params) => captured.push({ query, params }) } }) as unknown as Db,
      // History reads go through drizzle; only transitions use the raw path, which this store never runs.
      () => Promise.reject(new Error('not used by history reads')),
    );

    // What any request costs before its query: HTTP, the API key's lookup, GraphQL (the other floor).
    const typename = summary(
      await timed(async () => {
        const response = await fetch(app!.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json', authorization },
          body: JSON.stringify({ query: '{ __typename }' }),
        });
        if (!response.ok) throw new Error(`{ __typename } answered ${response.status}`);
        await response.json();
      }),
    );
    console.log(`{ __typename } over HTTP with the key   p50 ${typename.p50.toFixed(2)} ms p99 ${typename.p99.toFixed(2)} ms (load ${currentLoad().toFixed(2)})`);

    const rows: BenchRow[] = [];
    for (const c of cases) {
      c.check(await graphql(c.query, c.variables));
      captured.length = 0;
      await c.store(capturing);
      const statements = [...captured];
      const plans: string[] = [];
      let served = true;
      for (const { query, params } of statements) {
        const [{ 'QUERY PLAN': [plan] }] = (await bare.unsafe(`EXPLAIN (FORMAT JSON) ${query}`, params as never[])) as unknown as [
          { 'QUERY PLAN': [{ Plan: PlanNode }] },
        ];
        const { text, types } = describePlan(plan.Plan);
        // Served by an index: some index scan, no Sort, no sequential scan of a table (a bitmap scan looks up
        // the page's executions by id; a keyset page read through one would need a Sort, and is caught by it).
        const byIndex = types.some((t) => t === 'Index Scan' || t === 'Index Only Scan' || t === 'Bitmap Index Scan');
        const bad = types.filter((t) => t === 'Sort' || t === 'Incremental Sort' || t === 'Seq Scan');
        if (!byIndex || bad.length > 0) served = false;
        plans.push(text);
      }
      const load = currentLoad();
      const http = summary(await timed(() => graphql(c.query, c.variables)));
      const floor = summary(
        await timed(async () => {
          for (const { query, params } of statements) await bare!.unsafe(query, params as never[]);
        }),
      );
      const row: BenchRow = {
        name: `history (${EXECUTIONS.toLocaleString('en')} executions), executions(first: ${String(c.variables.first)}): ${c.name}, p50`,
        backend: 'PostgreSQL',
        value: http.p50,
        unit: 'ms',
        floor: floor.p50,
        bar: `p50 ≤ ${BAR_MS} ms`,
        meets: http.p50 <= BAR_MS && served,
        note:
          `p99 ${http.p99.toFixed(1)} ms (floor p99 ${floor.p99.toFixed(2)} ms; floor: the store's ${statements.length} statement(s) from a bare postgres.js client; ` +
          `{ __typename } over HTTP with the key: p50 ${typename.p50.toFixed(1)} ms); ` +
          `${served ? 'index scan, no sort' : 'NOT SERVED BY AN INDEX ALONE'}: ${plans.join(' | ')}`,
        load,
      };
      rows.push(row);
      console.log(`${c.name.padEnd(34)} p50 ${http.p50.toFixed(2)} ms p99 ${http.p99.toFixed(2)} ms  floor p50 ${floor.p50.toFixed(2)} ms  (load ${load.toFixed(2)})`);
      for (const plan of plans) console.log(`  ${plan}`);
    }
    return rows;
  } finally {
    await bare?.end();
    await app?.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/**
 * EXECUTIONS finished executions of the tenant, newest now and one every 30 s before it (whole milliseconds,
 * as the service stores them, so cursors round-trip), each with its 10 step rows; then ANALYZE.
 */
async function seed(sql: postgres.Sql): Promise<void> {
  const t0 = performance.now();
  await sql`SET synchronous_commit = off`;
  const plan = JSON.stringify(PLAN);
  for (let from = 1; from <= EXECUTIONS; from += SEED_CHUNK) {
    const to = Math.min(EXECUTIONS, from + SEED_CHUNK - 1);
    await sql`
      WITH seeded AS (
        INSERT INTO executions (id, tenant_id, correlation_id, status, plan, options, final_result, error, total_steps,
                                successful_steps, failed_steps, last_sequence, created_at, started_at, finished_at)
        SELECT gen_random_uuid(), ${TENANT}, 'bench-' || n,
               CASE WHEN n % ${FAILED_EVERY}::int = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END,
               ${plan}::text::jsonb, '{"sampleSize": 5, "stepTimeoutMs": 30000}'::jsonb,
               CASE WHEN n % ${FAILED_EVERY}::int = 0 THEN NULL ELSE '[{"id": 1, "region": "EU", "n": 12}]'::json END,
               CASE WHEN n % ${FAILED_EVERY}::int = 0 THEN '{"code": "SQL_ERROR", "message": "relation \\"orders\\" does not exist", "retryable": false}'::jsonb END,
               ${STEPS}::int,
               CASE WHEN n % ${FAILED_EVERY}::int = 0 THEN ${STEPS - 1}::int ELSE ${STEPS}::int END,
               CASE WHEN n % ${FAILED_EVERY}::int = 0 THEN 1 ELSE 0 END,
               ${2 * STEPS + 2}::int, at, at + interval '5 ms', at + interval '250 ms'
        FROM generate_series(${from}::int, ${to}::int) AS n,
             LATERAL (SELECT date_trunc('milliseconds', now() - n * interval '30 seconds' + (n % 7) * interval '1.5 ms') AS at) AS t
        RETURNING id, correlation_id, status, started_at
      )
      INSERT INTO step_results (execution_id, index, tenant_id, correlation_id, kind, status, query_context, critical,
                                record_count, columns, sample, result, truncated, error, attempts, started_at, finished_at)
      SELECT s.id, i, ${TENANT}, s.correlation_id, 'SQL',
             CASE WHEN s.status = 'FAILED' AND i = ${STEPS}::int THEN 'FAILED' ELSE 'SUCCEEDED' END,
             'step ' || i || ': narrow the previous result', true,
             CASE WHEN s.status = 'FAILED' AND i = ${STEPS}::int THEN NULL ELSE 3 END,
             '[{"name": "id", "type": "integer"}, {"name": "region", "type": "text"}, {"name": "n", "type": "bigint"}]'::jsonb,
             '[{"id": 1, "region": "EU", "n": 12}, {"id": 2, "region": "US", "n": 9}]'::json,
             '[{"id": 1, "region": "EU", "n": 12}, {"id": 2, "region": "US", "n": 9}, {"id": 3, "region": "EU", "n": 4}]'::json,
             false,
             CASE WHEN s.status = 'FAILED' AND i = ${STEPS}::int THEN '{"code": "SQL_ERROR", "message": "relation \\"orders\\" does not exist", "retryable": false}'::jsonb END,
             1, s.started_at + (i - 1) * interval '24 ms', s.started_at + i * interval '24 ms'
      FROM seeded s CROSS JOIN generate_series(1, ${STEPS}::int) AS i`;
    console.log(`  seeded ${to.toLocaleString('en')} executions (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  }
  await sql`ANALYZE executions`;
  await sql`ANALYZE step_results`;
  const [size] = await sql<{ executions: string; steps: string; database: string }[]>`
    SELECT pg_size_pretty(pg_total_relation_size('executions')) AS executions,
           pg_size_pretty(pg_total_relation_size('step_results')) AS steps,
           pg_size_pretty(pg_database_size(current_database())) AS database`;
  console.log(
    `seeded ${EXECUTIONS.toLocaleString('en')} executions × ${STEPS} steps in ${((performance.now() - t0) / 1000).toFixed(0)} s ` +
      `(executions ${size!.executions}, step_results ${size!.steps}, database ${size!.database})`,
  );
}
