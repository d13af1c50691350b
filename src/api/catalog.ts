/** An OpenAPI 3 document turned into the list of operations an API step may call. */

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface ApiParameter {
  name: string;
  in: 'path' | 'query' | 'header';
  required: boolean;
  description: string | null;
  schema: unknown;
}

export interface ApiOperation {
  operationId: string;
  method: HttpMethod;
  path: string;
  summary: string | null;
  parameters: ApiParameter[];
  /** Has an `after` or `cursor` query parameter, so api.call can follow pages with `paginate: true`. */
  paginated: boolean;
  /** The shape of a successful JSON answer, as field names (`{ data: [{ id, name }], nextCursor }`); null when not documented. */
  returns?: string | null;
  /**
   * Safe to send again after a crash: a GET, or an operation the document marks `x-idempotent: true`. A step
   * whose program made any other call is not run again when its execution resumes (it fails INTERRUPTED).
   */
  idempotent: boolean;
}

type JsonObject = Record<string, unknown>;

/** The methods an API operation may have, and a tenant may allow. */
export const HTTP_METHODS: readonly HttpMethod[] = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];
const PARAMETER_LOCATIONS: readonly ApiParameter['in'][] = ['path', 'query', 'header'];
export const CURSOR_PARAMETER_NAMES = ['after', 'cursor'] as const;

/** The query parameter `paginate: true` passes each page's nextCursor as (after before cursor); undefined when not paginated. */
export function cursorParameterOf(operation: Pick<ApiOperation, 'parameters'>): string | undefined {
  return CURSOR_PARAMETER_NAMES.find((name) => operation.parameters.some((p) => p.in === 'query' && p.name === name));
}
const MAX_REF_HOPS = 10;
const MAX_SUMMARY_LENGTH = 200;
const MAX_RETURNS_LENGTH = 400;
/** Nested objects are spelled out to this depth; deeper ones are named only. */
const MAX_SHAPE_DEPTH = 3;
const MAX_LISTED_ENUM_VALUES = 12;
/** An enum is listed when each of its values, as JSON, is at most this long. */
const MAX_ENUM_VALUE_CHARS = 42;
/** About 2,000 tokens: operations past it are named only, and the text says so. */
export const DEFAULT_CATALOG_CHARS = 8_000;

function asObject(value: unknown): JsonObject | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as JsonObject) : undefined;
}

/** Throws for anything that is not an OpenAPI 3 document; skips operations it cannot use. */
export function catalogFromOpenApi(document: unknown): ApiOperation[] {
  const root = asObject(document);
  if (!root || typeof root.openapi !== 'string' || !/^3\.\d+/.test(root.openapi)) {
    throw new Error('not an OpenAPI 3 document: expected an object whose "openapi" field is a 3.x version');
  }
  const paths = asObject(root.paths);
  if (!paths) throw new Error('not an OpenAPI 3 document: "paths" must be an object');
  const operations: ApiOperation[] = [];
  const seen = new Set<string>();
  for (const [path, rawItem] of Object.entries(paths)) {
    const item = asObject(resolveRef(root, rawItem));
    if (!path.startsWith('/') || !item) continue;
    for (const operation of operationsOfPath(root, path, item)) {
      // Two operations with one id would make api.call ambiguous; OpenAPI forbids it too.
      if (seen.has(operation.operationId)) throw new Error(`duplicate operationId "${operation.operationId}"`);
      seen.add(operation.operationId);
      operations.push(operation);
    }
  }
  return operations;
}

function operationsOfPath(root: JsonObject, path: string, item: JsonObject): ApiOperation[] {
  const shared = readParameters(root, item.parameters);
  const operations: ApiOperation[] = [];
  for (const method of HTTP_METHODS) {
    const operation = asObject(item[method.toLowerCase()]);
    const operationId = typeof operation?.operationId === 'string' ? operation.operationId.trim() : '';
    if (!operation || !operationId) continue;
    const parameters = withTemplateParameters(path, mergeParameters(shared, readParameters(root, operation.parameters)));
    operations.push({
      operationId,
      method,
      path,
      summary: oneLine(operation.summary),
      parameters,
      paginated: parameters.some((p) => p.in === 'query' && (CURSOR_PARAMETER_NAMES as readonly string[]).includes(p.name)),
      returns: describeResponse(root, operation.responses),
      idempotent: method === 'GET' || operation['x-idempotent'] === true,
    });
  }
  return operations;
}

/** Follows local `#/...` references only; a missing, remote or circular one gives undefined. */
function resolveRef(root: JsonObject, value: unknown): unknown {
  let current = value;
  for (let hop = 0; hop < MAX_REF_HOPS; hop += 1) {
    const ref = asObject(current)?.$ref;
    if (ref === undefined) return current;
    if (typeof ref !== 'string' || !ref.startsWith('#/')) return undefined;
    current = ref
      .slice(2)
      .split('/')
      .map((segment) => segment.replaceAll('~1', '/').replaceAll('~0', '~'))
      .reduce<unknown>((node, segment) => asObject(node)?.[segment], root);
  }
  return undefined;
}

function readParameters(root: JsonObject, raw: unknown): ApiParameter[] {
  if (!Array.isArray(raw)) return [];
  return raw.flatMap((entry) => {
    const parameter = readParameter(root, entry);
    return parameter ? [parameter] : [];
  });
}

function readParameter(root: JsonObject, raw: unknown): ApiParameter | undefined {
  const parameter = asObject(resolveRef(root, raw));
  const location = parameter?.in as ApiParameter['in'];
  if (!parameter || typeof parameter.name !== 'string' || !parameter.name || !PARAMETER_LOCATIONS.includes(location)) {
    return undefined;
  }
  return {
    name: parameter.name,
    in: location,
    required: location === 'path' || parameter.required === true,
    description: oneLine(parameter.description),
    schema: resolveRef(root, parameter.schema ?? firstMediaSchema(parameter.content)) ?? null,
  };
}

function firstMediaSchema(content: unknown): unknown {
  const media = Object.values(asObject(content) ?? {})[0];
  return asObject(media)?.schema;
}

/** Operation-level parameters override path-level ones with the same name and location. */
function mergeParameters(shared: ApiParameter[], own: ApiParameter[]): ApiParameter[] {
  const key = (p: ApiParameter) => `${p.in}:${p.name}`;
  const merged = new Map(shared.map((p) => [key(p), p]));
  for (const parameter of own) merged.set(key(parameter), parameter);
  return [...merged.values()];
}

/** Every `{name}` in the path gets a path parameter, and path parameters the path lacks are dropped. */
function withTemplateParameters(path: string, parameters: ApiParameter[]): ApiParameter[] {
  const names = [...path.matchAll(/\{([^}]+)\}/g)].map((match) => match[1] ?? '');
  const declared = new Set(parameters.filter((p) => p.in === 'path').map((p) => p.name));
  const implicit: ApiParameter[] = names
    .filter((name) => !declared.has(name))
    .map((name) => ({ name, in: 'path', required: true, description: null, schema: { type: 'string' } }));
  return [...implicit, ...parameters.filter((p) => p.in !== 'path' || names.includes(p.name))];
}

function oneLine(value: unknown): string | null {
  if (typeof value !== 'string') return null;
  const text = value.replace(/\s+/g, ' ').trim();
  if (!text) return null;
  return text.length > MAX_SUMMARY_LENGTH ? `${text.slice(0, MAX_SUMMARY_LENGTH - 1)}…` : text;
}

/** The first 2xx answer's JSON schema, as the field names a program reads. */
function describeResponse(root: JsonObject, responses: unknown): string | null {
  const all = asObject(responses) ?? {};
  const success = Object.keys(all)
    .filter((status) => /^2\d\d$|^2XX$/i.test(status))
    .sort()[0];
  if (success === undefined) return null;
  const content = asObject(asObject(resolveRef(root, all[success]))?.content) ?? {};
  const media = Object.entries(content).find(([type]) => /json/i.test(type))?.[1];
  const schema = resolveRef(root, asObject(media)?.schema);
  if (schema === undefined) return null;
  const shape = describeShape(root, schema, 0);
  return shape.length > MAX_RETURNS_LENGTH ? `${shape.slice(0, MAX_RETURNS_LENGTH - 1)}…` : shape;
}

/**
 * Properties of an object schema, with allOf's parts merged in, the required ones first in the order `required` lists
 * them: a document stored as jsonb has its object keys reordered, and its arrays keep the author's order.
 */
function propertiesOf(root: JsonObject, schema: JsonObject, hops = 0): Map<string, unknown> {
  const properties = new Map<string, unknown>();
  if (hops > MAX_REF_HOPS) return properties;
  for (const part of Array.isArray(schema.allOf) ? schema.allOf : []) {
    const resolved = asObject(resolveRef(root, part));
    if (resolved) for (const [name, property] of propertiesOf(root, resolved, hops + 1)) properties.set(name, property);
  }
  const own = Object.entries(asObject(schema.properties) ?? {});
  const required = Array.isArray(schema.required) ? schema.required : [];
  const rank = (name: string) => (required.includes(name) ? required.indexOf(name) : required.length);
  for (const [name, property] of own.sort(([a], [b]) => rank(a) - rank(b))) properties.set(name, property);
  return properties;
}

function describeShape(root: JsonObject, raw: unknown, depth: number): string {
  const schema = asObject(resolveRef(root, raw));
  if (!schema) return 'value';
  const variant = [schema.oneOf, schema.anyOf].find(Array.isArray)?.[0];
  if (variant !== undefined) return describeShape(root, variant, depth);
  if (schema.type === 'array') return `[${describeShape(root, schema.items, depth)}]`;
  const properties = propertiesOf(root, schema);
  if (properties.size === 0) return typeof schema.type === 'string' ? schema.type : 'value';
  if (depth >= MAX_SHAPE_DEPTH) return 'object';
  const fields = [...properties].map(([name, property]) => {
    const shape = describeShape(root, property, depth + 1);
    return shape.startsWith('{') || shape.startsWith('[') ? `${name}: ${shape}` : name;
  });
  return `{ ${fields.join(', ')} }`;
}

export interface CatalogDescriptionOptions {
  /** The longest description, in characters: operations past it are named only, and the text says so. */
  maxChars?: number;
}

/**
 * The operations for an LLM prompt: a line each (operationId, method, path, parameters, summary), then what it
 * returns and whether it paginates. Header parameters are left out, since programs cannot set them.
 */
export function describeCatalog(operations: ApiOperation[], { maxChars = DEFAULT_CATALOG_CHARS }: CatalogDescriptionOptions = {}): string {
  const entries: string[] = [];
  const left: string[] = [];
  let used = 0;
  for (const operation of operations) {
    const entry = describeOperation(operation);
    // Room is kept for the note that says what was left out (at most about 400 characters); an operation too large
    // for what is left is left out, and the ones after it that fit are still described.
    if (used + entry.length + 1 > maxChars - 400) {
      left.push(operation.operationId);
      continue;
    }
    entries.push(entry);
    used += entry.length + 1;
  }
  if (left.length > 0) {
    const named = left.join(', ');
    entries.push(
      `(The catalog is abridged to fit: ${entries.length} of ${operations.length} operations are described; the other ${left.length} are not shown: ${named.length > 250 ? `${named.slice(0, 250)}…` : named}.)`,
    );
  }
  return entries.join('\n');
}

function describeOperation(operation: ApiOperation): string {
  const parameters = operation.parameters
    .filter((p) => p.in !== 'header')
    .map((p) => `${p.name}${p.required ? '' : '?'}: ${schemaTypeName(p.schema)}`);
  const summary = operation.summary ? ` — ${operation.summary}` : '';
  const cursor = cursorParameterOf(operation);
  return [
    `${operation.operationId} ${operation.method} ${operation.path} (${parameters.join(', ')})${summary}`,
    ...(operation.returns ? [`  returns ${operation.returns}`] : []),
    operation.paginated && cursor
      ? `  paginated by ${cursor}: one call returns one page; pass paginate: true to get every page as { data: [the items of all pages], pages, nextCursor }`
      : '  not paginated: one call returns everything; do not pass paginate',
  ].join('\n');
}

function schemaTypeName(schema: unknown): string {
  const object = asObject(schema);
  const listed = Array.isArray(object?.enum) ? object.enum.map((value) => JSON.stringify(value) ?? 'null') : [];
  if (listed.length > 0 && listed.length <= MAX_LISTED_ENUM_VALUES && listed.every((value) => value.length <= MAX_ENUM_VALUE_CHARS)) {
    return listed.join(' | ');
  }
  if (object?.type === 'array') return `${schemaTypeName(object.items)}[]`;
  return typeof object?.type === 'string' ? object.type : 'unknown';
}
