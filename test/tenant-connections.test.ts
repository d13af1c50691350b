import { setTimeout as sleep } from 'node:timers/promises';
import type { Client } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createApiKey, createTenant } from '../src/admin/tenants.js';
import { bearer, OTHER_TENANT_ID, startAttackTarget, type AttackTarget } from './support/attacks.js';
import { backends } from './support/database.js';
import { StepUpdatesSubscription } from './support/operations.js';
import { storeQueuedExecution, type StepUpdateEvent } from './support/plans.js';
import { readSseEvents, type GraphQLResponse } from './support/server.js';

/**
 * Each tenant's share of open connections (STEPCAST_TENANT_MAX_SOCKETS, STEPCAST_TENANT_MAX_SUBSCRIPTIONS), with
 * authentication on: tenant A runs into a limit while tenant B (the "other" tenant) connects and subscribes as
 * usual. A is a tenant of its own in the socket test and the demo tenant in the subscription test, so that sockets
 * one test is still closing never count against the other. Small limits keep the test quick; the per-socket limit
 * stays below the tenant's, so that A's subscriptions span several sockets.
 */
const MAX_SOCKETS = 3;
const MAX_SUBSCRIPTIONS = 4;
const PER_SOCKET = 3;
const ENV = {
  STEPCAST_TENANT_MAX_SOCKETS: String(MAX_SOCKETS),
  STEPCAST_TENANT_MAX_SUBSCRIPTIONS: String(MAX_SUBSCRIPTIONS),
  STEPCAST_WS_MAX_SUBSCRIPTIONS: String(PER_SOCKET),
  // Executions stored straight into the history stay QUEUED until the test calls recover().
  STEPCAST_RECOVERY_INTERVAL_MS: '0',
};
const EVERY_UPDATE = ['EXECUTION_STARTED', 'STEP_STARTED', 'STEP_SUCCEEDED', 'EXECUTION_SUCCEEDED'];

type Errors = GraphQLResponse<unknown>['errors'];

/** Polls `condition` every 20 ms, for 10 s at most. */
async function until(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await condition()) return;
    await sleep(20);
  }
  throw new Error(`timed out waiting until ${what}`);
}

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`per-tenant shares of sockets and subscriptions on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let target: AttackTarget;
    const rawSockets: WebSocket[] = [];
    const sseRequests: AbortController[] = [];

    beforeAll(async () => {
      target = await startAttackTarget(backend, ENV);
    });
    afterAll(async () => {
      for (const socket of rawSockets) socket.terminate();
      for (const request of sseRequests) request.abort();
      await target?.server.close();
    });


    /** A graphql-transport-ws socket that sends connection_init with this credential. */
    function openSocket(authorization: string) {
      const socket = new WebSocket(target.server.wsUrl, 'graphql-transport-ws');
      rawSockets.push(socket);
      const closed = new Promise<{ code: number; reason: string }>((resolve) =>
        socket.on('close', (code, reason) => resolve({ code, reason: String(reason) })),
      );
      /** true once acknowledged; false if the server closed it first. */
      const acknowledged = new Promise<boolean>((resolve) => {
        socket.on('message', (data) => {
          if ((JSON.parse(String(data)) as { type: string }).type === 'connection_ack') resolve(true);
        });
        void closed.then(() => resolve(false));
      });
      socket.once('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization } })));
      socket.once('error', () => undefined);
      return { socket, closed, acknowledged };
    }

    /** A stepUpdates subscription over graphql-ws: the updates it got, and how it ended. */
    function follow(client: Client, executionId: string) {
      const types: string[] = [];
      let unsubscribe!: () => void;
      const done = new Promise<{ types: string[]; errors?: Errors }>((resolve, reject) => {
        unsubscribe = client.subscribe(
          { query: StepUpdatesSubscription.toString(), variables: { executionId } },
          {
            next: (value) => {
              if (value.errors) resolve({ types, errors: value.errors as Errors });
              else types.push((value.data as { stepUpdates: StepUpdateEvent }).stepUpdates.type);
            },
            error: (errors) => (Array.isArray(errors) ? resolve({ types, errors }) : reject(errors as Error)),
            complete: () => resolve({ types }),
          },
        );
      });
      return { done, unsubscribe };
    }

    /** A stepUpdates subscription over SSE, held open until aborted. */
    async function followSse(authorization: string, executionId: string) {
      const request = new AbortController();
      sseRequests.push(request);
      const response = await fetch(target.server.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization },
        body: JSON.stringify({ query: StepUpdatesSubscription.toString(), variables: { executionId } }),
        signal: request.signal,
      });
      return { response, abort: () => request.abort() };
    }

    const openStreams = () => target.server.app.executor.openStreamCount;
    const streamsOpen = (count: number) => until(() => openStreams() === count, `${count} stepUpdates streams are open`);

    it(`closes tenant A's socket past ${MAX_SOCKETS} with 1008 after authentication; B still connects; a closed socket lets A in again`, async () => {
      const { database, secrets } = target.server.app;
      await createTenant(database, secrets, { name: 'Many sockets', id: 'many_sockets' });
      const tenantA = bearer((await createApiKey(database, 'many_sockets')).token);

      const held = Array.from({ length: MAX_SOCKETS }, () => openSocket(tenantA));
      expect(await Promise.all(held.map((socket) => socket.acknowledged))).toEqual(held.map(() => true));

      const refused = openSocket(tenantA);
      expect(await refused.acknowledged).toBe(false);
      const { code, reason } = await refused.closed;
      expect(code).toBe(1008);
      expect(reason).toMatch(new RegExp(`${MAX_SOCKETS} open, the limit`));

      // graphql-ws's own client takes 1008 as final: it reports the close instead of reconnecting, retries or not.
      const client = target.server.as(tenantA).wsClient({ retryAttempts: 5 });
      let connecting = 0;
      client.on('connecting', () => (connecting += 1));
      const closeEvent = await new Promise<unknown>((resolve) =>
        client.subscribe({ query: '{ __typename }' }, { next: () => undefined, error: resolve, complete: () => resolve('completed') }),
      );
      expect(closeEvent).toMatchObject({ code: 1008 });
      expect(connecting).toBe(1);

      // Tenant B, meanwhile, connects and is answered.
      const other = target.other.wsClient();
      const typename = await new Promise<unknown>((resolve, reject) =>
        other.subscribe({ query: '{ __typename }' }, { next: resolve, error: reject, complete: () => undefined }),
      );
      expect(typename).toEqual({ data: { __typename: 'Query' } });
      await other.dispose();

      // A closes one: the next socket of A gets its slot.
      held[0]!.socket.close();
      await held[0]!.closed;
      await until(() => openSocket(tenantA).acknowledged, "A's closed socket has given its slot back");
      // Still the limit, not a count that drifted: the next one is refused again.
      expect((await openSocket(tenantA).closed).code).toBe(1008);
    });

    it(`answers tenant A's subscription past ${MAX_SUBSCRIPTIONS} (graphql-ws and SSE together) with TOO_MANY_TENANT_SUBSCRIPTIONS; the rest go on, B is served, freed slots are reused`, async () => {
      const { database } = target.server.app;
      const tenantA = bearer(target.demoKey.token);
      const tenantB = bearer(target.otherKey.token);
      const executionA = (await storeQueuedExecution(database, ['SELECT 1 AS one'])).id;
      const executionB = (await storeQueuedExecution(database, ['SELECT 1 AS one'], OTHER_TENANT_ID)).id;
      const first = target.demo.wsClient();
      const second = target.demo.wsClient();

      // A: a full socket (the per-socket limit) and one more on a second socket, the tenant's whole share.
      const onFirst = Array.from({ length: PER_SOCKET }, () => follow(first, executionA));
      await streamsOpen(PER_SOCKET);
      const perSocket = await follow(first, executionA).done;
      expect(perSocket.errors).toMatchObject([{ extensions: { code: 'TOO_MANY_SUBSCRIPTIONS' } }]);
      const onSecond = [follow(second, executionA)];
      await streamsOpen(MAX_SUBSCRIPTIONS);

      // Over graphql-ws: the subscription gets its own code; the socket answers on.
      const overWs = await follow(second, executionA).done;
      expect(overWs.types).toEqual([]);
      expect(overWs.errors).toMatchObject([{ extensions: { code: 'TOO_MANY_TENANT_SUBSCRIPTIONS', limit: MAX_SUBSCRIPTIONS } }]);
      expect(overWs.errors![0]!.message).toContain(String(MAX_SUBSCRIPTIONS));
      expect(overWs.errors![0]!.extensions).not.toHaveProperty('http');
      const typename = await new Promise<unknown>((resolve, reject) =>
        second.subscribe({ query: '{ __typename }' }, { next: resolve, error: reject, complete: () => undefined }),
      );
      expect(typename).toEqual({ data: { __typename: 'Query' } });

      // Over SSE: the same code, with HTTP 429.
      const overSse = await followSse(tenantA, executionA);
      expect(overSse.response.status).toBe(429);
      const sseEvents = await readSseEvents(overSse.response);
      expect(sseEvents.flatMap((event) => event.errors ?? [])).toMatchObject([
        { extensions: { code: 'TOO_MANY_TENANT_SUBSCRIPTIONS', limit: MAX_SUBSCRIPTIONS } },
      ]);
      expect(openStreams()).toBe(MAX_SUBSCRIPTIONS);

      // Tenant B, meanwhile: subscribes over graphql-ws and SSE as if A were not there.
      const b = follow(target.other.wsClient(), executionB);
      const bOverSse = await followSse(tenantB, executionB);
      expect(bOverSse.response.status).toBe(200);
      await streamsOpen(MAX_SUBSCRIPTIONS + 2);

      // A completes one over graphql-ws: its slot takes an SSE stream of A.
      onFirst[0]!.unsubscribe();
      await streamsOpen(MAX_SUBSCRIPTIONS + 1);
      const aOverSse = await followSse(tenantA, executionA);
      expect(aOverSse.response.status).toBe(200);
      await streamsOpen(MAX_SUBSCRIPTIONS + 2);
      expect((await follow(second, executionA).done).errors).toMatchObject([{ extensions: { code: 'TOO_MANY_TENANT_SUBSCRIPTIONS' } }]);

      // The SSE request goes away: its slot takes a graphql-ws subscription of A.
      aOverSse.abort();
      await streamsOpen(MAX_SUBSCRIPTIONS + 1);
      onSecond.push(follow(second, executionA));
      await streamsOpen(MAX_SUBSCRIPTIONS + 2);

      // Every subscription still open gets every update once the executions run.
      await target.server.app.executor.recover();
      for (const { types, errors } of await Promise.all([...onFirst.slice(1), ...onSecond, b].map((s) => s.done))) {
        expect(errors).toBeUndefined();
        expect(types).toEqual(EVERY_UPDATE);
      }
      const bEvents = await readSseEvents<{ stepUpdates: StepUpdateEvent }>(bOverSse.response);
      expect(bEvents.map((event) => event.data?.stepUpdates.type)).toEqual(EVERY_UPDATE);

      // Every finished subscription gave its slot back: A's whole share fits again, and one more does not.
      await streamsOpen(0);
      const executionA2 = (await storeQueuedExecution(database, ['SELECT 1 AS one'])).id;
      const again = [...Array.from({ length: PER_SOCKET }, () => follow(first, executionA2)), follow(second, executionA2)];
      await streamsOpen(MAX_SUBSCRIPTIONS);
      expect((await follow(second, executionA2).done).errors).toMatchObject([{ extensions: { code: 'TOO_MANY_TENANT_SUBSCRIPTIONS' } }]);

      // A socket that closes gives back its subscriptions' slots at once: a new socket of A takes them.
      await first.dispose();
      await Promise.allSettled(again.slice(0, PER_SOCKET).map((s) => s.done));
      await streamsOpen(1);
      const third = target.demo.wsClient();
      const onThird = Array.from({ length: PER_SOCKET }, () => follow(third, executionA2));
      await streamsOpen(MAX_SUBSCRIPTIONS);
      await target.server.app.executor.recover();
      for (const { types, errors } of await Promise.all([again[PER_SOCKET]!, ...onThird].map((s) => s.done))) {
        expect(errors).toBeUndefined();
        expect(types).toEqual(EVERY_UPDATE);
      }
    });
  });
}
