import { sql } from 'drizzle-orm';
import {
  boolean,
  index,
  integer,
  json,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uuid,
} from 'drizzle-orm/pg-core';

export interface StoredStepError {
  code: string;
  message: string;
  retryable: boolean;
}

export interface StoredPlanStep {
  kind: 'SQL' | 'API';
  queryContext: string;
  entity: string | null;
  reasoning: string | null;
  critical: boolean;
  sql: string | null;
  code: string | null;
  /** The step waits for a person's approval (approveStep) before it runs. */
  approval?: boolean;
  /** How long the approval may wait before the step fails with APPROVAL_TIMEOUT; none when absent. */
  approvalTimeoutMs?: number | null;
}

export interface StoredPlan {
  query: string;
  reasoning: string | null;
  steps: StoredPlanStep[];
}

export interface StoredExecuteOptions {
  sampleSize: number;
  stepTimeoutMs: number;
}

export interface StoredTokenUsage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
}

export interface StoredColumn {
  name: string;
  type: string;
}

// Records are stored as json, not jsonb, so that their keys keep the column order of the query.
const timestamptz = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

export const tenants = pgTable('tenants', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  dataSchema: text('data_schema').notNull().unique(),
  /** The tenant's HTTP API that API steps call; null when the tenant has none. */
  apiBaseUrl: text('api_base_url'),
  apiOpenapi: jsonb('api_openapi'),
  /**
   * Headers the host adds to every API request, as JSON encrypted with the service's key
   * (src/auth/secrets.ts); programs never see them.
   */
  apiCredentialsEncrypted: text('api_credentials_encrypted'),
  apiAllowedMethods: jsonb('api_allowed_methods').$type<string[]>().notNull().default(['GET']),
  /** The database role SQL steps run as: USAGE and SELECT on data_schema only. */
  dbRole: text('db_role'),
  createdAt: timestamptz('created_at').notNull().defaultNow(),
});

/** API keys: the secret is shown once at creation; only its SHA-256 is kept. */
export const apiKeys = pgTable(
  'api_keys',
  {
    id: text('id').primaryKey(),
    tenantId: text('tenant_id')
      .notNull()
      .references(() => tenants.id),
    name: text('name'),
    secretHash: text('secret_hash').notNull(),
    createdAt: timestamptz('created_at').notNull().defaultNow(),
    revokedAt: timestamptz('revoked_at'),
  },
  (table) => [index('api_keys_tenant_idx').on(table.tenantId), index('api_keys_revoked_idx').on(table.revokedAt)],
);

export const executions = pgTable(
  'executions',
  {
    id: uuid('id').primaryKey(),
    tenantId: text('tenant_id')
      .notNull()
      .references(() => tenants.id),
    correlationId: text('correlation_id').notNull(),
    status: text('status').notNull(),
    plan: jsonb('plan').$type<StoredPlan>().notNull(),
    options: jsonb('options').$type<StoredExecuteOptions>().notNull(),
    finalResult: json('final_result'),
    error: jsonb('error').$type<StoredStepError>(),
    totalSteps: integer('total_steps').notNull(),
    successfulSteps: integer('successful_steps').notNull().default(0),
    failedSteps: integer('failed_steps').notNull().default(0),
    usage: jsonb('usage').$type<StoredTokenUsage>(),
    lastSequence: integer('last_sequence').notNull().default(0),
    /**
     * The lease: the worker running the execution (null when none does), which claim of it this is (each
     * claim adds one; a transition commits only with the epoch it claimed, so a holder whose lease was taken
     * over commits nothing), and until when it holds unless renewed.
     */
    leaseOwner: text('lease_owner'),
    leaseEpoch: integer('lease_epoch').notNull().default(0),
    leaseExpiresAt: timestamptz('lease_expires_at'),
    /** How many times a worker continued the execution after its previous holder stopped mid-run. */
    resumes: integer('resumes').notNull().default(0),
    /** cancelExecution was accepted: the holder stops the running step and ends the execution CANCELLED. */
    cancelRequestedAt: timestamptz('cancel_requested_at'),
    /** A WAITING execution's approval deadline (approvalTimeoutMs), when it has one. */
    wakeAt: timestamptz('wake_at'),
    createdAt: timestamptz('created_at').notNull(),
    startedAt: timestamptz('started_at'),
    finishedAt: timestamptz('finished_at'),
  },
  (table) => [
    // The order history reads in (created_at DESC, id DESC: NULLS FIRST, as ORDER BY ... DESC means), so a page
    // is an index scan with no sort; the same with a status filter.
    index('executions_tenant_created_idx').on(table.tenantId, table.createdAt.desc().nullsFirst(), table.id.desc().nullsFirst()),
    index('executions_tenant_status_created_idx').on(
      table.tenantId,
      table.status,
      table.createdAt.desc().nullsFirst(),
      table.id.desc().nullsFirst(),
    ),
    index('executions_tenant_correlation_idx').on(table.tenantId, table.correlationId),
    index('executions_unfinished_idx')
      .on(table.status)
      .where(sql`${table.status} in ('QUEUED', 'RUNNING')`),
    index('executions_waiting_idx')
      .on(table.wakeAt)
      .where(sql`${table.status} = 'WAITING'`),
    // What retention deletes, oldest first (src/db/retention.ts). It costs no HOT update: finished_at is set by
    // the transition that changes the status, which is indexed already.
    index('executions_finished_idx')
      .on(table.finishedAt)
      .where(sql`${table.status} in ('SUCCEEDED', 'FAILED', 'CANCELLED')`),
  ],
);

/**
 * Idempotency keys of submitted executions (ExecuteOptions.idempotencyKey), per tenant: the request they
 * came with (a hash of the plan or query and options), and the execution they created (null while the
 * planner of an executeQuery is still writing it).
 */
export const idempotencyKeys = pgTable(
  'idempotency_keys',
  {
    tenantId: text('tenant_id')
      .notNull()
      .references(() => tenants.id),
    key: text('key').notNull(),
    requestHash: text('request_hash').notNull(),
    executionId: uuid('execution_id').references(() => executions.id, { onDelete: 'cascade' }),
    createdAt: timestamptz('created_at').notNull(),
    expiresAt: timestamptz('expires_at').notNull(),
  },
  (table) => [
    primaryKey({ columns: [table.tenantId, table.key] }),
    index('idempotency_keys_expires_idx').on(table.expiresAt),
    // The keys of an execution: what deleting it cascades to, and what retention asks before it deletes one.
    index('idempotency_keys_execution_idx')
      .on(table.executionId)
      .where(sql`${table.executionId} is not null`),
  ],
);

export const stepResults = pgTable(
  'step_results',
  {
    executionId: uuid('execution_id')
      .notNull()
      .references(() => executions.id, { onDelete: 'cascade' }),
    index: integer('index').notNull(),
    tenantId: text('tenant_id').notNull(),
    correlationId: text('correlation_id').notNull(),
    kind: text('kind').$type<'SQL' | 'API'>().notNull(),
    status: text('status').notNull(),
    queryContext: text('query_context').notNull(),
    entity: text('entity'),
    reasoning: text('reasoning'),
    critical: boolean('critical').notNull(),
    sql: text('sql'),
    code: text('code'),
    recordCount: integer('record_count'),
    columns: jsonb('columns').$type<StoredColumn[]>(),
    sample: json('sample').$type<unknown[]>(),
    result: json('result').$type<unknown[]>(),
    /**
     * Every record the step produced, when they are more than `result` keeps (null: `result` is all of
     * them): what later steps read as step_N and steps[i].records, so that a resumed run rebuilds them.
     */
    records: json('records').$type<unknown[]>(),
    truncated: boolean('truncated').notNull().default(false),
    error: jsonb('error').$type<StoredStepError>(),
    attempts: integer('attempts').notNull().default(0),
    usage: jsonb('usage').$type<StoredTokenUsage>(),
    /** What the step's program wrote with console.log (API steps). */
    logs: json('logs').$type<string[]>(),
    /**
     * The step's program made a call that is not safe to repeat (not GET, and not declared idempotent in the
     * tenant's catalog): a run that stopped during this step cannot run it again.
     */
    unsafeCalls: boolean('unsafe_calls').notNull().default(false),
    /** The step waits for approval (approveStep / rejectStep) before it runs. */
    approval: boolean('approval').notNull().default(false),
    /** The person's decision on an approval step: APPROVED or REJECTED, by whom, when, and what they wrote. */
    decision: text('decision').$type<'APPROVED' | 'REJECTED'>(),
    decidedBy: text('decided_by'),
    decidedAt: timestamptz('decided_at'),
    decisionComment: text('decision_comment'),
    startedAt: timestamptz('started_at'),
    finishedAt: timestamptz('finished_at'),
  },
  (table) => [primaryKey({ columns: [table.executionId, table.index] })],
);

export const stepEvents = pgTable(
  'step_events',
  {
    executionId: uuid('execution_id')
      .notNull()
      .references(() => executions.id, { onDelete: 'cascade' }),
    sequence: integer('sequence').notNull(),
    tenantId: text('tenant_id').notNull(),
    correlationId: text('correlation_id').notNull(),
    type: text('type').notNull(),
    executionStatus: text('execution_status').notNull(),
    stepIndex: integer('step_index'),
    /** What the event changed of its step (older events hold the whole step, which reads the same way). */
    step: json('step').$type<StoredStepDelta>(),
    /** The text of a STEP_PROGRESS update. */
    message: text('message'),
    at: timestamptz('at').notNull(),
  },
  (table) => [primaryKey({ columns: [table.executionId, table.sequence] })],
);

export type TenantRow = typeof tenants.$inferSelect;
export type ApiKeyRow = typeof apiKeys.$inferSelect;
export type ExecutionRow = typeof executions.$inferSelect;
export type StepResultRow = typeof stepResults.$inferSelect;
/** A step as history shows it: without its full records (read only by a run that continues the execution). */
export type StepRow = Omit<StepResultRow, 'records'>;
export type StepEventRow = typeof stepEvents.$inferSelect;
export type IdempotencyKeyRow = typeof idempotencyKeys.$inferSelect;

/** A step as stored, without its records and its result (up to 1 MiB): read by itself when it is asked for. */
export type StepState = Omit<StepRow, 'result'>;

/** A StepResult as it was when an event happened; `result` and `records` stay in step_results to keep the log small. */
export type StepSnapshot = Omit<StepResultRow, 'result' | 'records' | 'startedAt' | 'finishedAt' | 'decidedAt'> & {
  startedAt: string | null;
  finishedAt: string | null;
  decidedAt: string | null;
};

/** Fields a step gets once: kept only on its row, and named by the event that set them. */
export type KeptOnStepField = 'sql' | 'code' | 'sample' | 'logs';

/** What an event stores of its step: the fields its transition changed. */
export type StoredStepDelta = Partial<Omit<StepSnapshot, KeptOnStepField>> & {
  /** These fields changed too; their values are the step's (step_results). */
  keptOnStep?: KeptOnStepField[];
};
