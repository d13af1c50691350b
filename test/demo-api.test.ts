import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { catalogFromOpenApi, describeCatalog } from '../src/api/catalog.js';
import { DEMO_TENANT_SCHEMA } from '../src/db/demo-data.js';
import { startDemoApi, type DemoApi } from '../src/demo-api/demo-api-server.js';
import { backends } from './support/database.js';
import { startTestServer, type TestServer } from './support/server.js';

const TOKEN = 'demo-api-test-token';
const ISO_TIMESTAMP = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

interface Page {
  data: Record<string, unknown>[];
  nextCursor: string | null;
}

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`demo API on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    let api: DemoApi;
    beforeAll(async () => {
      server = await startTestServer(backend);
      api = await startDemoApi({ database: server.app.database, schema: DEMO_TENANT_SCHEMA, token: TOKEN });
    });
    afterAll(async () => {
      await api?.close();
      await server?.close();
    });

    async function get<T = Record<string, unknown>>(path: string, init: RequestInit = {}) {
      const response = await fetch(`${api.url}${path}`, { headers: { authorization: `Bearer ${TOKEN}` }, ...init });
      return { status: response.status, headers: response.headers, body: (await response.json()) as T };
    }

    async function count(sql: string, params: string[] = []): Promise<number> {
      const { rows } = await server.app.database.runReadOnly({ sql, params, timeoutMs: 5_000, searchPath: DEMO_TENANT_SCHEMA });
      return Number(rows[0]?.n);
    }

    /** Follows nextCursor to the end, checking that every page is full but the last. */
    async function walk(path: string, limit: number) {
      const items: Record<string, unknown>[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const separator = path.includes('?') ? '&' : '?';
        const after: string = cursor === null ? '' : `&after=${cursor}`;
        const { status, body } = await get<Page>(`${path}${separator}limit=${limit}${after}`);
        expect(status).toBe(200);
        if (body.nextCursor !== null) expect(body.data).toHaveLength(limit);
        items.push(...body.data);
        cursor = body.nextCursor;
        pages += 1;
      } while (cursor !== null);
      return { items, pages, ids: items.map((item) => item.id as number) };
    }

    it('requires the bearer token on every endpoint but /openapi.json', async () => {
      const attempts: Record<string, string>[] = [{}, { authorization: 'Bearer wrong-token' }, { authorization: `Basic ${TOKEN}` }, { authorization: TOKEN }];
      for (const headers of attempts) {
        for (const path of ['/users', '/users/1', '/groups/1/members', '/applications', '/nowhere']) {
          const response = await get(path, { headers });
          expect(response.status).toBe(401);
          expect(response.headers.get('www-authenticate')).toBe('Bearer');
          expect(response.body).toEqual({ error: 'missing or invalid bearer token' });
        }
      }
      const openapi = await fetch(`${api.url}/openapi.json`);
      expect(openapi.status).toBe(200);
    });

    it('walks every user page by page in id order, with no duplicates, matching the database', async () => {
      const { ids, pages } = await walk('/users', 7);
      const total = await count('SELECT count(*)::int AS n FROM users');
      expect(total).toBe(200);
      expect(ids).toHaveLength(total);
      expect(new Set(ids).size).toBe(total);
      expect(ids).toEqual([...ids].sort((a, b) => a - b));
      expect(pages).toBe(Math.ceil(total / 7));
    });

    it('pages 25 users by default, and a cursor is opaque', async () => {
      const { body } = await get<Page>('/users');
      expect(body.data).toHaveLength(25);
      expect(body.nextCursor).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(body.nextCursor).not.toBe('25');
    });

    it('filters users by status and by department, across pages', async () => {
      const suspended = await walk('/users?status=suspended', 3);
      expect(suspended.items.length).toBe(await count("SELECT count(*)::int AS n FROM users WHERE status = 'suspended'"));
      expect(suspended.items.length).toBeGreaterThan(3);
      expect(new Set(suspended.items.map((user) => user.status))).toEqual(new Set(['suspended']));

      const engineers = await walk('/users?department=Engineering&status=active', 10);
      const expected = await count('SELECT count(*)::int AS n FROM users WHERE department = $1 AND status = $2', ['Engineering', 'active']);
      expect(engineers.items.length).toBe(expected);
      expect(engineers.items.every((user) => user.department === 'Engineering' && user.status === 'active')).toBe(true);

      const nobody = await get<Page>('/users?department=Nowhere');
      expect(nobody.body).toEqual({ data: [], nextCursor: null });
    });

    it('answers a user with numbers for ids and ISO strings for timestamps, as the database has them', async () => {
      const { status, body } = await get('/users/12');
      expect(status).toBe(200);
      expect(Object.keys(body)).toEqual(['id', 'email', 'name', 'department', 'title', 'status', 'mfa_enabled', 'manager_id', 'created_at', 'last_login_at']);
      expect(body).toMatchObject({ id: 12, manager_id: 11, mfa_enabled: expect.any(Boolean) });
      expect(body.created_at).toMatch(ISO_TIMESTAMP);
      const createdMs = await count('SELECT (extract(epoch FROM created_at) * 1000)::bigint AS n FROM users WHERE id = 12');
      expect(Date.parse(body.created_at as string)).toBe(createdMs);
      const neverLoggedIn = await get('/users/11');
      expect(neverLoggedIn.body.last_login_at).toBeNull();
    });

    it("lists a user's groups with the role, and applications with assignment times", async () => {
      const groups = await get<{ data: Record<string, unknown>[] }>('/users/21/groups');
      expect(groups.status).toBe(200);
      expect(groups.body.data).toHaveLength(await count('SELECT count(*)::int AS n FROM group_members WHERE user_id = 21'));
      for (const group of groups.body.data) {
        expect(group).toMatchObject({ id: expect.any(Number), name: expect.any(String), role: 'owner' });
        expect(group.added_at).toMatch(ISO_TIMESTAMP);
      }

      const apps = await get<{ data: Record<string, unknown>[] }>('/users/21/applications');
      expect(apps.body.data).toHaveLength(await count('SELECT count(*)::int AS n FROM app_assignments WHERE user_id = 21'));
      expect(apps.body.data.length).toBeGreaterThan(0);
      for (const app of apps.body.data) {
        expect(app).toMatchObject({ id: expect.any(Number), vendor: expect.any(String), sso_enabled: expect.any(Boolean) });
        expect(app.assigned_at).toMatch(ISO_TIMESTAMP);
        expect(app).toHaveProperty('last_used_at');
      }
    });

    it('walks groups by type, and the members of a group with their role', async () => {
      const security = await walk('/groups?type=security', 2);
      expect(security.items.length).toBe(await count("SELECT count(*)::int AS n FROM groups WHERE type = 'security'"));
      expect(new Set(security.items.map((group) => group.type))).toEqual(new Set(['security']));
      expect((await walk('/groups', 5)).items.length).toBe(await count('SELECT count(*)::int AS n FROM groups'));

      const members = await walk('/groups/1/members', 6);
      expect(members.ids).toHaveLength(await count('SELECT count(*)::int AS n FROM group_members WHERE group_id = 1'));
      expect(new Set(members.ids).size).toBe(members.ids.length);
      expect(members.items[0]).toMatchObject({ email: expect.any(String), role: expect.stringMatching(/^(owner|member)$/) });
    });

    it('lists every application', async () => {
      const { body } = await get<{ data: Record<string, unknown>[] }>('/applications');
      expect(body.data).toHaveLength(await count('SELECT count(*)::int AS n FROM applications'));
      expect(body.data[0]).toMatchObject({ id: 1, name: 'Slack', sso_enabled: true });
    });

    it('answers 400 with a reason for bad parameters', async () => {
      const forged = Buffer.from('id:abc').toString('base64url');
      const cases: [string, RegExp][] = [
        ['/users?limit=0', /limit/],
        ['/users?limit=101', /limit/],
        ['/users?limit=ten', /limit/],
        ['/users?limit=5&limit=6', /more than once/],
        ['/users?after=not-a-cursor', /after/],
        [`/users?after=${forged}`, /after/],
        ['/users?after=12', /after/],
        ['/users?status=happy', /status/],
        ['/users?sort=name', /unknown query parameter "sort"/],
        ['/groups?type=club', /type/],
        ['/groups/1/members?limit=1000', /limit/],
        ['/users/abc', /id/],
        ['/users/0', /id/],
        ['/users/99999999999', /id/],
        ['/users/1%20OR%201=1', /id/],
        ['/applications?limit=5', /unknown query parameter/],
      ];
      for (const [path, reason] of cases) {
        const { status, body } = await get<{ error: string }>(path);
        expect({ path, status }).toEqual({ path, status: 400 });
        expect(body.error).toMatch(reason);
      }
    });

    it('answers 404 for unknown paths and ids, and 405 for anything but GET', async () => {
      for (const path of ['/nowhere', '/users/1/friends', '/users/', '/users/999999', '/users/999999/groups', '/groups/999/members']) {
        const { status, body } = await get<{ error: string }>(path);
        expect({ path, status }).toEqual({ path, status: 404 });
        expect(body.error).toEqual(expect.any(String));
      }
      for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
        const { status, headers } = await get('/users/1', { method });
        expect(status).toBe(405);
        expect(headers.get('allow')).toBe('GET');
      }
    });

    it('serves an OpenAPI 3 document that becomes a catalog of the seven operations', async () => {
      const document = (await (await fetch(`${api.url}/openapi.json`)).json()) as Record<string, unknown>;
      expect(document).toMatchObject({
        openapi: expect.stringMatching(/^3\.0\./),
        servers: [{ url: api.url }],
        security: [{ bearerAuth: [] }],
        components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer' } } },
      });
      const catalog = catalogFromOpenApi(document);
      expect(catalog.map((op) => op.operationId).sort()).toEqual(
        ['getUser', 'listApplications', 'listGroupMembers', 'listGroups', 'listUserApplications', 'listUserGroups', 'listUsers'],
      );
      expect(catalog.every((op) => op.method === 'GET' && op.summary)).toBe(true);
      expect(catalog.filter((op) => op.paginated).map((op) => op.operationId).sort()).toEqual(['listGroupMembers', 'listGroups', 'listUsers']);
      expect(catalog.find((op) => op.operationId === 'getUser')).toMatchObject({
        path: '/users/{id}',
        parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'integer' } }],
      });
      const described = describeCatalog(catalog);
      expect(described).toContain(
        'listUsers GET /users (limit?: integer, after?: string, status?: "active" | "suspended" | "deprovisioned", department?: string) — List users\n' +
          '  returns { data: [{ id, email, name, department, title, status, mfa_enabled, manager_id, created_at, last_login_at }], nextCursor }\n' +
          '  paginated by after: one call returns one page; pass paginate: true',
      );
      expect(described).toContain(
        'listUserApplications GET /users/{id}/applications (id: integer) — List the applications assigned to a user, with assignment and last use times\n' +
          '  returns { data: [{ id, name, vendor, category, sso_enabled, created_at, assigned_at, last_used_at }] }\n' +
          '  not paginated: one call returns everything; do not pass paginate',
      );
    });
  });
}
