import type { ExecutionCursor } from '../executor/store.js';
import { badUserInput } from './errors.js';
import { isUuid } from '../executor/ids.js';

export function encodeCursor({ createdAt, id }: ExecutionCursor): string {
  return Buffer.from(JSON.stringify([createdAt.toISOString(), id])).toString('base64url');
}

export function decodeCursor(cursor: string): ExecutionCursor {
  try {
    const [createdAt, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown[];
    const date = new Date(String(createdAt));
    if (typeof createdAt === 'string' && typeof id === 'string' && isUuid(id) && isStorableDate(date)) {
      return { createdAt: date, id };
    }
  } catch {
    // falls through to the error below
  }
  throw badUserInput('after is not a cursor this server issued; pass an endCursor from a previous page');
}


/** Postgres timestamps hold years 1 to 9999 here; anything else is not a date this server stored. */
export function isStorableDate(date: Date): boolean {
  const year = date.getUTCFullYear();
  return !Number.isNaN(date.getTime()) && year >= 1 && year <= 9999;
}

export { isUuid };
