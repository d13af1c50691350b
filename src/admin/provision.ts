import type { Database } from '../db/client.js';

/** Placeholder until per-tenant roles land: the schema exists, no role yet. */
export async function provisionTenantDataAccess(_database: Database, _schema: string): Promise<string | null> {
  return null;
}
