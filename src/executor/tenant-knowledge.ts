import { createHash } from 'node:crypto';
import { catalogFromOpenApi, type ApiOperation } from '../api/catalog.js';
import type { Database } from '../db/client.js';
import { introspectDataSchema, type DataSchema } from '../db/introspect.js';
import type { TenantRow } from '../db/tables.js';
import type { SecretBox } from '../auth/secrets.js';

/** What the agents and the guard know of a tenant's data, introspected once per tenant and cached. */
export class TenantKnowledge {
  private readonly dataSchemas = new Map<string, Promise<DataSchema>>();
  private readonly catalogs = new Map<string, ApiOperation[]>();

  constructor(
    private readonly database: Database,
    private readonly secrets: SecretBox,
  ) {}

  /** The headers the host adds to the tenant's API requests, decrypted only for the request's lifetime. */
  apiCredentials(tenant: TenantRow): Record<string, string> {
    if (!tenant.apiCredentialsEncrypted) return {};
    return this.secrets.openJson<Record<string, string>>(tenant.apiCredentialsEncrypted, tenant.id);
  }

  dataSchema(tenant: TenantRow): Promise<DataSchema> {
    let dataSchema = this.dataSchemas.get(tenant.dataSchema);
    if (!dataSchema) {
      dataSchema = introspectDataSchema(this.database, tenant.dataSchema);
      dataSchema.catch(() => this.dataSchemas.delete(tenant.dataSchema));
      this.dataSchemas.set(tenant.dataSchema, dataSchema);
    }
    return dataSchema;
  }

  /** The operations of the tenant's API that its programs may call; null when the tenant has no API. */
  apiCatalog(tenant: TenantRow): ApiOperation[] | null {
    if (!tenant.apiBaseUrl || !tenant.apiOpenapi || typeof tenant.apiOpenapi !== 'object') return null;
    // Keyed by content, so that a changed document or method list is seen at once.
    const key = createHash('sha256')
      .update(JSON.stringify([tenant.id, tenant.apiBaseUrl, tenant.apiAllowedMethods, tenant.apiOpenapi]))
      .digest('base64url');
    let catalog = this.catalogs.get(key);
    if (!catalog) {
      const allowed = new Set(tenant.apiAllowedMethods.map((method) => method.toUpperCase()));
      catalog = catalogFromOpenApi(tenant.apiOpenapi).filter((operation) => allowed.has(operation.method));
      this.catalogs.set(key, catalog);
    }
    return catalog;
  }
}
