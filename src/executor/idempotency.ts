import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Db } from '../db/client.js';
import {
  attachIdempotentExecution,
  deleteExpiredIdempotencyKeys,
  findIdempotencyKey,
  releaseIdempotencyKey,
  reserveIdempotencyKey,
  storeIdempotencyKey,
  type IdempotencyRequest,
} from '../db/idempotency.js';
import type { ExecutionRow, IdempotencyKeyRow } from '../db/tables.js';
import type { Logger } from '../logger.js';
import { IdempotencyConflictError, IdempotencyKeyInUseError } from './errors.js';
import type { ExecuteOptionsInput, ValidatedOptions, ValidatedPlan } from './plan.js';

/** Runs in the transaction that stores the execution, after its row is inserted; what it throws rolls all back. */
export type ClaimInTransaction = (tx: Db, executionId: string) => Promise<void>;

/** How a request stores its execution, given to IdempotentSubmits, which decides whether it runs at all. */
export interface Submission<T> {
  /** Takes the tenant's tokens (RateLimitedError when empty); called only for a request that stores an execution. */
  spendTokens(): Promise<void>;
  /** Stores the execution, running `claim` (when given) in the transaction that stores it. */
  create(claim: ClaimInTransaction | undefined): Promise<T>;
}

/** The request made its execution (`created`), or its key had one already (`replayed`), which did not run again. */
export type SubmitOutcome<T> = { created: T } | { replayed: ExecutionRow };

export interface IdempotencySettings {
  ttlMs: number;
  /** How long a second executeQuery waits for the first one's planner; then its key may be taken over. */
  plannerMaxMs: number;
}

const POLL_FIRST_MS = 25;
const POLL_MAX_MS = 500;

/** JSON with every object's keys sorted, so that equal requests are equal text whatever order their fields came in. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, item: unknown) => {
    if (item === null || typeof item !== 'object' || Array.isArray(item)) return item;
    const entries = Object.entries(item as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return Object.fromEntries(entries);
  });
}

/** What a request with a key is compared by: SHA-256 of its canonical JSON (the key itself left out). */
export function requestHash(request: unknown): string {
  return createHash('sha256').update(canonicalJson(request)).digest('hex');
}

/**
 * What an executePlan with a key is compared by: the plan and options as validated (defaults filled in), and the
 * correlationId only if the client gave one (a generated one differs every time).
 */
export function planRequest(validated: ValidatedPlan, given: ExecuteOptionsInput | null | undefined): unknown {
  return { operation: 'executePlan', plan: validated.plan, options: validated.options, correlationId: given?.correlationId ?? null };
}

/** What an executeQuery with a key is compared by: the question and the options, as for planRequest. */
export function queryRequest(query: string, validated: ValidatedOptions, given: ExecuteOptionsInput | null | undefined): unknown {
  return { operation: 'executeQuery', query, options: validated.options, correlationId: given?.correlationId ?? null };
}

/** A request without a key: it takes its tokens and stores its execution, as any submit did before keys. */
async function withoutKey<T>(submission: Submission<T>): Promise<SubmitOutcome<T>> {
  await submission.spendTokens();
  return { created: await submission.create(undefined) };
}

/** This request lost the race for its key inside the execution's transaction, which rolls back. */
class KeyTaken extends Error {
  override name = 'KeyTaken';
  constructor(readonly holder: IdempotencyKeyRow) {
    super('another request holds this idempotency key');
  }
}

/**
 * Submits executions once per tenant and idempotency key. PostgreSQL settles races (INSERT … ON CONFLICT on
 * the key's row), so this holds across requests, connections and processes alike; nothing here locks in memory.
 */
export class IdempotentSubmits {
  constructor(
    private readonly db: Db,
    private readonly settings: IdempotencySettings,
    private readonly findExecution: (tenantId: string, executionId: string) => Promise<ExecutionRow | undefined>,
    private readonly logger: Logger,
    private readonly shutdown: AbortSignal,
  ) {}

  /**
   * executePlan: the key is stored in the transaction that stores the execution, so both or neither are
   * stored. A request that finds the key taken stores nothing and spends no token.
   */
  async submit<T>(
    tenantId: string,
    key: string | null,
    request: unknown,
    submission: Submission<T>,
  ): Promise<SubmitOutcome<T>> {
    if (key === null) return withoutKey(submission);
    const keyRequest = this.keyRequest(tenantId, key, request);
    const known = await findIdempotencyKey(this.db, tenantId, key);
    if (known) return { replayed: await this.answerFor(known, keyRequest, { wait: false }) };
    try {
      const created = await submission.create(async (tx, executionId) => {
        const claim = await storeIdempotencyKey(tx, keyRequest, executionId);
        if ('holder' in claim) throw new KeyTaken(claim.holder);
        await submission.spendTokens();
      });
      await this.deleteExpired();
      return { created };
    } catch (error) {
      if (!(error instanceof KeyTaken)) throw error;
      return { replayed: await this.answerFor(error.holder, keyRequest, { wait: false }) };
    }
  }

  /**
   * executeQuery: the key is reserved before the planner runs, so that a second request with it waits for
   * the first's execution instead of asking the model again. A reservation whose request fails is released.
   */
  async submitPlanned<T>(
    tenantId: string,
    key: string | null,
    request: unknown,
    submission: Submission<T>,
  ): Promise<SubmitOutcome<T>> {
    if (key === null) return withoutKey(submission);
    const keyRequest = this.keyRequest(tenantId, key, request);
    const claim = await reserveIdempotencyKey(this.db, keyRequest);
    if ('holder' in claim) return { replayed: await this.answerFor(claim.holder, keyRequest, { wait: true }) };
    const reservation = claim.stored;
    try {
      await submission.spendTokens();
      const created = await submission.create(async (tx, executionId) => {
        if (!(await attachIdempotentExecution(tx, reservation, executionId))) {
          // Taken over as abandoned: this planner ran past every bound it has.
          throw new IdempotencyKeyInUseError('this idempotency key was taken over by another request while this one was planning');
        }
      });
      await this.deleteExpired();
      return { created };
    } catch (error) {
      await releaseIdempotencyKey(this.db, reservation).catch((releaseError: unknown) =>
        this.logger.warn({ tenantId, err: releaseError }, 'could not release an idempotency key; it frees itself later'),
      );
      throw error;
    }
  }

  private keyRequest(tenantId: string, key: string, request: unknown): IdempotencyRequest {
    return {
      tenantId,
      key,
      requestHash: requestHash(request),
      ttlMs: this.settings.ttlMs,
      abandonedAfterMs: this.settings.plannerMaxMs,
    };
  }

  /** The execution the key's holder made, for a request with the same hash; with `wait`, waits for a planner still running. */
  private async answerFor(
    holder: IdempotencyKeyRow,
    request: IdempotencyRequest,
    { wait }: { wait: boolean },
  ): Promise<ExecutionRow> {
    let row: IdempotencyKeyRow | undefined = holder;
    const deadline = Date.now() + this.settings.plannerMaxMs;
    let pollMs = POLL_FIRST_MS;
    for (;;) {
      if (!row) {
        throw new IdempotencyKeyInUseError(
          'the request that first used this idempotency key failed before it stored an execution; send the request again',
        );
      }
      if (row.requestHash !== request.requestHash) throw new IdempotencyConflictError();
      if (row.executionId !== null) return this.executionOf(row.executionId, request);
      if (!wait || Date.now() >= deadline || this.shutdown.aborted) {
        throw new IdempotencyKeyInUseError('the request that first used this idempotency key is still being planned; send the request again');
      }
      // Another process may hold the reservation, so its end is read from the database, not awaited in memory.
      await sleep(pollMs, undefined, { signal: this.shutdown }).catch(() => undefined);
      pollMs = Math.min(pollMs * 2, POLL_MAX_MS);
      row = await findIdempotencyKey(this.db, request.tenantId, request.key);
    }
  }

  private async executionOf(executionId: string, request: IdempotencyRequest): Promise<ExecutionRow> {
    const execution = await this.findExecution(request.tenantId, executionId);
    // Deleting an execution deletes its key too (ON DELETE CASCADE): this one went between the two reads.
    if (!execution) throw new IdempotencyKeyInUseError('the execution of this idempotency key was just deleted; send the request again');
    this.logger.info(
      { correlationId: execution.correlationId, executionId, tenantId: request.tenantId },
      'request answered with the execution of its idempotency key',
    );
    return execution;
  }

  /** Expired keys are replaced when their key comes again; the rest go a few at a time, after a new key is stored. */
  private async deleteExpired(): Promise<void> {
    try {
      await deleteExpiredIdempotencyKeys(this.db);
    } catch (error) {
      this.logger.warn({ err: error }, 'could not delete expired idempotency keys; the next submit tries again');
    }
  }
}
