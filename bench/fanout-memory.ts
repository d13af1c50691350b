// Only the memory per idle graphql-ws subscription (issue 10 part 5), without the rest of `npm run bench`:
//   npx tsx bench/fanout-memory.ts
// on PGlite and, when BENCH_DATABASE_URL is set, on PostgreSQL (a fresh database it creates and drops, as run.ts does).
import { withBenchDatabase } from './client.js';
import { benchFanOut } from './fanout.js';
import { formatTable, type BenchRow } from './table.js';

process.env.BENCH_FANOUT_ONLY = 'memory';
const rows: BenchRow[] = [];
try {
  rows.push(...(await benchFanOut({ backend: 'PGlite', env: {} })));
  if (process.env.BENCH_DATABASE_URL) {
    await withBenchDatabase(process.env.BENCH_DATABASE_URL, 'stepcast_bench', async (databaseUrl) => {
      rows.push(...(await benchFanOut({ backend: 'PostgreSQL', env: { DATABASE_URL: databaseUrl } })));
    });
  }
} finally {
  console.log(formatTable(rows));
}
