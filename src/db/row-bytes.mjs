// Plain JavaScript so that both the server (client.ts) and the PGlite worker thread load the same code.

/** Roughly the JSON size of a row, without JSON.stringify of the whole row (rows may hold bigint). */
export function approximateRowBytes(row) {
  let bytes = 2;
  for (const [key, value] of Object.entries(row)) {
    bytes += key.length + 4;
    if (value === null || value === undefined) bytes += 4;
    else if (typeof value === 'string') bytes += value.length;
    else if (typeof value === 'object' && !(value instanceof Date)) {
      bytes += JSON.stringify(value, (_key, inner) => (typeof inner === 'bigint' ? inner.toString() : inner))?.length ?? 4;
    } else bytes += String(value).length;
  }
  return bytes;
}
