import { createHash } from 'node:crypto';
import { catalogFromOpenApi, type ApiOperation } from '../api/catalog.js';
import type { Database } from '../db/client.js';
import { introspectDataSchema, introspectFunctionNames, type DataSchema } from '../db/introspect.js';
import type { TenantRow } from '../db/tables.js';
import type { SecretBox } from '../auth/secrets.js';

/** What the agents and the guard know of a tenant's data, introspected once per tenant and cached. */
export class TenantKnowledge {
  private readonly dataSchemas = new Map<string, Promise<DataSchema>>();
  private readonly promptDataSchemas = new Map<string, Promise<DataSchema>>();
  /** Keyed by schema; pg_catalog's names are loaded once and shared by every tenant. */
  private readonly functionNames = new Map<string, Promise<ReadonlySet<string>>>();
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

  /** Tables, columns and keys, read from the catalogs only: what the guard checks a statement against. Fast. */
  dataSchema(tenant: TenantRow): Promise<DataSchema> {
    return cachedUntilFailure(this.dataSchemas, tenant.dataSchema, () => introspectDataSchema(this.database, tenant.dataSchema));
  }

  /**
   * The same with the values of low-cardinality columns, read as the tenant's role, for the agents' prompts only: it
   * reads the tenant's statistics and data (seconds, for a tenant with many tables or slow ones), which a statement a
   * client wrote must not wait for.
   */
  promptDataSchema(tenant: TenantRow): Promise<DataSchema> {
    return cachedUntilFailure(this.promptDataSchemas, tenant.dataSchema, () =>
      introspectDataSchema(this.database, tenant.dataSchema, { role: tenant.dbRole ?? undefined }),
    );
  }

  /** Names of the functions a tenant's statement could reach: pg_catalog's and its own schema's. */
  async reachableFunctions(tenant: TenantRow): Promise<Pick<ReadonlySet<string>, 'has'>> {
    const [catalog, own] = await Promise.all([this.functionNamesOf('pg_catalog'), this.functionNamesOf(tenant.dataSchema)]);
    return { has: (name) => catalog.has(name) || own.has(name) };
  }

  private functionNamesOf(schema: string): Promise<ReadonlySet<string>> {
    return cachedUntilFailure(this.functionNames, schema, () => introspectFunctionNames(this.database, schema));
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

function cachedUntilFailure<T>(cache: Map<string, Promise<T>>, key: string, load: () => Promise<T>): Promise<T> {
  let value = cache.get(key);
  if (!value) {
    value = load();
    value.catch(() => cache.delete(key));
    cache.set(key, value);
  }
  return value;
}
