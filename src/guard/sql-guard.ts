export interface SqlGuardScope {
  /** Postgres schema of the tenant, e.g. "tenant_demo". Qualified references are allowed only to this schema. */
  tenantSchema: string;
  /** Tables (and views) of the tenant schema, lower-case names. */
  tenantTables: ReadonlySet<string>;
  /** Relations provided by the executor for earlier steps: "step_1", "step_2", ... */
  stepRelations: ReadonlySet<string>;
  /**
   * The columns of each tenant table and step relation (lower-case names): `t.name` reads column `name`
   * of what `t` stands for rather than calling a function, when that relation has such a column.
   */
  relationColumns: ReadonlyMap<string, ReadonlySet<string>>;
  /** Names of the functions the statement could reach (pg_catalog and the tenant schema), which attribute notation calls. */
  reachableFunctions: Pick<ReadonlySet<string>, 'has'>;
  /** Longest statement accepted, in characters (config.inputLimits.maxSqlChars). */
  maxSqlChars: number;
}

export interface GuardedSql {
  /** The single statement's text, trimmed, with any trailing semicolon(s) removed; safe to embed as a subquery: `SELECT * FROM (\n${statement}\n) AS q`. */
  statement: string;
  /** Where the statement starts in the SQL given (a string index): what comes before it is comments, whitespace or semicolons. */
  statementStart: number;
  /** Distinct tenant tables referenced (lower-case, unqualified). */
  tables: string[];
  /** Distinct step relations referenced, e.g. ["step_1"]. */
  stepRelations: string[];
}

export class SqlRejectedError extends Error {
  override name = 'SqlRejectedError';

  constructor(
    readonly reason: string,
    readonly detail: string,
  ) {
    super(`SQL rejected: ${detail}`);
  }
}

/**
 * The functions a statement may call, by family. The guard checks names against these lists, and the SQL agent's prompt
 * lists them (describeSqlRules), so that what the agent is told and what the guard accepts cannot differ.
 */
export const ALLOWED_FUNCTION_FAMILIES: ReadonlyMap<string, readonly string[]> = new Map([
  ['aggregate', [
    'count', 'sum', 'avg', 'min', 'max', 'bool_and', 'bool_or', 'every', 'bit_and', 'bit_or', 'any_value',
    'string_agg', 'array_agg', 'json_agg', 'jsonb_agg', 'json_agg_strict', 'jsonb_agg_strict',
    'json_object_agg', 'jsonb_object_agg', 'json_object_agg_strict', 'jsonb_object_agg_strict',
    'stddev', 'stddev_pop', 'stddev_samp', 'variance', 'var_pop', 'var_samp',
    'percentile_cont', 'percentile_disc', 'mode', 'corr', 'covar_pop', 'covar_samp',
    'regr_avgx', 'regr_avgy', 'regr_count', 'regr_intercept', 'regr_r2', 'regr_slope', 'regr_sxx', 'regr_sxy', 'regr_syy',
  ]],
  ['window', ['row_number', 'rank', 'dense_rank', 'percent_rank', 'cume_dist', 'ntile', 'lag', 'lead', 'first_value', 'last_value', 'nth_value']],
  ['string', [
    'length', 'char_length', 'character_length', 'octet_length', 'bit_length', 'lower', 'upper', 'initcap',
    'trim', 'btrim', 'ltrim', 'rtrim', 'substring', 'substr', 'left', 'right', 'position', 'strpos', 'overlay',
    'replace', 'concat', 'concat_ws', 'split_part', 'lpad', 'rpad', 'repeat', 'reverse', 'translate',
    'ascii', 'chr', 'encode', 'decode', 'md5', 'sha224', 'sha256', 'sha384', 'sha512', 'to_hex',
    'regexp_replace', 'regexp_match', 'regexp_matches', 'regexp_split_to_array', 'regexp_split_to_table',
    'regexp_count', 'regexp_instr', 'regexp_like', 'regexp_substr', 'starts_with', 'format',
    'to_char', 'to_number', 'string_to_table', 'normalize', 'is_normalized', 'like_escape', 'similar_to_escape',
  ]],
  ['math', [
    'abs', 'ceil', 'ceiling', 'floor', 'round', 'trunc', 'mod', 'power', 'sqrt', 'cbrt', 'exp', 'ln', 'log', 'log10',
    'sign', 'greatest', 'least', 'random', 'random_normal', 'width_bucket', 'div', 'pi', 'scale', 'gcd', 'lcm',
  ]],
  ['null handling', ['coalesce', 'nullif', 'num_nulls', 'num_nonnulls']],
  ['date/time', [
    'now', 'date_trunc', 'date_part', 'extract', 'age', 'make_date', 'make_time', 'make_timestamp',
    'make_timestamptz', 'make_interval', 'to_date', 'to_timestamp', 'date_bin', 'date_add', 'date_subtract',
    'justify_days', 'justify_hours', 'justify_interval', 'isfinite', 'clock_timestamp', 'statement_timestamp',
    'transaction_timestamp', 'timezone', 'overlaps',
  ]],
  ['json', [
    'json_build_object', 'jsonb_build_object', 'json_build_array', 'jsonb_build_array', 'json_object', 'jsonb_object',
    'to_json', 'to_jsonb', 'row_to_json', 'array_to_json', 'json_array_length', 'jsonb_array_length',
    'json_array_elements', 'json_array_elements_text', 'jsonb_array_elements', 'jsonb_array_elements_text',
    'json_each', 'json_each_text', 'jsonb_each', 'jsonb_each_text', 'json_object_keys', 'jsonb_object_keys',
    'json_extract_path', 'json_extract_path_text', 'jsonb_extract_path', 'jsonb_extract_path_text',
    'json_typeof', 'jsonb_typeof', 'json_strip_nulls', 'jsonb_strip_nulls', 'jsonb_set', 'jsonb_set_lax',
    'jsonb_insert', 'jsonb_pretty', 'jsonb_path_query', 'jsonb_path_query_array', 'jsonb_path_query_first',
    'jsonb_path_exists', 'jsonb_path_match', 'json_to_record', 'json_to_recordset', 'jsonb_to_record',
    'jsonb_to_recordset',
  ]],
  ['array and series', [
    'array_length', 'cardinality', 'unnest', 'array_to_string', 'string_to_array', 'array_position',
    'array_positions', 'array_remove', 'array_replace', 'array_append', 'array_prepend', 'array_cat',
    'array_upper', 'array_lower', 'array_dims', 'array_ndims', 'trim_array', 'generate_subscripts',
    'generate_series', 'gen_random_uuid',
  ]],
]);

export const ALLOWED_FUNCTIONS: ReadonlySet<string> = new Set([...ALLOWED_FUNCTION_FAMILIES.values()].flat());

/**
 * The types a statement may cast to (`::type`, CAST, typed literals, column definition lists), each also as an array:
 * the SQL spelling an agent is told, and the internal names the parser writes for it (integer is pg_catalog.int4).
 * Every other type is refused: aclitem, reg*, pg_* and the rest can probe the catalogs or the server.
 */
export const CASTABLE_TYPES: readonly { spelling: string; internalNames: readonly string[] }[] = [
  { spelling: 'boolean', internalNames: ['bool'] },
  { spelling: 'smallint', internalNames: ['int2'] },
  { spelling: 'integer', internalNames: ['int4'] },
  { spelling: 'bigint', internalNames: ['int8'] },
  { spelling: 'numeric', internalNames: ['numeric'] },
  { spelling: 'real', internalNames: ['float4'] },
  { spelling: 'double precision', internalNames: ['float8'] },
  { spelling: 'text', internalNames: ['text'] },
  { spelling: 'varchar', internalNames: ['varchar'] },
  { spelling: 'char', internalNames: ['bpchar'] },
  { spelling: 'date', internalNames: ['date'] },
  { spelling: 'time', internalNames: ['time'] },
  { spelling: 'timetz', internalNames: ['timetz'] },
  { spelling: 'timestamp', internalNames: ['timestamp'] },
  { spelling: 'timestamptz', internalNames: ['timestamptz'] },
  { spelling: 'interval', internalNames: ['interval'] },
  { spelling: 'uuid', internalNames: ['uuid'] },
  { spelling: 'json', internalNames: ['json'] },
  { spelling: 'jsonb', internalNames: ['jsonb'] },
  { spelling: 'bytea', internalNames: ['bytea'] },
];

const ALLOWED_TYPES: ReadonlySet<string> = new Set(CASTABLE_TYPES.flatMap((type) => type.internalNames));

// xmin and xmax expose the cluster's transaction counter; the others, row locations and table oids.
const SYSTEM_COLUMNS: ReadonlySet<string> = new Set(['xmin', 'xmax', 'cmin', 'cmax', 'ctid', 'tableoid']);

const CATALOG_SCHEMA = 'pg_catalog';
const MAX_TREE_DEPTH = 1_000;
const MAX_LISTED_RELATIONS = 20;
const DATA_MODIFYING_STATEMENTS: ReadonlySet<string> = new Set(['InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);
const IGNORED_TRAILING_TOKENS: ReadonlySet<string> = new Set(['SQL_COMMENT', 'C_COMMENT', 'ASCII_59']);
const FORBIDDEN_CHARACTER = /(?![\t\n\r])[\p{Cc}\p{Cf}\p{Cs}]/u;

const FORBIDDEN_NODES: ReadonlyMap<string, { reason: string; detail: string }> = new Map([
  ['IntoClause', { reason: 'select into', detail: 'SELECT INTO is not allowed' }],
  ['LockingClause', { reason: 'locking clause', detail: 'FOR UPDATE/FOR SHARE locking clauses are not allowed' }],
  ['XmlExpr', { reason: 'xml not allowed', detail: 'XML functions are not allowed' }],
  ['XmlSerialize', { reason: 'xml not allowed', detail: 'XMLSERIALIZE is not allowed' }],
  ['RangeTableFunc', { reason: 'xml not allowed', detail: 'XMLTABLE is not allowed' }],
  // TABLESAMPLE is rejected outright: analytics never need it and its method names are catalog lookups.
  ['RangeTableSample', { reason: 'tablesample not allowed', detail: 'TABLESAMPLE is not allowed' }],
  ['CurrentOfExpr', { reason: 'current of not allowed', detail: 'WHERE CURRENT OF is not allowed' }],
  ['MergeSupportFunc', { reason: 'function not allowed', detail: 'function merge_action is not allowed' }],
  // $n would bind to the parameters the executor passes for step_N relations.
  ['ParamRef', { reason: 'parameter not allowed', detail: 'parameters ($1, $2, ...) are not allowed; write values inline' }],
]);

// Struct-typed fields are printed without the { NodeType: ... } wrapper, so their type comes from the field name.
const UNWRAPPED_FIELD_TYPES: ReadonlyMap<string, string> = new Map([
  ['larg', 'SelectStmt'],
  ['rarg', 'SelectStmt'],
  ['withClause', 'WithClause'],
  ['intoClause', 'IntoClause'],
  ['into', 'IntoClause'],
  ['over', 'WindowDef'],
  ['collClause', 'CollateClause'],
  ['funccall', 'FuncCall'],
  ['typeName', 'TypeName'],
  ['type_name', 'TypeName'],
  ['targettype', 'TypeName'],
  ['ofTypename', 'TypeName'],
  ['returnType', 'TypeName'],
  ['argType', 'TypeName'],
  ['datatype', 'TypeName'],
  ['storedtype', 'TypeName'],
  ['sourcetype', 'TypeName'],
  ['relation', 'RangeVar'],
  ['rel', 'RangeVar'],
  ['table', 'RangeVar'],
  ['sequence', 'RangeVar'],
  ['view', 'RangeVar'],
  ['typevar', 'RangeVar'],
  ['pktable', 'RangeVar'],
  ['constrrel', 'RangeVar'],
  ['identitySequence', 'RangeVar'],
]);

const STATEMENT_KEYWORDS: ReadonlyMap<string, string> = new Map([
  ['VariableSetStmt', 'SET'],
  ['VariableShowStmt', 'SHOW'],
  ['CreateStmt', 'CREATE TABLE'],
  ['ViewStmt', 'CREATE VIEW'],
  ['IndexStmt', 'CREATE INDEX'],
  ['RuleStmt', 'CREATE RULE'],
  ['DefineStmt', 'CREATE'],
  ['TransactionStmt', 'transaction control (BEGIN/COMMIT/ROLLBACK)'],
]);

type JsonObject = { [key: string]: unknown };
type PgQueryModule = typeof import('libpg-query');

let parserLoading: Promise<PgQueryModule> | undefined;

function loadParser(): Promise<PgQueryModule> {
  parserLoading ??= import('libpg-query')
    .then(async (parser) => {
      await parser.loadModule();
      return parser;
    })
    .catch((error: unknown) => {
      parserLoading = undefined;
      throw error;
    });
  return parserLoading;
}

function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A node printed as `{ NodeType: body }`; field names never start with an upper-case letter. */
function asWrappedNode(value: JsonObject): { type: string; body: JsonObject } | undefined {
  const keys = Object.keys(value);
  if (keys.length !== 1) return undefined;
  const type = keys[0]!;
  const body = value[type];
  if (!/^[A-Z]/.test(type) || !isJsonObject(body)) return undefined;
  return { type, body };
}

// current_date, localtime and the like are fine; these name the database, role or schema the query runs as.
const REVEALING_VALUE_FUNCTIONS: ReadonlyMap<string, string> = new Map([
  ['SVFOP_CURRENT_USER', 'current_user'],
  ['SVFOP_CURRENT_ROLE', 'current_role'],
  ['SVFOP_SESSION_USER', 'session_user'],
  ['SVFOP_USER', 'user'],
  ['SVFOP_CURRENT_CATALOG', 'current_catalog'],
  ['SVFOP_CURRENT_SCHEMA', 'current_schema'],
]);

function checkSqlValueFunction(op: string): void {
  const name = REVEALING_VALUE_FUNCTIONS.get(op);
  if (name) throw new SqlRejectedError('function not allowed', `${name} is not allowed`);
}

function checkNotSystemColumn(name: string): void {
  if (SYSTEM_COLUMNS.has(name)) {
    throw new SqlRejectedError('system column', `system column ${name} is not allowed (it exposes the database's internals)`);
  }
}

function rejectForbiddenNode(type: string): never {
  const forbidden = FORBIDDEN_NODES.get(type)!;
  throw new SqlRejectedError(forbidden.reason, forbidden.detail);
}

function stringNodeValues(list: unknown): string[] {
  if (!Array.isArray(list)) return [];
  return list.map((item) => {
    const wrapped = isJsonObject(item) ? asWrappedNode(item) : undefined;
    return wrapped?.type === 'String' && typeof wrapped.body['sval'] === 'string' ? wrapped.body['sval'] : '?';
  });
}

/** The names in a list that also holds `*` (A_Star) or subscripts (A_Indices), which are left out. */
function stringNodesOnly(list: unknown): string[] {
  return stringNodeValues(Array.isArray(list) ? list.filter((item) => isJsonObject(item) && asWrappedNode(item)?.type === 'String') : []);
}

function describeStatementType(nodeType: string): string {
  const known = STATEMENT_KEYWORDS.get(nodeType);
  if (known) return known;
  const words = nodeType.replace(/Stmt$/, '').match(/[A-Z][a-z]*/g) ?? [nodeType];
  return words.join(' ').toUpperCase();
}

function validateInputText(sql: unknown, maxSqlChars: number): asserts sql is string {
  if (typeof sql !== 'string') throw new SqlRejectedError('empty input', 'the query must be a string');
  if (sql.trim() === '') throw new SqlRejectedError('empty input', 'the query is empty');
  if (sql.length > maxSqlChars) {
    throw new SqlRejectedError('input too long', `the query is ${sql.length} characters long; the limit is ${maxSqlChars}`);
  }
  const forbidden = FORBIDDEN_CHARACTER.exec(sql);
  if (forbidden) {
    const codePoint = forbidden[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0');
    throw new SqlRejectedError(
      'forbidden character',
      `forbidden character U+${codePoint} at position ${forbidden.index} (control and invisible formatting characters are not allowed)`,
    );
  }
}

function parseOrReject(parser: PgQueryModule, sql: string, what: string): JsonObject {
  let tree: unknown;
  try {
    tree = parser.parseSync(sql);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const position = parser.hasSqlDetails(error) ? ` (at byte ${error.sqlDetails?.cursorPosition ?? 0})` : '';
    throw new SqlRejectedError('parse error', `${what} could not be parsed: ${message}${position}`);
  }
  if (!isJsonObject(tree)) throw new SqlRejectedError('parse error', `${what} could not be parsed`);
  return tree;
}

function singleSelectStatement(tree: JsonObject): { rawStatement: JsonObject; select: JsonObject } {
  const statements = Array.isArray(tree['stmts']) ? tree['stmts'] : [];
  if (statements.length === 0) throw new SqlRejectedError('empty input', 'the query contains no statement');
  if (statements.length > 1) {
    throw new SqlRejectedError('multiple statements', `multiple statements (${statements.length}) are not allowed; send exactly one SELECT`);
  }
  const rawStatement = statements[0];
  const wrapped = isJsonObject(rawStatement) && isJsonObject(rawStatement['stmt']) ? asWrappedNode(rawStatement['stmt']) : undefined;
  if (!isJsonObject(rawStatement) || !wrapped) throw new SqlRejectedError('parse error', 'the parse tree has an unexpected shape');
  if (wrapped.type !== 'SelectStmt') {
    throw new SqlRejectedError(
      'statement not allowed',
      `${describeStatementType(wrapped.type)} statements are not allowed; only SELECT queries are accepted`,
    );
  }
  return { rawStatement, select: wrapped.body };
}

/** What the names in one SELECT's FROM stand for: a relation's columns, or null when they are not known. */
type FromScope = ReadonlyMap<string, ReadonlySet<string> | null>;

class ReferenceCollector {
  readonly tables = new Set<string>();
  readonly stepRelations = new Set<string>();
  /** The FROM scopes of the SELECTs being inspected, innermost last (a subquery sees its outer ones). */
  private readonly fromScopes: FromScope[] = [];

  constructor(private readonly scope: SqlGuardScope) {}

  inspectValue(value: unknown, visibleCtes: ReadonlySet<string>, depth: number): void {
    if (depth > MAX_TREE_DEPTH) {
      throw new SqlRejectedError('too deeply nested', `the query is nested more than ${MAX_TREE_DEPTH} levels deep`);
    }
    if (Array.isArray(value)) {
      for (const item of value) this.inspectValue(item, visibleCtes, depth + 1);
      return;
    }
    if (!isJsonObject(value)) return;
    const wrapped = asWrappedNode(value);
    if (wrapped) this.inspectNode(wrapped.type, wrapped.body, visibleCtes, depth + 1);
    else this.inspectFields(value, visibleCtes, depth);
  }

  private inspectFields(body: JsonObject, visibleCtes: ReadonlySet<string>, depth: number, skip?: string): void {
    for (const [field, child] of Object.entries(body)) {
      if (field === skip) continue;
      const unwrappedType = UNWRAPPED_FIELD_TYPES.get(field);
      if (unwrappedType && isJsonObject(child) && !asWrappedNode(child)) {
        this.inspectNode(unwrappedType, child, visibleCtes, depth + 1);
      } else {
        this.inspectValue(child, visibleCtes, depth + 1);
      }
    }
  }

  private inspectNode(type: string, body: JsonObject, visibleCtes: ReadonlySet<string>, depth: number): void {
    if (FORBIDDEN_NODES.has(type)) rejectForbiddenNode(type);
    if (type.endsWith('Stmt') && type !== 'SelectStmt') {
      throw new SqlRejectedError('nested statement', `a nested ${describeStatementType(type)} statement is not allowed`);
    }
    switch (type) {
      case 'SelectStmt':
        this.inspectSelect(body, visibleCtes, depth);
        return;
      case 'FuncCall':
        this.checkFunctionName(stringNodeValues(body['funcname']));
        break;
      case 'RangeVar':
        this.resolveRelation(body, visibleCtes);
        break;
      case 'TypeName':
        this.checkTypeName(stringNodeValues(body['names']));
        break;
      case 'ColumnRef':
        this.checkColumnRef(stringNodesOnly(body['fields']));
        break;
      case 'A_Indirection':
        this.checkFieldSelection(stringNodesOnly(body['indirection']));
        break;
      case 'A_Expr':
        this.checkOperatorName(stringNodeValues(body['name']));
        break;
      case 'SortBy':
        this.checkOperatorName(stringNodeValues(body['useOp']));
        break;
      case 'SubLink':
        this.checkOperatorName(stringNodeValues(body['operName']));
        break;
      case 'CollateClause':
        this.checkCollationName(stringNodeValues(body['collname']));
        break;
      case 'SQLValueFunction':
        checkSqlValueFunction(String(body['op']));
        break;
    }
    this.inspectFields(body, visibleCtes, depth);
  }

  private inspectSelect(select: JsonObject, outerCtes: ReadonlySet<string>, depth: number): void {
    if (select['intoClause'] !== undefined) rejectForbiddenNode('IntoClause');
    const lockingClause = select['lockingClause'];
    if (Array.isArray(lockingClause) && lockingClause.length > 0) rejectForbiddenNode('LockingClause');
    const withClause = select['withClause'];
    const visibleCtes = isJsonObject(withClause) ? this.inspectWithClause(withClause, outerCtes, depth + 1) : outerCtes;
    const fromScope = new Map<string, ReadonlySet<string> | null>();
    for (const item of Array.isArray(select['fromClause']) ? select['fromClause'] : []) this.addFromItem(fromScope, item, visibleCtes);
    this.fromScopes.push(fromScope);
    try {
      this.inspectFields(select, visibleCtes, depth, 'withClause');
    } finally {
      this.fromScopes.pop();
    }
  }

  /** The names a FROM item brings into scope, each with the columns of the relation it stands for if known. */
  private addFromItem(fromScope: Map<string, ReadonlySet<string> | null>, item: unknown, visibleCtes: ReadonlySet<string>): void {
    const wrapped = isJsonObject(item) ? asWrappedNode(item) : undefined;
    if (!wrapped) return;
    const alias = isJsonObject(wrapped.body['alias']) ? wrapped.body['alias']['aliasname'] : undefined;
    const aliasName = typeof alias === 'string' ? alias : undefined;
    if (wrapped.type === 'RangeVar') {
      const relation = typeof wrapped.body['relname'] === 'string' ? wrapped.body['relname'] : '';
      const schema = wrapped.body['schemaname'];
      const isCte = schema === undefined && visibleCtes.has(relation);
      const columns = isCte || (schema !== undefined && schema !== this.scope.tenantSchema) ? null : (this.scope.relationColumns.get(relation) ?? null);
      fromScope.set(aliasName ?? relation, columns);
    } else if (wrapped.type === 'JoinExpr') {
      this.addFromItem(fromScope, wrapped.body['larg'], visibleCtes);
      this.addFromItem(fromScope, wrapped.body['rarg'], visibleCtes);
      if (aliasName) fromScope.set(aliasName, null);
    } else if (aliasName) {
      fromScope.set(aliasName, null);
    }
  }

  /** The columns of the relation `name` stands for in the innermost scope that has it, or null when not known. */
  private columnsOf(name: string): ReadonlySet<string> | null {
    for (let i = this.fromScopes.length - 1; i >= 0; i--) {
      const scope = this.fromScopes[i]!;
      if (scope.has(name)) return scope.get(name)!;
    }
    return null;
  }

  /** Returns the CTE names visible to the body of the SELECT that owns this WITH clause. */
  private inspectWithClause(withClause: JsonObject, outerCtes: ReadonlySet<string>, depth: number): ReadonlySet<string> {
    const definitions = (Array.isArray(withClause['ctes']) ? withClause['ctes'] : []).map((entry: unknown) => {
      const wrapped = isJsonObject(entry) ? asWrappedNode(entry) : undefined;
      if (wrapped?.type !== 'CommonTableExpr') throw new SqlRejectedError('parse error', 'the WITH clause has an unexpected shape');
      return this.validateCteDefinition(wrapped.body);
    });
    const allNames = new Set([...outerCtes, ...definitions.map((definition) => definition.name)]);
    if (withClause['recursive'] === true) {
      for (const definition of definitions) this.inspectFields(definition.body, allNames, depth + 1);
      return allNames;
    }
    let visibleCtes: ReadonlySet<string> = outerCtes;
    for (const definition of definitions) {
      this.inspectFields(definition.body, visibleCtes, depth + 1);
      visibleCtes = new Set([...visibleCtes, definition.name]);
    }
    return visibleCtes;
  }

  private validateCteDefinition(body: JsonObject): { name: string; body: JsonObject } {
    const name = body['ctename'];
    if (typeof name !== 'string') throw new SqlRejectedError('parse error', 'a WITH query has no name');
    if (name.toLowerCase().startsWith('pg_')) {
      throw new SqlRejectedError('reserved cte name', `WITH query name ${name} is not allowed (names starting with pg_ are reserved)`);
    }
    const query = isJsonObject(body['ctequery']) ? asWrappedNode(body['ctequery']) : undefined;
    if (query && DATA_MODIFYING_STATEMENTS.has(query.type)) {
      throw new SqlRejectedError(
        'data-modifying cte',
        `WITH query ${name} is a data-modifying ${describeStatementType(query.type)}; only SELECT is allowed`,
      );
    }
    if (query?.type !== 'SelectStmt') throw new SqlRejectedError('nested statement', `WITH query ${name} must be a SELECT`);
    return { name, body };
  }

  private checkFunctionName(nameParts: string[]): void {
    const qualifiedName = nameParts.join('.');
    const functionName = nameParts.at(-1) ?? '?';
    if (nameParts.length > 2 || (nameParts.length === 2 && nameParts[0] !== CATALOG_SCHEMA)) {
      throw new SqlRejectedError('qualified function', `function ${qualifiedName} is not allowed (only pg_catalog may qualify a function)`);
    }
    // Exact match on the parser's case-folded name: a quoted "Count" is a different function in Postgres.
    if (!ALLOWED_FUNCTIONS.has(functionName)) {
      throw new SqlRejectedError('function not allowed', `function ${functionName} is not allowed`);
    }
  }

  private checkTypeName(nameParts: string[]): void {
    const qualifiedName = nameParts.join('.');
    if (nameParts.length > 2 || (nameParts.length === 2 && nameParts[0] !== CATALOG_SCHEMA)) {
      throw new SqlRejectedError('qualified type', `type ${qualifiedName} is not allowed (only pg_catalog may qualify a type)`);
    }
    const baseName = (nameParts.at(-1) ?? '').replace(/^_/, '');
    if (baseName === 'xml') throw new SqlRejectedError('xml not allowed', 'type xml is not allowed');
    // Exact match: aclitem, reg*, pg_* and every other type can probe the catalogs or the server.
    if (!ALLOWED_TYPES.has(baseName)) {
      // The quoted "char" (one byte) is not the char the list names (character): quoted, the message does not contradict itself.
      const shown = CASTABLE_TYPES.some((type) => type.spelling === qualifiedName) ? `"${qualifiedName}"` : qualifiedName;
      throw new SqlRejectedError(
        'type not allowed',
        `type ${shown} is not allowed (only ${CASTABLE_TYPES.map((type) => type.spelling).join(', ')} and their arrays)`,
      );
    }
  }

  /**
   * `t.f` reads column f of t or, when t has none, calls f(t); `s.t.c` and `t.c.f` likewise. A name is read
   * as a column only where the relation it is qualified by is known to have it.
   */
  private checkColumnRef(fields: string[]): void {
    for (const name of fields) checkNotSystemColumn(name);
    const [first, second] = fields;
    if (first === undefined || second === undefined) return;
    const schemaQualified = first === this.scope.tenantSchema && fields.length >= 3;
    const columns = schemaQualified ? (this.scope.relationColumns.get(second) ?? null) : this.columnsOf(first);
    fields.slice(1).forEach((name, i) => {
      const position = i + 1;
      const isColumn = schemaQualified ? position === 1 || (position === 2 && columns?.has(name) === true) : position === 1 && columns?.has(name) === true;
      this.checkAttributeName(name, isColumn);
    });
  }

  /** `(expr).f` selects field f or, when expr has none, calls f(expr), for an expression of any type. */
  private checkFieldSelection(selectors: string[]): void {
    for (const name of selectors) {
      checkNotSystemColumn(name);
      this.checkAttributeName(name, false);
    }
  }

  private checkAttributeName(name: string, isKnownColumn: boolean): void {
    const callsFunction = this.scope.reachableFunctions.has(name) && !ALLOWED_FUNCTIONS.has(name) && !isKnownColumn;
    if (name.toLowerCase().startsWith('pg_') || callsFunction) {
      throw new SqlRejectedError('function not allowed', `attribute notation .${name} would call function ${name}, which is not allowed`);
    }
  }

  private checkOperatorName(nameParts: string[]): void {
    if (nameParts.length > 2 || (nameParts.length === 2 && nameParts[0] !== CATALOG_SCHEMA)) {
      throw new SqlRejectedError('qualified operator', `operator ${nameParts.join('.')} is not allowed (only pg_catalog may qualify an operator)`);
    }
  }

  private checkCollationName(nameParts: string[]): void {
    if (nameParts.length > 2 || (nameParts.length === 2 && nameParts[0] !== CATALOG_SCHEMA)) {
      throw new SqlRejectedError('qualified collation', `collation ${nameParts.join('.')} is not allowed (only pg_catalog may qualify a collation)`);
    }
  }

  private resolveRelation(rangeVar: JsonObject, visibleCtes: ReadonlySet<string>): void {
    const relationName = typeof rangeVar['relname'] === 'string' ? rangeVar['relname'] : '?';
    const schemaName = typeof rangeVar['schemaname'] === 'string' ? rangeVar['schemaname'] : undefined;
    const catalogName = typeof rangeVar['catalogname'] === 'string' ? rangeVar['catalogname'] : undefined;
    const qualifiedName = [catalogName, schemaName, relationName].filter((part) => part !== undefined).join('.');

    if (catalogName !== undefined || schemaName !== undefined) {
      if (catalogName === undefined && schemaName === this.scope.tenantSchema && this.scope.tenantTables.has(relationName)) {
        this.tables.add(relationName);
        return;
      }
      throw new SqlRejectedError(
        'qualified relation',
        `relation ${qualifiedName} is not allowed (only tables of schema ${this.scope.tenantSchema} may be qualified)`,
      );
    }
    // pg_catalog is searched before the tenant schema, so an unqualified pg_ name never means a tenant table.
    if (relationName.toLowerCase().startsWith('pg_')) {
      throw new SqlRejectedError('relation not available', `relation ${relationName} is not available (system catalogs are off limits)`);
    }
    if (visibleCtes.has(relationName)) return;
    if (this.scope.stepRelations.has(relationName)) {
      this.stepRelations.add(relationName);
      return;
    }
    if (this.scope.tenantTables.has(relationName)) {
      this.tables.add(relationName);
      return;
    }
    throw new SqlRejectedError('relation not available', `relation ${relationName} is not available${this.describeAvailableRelations()}`);
  }

  private describeAvailableRelations(): string {
    const available = [...this.scope.tenantTables, ...this.scope.stepRelations].sort();
    if (available.length === 0) return '';
    if (available.length > MAX_LISTED_RELATIONS) return ` (${available.length} relations are available)`;
    return ` (available: ${available.join(', ')})`;
  }
}

function utf8Slice(bytes: Uint8Array, start: number, end: number): string {
  return new TextDecoder().decode(bytes.subarray(start, end));
}

/** Cuts the statement out of the input, dropping leading/trailing comments, whitespace and semicolons; and where it starts. */
function extractStatementText(parser: PgQueryModule, sql: string, rawStatement: JsonObject): { text: string; start: number } {
  const start = typeof rawStatement['stmt_location'] === 'number' ? rawStatement['stmt_location'] : 0;
  let end = start;
  for (const token of parser.scanSync(sql).tokens) {
    if (token.start >= start && !IGNORED_TRAILING_TOKENS.has(token.tokenName)) end = Math.max(end, token.end);
  }
  const bytes = new TextEncoder().encode(sql);
  const untrimmed = utf8Slice(bytes, start, end);
  const text = untrimmed.trim();
  return { text, start: utf8Slice(bytes, 0, start).length + untrimmed.indexOf(text) };
}

// Byte offsets into the text (location, rexpr_list_start, ...) differ once the statement is embedded.
const POSITION_FIELD = /^(location|stmt_len)$|_(location|start|end)$/;

function withoutLocations(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutLocations);
  if (!isJsonObject(value)) return value;
  const copy: JsonObject = {};
  for (const [field, child] of Object.entries(value)) {
    if (POSITION_FIELD.test(field)) continue;
    copy[field] = withoutLocations(child);
  }
  return copy;
}

function wrapAsSubquery(statement: string): string {
  return `SELECT * FROM (\n${statement}\n) AS q`;
}

/** Defence in depth: the extracted text, embedded as a subquery, must parse back to exactly the checked tree. */
function verifyEmbeddable(parser: PgQueryModule, statement: string, checkedSelect: JsonObject): void {
  const wrappedTree = parseOrReject(parser, wrapAsSubquery(statement), 'the statement embedded as a subquery');
  const outer = singleSelectStatement(wrappedTree).select;
  const fromClause = Array.isArray(outer['fromClause']) ? outer['fromClause'] : [];
  const subselect = fromClause.length === 1 && isJsonObject(fromClause[0]) ? asWrappedNode(fromClause[0]) : undefined;
  const subquery = subselect?.type === 'RangeSubselect' && isJsonObject(subselect.body['subquery']) ? subselect.body['subquery'] : undefined;
  const embedded = JSON.stringify(withoutLocations(subquery));
  const original = JSON.stringify(withoutLocations({ SelectStmt: checkedSelect }));
  if (embedded !== original) {
    throw new SqlRejectedError('not embeddable', 'the statement does not keep its meaning when embedded as a subquery');
  }
}

/**
 * The guard's rules in words, one line each, for whoever writes SQL for it (the SQL agent's prompt). Built from the
 * lists the checks use, so that the words cannot drift from what the guard refuses.
 */
export function describeSqlRules({ maxSqlChars }: { maxSqlChars?: number } = {}): string[] {
  const families = [...ALLOWED_FUNCTION_FAMILIES].map(([family, names]) => `${family}: ${names.join(', ')}`).join('; ');
  const forbidden = new Set([...FORBIDDEN_NODES.values()].map((node) => node.detail.replace(/ (is|are) not allowed.*$/, '')));
  return [
    'Exactly one SELECT statement (WITH ... SELECT, UNION, subqueries, LATERAL and VALUES are fine). No INSERT, UPDATE, DELETE, MERGE, DDL, SET, SHOW, COPY, EXPLAIN or transaction control; every WITH query is a SELECT, and no WITH name starts with pg_.',
    'Read only the tables listed and the step_N relations listed, by their plain names: no system catalog (pg_*), no information_schema, no other schema.',
    `Functions: only these, by their plain names (or pg_catalog.name), called as f(x), never in attribute notation x.f or (x).f: ${families}.`,
    `Casts (x::type, CAST(x AS type), typed literals such as date '2024-01-01'): only to ${CASTABLE_TYPES.map((type) => type.spelling).join(', ')}, and arrays of these (integer[]); no other type, and no schema-qualified type, operator or collation.`,
    `Not allowed: ${[...forbidden].join('; ')}; ${[...REVEALING_VALUE_FUNCTIONS.values()].join(', ')}; system columns ${[...SYSTEM_COLUMNS].join(', ')}. Write values inline instead of parameters.`,
    `No control or invisible characters${maxSqlChars === undefined ? '' : `; at most ${maxSqlChars} characters`}.`,
  ];
}

/**
 * What the guard learns from a statement's text alone: its one SELECT (frozen), and once asked for, where the
 * statement sits in the input and whether it keeps its meaning embedded, or why not. Nothing here depends on a
 * tenant or a step: the checks against the scope (relations, columns, functions) run on every call.
 */
interface ParsedStatement {
  rawStatement: JsonObject;
  select: JsonObject;
  embedded?: { statement: string; start: number } | { rejected: SqlRejectedError };
}

/**
 * The statements parsed last, by their exact text, most recent last. A plan's steps come back with the same text on
 * every run of a plan submitted again, on retries and on resumes, and parsing (twice: the statement, then the
 * statement embedded) is most of the guard's time. Bounded by count and by the text's length in all, so that the
 * trees kept stay small beside the service's memory (a tree takes up to about 140 bytes a character of its text: under
 * 20 MB when full); a statement longer than a share of that is never kept.
 */
const parsedStatements = new Map<string, ParsedStatement>();
const PARSED_STATEMENTS_MAX = 512;
const PARSED_STATEMENTS_MAX_CHARS = 131_072;
const PARSED_STATEMENT_MAX_CHARS = 8_192;
let parsedStatementsChars = 0;

/**
 * Without recursion: the tree is frozen before any check, and a tree nested deeper than the checks allow (which
 * refuse it as too deeply nested) would overflow the call stack of a recursive walk, a RangeError and no refusal.
 */
function deepFreeze<T>(value: T): T {
  const pending: unknown[] = [value];
  while (pending.length > 0) {
    const next = pending.pop();
    if (typeof next !== 'object' || next === null || Object.isFrozen(next)) continue;
    Object.freeze(next);
    for (const child of Object.values(next)) pending.push(child);
  }
  return value;
}

function parsedStatementOf(parser: PgQueryModule, sql: string): ParsedStatement {
  const known = parsedStatements.get(sql);
  if (known) {
    parsedStatements.delete(sql);
    parsedStatements.set(sql, known);
    return known;
  }
  // Frozen, so that no check can change what a later call of the same text is checked against.
  const { rawStatement, select } = deepFreeze(singleSelectStatement(parseOrReject(parser, sql, 'the query')));
  const parsed: ParsedStatement = { rawStatement, select };
  if (sql.length <= PARSED_STATEMENT_MAX_CHARS) {
    parsedStatements.set(sql, parsed);
    parsedStatementsChars += sql.length;
    for (const [oldest] of parsedStatements) {
      if (parsedStatements.size <= PARSED_STATEMENTS_MAX && parsedStatementsChars <= PARSED_STATEMENTS_MAX_CHARS) break;
      parsedStatements.delete(oldest);
      parsedStatementsChars -= oldest.length;
    }
  }
  return parsed;
}

function embeddedStatementOf(parser: PgQueryModule, sql: string, parsed: ParsedStatement): { statement: string; start: number } {
  if (!parsed.embedded) {
    const { text: statement, start } = extractStatementText(parser, sql, parsed.rawStatement);
    try {
      verifyEmbeddable(parser, statement, parsed.select);
      parsed.embedded = { statement, start };
    } catch (error) {
      if (!(error instanceof SqlRejectedError)) throw error;
      parsed.embedded = { rejected: error };
    }
  }
  // A new error each time, with this call's stack.
  if ('rejected' in parsed.embedded) throw new SqlRejectedError(parsed.embedded.rejected.reason, parsed.embedded.rejected.detail);
  return parsed.embedded;
}

export async function guardSql(sql: string, scope: SqlGuardScope): Promise<GuardedSql> {
  validateInputText(sql, scope.maxSqlChars);
  const parser = await loadParser();
  const parsed = parsedStatementOf(parser, sql);

  const collector = new ReferenceCollector(scope);
  collector.inspectValue({ SelectStmt: parsed.select }, new Set(), 0);

  const { statement, start: statementStart } = embeddedStatementOf(parser, sql, parsed);
  return { statement, statementStart, tables: [...collector.tables], stepRelations: [...collector.stepRelations] };
}
