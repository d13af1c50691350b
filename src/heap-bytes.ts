/**
 * Roughly what a JSON value costs on V8's heap (64-bit, no pointer compression: Node's default build),
 * as measured; not what its JSON text weighs (`[{}, {}]` is 8 bytes of text and 144 of heap). Used by
 * the executor to count what an execution holds, and by the sandbox to measure a program's result
 * before it is brought onto the service's heap.
 */

const SLOT_BYTES = 8;
const STRING_HEADER_BYTES = 16;
const HEAP_NUMBER_BYTES = 16;
const OBJECT_HEADER_BYTES = 24;
/** Room for four properties comes with every object; more go to a separate array, with its own header. */
const SMALL_OBJECT_BYTES = 56;
const IN_OBJECT_PROPERTIES = 4;
const PROPERTY_ARRAY_BYTES = 32;
/** Past this many properties (JSON.parse, or added one by one) an object is a hash table, at this much each. */
const DICTIONARY_PROPERTIES = 128;
const DICTIONARY_PROPERTY_BYTES = 64;
const ARRAY_HEADER_BYTES = 32;
const ELEMENTS_HEADER_BYTES = 16;
const TWO_BYTE = /[\u0100-\uffff]/;

const align = (bytes: number) => Math.ceil(bytes / SLOT_BYTES) * SLOT_BYTES;
const isSmallInteger = (value: number) => Number.isInteger(value) && value >= -(2 ** 31) && value < 2 ** 31;

export function stringHeapBytes(text: string): number {
  return STRING_HEADER_BYTES + align(TWO_BYTE.test(text) ? text.length * 2 : text.length);
}

/**
 * Property names are stored once on the heap, whatever number of objects use them: `names` holds the
 * ones already counted (share it across the values of one result), so a name is counted the first time.
 */
function namesBytes(value: object, names: Set<string>): number {
  let bytes = 0;
  for (const name of Object.keys(value)) {
    if (names.has(name)) continue;
    names.add(name);
    bytes += stringHeapBytes(name);
  }
  return bytes;
}

/** What the value itself takes, without what its elements or property values take. */
function ownHeapBytes(value: unknown, names: Set<string>): number {
  switch (typeof value) {
    case 'string':
      return stringHeapBytes(value);
    case 'number':
      return isSmallInteger(value) ? 0 : HEAP_NUMBER_BYTES;
    case 'bigint':
      return HEAP_NUMBER_BYTES + SLOT_BYTES;
    case 'object': {
      if (value === null) return 0;
      if (Array.isArray(value)) {
        return value.length === 0 ? ARRAY_HEADER_BYTES : ARRAY_HEADER_BYTES + ELEMENTS_HEADER_BYTES + value.length * SLOT_BYTES;
      }
      if (value instanceof Date) return OBJECT_HEADER_BYTES + HEAP_NUMBER_BYTES;
      const properties = Object.keys(value).length;
      const own =
        properties >= DICTIONARY_PROPERTIES
          ? OBJECT_HEADER_BYTES + properties * DICTIONARY_PROPERTY_BYTES
          : properties <= IN_OBJECT_PROPERTIES
            ? SMALL_OBJECT_BYTES
            : OBJECT_HEADER_BYTES + PROPERTY_ARRAY_BYTES + properties * SLOT_BYTES;
      return own + namesBytes(value, names);
    }
    default:
      return 0;
  }
}

/** What a JSON value costs on the heap, with everything it holds. */
export function heapBytesOf(value: unknown, names: Set<string> = new Set()): number {
  let bytes = ownHeapBytes(value, names);
  if (typeof value !== 'object' || value === null || value instanceof Date) return bytes;
  if (Array.isArray(value)) {
    // An array of numbers only keeps them unboxed, in its slots; in any other array a fraction is a heap number.
    const numbersOnly = value.every((item) => typeof item === 'number');
    for (const item of value) if (!numbersOnly || typeof item !== 'number') bytes += heapBytesOf(item, names);
    return bytes;
  }
  for (const item of Object.values(value)) bytes += heapBytesOf(item, names);
  return bytes;
}
