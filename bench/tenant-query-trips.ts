// Micro-bench for one tenant statement (src/db/client.ts runTenantQuery): µs per call (median of runs) and the
// round trips it costs, counted as the times the client writes after having read since its last write
// (PostgreSQL: socket writes; PGlite: messages posted to its worker thread after a reply).
//   TEST_DATABASE_URL=postgres://…/test npx tsx bench/tenant-query-trips.ts [calls]
import net from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import postgres from 'postgres';
import { openDatabase, type Database } from '../src/db/client.js';
import type { TenantQuery } from '../src/db/tenant-query.js';

const calls = Number(process.argv[2] ?? 2000);
const url = process.env.TEST_DATABASE_URL;

let trips = 0;
const state = new WeakMap<object, 'read' | 'write'>();
const counting = { on: false };
const write = net.Socket.prototype.write;
net.Socket.prototype.write = function (this: net.Socket, ...args: unknown[]) {
  if (counting.on && state.get(this) !== 'write') trips++;
  state.set(this, 'write');
  return (write as (...a: unknown[]) => boolean).apply(this, args);
} as typeof write;
const emit = net.Socket.prototype.emit;
net.Socket.prototype.emit = function (this: net.Socket, event: string | symbol, ...args: unknown[]) {
  if (event === 'data') state.set(this, 'read');
  return (emit as (...a: unknown[]) => boolean).call(this, event, ...args);
} as typeof emit;
const post = Worker.prototype.postMessage;
Worker.prototype.postMessage = function (this: Worker, ...args: unknown[]) {
  if (counting.on && state.get(this) !== 'write') trips++;
  state.set(this, 'write');
  return (post as (...a: unknown[]) => void).apply(this, args);
} as typeof post;
const wemit = Worker.prototype.emit;
Worker.prototype.emit = function (this: Worker, event: string | symbol, ...args: unknown[]) {
  if (event === 'message') state.set(this, 'read');
  return (wemit as (...a: unknown[]) => boolean).call(this, event, ...args);
} as typeof wemit;

const limits = { rowCap: 10_000, rowMaxBytes: 1_048_576, readMaxBytes: 16 * 1_048_576, workMemMb: 4, tempFileLimitMb: 128 };
const SCHEMA = 'bench_tenant';

function cases(role: string): [string, TenantQuery][] {
  const base = { role, searchPath: SCHEMA, timeoutMs: 30_000, limits };
  return [
    ['SELECT 1 AS n', { ...base, statement: 'SELECT 1 AS n', relations: { prefix: '', params: [] } }],
    [
      'join 1-row step_1',
      {
        ...base,
        statement: 'SELECT s.n, t.v FROM step_1 s JOIN t ON t.n = s.n',
        relations: {
          prefix: 'WITH step_1 AS (SELECT * FROM jsonb_to_recordset($1::text::jsonb) AS r("n" integer))\n',
          params: [JSON.stringify([{ n: 1 }])],
        },
      },
    ],
  ];
}

async function measure(name: string, database: Database, role: string) {
  for (const [label, query] of cases(role)) {
    for (let i = 0; i < 200; i++) await database.runTenantQuery(query);
    const times: number[] = [];
    trips = 0;
    for (let i = 0; i < calls; i++) {
      counting.on = true;
      const start = process.hrtime.bigint();
      const result = await database.runTenantQuery(query);
      times.push(Number(process.hrtime.bigint() - start) / 1000);
      counting.on = false;
      if (result.rows.length !== 1) throw new Error(`expected one row, got ${JSON.stringify(result.rows)}`);
    }
    times.sort((a, b) => a - b);
    const median = times[Math.floor(times.length / 2)]!;
    console.log(`${name.padEnd(9)} ${label.padEnd(18)} median ${median.toFixed(0).padStart(6)} µs  round trips ${(trips / calls).toFixed(2)}`);
  }
}

async function floor(urlText: string) {
  const sql = postgres(urlText, { max: 1, onnotice: () => undefined });
  await sql`SELECT 1`;
  const times: number[] = [];
  for (let i = 0; i < calls; i++) {
    const start = process.hrtime.bigint();
    await sql`SELECT 1 AS n`;
    times.push(Number(process.hrtime.bigint() - start) / 1000);
  }
  times.sort((a, b) => a - b);
  console.log(`postgres  floor: one SELECT 1   median ${times[Math.floor(times.length / 2)]!.toFixed(0).padStart(6)} µs  round trips 1`);
  await sql.end();
}

async function setUp(sql: (text: string) => Promise<unknown>, role: string) {
  await sql(
    [
      `DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`,
      `CREATE SCHEMA ${SCHEMA}`,
      `CREATE TABLE ${SCHEMA}.t (n integer, v text)`,
      `INSERT INTO ${SCHEMA}.t VALUES (1, 'one'), (2, 'two')`,
      `DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${role}') THEN CREATE ROLE ${role} NOLOGIN; END IF; END $$`,
      `GRANT USAGE ON SCHEMA ${SCHEMA} TO ${role}`,
      `GRANT SELECT ON ${SCHEMA}.t TO ${role}`,
    ].join(';\n') + ';',
  );
}

console.log(`load average ${(await import('node:os')).loadavg().map((l) => l.toFixed(2)).join(' ')}, ${calls} calls each`);
if (url) {
  const name = 'stepcast_bench_trips';
  const admin = postgres(url, { max: 1, onnotice: () => undefined });
  await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.unsafe(`CREATE DATABASE ${name}`);
  const dbUrl = new URL(url);
  dbUrl.pathname = `/${name}`;
  const role = 'stepcast_bench_trips_role';
  const database = await openDatabase({ kind: 'postgres', url: dbUrl.toString(), poolSize: 4 } as never);
  try {
    await database.runScriptInTransaction('SELECT 1');
    const setup = postgres(dbUrl.toString(), { max: 1, onnotice: () => undefined });
    await setUp((text) => setup.unsafe(text), role);
    await setup.end();
    await floor(dbUrl.toString());
    await measure('postgres', database, role);
  } finally {
    await database.close();
    await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  }
}
const dir = await mkdtemp(join(tmpdir(), 'stepcast-trips-'));
const pglite = await openDatabase({ kind: 'pglite', dataDir: dir, maxMemoryMb: 512 } as never);
try {
  await setUp((text) => pglite.runScriptInTransaction(text), 'bench_role');
  await measure('pglite', pglite, 'bench_role');
} finally {
  await pglite.close();
  await rm(dir, { recursive: true, force: true });
}
