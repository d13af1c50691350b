// Only the memory per idle graphql-ws subscription (issue 10 part 5), without the rest of `npm run bench`:
//   npx tsx bench/fanout-memory.ts
// on PGlite and, when BENCH_DATABASE_URL is set, on PostgreSQL (a fresh database it creates and drops, as run.ts does).
import { benchFanOut } from './fanout.js';
import { formatTable, type BenchRow } from './table.js';

process.env.BENCH_FANOUT_ONLY = 'memory';
const rows: BenchRow[] = [];
try {
  rows.push(...(await benchFanOut({ backend: 'PGlite', env: {} })));
  if (process.env.BENCH_DATABASE_URL) {
    const { default: postgres } = await import('postgres');
    const admin = postgres(process.env.BENCH_DATABASE_URL, { max: 1, onnotice: () => undefined });
    const name = `stepcast_bench_${Date.now()}`;
    await admin.unsafe(`CREATE DATABASE ${name}`);
    const url = new URL(process.env.BENCH_DATABASE_URL);
    url.pathname = `/${name}`;
    try {
      rows.push(...(await benchFanOut({ backend: 'PostgreSQL', env: { DATABASE_URL: url.toString() } })));
    } finally {
      await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      const { tenantRolePrefix } = await import('../src/db/tenant-roles.js');
      const roles = await admin<{ rolname: string }[]>`
        SELECT rolname FROM pg_roles WHERE starts_with(rolname, ${tenantRolePrefix(name)})`;
      for (const { rolname } of roles) await admin.unsafe(`DROP ROLE IF EXISTS "${rolname}"`);
      await admin.end();
    }
  }
} finally {
  console.log(formatTable(rows));
}
