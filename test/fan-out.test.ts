import { randomBytes } from 'node:crypto';
import type { Client } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import { createApiKey, createTenant, revokeApiKey } from '../src/admin/tenants.js';
import { SecretBox } from '../src/auth/secrets.js';
import { DEMO_TENANT_ID } from '../src/db/demo-data.js';
import { GraphqlWsSubscriptionRoot } from '../src/limits/coalesced-websocket.js';
import { backends } from './support/database.js';
import { ApproveStepMutation } from './support/operations.js';
import { sqlStep, submitPlan } from './support/plans.js';
import { readSseEvents, startTestServer, type GraphQLResponse, type TestClient, type TestServer } from './support/server.js';

// One live update is executed once per distinct selection, variables and tenant, and the result shared among the
// subscribers that asked the same thing (src/schema/shared-event-execution.ts). What each subscriber gets must stay
// exactly what it asked for, and only its own.

const AUTH_ENV = {
  STEPCAST_AUTH: 'on',
  STEPCAST_DEMO: 'on',
  STEPCAST_JWT_SECRET: randomBytes(32).toString('base64url'),
  STEPCAST_AUTH_RECHECK_MS: '100',
  STEPCAST_RECOVERY_INTERVAL_MS: '0',
  STEPCAST_TENANT_MAX_SOCKETS: '100',
  STEPCAST_TENANT_MAX_SUBSCRIPTIONS: '200',
};
const bearer = (token: string) => `Bearer ${token}`;

/** Three steps; the first waits for approval, so that every subscriber is in before the live updates. */
const WAITING_PLAN = {
  query: 'fan-out',
  steps: [
    sqlStep('SELECT 1 AS n', { approval: true }),
    sqlStep('SELECT n + 1 AS n FROM step_1'),
    sqlStep('SELECT n + 1 AS n FROM step_2'),
  ],
};

/** Selections and variables that differ in what the execution of an update returns. */
const SELECTIONS = [
  { query: 'subscription A($id: ID!) { stepUpdates(executionId: $id) { sequence type } }', keys: ['sequence', 'type'] },
  {
    query: 'subscription B($id: ID!, $after: Int) { stepUpdates(executionId: $id, afterSequence: $after) { sequence type status executionId } }',
    keys: ['sequence', 'type', 'status', 'executionId'],
  },
  { query: 'subscription C($id: ID!) { stepUpdates(executionId: $id) { seq: sequence kind: type } }', keys: ['seq', 'kind'] },
  {
    query: 'subscription D($id: ID!, $withStep: Boolean!) { stepUpdates(executionId: $id) { sequence step @include(if: $withStep) { index status } } }',
    keys: ['sequence', 'step'],
    variables: { withStep: true },
  },
  {
    query: 'subscription D($id: ID!, $withStep: Boolean!) { stepUpdates(executionId: $id) { sequence step @include(if: $withStep) { index status } } }',
    keys: ['sequence'],
    variables: { withStep: false },
  },
];

interface Follower {
  results: GraphQLResponse<{ stepUpdates: Record<string, unknown> }>[];
  /** Settles once the first update has arrived: the subscription is live. */
  waiting: Promise<void>;
  ended: Promise<void>;
}

function follow(client: Client, query: string, variables: Record<string, unknown>): Follower {
  const results: Follower['results'] = [];
  let markWaiting!: () => void;
  const waiting = new Promise<void>((resolve) => (markWaiting = resolve));
  const ended = new Promise<void>((resolve, reject) => {
    client.subscribe(
      { query, variables },
      {
        next: (value) => {
          results.push(value as Follower['results'][number]);
          // The stream listens for live updates before it replays: from its first update on, it misses none.
          markWaiting();
        },
        error: (error) => {
          markWaiting();
          if (Array.isArray(error)) {
            results.push({ errors: error });
            resolve();
          } else reject(error instanceof Error ? error : new Error(JSON.stringify(error)));
        },
        complete: () => {
          markWaiting();
          resolve();
        },
      },
    );
  });
  return { results, waiting, ended };
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const sequenceOf = (update: Record<string, unknown>) => (update.sequence ?? update.seq) as number;

/** Waits until the execution is WAITING for approval of its first step. */
async function untilWaiting(server: TestServer, client: TestClient, id: string): Promise<void> {
  await expect
    .poll(async () => {
      const response = await client.request(ExecutionStatusQuery, { id });
      return (response.data as { execution: { status: string } } | undefined)?.execution.status;
    })
    .toBe('WAITING');
  void server;
}

/**
 * One subscription over a bare WebSocket speaking graphql-transport-ws, keeping every message of it as the text that
 * came over the wire, up to and with its `complete`.
 */
function rawFollow(wsUrl: string, authorization: string, query: string, variables: Record<string, unknown>) {
  const frames: string[] = [];
  const socket = new WebSocket(wsUrl, 'graphql-transport-ws');
  let markFirst!: () => void;
  const first = new Promise<void>((resolve) => (markFirst = resolve));
  const ended = new Promise<void>((resolve, reject) => {
    socket.on('error', reject);
    socket.on('close', (code) => reject(new Error(`closed with ${code} before the subscription completed`)));
    socket.on('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization } })));
    socket.on('message', (data) => {
      const text = String(data);
      const message = JSON.parse(text) as { type: string; id?: string };
      if (message.type === 'connection_ack') {
        socket.send(JSON.stringify({ id: 's', type: 'subscribe', payload: { query, variables } }));
        return;
      }
      if (message.id !== 's') return;
      frames.push(text);
      markFirst();
      if (message.type === 'complete' || message.type === 'error') resolve();
    });
  });
  return {
    frames,
    first,
    ended: ended.finally(() => {
      socket.removeAllListeners('close');
      socket.close();
    }),
  };
}

// A TypedDocumentString stand-in: the helpers only need toString().
const ExecutionStatusQuery = {
  toString: () => 'query Status($id: ID!) { execution(id: $id) { status } }',
} as unknown as Parameters<TestClient['request']>[0];

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`fan-out of one update on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    let demoKey: string;
    let otherKey: string;

    beforeAll(async () => {
      server = await startTestServer(backend, { env: AUTH_ENV });
      const { database } = server.app;
      await createTenant(database, new SecretBox(randomBytes(32)), { name: 'Other', id: 'other' });
      demoKey = (await createApiKey(database, DEMO_TENANT_ID, 'fan-out')).token;
      otherKey = (await createApiKey(database, 'other', 'fan-out')).token;
    });
    afterAll(async () => {
      await server?.close();
    });

    it('gives 50 subscribers with different selections and variables every update once, in order, as each asked', async () => {
      const demo = server.as(bearer(demoKey));
      const id = await submitPlan(demo, WAITING_PLAN);
      await untilWaiting(server, demo, id);
      const followers: { follower: Follower; keys: string[]; after: number }[] = [];
      // 10 sockets with 5 subscriptions each, every selection on every socket.
      for (let socket = 0; socket < 10; socket++) {
        const client = demo.wsClient();
        SELECTIONS.forEach((selection, i) => {
          const after = i === 1 ? socket % 2 : 0;
          followers.push({ follower: follow(client, selection.query, { id, after, ...selection.variables }), keys: selection.keys, after });
        });
      }
      await Promise.all(followers.map(({ follower }) => follower.waiting));
      const approved = await demo.request(ApproveStepMutation, { executionId: id, index: 1 });
      expect(approved.errors).toBeUndefined();
      await Promise.all(followers.map(({ follower }) => follower.ended));

      // PLAN_CREATED.. STEP_WAITING, then approved, 3 steps started and succeeded, EXECUTION_SUCCEEDED.
      const last = Math.max(...followers[0]!.follower.results.map((r) => sequenceOf(r.data!.stepUpdates)));
      expect(last).toBeGreaterThan(8);
      const bySelection = new Map<number, unknown>();
      followers.forEach(({ follower, keys, after }, i) => {
        expect(follower.results.every((r) => r.errors === undefined)).toBe(true);
        const updates = follower.results.map((r) => r.data!.stepUpdates);
        expect(updates.map(sequenceOf)).toEqual(range(after + 1, last));
        for (const update of updates) expect(Object.keys(update).sort()).toEqual([...keys].sort());
        // Every subscriber with the same selection and variables saw the same thing.
        const selection = i % SELECTIONS.length;
        const seen = JSON.stringify(updates.slice(1 - after));
        if (!bySelection.has(selection)) bySelection.set(selection, seen);
        else expect(seen).toEqual(bySelection.get(selection));
      });
      const withSteps = followers[3]!.follower.results.map((r) => r.data!.stepUpdates);
      expect(withSteps.filter((update) => update.step !== null).length).toBeGreaterThan(3);
      // What the shared executions gave equals what a late subscriber's own execution (a replay) gives.
      const replay = follow(demo.wsClient(), SELECTIONS[3]!.query, { id, ...SELECTIONS[3]!.variables });
      await replay.ended;
      expect(replay.results.map((r) => r.data!.stepUpdates)).toEqual(withSteps);
    });

    it('executes a live update once for all the subscribers who asked the same, and apart for a variable sent differently', async () => {
      const demo = server.as(bearer(demoKey));
      const plan = { query: 'shared', steps: [sqlStep('SELECT 1 AS n', { approval: true }), sqlStep('SELECT n + 1 AS n FROM step_1', { approval: true })] };
      const id = await submitPlan(demo, plan);
      await untilWaiting(server, demo, id);
      // `findings` reads the store (executor.listSteps) each time an update is executed.
      const query = 'subscription F($id: ID!, $w: Boolean = true) { stepUpdates(executionId: $id) { sequence type findings @include(if: $w) { index } } }';
      const client = demo.wsClient();
      const same = Array.from({ length: 10 }, () => follow(client, query, { id }));
      // An explicit null is not the omitted variable's default: it must not get (or give) the same result.
      const explicitNull = follow(client, query, { id, w: null });
      await Promise.all([...same, explicitNull].map((follower) => follower.waiting));
      const executor = server.app.executor;
      const listSteps = executor.listSteps.bind(executor);
      let reads = 0;
      executor.listSteps = (...args: Parameters<typeof listSteps>) => {
        reads += 1;
        return listSteps(...args);
      };
      try {
        expect((await demo.request(ApproveStepMutation, { executionId: id, index: 1 })).errors).toBeUndefined();
        const waitingAgain = (follower: Follower) =>
          follower.results.some((r) => r.data?.stepUpdates.type === 'STEP_WAITING' && (r.data.stepUpdates.findings as unknown[]).length === 1);
        await expect.poll(() => same.every(waitingAgain)).toBe(true);
        // The live STEP_WAITING of step 2, with its findings, was executed once for the ten.
        expect(reads).toBe(1);
      } finally {
        executor.listSteps = listSteps;
      }
      expect(same.every((follower) => follower.results.every((r) => r.errors === undefined))).toBe(true);
      expect(explicitNull.results.every((r) => r.errors !== undefined)).toBe(true);
      expect((await demo.request(ApproveStepMutation, { executionId: id, index: 2 })).errors).toBeUndefined();
      await Promise.all([...same, explicitNull].map((follower) => follower.ended));
    });

    it("never gives one tenant's subscriber another tenant's results, for the same document and variables", async () => {
      const query = 'subscription T($id: ID!) { stepUpdates(executionId: $id) { executionId sequence type step { index result } } }';
      const tenants = [server.as(bearer(demoKey)), server.as(bearer(otherKey))];
      const ids = await Promise.all(tenants.map((tenant) => submitPlan(tenant, WAITING_PLAN)));
      await Promise.all(tenants.map((tenant, i) => untilWaiting(server, tenant, ids[i]!)));
      const followers = tenants.map((tenant, i) => Array.from({ length: 3 }, () => follow(tenant.wsClient(), query, { id: ids[i] })));
      await Promise.all(followers.flat().map((follower) => follower.waiting));
      for (const [i, tenant] of tenants.entries()) {
        expect((await tenant.request(ApproveStepMutation, { executionId: ids[i]!, index: 1 })).errors).toBeUndefined();
      }
      await Promise.all(followers.flat().map((follower) => follower.ended));
      for (const [i, own] of followers.entries()) {
        for (const follower of own) {
          expect(follower.results.every((r) => r.errors === undefined)).toBe(true);
          const updates = follower.results.map((r) => r.data!.stepUpdates);
          expect(updates.every((update) => update.executionId === ids[i])).toBe(true);
          expect(updates.at(-1)!.type).toBe('EXECUTION_SUCCEEDED');
          const finished = updates.filter((update) => update.type === 'STEP_SUCCEEDED').map((update) => update.step);
          expect(finished).toEqual([
            { index: 1, result: [{ n: 1 }] },
            { index: 2, result: [{ n: 2 }] },
            { index: 3, result: [{ n: 3 }] },
          ]);
        }
      }
    });

    it("keeps one subscriber's error its own: a revoked key's SSE stream fails, the others with the same selection go on", async () => {
      const { database } = server.app;
      const revoked = await createApiKey(database, DEMO_TENANT_ID, 'to revoke');
      const demo = server.as(bearer(demoKey));
      const id = await submitPlan(demo, WAITING_PLAN);
      await untilWaiting(server, demo, id);
      const query = SELECTIONS[0]!.query;
      const sse = await fetch(server.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: bearer(revoked.token) },
        body: JSON.stringify({ query, variables: { id } }),
      });
      expect(sse.status).toBe(200);
      const sseEvents = readSseEvents<{ stepUpdates: { sequence: number } }>(sse);
      const others = Array.from({ length: 3 }, () => follow(demo.wsClient(), query, { id }));
      await Promise.all(others.map((follower) => follower.waiting));
      await revokeApiKey(database, revoked.id);
      const events = await sseEvents;
      expect(events.at(-1)!.errors?.[0]?.extensions).toMatchObject({ code: 'UNAUTHENTICATED' });
      expect((await demo.request(ApproveStepMutation, { executionId: id, index: 1 })).errors).toBeUndefined();
      await Promise.all(others.map((follower) => follower.ended));
      for (const follower of others) {
        expect(follower.results.every((r) => r.errors === undefined)).toBe(true);
        const updates = follower.results.map((r) => r.data!.stepUpdates);
        expect(updates.map(sequenceOf)).toEqual(range(1, updates.length));
        expect(updates.at(-1)!.type).toBe('EXECUTION_SUCCEEDED');
      }
    });

    it('writes each live update to the socket itself, as the very frame graphql-ws sends for it', async () => {
      const demo = server.as(bearer(demoKey));
      const id = await submitPlan(demo, WAITING_PLAN);
      await untilWaiting(server, demo, id);
      const query = 'subscription W($id: ID!) { stepUpdates(executionId: $id) { executionId sequence type at status message step { index status recordCount error { code } } } }';
      const handedOver = vi.spyOn(GraphqlWsSubscriptionRoot.prototype, 'sendResultDirectly');
      try {
        const live = rawFollow(server.wsUrl, bearer(demoKey), query, { id });
        await live.first;
        const replayedBefore = live.frames.length;
        expect((await demo.request(ApproveStepMutation, { executionId: id, index: 1 })).errors).toBeUndefined();
        await live.ended;
        // Every update after the approval went straight to the socket: none through graphql-ws's loop.
        const liveUpdates = live.frames.length - replayedBefore - 1;
        expect(liveUpdates).toBeGreaterThan(5);
        expect(handedOver.mock.results.filter((result) => result.value === true)).toHaveLength(liveUpdates);
        expect(JSON.parse(live.frames.at(-1)!)).toEqual({ id: 's', type: 'complete' });

        // A subscriber after the end gets them all replayed, through graphql-ws: the same bytes, frame for frame.
        handedOver.mockClear();
        const replay = rawFollow(server.wsUrl, bearer(demoKey), query, { id });
        await replay.ended;
        expect(handedOver).not.toHaveBeenCalled();
        expect(replay.frames).toEqual(live.frames);
      } finally {
        handedOver.mockRestore();
      }
    });

    it('shows each step as it was at the update, live and replayed alike: no records before it succeeded', async () => {
      const demo = server.as(bearer(demoKey));
      const id = await submitPlan(demo, WAITING_PLAN);
      await untilWaiting(server, demo, id);
      const query = 'subscription R($id: ID!) { stepUpdates(executionId: $id) { sequence type step { index status result } } }';
      const live = follow(demo.wsClient(), query, { id });
      await live.waiting;
      expect((await demo.request(ApproveStepMutation, { executionId: id, index: 1 })).errors).toBeUndefined();
      await live.ended;
      const replay = follow(demo.wsClient(), query, { id });
      await replay.ended;
      const updatesOf = (follower: Follower) => follower.results.map((r) => r.data!.stepUpdates as { step: { status: string; result: unknown } | null });
      expect(updatesOf(replay)).toEqual(updatesOf(live));
      const withSteps = updatesOf(replay).filter((update) => update.step !== null);
      expect(withSteps.filter((update) => update.step!.status === 'SUCCEEDED')).toHaveLength(3);
      for (const { step } of withSteps) expect(step!.result === null).toBe(step!.status !== 'SUCCEEDED');
    });
  });
}
