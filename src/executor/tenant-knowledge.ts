import type { Database } from '../db/client.js';
import { introspectDataSchema, type DataSchema } from '../db/introspect.js';
import type { TenantRow } from '../db/tables.js';

/** What the agents and the guard know of a tenant's data, introspected once per tenant and cached. */
export class TenantKnowledge {
  private readonly dataSchemas = new Map<string, Promise<DataSchema>>();

  constructor(private readonly database: Database) {}

  dataSchema(tenant: TenantRow): Promise<DataSchema> {
    let dataSchema = this.dataSchemas.get(tenant.dataSchema);
    if (!dataSchema) {
      dataSchema = introspectDataSchema(this.database, tenant.dataSchema);
      dataSchema.catch(() => this.dataSchemas.delete(tenant.dataSchema));
      this.dataSchemas.set(tenant.dataSchema, dataSchema);
    }
    return dataSchema;
  }
}
