import { randomBytes } from 'node:crypto';
import { eq } from 'drizzle-orm';
import type { Database } from '../db/client.js';
import { DEMO_TENANT_ID, DEMO_TENANT_SCHEMA } from '../db/demo-data.js';
import { tenants } from '../db/tables.js';
import type { SecretBox } from '../auth/secrets.js';
import { startDemoApi, type DemoApi } from './demo-api-server.js';
import { demoOpenApiDocument } from './openapi.js';

/**
 * Starts the demo tenant's HTTP API on loopback and points the tenant at it: a new port and a
 * new bearer token every start, so the stored credentials are only good while this process runs.
 */
export async function startDemoTenantApi(database: Database, port: number, secrets: SecretBox): Promise<DemoApi> {
  const token = randomBytes(32).toString('base64url');
  const api = await startDemoApi({ database, schema: DEMO_TENANT_SCHEMA, token, host: '127.0.0.1', port });
  await database.db
    .update(tenants)
    .set({
      apiBaseUrl: api.url,
      apiOpenapi: demoOpenApiDocument(api.url),
      apiCredentialsEncrypted: secrets.sealJson({ authorization: `Bearer ${token}` }, DEMO_TENANT_ID),
      apiAllowedMethods: ['GET'],
    })
    .where(eq(tenants.id, DEMO_TENANT_ID));
  return api;
}
