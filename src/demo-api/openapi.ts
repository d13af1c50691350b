/** The OpenAPI 3.0 document of the demo tenant's HTTP API (src/demo-api/demo-api-server.ts). */

export const USER_STATUSES = ['active', 'suspended', 'deprovisioned'] as const;
export const GROUP_TYPES = ['department', 'security', 'project'] as const;
export const MAX_PAGE_SIZE = 100;
export const DEFAULT_PAGE_SIZE = 25;

const ref = (kind: 'schemas' | 'parameters' | 'responses', name: string) => ({ $ref: `#/components/${kind}/${name}` });
const timestamp = { type: 'string', format: 'date-time' };
const nullableTimestamp = { ...timestamp, nullable: true };
const id = { type: 'integer', minimum: 1, maximum: 2_147_483_647 };

const jsonContent = (schema: unknown) => ({ 'application/json': { schema } });
const okResponse = (description: string, schema: unknown) => ({ description, content: jsonContent(schema) });
const listOf = (item: string) => ({
  type: 'object',
  required: ['data'],
  properties: { data: { type: 'array', items: ref('schemas', item) } },
});
const pageOf = (item: string) => ({
  type: 'object',
  required: ['data', 'nextCursor'],
  properties: {
    data: { type: 'array', items: ref('schemas', item) },
    nextCursor: { type: 'string', nullable: true, description: 'Pass as `after` for the next page; null on the last page' },
  },
});
const errorResponses = (...statuses: ('400' | '401' | '404')[]) =>
  Object.fromEntries(statuses.map((status) => [status, ref('responses', ERROR_NAMES[status])]));
const ERROR_NAMES = { '400': 'BadRequest', '401': 'Unauthorized', '404': 'NotFound' } as const;

const schemas = {
  User: {
    type: 'object',
    required: ['id', 'email', 'name', 'department', 'title', 'status', 'mfa_enabled', 'manager_id', 'created_at', 'last_login_at'],
    properties: {
      id,
      email: { type: 'string', format: 'email' },
      name: { type: 'string' },
      department: { type: 'string' },
      title: { type: 'string' },
      status: { type: 'string', enum: [...USER_STATUSES] },
      mfa_enabled: { type: 'boolean' },
      manager_id: { ...id, nullable: true },
      created_at: timestamp,
      last_login_at: nullableTimestamp,
    },
  },
  GroupMember: {
    allOf: [
      ref('schemas', 'User'),
      {
        type: 'object',
        required: ['role', 'added_at'],
        properties: { role: { type: 'string', enum: ['owner', 'member'] }, added_at: timestamp },
      },
    ],
  },
  Group: {
    type: 'object',
    required: ['id', 'name', 'type', 'description', 'created_at'],
    properties: {
      id,
      name: { type: 'string' },
      type: { type: 'string', enum: [...GROUP_TYPES] },
      description: { type: 'string' },
      created_at: timestamp,
    },
  },
  UserGroup: {
    allOf: [
      ref('schemas', 'Group'),
      {
        type: 'object',
        required: ['role', 'added_at'],
        properties: { role: { type: 'string', enum: ['owner', 'member'] }, added_at: timestamp },
      },
    ],
  },
  Application: {
    type: 'object',
    required: ['id', 'name', 'vendor', 'category', 'sso_enabled', 'created_at'],
    properties: {
      id,
      name: { type: 'string' },
      vendor: { type: 'string' },
      category: { type: 'string' },
      sso_enabled: { type: 'boolean' },
      created_at: timestamp,
    },
  },
  UserApplication: {
    allOf: [
      ref('schemas', 'Application'),
      {
        type: 'object',
        required: ['assigned_at', 'last_used_at'],
        properties: { assigned_at: timestamp, last_used_at: nullableTimestamp },
      },
    ],
  },
  Error: { type: 'object', required: ['error'], properties: { error: { type: 'string' } } },
};

const parameters = {
  Limit: {
    name: 'limit',
    in: 'query',
    required: false,
    description: `Page size, 1 to ${MAX_PAGE_SIZE}`,
    schema: { type: 'integer', minimum: 1, maximum: MAX_PAGE_SIZE, default: DEFAULT_PAGE_SIZE },
  },
  After: {
    name: 'after',
    in: 'query',
    required: false,
    description: 'Cursor: the nextCursor of the previous page',
    schema: { type: 'string' },
  },
  UserId: { name: 'id', in: 'path', required: true, description: 'User id', schema: id },
  GroupId: { name: 'id', in: 'path', required: true, description: 'Group id', schema: id },
};

const responses = {
  BadRequest: { description: 'A parameter is invalid', content: jsonContent(ref('schemas', 'Error')) },
  Unauthorized: { description: 'The bearer token is missing or wrong', content: jsonContent(ref('schemas', 'Error')) },
  NotFound: { description: 'No such resource', content: jsonContent(ref('schemas', 'Error')) },
};

const paths = {
  '/users': {
    get: {
      operationId: 'listUsers',
      summary: 'List users',
      description: 'Users ordered by id, one page at a time.',
      parameters: [
        ref('parameters', 'Limit'),
        ref('parameters', 'After'),
        { name: 'status', in: 'query', required: false, description: 'Only users with this status', schema: { type: 'string', enum: [...USER_STATUSES] } },
        { name: 'department', in: 'query', required: false, description: 'Only users in this department, e.g. Engineering', schema: { type: 'string' } },
      ],
      responses: { '200': okResponse('A page of users', pageOf('User')), ...errorResponses('400', '401') },
    },
  },
  '/users/{id}': {
    get: {
      operationId: 'getUser',
      summary: 'Get a user',
      parameters: [ref('parameters', 'UserId')],
      responses: { '200': okResponse('The user', ref('schemas', 'User')), ...errorResponses('400', '401', '404') },
    },
  },
  '/users/{id}/groups': {
    get: {
      operationId: 'listUserGroups',
      summary: "List a user's groups, with the user's role in each",
      parameters: [ref('parameters', 'UserId')],
      responses: { '200': okResponse('Every group of the user', listOf('UserGroup')), ...errorResponses('400', '401', '404') },
    },
  },
  '/users/{id}/applications': {
    get: {
      operationId: 'listUserApplications',
      summary: 'List the applications assigned to a user, with assignment and last use times',
      parameters: [ref('parameters', 'UserId')],
      responses: {
        '200': okResponse('Every application assigned to the user', listOf('UserApplication')),
        ...errorResponses('400', '401', '404'),
      },
    },
  },
  '/groups': {
    get: {
      operationId: 'listGroups',
      summary: 'List groups',
      description: 'Groups ordered by id, one page at a time.',
      parameters: [
        ref('parameters', 'Limit'),
        ref('parameters', 'After'),
        { name: 'type', in: 'query', required: false, description: 'Only groups of this type', schema: { type: 'string', enum: [...GROUP_TYPES] } },
      ],
      responses: { '200': okResponse('A page of groups', pageOf('Group')), ...errorResponses('400', '401') },
    },
  },
  '/groups/{id}/members': {
    get: {
      operationId: 'listGroupMembers',
      summary: 'List the members of a group, with their role',
      description: 'Members ordered by user id, one page at a time.',
      parameters: [ref('parameters', 'GroupId'), ref('parameters', 'Limit'), ref('parameters', 'After')],
      responses: { '200': okResponse('A page of members', pageOf('GroupMember')), ...errorResponses('400', '401', '404') },
    },
  },
  '/applications': {
    get: {
      operationId: 'listApplications',
      summary: 'List applications',
      parameters: [],
      responses: { '200': okResponse('Every application', listOf('Application')), ...errorResponses('401') },
    },
  },
};

export function demoOpenApiDocument(serverUrl: string): Record<string, unknown> {
  // A fresh copy each time, so a caller that edits the document cannot change the next one.
  return structuredClone({
    openapi: '3.0.3',
    info: {
      title: 'stepcast demo tenant API',
      version: '1.0.0',
      description: 'Read-only directory of the demo tenant: users, groups, memberships and applications.',
    },
    servers: [{ url: serverUrl }],
    security: [{ bearerAuth: [] }],
    paths,
    components: {
      securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer' } },
      schemas,
      parameters,
      responses,
    },
  });
}
