import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createTenant } from '../src/admin/tenants.js';
import { tenants } from '../src/db/tables.js';
import { DEMO_TENANT_ID } from '../src/db/demo-data.js';
import { backends } from './support/database.js';
import { ExecutionQuery, ExecutionsQuery, StepUpdatesSubscription } from './support/operations.js';
import { runPlan, sqlStep } from './support/plans.js';
import { startTestServer, type TestClient, type TestServer } from './support/server.js';

const codes = (response: { errors?: { extensions?: Record<string, unknown> }[] }) =>
  response.errors?.map((error) => error.extensions?.code);

/** An error message with the id it names taken out, to compare answers for different ids. */
const withoutId = (message: string | undefined, id: string) => message?.replaceAll(id, '<id>');

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`tenant isolation on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    let demo: TestClient;
    let other: TestClient;
    let demoExecution: { id: string; correlationId: string };
    let otherApi: Server;
    const otherApiAuthorizations: (string | undefined)[] = [];

    beforeAll(async () => {
      server = await startTestServer(backend, { env: { STEPCAST_AUTH: 'on', STEPCAST_DEMO: 'on' } });
      const { database } = server.app;
      otherApi = createServer((request, response) => {
        otherApiAuthorizations.push(request.headers.authorization);
        response.setHeader('content-type', 'application/json');
        response.end(JSON.stringify([{ thing: 'from the other API' }]));
      });
      await new Promise<void>((resolve) => otherApi.listen(0, '127.0.0.1', resolve));
      const apiBaseUrl = `http://127.0.0.1:${(otherApi.address() as AddressInfo).port}`;
      await createTenant(
        database,
        server.app.secrets,
        {
          name: 'Other',
          id: 'other',
          apiBaseUrl,
          openapi: {
            openapi: '3.0.3',
            info: { title: 'Other API', version: '1' },
            servers: [{ url: apiBaseUrl }],
            paths: { '/things': { get: { operationId: 'listThings', responses: { '200': { description: 'things' } } } } },
          },
          credentials: { authorization: 'Bearer other-api-secret' },
        },
      );
      await database.runScriptInTransaction(`
        CREATE TABLE tenant_other.things (id integer PRIMARY KEY, label text NOT NULL);
        INSERT INTO tenant_other.things VALUES (1, 'other-only'), (2, 'also other');`);
      demo = server.as(`Bearer ${(await createApiKey(database, DEMO_TENANT_ID)).token}`);
      other = server.as(`Bearer ${(await createApiKey(database, 'other')).token}`);
      const run = await runPlan(demo, { query: 'demo users', steps: [sqlStep('SELECT id, email FROM users ORDER BY id LIMIT 3')] });
      expect(run.execution.status).toBe('SUCCEEDED');
      demoExecution = { id: run.id, correlationId: run.execution.correlationId };
    });
    afterAll(async () => {
      await server?.close();
      await new Promise((resolve) => otherApi?.close(resolve));
    });

    it("answers another tenant's execution exactly as one that does not exist", async () => {
      const unknown = randomUUID();
      const foreign = await other.request(ExecutionQuery, { id: demoExecution.id });
      const missing = await other.request(ExecutionQuery, { id: unknown });
      expect(foreign.data).toEqual({ execution: null });
      expect(codes(foreign)).toEqual(['NOT_FOUND']);
      expect(codes(missing)).toEqual(['NOT_FOUND']);
      expect(withoutId(foreign.errors?.[0]?.message, demoExecution.id)).toBe(withoutId(missing.errors?.[0]?.message, unknown));
      // The owner still sees it.
      expect((await demo.request(ExecutionQuery, { id: demoExecution.id })).data?.execution?.id).toBe(demoExecution.id);
    });

    it("never lists another tenant's executions, whatever the filter", async () => {
      for (const filter of [undefined, { correlationId: demoExecution.correlationId }, { status: ['SUCCEEDED' as const] }]) {
        const page = await other.request(ExecutionsQuery, { first: 100, filter });
        expect(page.errors).toBeUndefined();
        expect(page.data?.executions.edges.map((edge) => edge.node.id)).not.toContain(demoExecution.id);
      }
      const own = await demo.request(ExecutionsQuery, { first: 100, filter: { correlationId: demoExecution.correlationId } });
      expect(own.data?.executions.edges.map((edge) => edge.node.id)).toEqual([demoExecution.id]);
    });

    it("refuses to stream another tenant's updates over WebSocket and SSE, exactly as an unknown id", async () => {
      const unknown = randomUUID();
      for (const subscribe of [other.subscribeWs.bind(other), other.subscribeSse.bind(other)]) {
        const foreign = await subscribe(StepUpdatesSubscription, { executionId: demoExecution.id });
        const missing = await subscribe(StepUpdatesSubscription, { executionId: unknown });
        expect(foreign.flatMap((result) => codes(result) ?? [])).toEqual(['NOT_FOUND']);
        expect(foreign.some((result) => result.data?.stepUpdates)).toBe(false);
        expect(withoutId(foreign[0]?.errors?.[0]?.message, demoExecution.id)).toBe(withoutId(missing[0]?.errors?.[0]?.message, unknown));
      }
      const own = await demo.subscribeWs(StepUpdatesSubscription, { executionId: demoExecution.id });
      expect(own.at(-1)?.data?.stepUpdates.type).toBe('EXECUTION_SUCCEEDED');
    });

    it("runs a tenant's SQL on its own schema only", async () => {
      const own = await runPlan(other, { query: 'things', steps: [sqlStep('SELECT label FROM things ORDER BY id')] });
      expect(own.execution.status).toBe('SUCCEEDED');
      expect(own.execution.steps[0]!.result).toEqual([{ label: 'other-only' }, { label: 'also other' }]);

      // Unqualified names resolve in the tenant's own schema only: the demo's users table is not there.
      for (const sql of ['SELECT email FROM users', 'SELECT email FROM tenant_demo.users', 'SELECT * FROM public.executions', 'SELECT * FROM public.api_keys']) {
        const crossing = await runPlan(other, { query: 'cross', steps: [sqlStep(sql)] });
        expect(crossing.execution.status, sql).toBe('FAILED');
        expect(crossing.execution.steps[0]!.error?.code, sql).toBe('SQL_REJECTED');
        expect(crossing.execution.steps[0]!.result, sql).toBeNull();
      }
    });

    it("calls each tenant's API with that tenant's own credentials, which the program never sees", async () => {
      const program = `
        const seen = JSON.stringify(await api.call('listThings', {}));
        const visible = JSON.stringify(Object.getOwnPropertyNames(globalThis).map((name) => [name, String(globalThis[name])]));
        return [{ seen, leaked: visible.includes('secret') || seen.includes('secret') }];`;
      const run = await runPlan(other, { query: 'api', steps: [{ kind: 'API', queryContext: 'things', code: program }] });
      expect(run.execution.status).toBe('SUCCEEDED');
      expect(run.execution.steps[0]!.result).toEqual([{ seen: expect.stringContaining('from the other API'), leaked: false }]);
      expect(otherApiAuthorizations).toEqual(['Bearer other-api-secret']);

      // The demo tenant's programs reach the demo API with the demo's token, never the other's.
      const demoRun = await runPlan(demo, {
        query: 'api',
        steps: [{ kind: 'API', queryContext: 'user', code: "return [await api.call('getUser', { id: 1 })];" }],
      });
      expect(demoRun.execution.status).toBe('SUCCEEDED');
      expect(otherApiAuthorizations).toHaveLength(1);

      const stored = await server.app.database.db.select().from(tenants);
      expect(JSON.stringify(stored)).not.toContain('other-api-secret');
    });
  });
}
