import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_TENANT_ID, DEMO_TENANT_SCHEMA } from '../src/db/demo-data.js';
import { tenants } from '../src/db/tables.js';
import { RowTooLargeError, type TenantQueryLimits } from '../src/db/tenant-query.js';
import { backends } from './support/database.js';
import { startTestServer, type TestServer } from './support/server.js';

const MIB = 1_048_576;

/**
 * How a tenant's statement is read (src/db/tenant-query.ts): wrapped so that the database measures every row,
 * read through a cursor, and stopped in the database at the limits. Run as the demo tenant's role.
 */
for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`tenant statements read within their limits on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    let role: string;
    beforeAll(async () => {
      server = await startTestServer(backend, { env: { STEPCAST_DEMO_API: 'off', STEPCAST_DEMO_USERS: '20' } });
      const [tenant] = await server.app.database.db.select().from(tenants).where(eq(tenants.id, DEMO_TENANT_ID));
      role = tenant!.dbRole!;
    });
    afterAll(async () => {
      await server?.close();
    });

    const read = (statement: string, limits: Partial<TenantQueryLimits> = {}) =>
      server.app.database.runTenantQuery({
        statement,
        relations: { prefix: '', params: [] },
        role,
        searchPath: DEMO_TENANT_SCHEMA,
        timeoutMs: 30_000,
        limits: { rowCap: 10_000, rowMaxBytes: MIB, readMaxBytes: 16 * MIB, workMemMb: 4, tempFileLimitMb: 128, ...limits },
      });

    it("keeps the statement's own order, columns and values, and says when nothing was cut", async () => {
      const result = await read('SELECT g AS n, g * 2 AS twice FROM generate_series(1, 2500) g ORDER BY g DESC');
      expect(result.columns.map((column) => column.name)).toEqual(['n', 'twice']);
      expect(result.rows).toHaveLength(2500);
      expect(result.rows[0]).toEqual({ n: 2500, twice: 5000 });
      expect(result.rows.at(-1)).toEqual({ n: 1, twice: 2 });
      expect(result).toMatchObject({ truncatedByRows: false, truncatedByBytes: false });
    });

    it('knows the columns of an empty result', async () => {
      const result = await read('SELECT g AS n FROM generate_series(1, 0) g');
      expect(result.columns.map((column) => column.name)).toEqual(['n']);
      expect(result.rows).toEqual([]);
    });

    it('measures the whole row whatever its columns are named, and refuses one over the row limit', async () => {
      await expect(read("SELECT repeat('x', 2000000) AS big, 0 AS q, 1 AS m, 2 AS w")).rejects.toBeInstanceOf(RowTooLargeError);
    });

    it('stops at the read limit with a prefix of the rows, even when rows grow after small ones', async () => {
      // One tiny row, then rows of 10 kB: a batch sized from the tiny row must not lose what fits.
      const result = await read("SELECT g AS n, CASE WHEN g = 1 THEN 'x' ELSE repeat('x', 10000) END AS s FROM generate_series(1, 500) g", {
        readMaxBytes: MIB,
      });
      expect(result.truncatedByBytes).toBe(true);
      expect(result.rows.map((row) => row.n)).toEqual(result.rows.map((_, i) => i + 1));
      expect(result.rows.length).toBeGreaterThan(34);
      expect(result.rows.length).toBeLessThanOrEqual(105);
      expect(result.bytes).toBeLessThanOrEqual(MIB);
    });

    it('says the row cap, not the read limit, cut a result whose only row past the cap would pass the read limit', async () => {
      const result = await read("SELECT g AS n, repeat('x', 5000) AS s FROM generate_series(1, 10) g", { rowCap: 3, readMaxBytes: 15_100 });
      expect(result.rows.map((row) => row.n)).toEqual([1, 2, 3]);
      expect(result).toMatchObject({ truncatedByRows: true, truncatedByBytes: false });
    });
  });
}
