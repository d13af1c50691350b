const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether a text is a UUID (an execution's id): anything else names no execution, and is never sent to the database. */
export function isUuid(value: string): boolean {
  return UUID_PATTERN.test(value);
}
