import type { Executor } from '../executor/executor.js';

export interface GraphQLContext {
  executor: Executor;
  /** The tenant every operation of this request acts for; it comes from the credential, never an argument. */
  tenantId: string;
}
