import { and, eq, isNull, lte, sql } from 'drizzle-orm';
import type { Db } from './client.js';
import { idempotencyKeys, type IdempotencyKeyRow } from './tables.js';

/** What a key is asked to record: the tenant's key, what the request was, and how long the key holds. */
export interface IdempotencyRequest {
  tenantId: string;
  key: string;
  requestHash: string;
  /** How long the key answers with its execution. */
  ttlMs: number;
  /** A key still without its execution after this was left by a stopped process: a new request may take it. */
  abandonedAfterMs: number;
}

/** A key this request holds while its planner writes the plan (no execution yet). */
export interface IdempotencyReservation {
  tenantId: string;
  key: string;
  /** Which reservation of the key this is: a later one, after this was released or abandoned, has another. */
  createdAt: Date;
}

/** The request got the key (`stored`), or another request holds it: `holder` is that request's row. */
export type IdempotencyClaim<T> = { stored: T } | { holder: IdempotencyKeyRow };

const seconds = (ms: number) => sql`make_interval(secs => ${ms / 1000}::double precision)`;

// The database's clock alone decides when a key was made and when it expires, whichever process asks.
// Milliseconds, so that the Date read back is the stored value exactly (reservations are named by it).
const NOW = sql`date_trunc('milliseconds', now())`;

/**
 * The row a new request may replace: expired, or a reservation whose planner should long have finished.
 * Columns are qualified with the table, so they are the stored row's and not EXCLUDED's.
 */
function replaceable(request: IdempotencyRequest) {
  return sql`${idempotencyKeys.expiresAt} <= now() or (${idempotencyKeys.executionId} is null and ${idempotencyKeys.createdAt} <= now() - ${seconds(request.abandonedAfterMs)})`;
}

/**
 * Records the key for the request, with its execution (null: reserved while a planner runs). INSERT … ON
 * CONFLICT lets PostgreSQL settle a race: a second request with the key waits on the first's row until
 * that commits (or rolls back, and then takes the key itself), and finds it taken.
 */
async function insertKey(
  db: Db,
  request: IdempotencyRequest,
  executionId: string | null,
): Promise<IdempotencyClaim<IdempotencyKeyRow>> {
  // A holder that lets go between the insert and the read (a planner that failed) leaves the key free again.
  for (let attempt = 0; attempt < 3; attempt++) {
    const [stored] = await db
      .insert(idempotencyKeys)
      .values({
        tenantId: request.tenantId,
        key: request.key,
        requestHash: request.requestHash,
        executionId,
        createdAt: NOW,
        expiresAt: sql`${NOW} + ${seconds(request.ttlMs)}`,
      })
      .onConflictDoUpdate({
        target: [idempotencyKeys.tenantId, idempotencyKeys.key],
        set: {
          requestHash: sql`excluded.request_hash`,
          executionId: sql`excluded.execution_id`,
          createdAt: sql`excluded.created_at`,
          expiresAt: sql`excluded.expires_at`,
        },
        setWhere: replaceable(request),
      })
      .returning();
    if (stored) return { stored };
    const holder = await findIdempotencyKey(db, request.tenantId, request.key);
    if (holder) return { holder };
  }
  throw new Error(`idempotency key of tenant ${request.tenantId} kept changing hands`);
}

/**
 * Records the key with the execution just inserted in the same transaction (tx): when that commits, the
 * key and its execution are stored together; when another request holds the key, the caller rolls back.
 */
export async function storeIdempotencyKey(
  tx: Db,
  request: IdempotencyRequest,
  executionId: string,
): Promise<IdempotencyClaim<IdempotencyKeyRow>> {
  return insertKey(tx, request, executionId);
}

/** Reserves the key before an execution exists (executeQuery, while its planner runs). */
export async function reserveIdempotencyKey(
  db: Db,
  request: IdempotencyRequest,
): Promise<IdempotencyClaim<IdempotencyReservation>> {
  const claim = await insertKey(db, request, null);
  if ('holder' in claim) return claim;
  return { stored: { tenantId: request.tenantId, key: request.key, createdAt: claim.stored.createdAt } };
}

/** Gives the reserved key its execution, in the transaction that stores it; false when the reservation was lost. */
export async function attachIdempotentExecution(
  tx: Db,
  reservation: IdempotencyReservation,
  executionId: string,
): Promise<boolean> {
  const updated = await tx
    .update(idempotencyKeys)
    .set({ executionId })
    .where(and(reservedBy(reservation), isNull(idempotencyKeys.executionId)))
    .returning({ key: idempotencyKeys.key });
  return updated.length > 0;
}

/** Lets go of a reservation whose request failed before storing an execution, so that the key may be sent again. */
export async function releaseIdempotencyKey(db: Db, reservation: IdempotencyReservation): Promise<void> {
  await db.delete(idempotencyKeys).where(and(reservedBy(reservation), isNull(idempotencyKeys.executionId)));
}

function reservedBy(reservation: IdempotencyReservation) {
  return and(
    eq(idempotencyKeys.tenantId, reservation.tenantId),
    eq(idempotencyKeys.key, reservation.key),
    eq(idempotencyKeys.createdAt, reservation.createdAt),
  );
}

/** The tenant's key as stored, unless it has expired (an expired key is as good as none). */
export async function findIdempotencyKey(db: Db, tenantId: string, key: string): Promise<IdempotencyKeyRow | undefined> {
  const [row] = await db
    .select()
    .from(idempotencyKeys)
    .where(
      and(eq(idempotencyKeys.tenantId, tenantId), eq(idempotencyKeys.key, key), sql`${idempotencyKeys.expiresAt} > now()`),
    );
  return row;
}

/**
 * Deletes up to `limit` expired keys of any tenant, oldest first, skipping rows another request holds
 * (it may be replacing one). Called after a key is stored, so the table holds little more than live keys.
 */
export async function deleteExpiredIdempotencyKeys(db: Db, limit = 100): Promise<number> {
  const expired = db
    .select({ tenantId: idempotencyKeys.tenantId, key: idempotencyKeys.key })
    .from(idempotencyKeys)
    .where(lte(idempotencyKeys.expiresAt, sql`now()`))
    .orderBy(idempotencyKeys.expiresAt)
    .limit(limit)
    .for('update', { skipLocked: true });
  const deleted = await db
    .delete(idempotencyKeys)
    .where(sql`(${idempotencyKeys.tenantId}, ${idempotencyKeys.key}) in ${expired}`)
    .returning({ key: idempotencyKeys.key });
  return deleted.length;
}
