import { and, asc, count, eq, isNull } from 'drizzle-orm';
import { HTTP_METHODS } from '../api/catalog.js';
import { generateApiKey } from '../auth/api-keys.js';
import type { SecretBox } from '../auth/secrets.js';
import type { Database } from '../db/client.js';
import { provisionTenantDataAccess } from '../db/tenant-roles.js';
import { apiKeys, tenants, type ApiKeyRow, type TenantRow } from '../db/tables.js';

/** A request the admin cannot carry out (bad name, unknown tenant or key); the message says why. */
export class AdminError extends Error {
  override name = 'AdminError';

  constructor(
    message: string,
    /** What kind of refusal it is: the admin API answers 400, 404 or 409 by it. */
    readonly kind: 'invalid' | 'not-found' | 'conflict' = 'invalid',
  ) {
    super(message);
  }
}

const TENANT_ID = /^[a-z][a-z0-9_]{1,39}$/;
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

export interface CreateTenantInput {
  name: string;
  /** Lowercase letters, digits and _; derived from the name when absent. */
  id?: string;
  apiBaseUrl?: string;
  openapi?: unknown;
  /** Headers added to every request to the tenant's API; stored encrypted. */
  credentials?: Record<string, string>;
  allowedMethods?: string[];
}

export function tenantIdFromName(name: string): string {
  const slug = name
    .normalize('NFKD')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^[^a-z]+|_+$/g, '')
    .slice(0, 40);
  return slug.replace(/_+$/, '');
}

function validateTenantInput(input: CreateTenantInput): { id: string; allowedMethods: string[] } {
  if (input.name.trim().length === 0 || input.name.length > 200) throw new AdminError('a tenant name is 1 to 200 characters');
  const id = input.id ?? tenantIdFromName(input.name);
  if (!TENANT_ID.test(id)) {
    throw new AdminError(`tenant id "${id}" must be 2-40 lowercase letters, digits or _, starting with a letter (use --id)`);
  }
  if (input.apiBaseUrl !== undefined) {
    let url: URL;
    try {
      url = new URL(input.apiBaseUrl);
    } catch {
      throw new AdminError(`API base URL "${input.apiBaseUrl}" is not a URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new AdminError('the API base URL must be http or https');
    if (input.openapi === undefined) throw new AdminError('a tenant with an API needs its OpenAPI document (--openapi)');
  }
  if (input.openapi !== undefined && (typeof input.openapi !== 'object' || input.openapi === null)) {
    throw new AdminError('the OpenAPI document must be a JSON object');
  }
  for (const header of Object.keys(input.credentials ?? {})) {
    if (!HEADER_NAME.test(header)) throw new AdminError(`"${header}" is not an HTTP header name`);
  }
  const allowedMethods = (input.allowedMethods ?? ['GET']).map((method) => method.toUpperCase());
  for (const method of allowedMethods) {
    if (!(HTTP_METHODS as readonly string[]).includes(method)) throw new AdminError(`"${method}" is not an HTTP method stepcast calls`);
  }
  return { id, allowedMethods };
}

/**
 * Creates a tenant: its data schema and database role first (idempotent), then the row. The schema
 * is `tenant_<id>`; load the tenant's data into it with any PostgreSQL tool.
 */
export async function createTenant(
  database: Database,
  secrets: SecretBox,
  input: CreateTenantInput,
): Promise<TenantRow> {
  const { id, allowedMethods } = validateTenantInput(input);
  const [existing] = await database.db.select({ id: tenants.id }).from(tenants).where(eq(tenants.id, id));
  if (existing) throw new AdminError(`tenant ${id} already exists`, 'conflict');
  const dataSchema = `tenant_${id}`;
  const dbRole = await provisionTenantDataAccess(database, dataSchema);
  try {
    const [row] = await database.db
      .insert(tenants)
      .values({
        id,
        name: input.name.trim(),
        dataSchema,
        dbRole,
        apiBaseUrl: input.apiBaseUrl ?? null,
        apiOpenapi: input.openapi ?? null,
        apiCredentialsEncrypted: input.credentials ? secrets.sealJson(input.credentials, id) : null,
        apiAllowedMethods: allowedMethods,
      })
      .returning();
    return row!;
  } catch (error) {
    if ((error as { code?: string }).code === '23505' || /duplicate key/.test(String(error))) {
      throw new AdminError(`tenant ${id} already exists (or its schema ${dataSchema} belongs to another tenant)`, 'conflict');
    }
    throw error;
  }
}

export interface TenantSummary {
  id: string;
  name: string;
  dataSchema: string;
  dbRole: string | null;
  apiBaseUrl: string | null;
  activeKeys: number;
  createdAt: Date;
}

export async function listTenants(database: Database): Promise<TenantSummary[]> {
  const rows = await database.db
    .select({
      id: tenants.id,
      name: tenants.name,
      dataSchema: tenants.dataSchema,
      dbRole: tenants.dbRole,
      apiBaseUrl: tenants.apiBaseUrl,
      createdAt: tenants.createdAt,
      activeKeys: count(apiKeys.id),
    })
    .from(tenants)
    .leftJoin(apiKeys, and(eq(apiKeys.tenantId, tenants.id), isNull(apiKeys.revokedAt)))
    .groupBy(tenants.id)
    .orderBy(asc(tenants.id));
  return rows.map((row) => ({ ...row, activeKeys: Number(row.activeKeys) }));
}

export interface CreatedApiKey {
  id: string;
  tenantId: string;
  /** The whole key: shown once, never stored. */
  token: string;
}

export async function createApiKey(database: Database, tenantId: string, name?: string): Promise<CreatedApiKey> {
  const [tenant] = await database.db.select({ id: tenants.id }).from(tenants).where(eq(tenants.id, tenantId));
  if (!tenant) throw new AdminError(`tenant ${tenantId} does not exist`, 'not-found');
  const key = generateApiKey();
  await database.db.insert(apiKeys).values({ id: key.id, tenantId, name: name ?? null, secretHash: key.secretHash });
  return { id: key.id, tenantId, token: key.token };
}

/** Revokes a key at once: HTTP requests with it fail from now on, open WebSockets close at the next sweep. */
export async function revokeApiKey(database: Database, keyId: string): Promise<ApiKeyRow> {
  const [revoked] = await database.db
    .update(apiKeys)
    .set({ revokedAt: new Date() })
    .where(and(eq(apiKeys.id, keyId), isNull(apiKeys.revokedAt)))
    .returning();
  if (revoked) return revoked;
  const [existing] = await database.db.select().from(apiKeys).where(eq(apiKeys.id, keyId));
  if (!existing) throw new AdminError(`API key ${keyId} does not exist`, 'not-found');
  return existing;
}

export async function listApiKeys(database: Database, tenantId: string): Promise<ApiKeySummary[]> {
  return database.db
    .select({
      id: apiKeys.id,
      tenantId: apiKeys.tenantId,
      name: apiKeys.name,
      createdAt: apiKeys.createdAt,
      revokedAt: apiKeys.revokedAt,
    })
    .from(apiKeys)
    .where(eq(apiKeys.tenantId, tenantId))
    .orderBy(asc(apiKeys.createdAt));
}

export type ApiKeySummary = Omit<ApiKeyRow, 'secretHash'>;

/** What `npm run admin` does: on the database directly (server stopped), or through a running server's admin API. */
export interface AdminOperations {
  createTenant(input: CreateTenantInput): Promise<Pick<TenantRow, 'id' | 'name' | 'dataSchema' | 'dbRole'>>;
  listTenants(): Promise<TenantSummary[]>;
  createApiKey(tenantId: string, name?: string): Promise<CreatedApiKey>;
  listApiKeys(tenantId: string): Promise<ApiKeySummary[]>;
  revokeApiKey(keyId: string): Promise<Pick<ApiKeyRow, 'id' | 'tenantId' | 'revokedAt'>>;
}

/** The operations on an open database; `secrets` is asked for only when a tenant is created (it may make a key file). */
export function databaseAdmin(database: Database, secrets: () => Promise<SecretBox>): AdminOperations {
  return {
    async createTenant(input) {
      const { id, name, dataSchema, dbRole } = await createTenant(database, await secrets(), input);
      return { id, name, dataSchema, dbRole };
    },
    listTenants: () => listTenants(database),
    createApiKey: (tenantId, name) => createApiKey(database, tenantId, name),
    listApiKeys: (tenantId) => listApiKeys(database, tenantId),
    async revokeApiKey(keyId) {
      const { id, tenantId, revokedAt } = await revokeApiKey(database, keyId);
      return { id, tenantId, revokedAt };
    },
  };
}
