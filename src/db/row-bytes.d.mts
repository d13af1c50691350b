/** Roughly the JSON size of a row, without JSON.stringify of the whole row (rows may hold bigint). */
export function approximateRowBytes(row: Record<string, unknown>): number;
