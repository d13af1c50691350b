import { randomBytes, randomUUID } from 'node:crypto';
import { ApolloClient, InMemoryCache, type TypedDocumentNode } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { parse } from 'graphql';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import { createApiKey, createTenant } from '../src/admin/tenants.js';
import { SecretBox } from '../src/auth/secrets.js';
import { DEMO_TENANT_ID } from '../src/db/demo-data.js';
import type { StepState } from '../src/db/tables.js';
import { GraphqlWsSubscriptionRoot } from '../src/limits/coalesced-websocket.js';
import { graphql } from './generated/gql.js';
import type { TypedDocumentString } from './generated/graphql.js';
import { backends } from './support/database.js';
import { ApproveStepMutation } from './support/operations.js';
import { runPlan, sqlStep, submitPlan } from './support/plans.js';
import { startTestServer, type TestClient, type TestServer } from './support/server.js';

// Client caches: Execution and StepResult are Relay nodes with ids that never change, and an update carries its
// execution's id and status and its step's id, so a normalized cache (Apollo's InMemoryCache here) follows a run
// without a line of cache code.

const NodeQuery = graphql(`
  query Node($id: ID!) {
    node(id: $id) {
      __typename
      id
      ... on Execution {
        status
        correlationId
        totalSteps
        plan {
          query
        }
        finalResult
        steps {
          id
        }
      }
      ... on StepResult {
        index
        stepStatus: status
        recordCount
        sample
      }
    }
  }
`);

const NodesQuery = graphql(`
  query Nodes($ids: [ID!]!) {
    nodes(ids: $ids) {
      __typename
      id
    }
  }
`);

const StepResultNodeQuery = graphql(`
  query StepResultNode($id: ID!) {
    node(id: $id) {
      id
      ... on StepResult {
        result
      }
    }
  }
`);

const ExecutionWithStepIdsQuery = graphql(`
  query ExecutionWithStepIds($id: ID!) {
    execution(id: $id) {
      id
      status
      steps {
        id
        index
        status
      }
    }
  }
`);

const FollowRunSubscription = graphql(`
  subscription FollowRun($executionId: ID!, $afterSequence: Int) {
    stepUpdates(executionId: $executionId, afterSequence: $afterSequence) {
      id
      sequence
      type
      execution {
        id
        status
        lastSequence
      }
      step {
        id
        index
        status
        recordCount
      }
    }
  }
`);

const UpdateWithExecutionFieldsSubscription = graphql(`
  subscription UpdateWithExecutionFields($executionId: ID!) {
    stepUpdates(executionId: $executionId) {
      sequence
      execution {
        id
        status
        correlationId
        totalSteps
        plan {
          query
        }
      }
    }
  }
`);

const ExecutionStatusFragment = parse(`
  fragment CachedExecution on Execution {
    status
    lastSequence
  }
`) as TypedDocumentNode<{ status: string; lastSequence: number }>;

const StepStatusFragment = parse(`
  fragment CachedStep on StepResult {
    status
    recordCount
  }
`) as TypedDocumentNode<{ status: string; recordCount: number | null }>;

/** A typed document of the project's own, as the DocumentNode Apollo takes. */
const apolloDocument = <TResult, TVariables>(document: TypedDocumentString<TResult, TVariables>) =>
  parse(document.toString()) as TypedDocumentNode<TResult, TVariables & Record<string, unknown>>;

const bearer = (token: string) => `Bearer ${token}`;

/** Three steps; the first waits for approval, so that a client reads the run before it moves on. */
const WAITING_PLAN = {
  query: 'follow a run',
  steps: [
    sqlStep('SELECT 1 AS n', { approval: true }),
    sqlStep('SELECT n + 1 AS n FROM step_1'),
    sqlStep('SELECT id, email FROM users ORDER BY id LIMIT 2'),
  ],
};

/** One subscription over a bare graphql-transport-ws socket: every message of it as the text that came, and its end. */
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

async function untilWaiting(client: TestClient, id: string): Promise<void> {
  await expect.poll(async () => (await client.request(ExecutionWithStepIdsQuery, { id })).data?.execution?.status).toBe('WAITING');
}

for (const { backend, skipReason } of backends) {
  describe.skipIf(skipReason !== null)(`client caches (Relay nodes, stable ids) on ${backend}${skipReason ? ` (${skipReason})` : ''}`, () => {
    let server: TestServer;
    let demoKey: string;
    let demo: TestClient;
    let other: TestClient;
    let finished: { id: string; stepIds: string[]; correlationId: string };

    beforeAll(async () => {
      server = await startTestServer(backend, {
        env: { STEPCAST_AUTH: 'on', STEPCAST_DEMO: 'on', STEPCAST_JWT_SECRET: randomBytes(32).toString('base64url') },
      });
      const { database } = server.app;
      await createTenant(database, new SecretBox(randomBytes(32)), { name: 'Other', id: 'other' });
      demoKey = (await createApiKey(database, DEMO_TENANT_ID, 'relay')).token;
      demo = server.as(bearer(demoKey));
      other = server.as(bearer((await createApiKey(database, 'other', 'relay')).token));
      const run = await runPlan(demo, {
        query: 'two steps',
        steps: [sqlStep('SELECT id, email FROM users ORDER BY id LIMIT 3'), sqlStep('SELECT count(*)::int AS n FROM step_1')],
      });
      expect(run.execution.status).toBe('SUCCEEDED');
      const read = await demo.request(ExecutionWithStepIdsQuery, { id: run.id });
      finished = { id: run.id, stepIds: read.data!.execution!.steps.map((step) => step.id), correlationId: run.execution.correlationId };
    });
    afterAll(async () => {
      await server?.close();
    });

    it("gives a step the id `<execution id>:step:<index>` and keeps the execution's id its UUID", async () => {
      expect(finished.stepIds).toEqual([`${finished.id}:step:1`, `${finished.id}:step:2`]);
      // The same again in a second query: nothing in an id depends on the request.
      const again = await demo.request(ExecutionWithStepIdsQuery, { id: finished.id });
      expect(again.data!.execution!.id).toBe(finished.id);
      expect(again.data!.execution!.steps.map((step) => step.id)).toEqual(finished.stepIds);
    });

    it('answers node(id) with your execution or step, as execution(id:) shows them', async () => {
      const execution = await demo.request(NodeQuery, { id: finished.id });
      expect(execution.errors).toBeUndefined();
      expect(execution.data!.node).toMatchObject({
        __typename: 'Execution',
        id: finished.id,
        status: 'SUCCEEDED',
        correlationId: finished.correlationId,
        totalSteps: 2,
        plan: { query: 'two steps' },
        finalResult: [{ n: 3 }],
        steps: finished.stepIds.map((id) => ({ id })),
      });

      const step = await demo.request(NodeQuery, { id: finished.stepIds[0]! });
      expect(step.errors).toBeUndefined();
      expect(step.data!.node).toMatchObject({ __typename: 'StepResult', id: finished.stepIds[0], index: 1, stepStatus: 'SUCCEEDED', recordCount: 3 });
      expect((step.data!.node as { sample: unknown[] }).sample).toHaveLength(3);
    });

    it('reads an id with its UUID in capitals as the same node, as execution(id:) does', async () => {
      const upper = finished.id.toUpperCase();
      expect((await demo.request(ExecutionWithStepIdsQuery, { id: upper })).data?.execution?.id).toBe(finished.id);
      const execution = await demo.request(NodeQuery, { id: upper });
      expect(execution.errors).toBeUndefined();
      expect(execution.data!.node).toMatchObject({ __typename: 'Execution', id: finished.id, status: 'SUCCEEDED' });
      const step = await demo.request(NodeQuery, { id: `${upper}:STEP:1` });
      expect(step.errors).toBeUndefined();
      expect(step.data!.node).toMatchObject({ __typename: 'StepResult', id: finished.stepIds[0], index: 1 });
      expect((await demo.request(NodesQuery, { ids: [upper, `${upper}:step:2`] })).data).toEqual({
        nodes: [
          { __typename: 'Execution', id: finished.id },
          { __typename: 'StepResult', id: finished.stepIds[1] },
        ],
      });
      // Still only the tenant's own.
      expect(await other.request(NodeQuery, { id: upper })).toEqual({ data: { node: null } });
    });

    it("answers another tenant's execution or step with null, exactly as an id that does not exist", async () => {
      const unknownExecution = randomUUID();
      for (const id of [finished.id, finished.stepIds[0]!, unknownExecution, `${unknownExecution}:step:1`, `${finished.id}:step:9`]) {
        expect(await other.request(NodeQuery, { id }), id).toEqual({ data: { node: null } });
      }
      // Ids this server never gives out, and an update's (not a node), are no different.
      for (const id of ['not-an-id', `${finished.id}:update:1`, `${finished.id}:step:0`, '']) {
        expect(await demo.request(NodeQuery, { id }), id).toEqual({ data: { node: null } });
      }
      // The owner still has them.
      expect((await demo.request(NodeQuery, { id: finished.id })).data?.node?.id).toBe(finished.id);
    });

    it('answers nodes(ids) in the order asked, null where node(id) is null, and refuses more than 100 ids', async () => {
      const ids = [finished.stepIds[1]!, randomUUID(), finished.id, finished.stepIds[0]!, 'nonsense'];
      expect((await demo.request(NodesQuery, { ids })).data).toEqual({
        nodes: [
          { __typename: 'StepResult', id: finished.stepIds[1] },
          null,
          { __typename: 'Execution', id: finished.id },
          { __typename: 'StepResult', id: finished.stepIds[0] },
          null,
        ],
      });
      expect((await other.request(NodesQuery, { ids })).data).toEqual({ nodes: [null, null, null, null, null] });
      const tooMany = await demo.request(NodesQuery, { ids: Array.from({ length: 101 }, () => finished.id) });
      expect(tooMany.errors?.map((error) => error.extensions?.code)).toEqual(['BAD_USER_INPUT']);
    });

    it("reads for node(id) and nodes(ids) only the steps named, without their results, and a step's result only when selected", async () => {
      const { executor } = server.app;
      const wholeExecutions = vi.spyOn(executor, 'listStepsOfExecutions');
      const wholeExecution = vi.spyOn(executor, 'listSteps');
      const namedSteps = vi.spyOn(executor, 'findSteps');
      const results = vi.spyOn(executor, 'findStepResult');
      try {
        const unknown = randomUUID();
        const ids = [finished.stepIds[1]!, `${unknown}:step:1`, finished.stepIds[0]!, `${finished.id}:step:7`];
        const answer = await demo.request(NodesQuery, { ids });
        expect(answer.data?.nodes.map((node) => node?.id ?? null)).toEqual([finished.stepIds[1], null, finished.stepIds[0], null]);
        // One read, of the four steps named (of which two exist), none of them with its stored result.
        expect(namedSteps).toHaveBeenCalledTimes(1);
        expect(namedSteps.mock.calls[0]![1]).toEqual([
          { executionId: finished.id, index: 2 },
          { executionId: unknown, index: 1 },
          { executionId: finished.id, index: 1 },
          { executionId: finished.id, index: 7 },
        ]);
        const read: StepState[] = await namedSteps.mock.results[0]!.value;
        expect(read.map((step) => step.index).sort()).toEqual([1, 2]);
        for (const step of read) expect(step).not.toHaveProperty('result');
        expect(wholeExecutions).not.toHaveBeenCalled();
        expect(wholeExecution).not.toHaveBeenCalled();
        expect(results).not.toHaveBeenCalled();

        // A selected result is read for its step alone.
        const withResult = await demo.request(StepResultNodeQuery, { id: finished.stepIds[1]! });
        expect(withResult.data?.node).toEqual({ id: finished.stepIds[1], result: [{ n: 3 }] });
        expect(results.mock.calls).toEqual([[DEMO_TENANT_ID, finished.id, 2]]);
        expect(wholeExecutions).not.toHaveBeenCalled();
      } finally {
        for (const spy of [wholeExecutions, wholeExecution, namedSteps, results]) spy.mockRestore();
      }
    });

    it('gives each update and its step the same ids live and replayed, and sends what the update carries straight to the socket', async () => {
      const id = await submitPlan(demo, WAITING_PLAN);
      await untilWaiting(demo, id);
      const query = FollowRunSubscription.toString();
      const handedOver = vi.spyOn(GraphqlWsSubscriptionRoot.prototype, 'sendResultDirectly');
      try {
        const live = rawFollow(server.wsUrl, bearer(demoKey), query, { executionId: id });
        await live.first;
        const replayedBefore = live.frames.length;
        expect((await demo.request(ApproveStepMutation, { executionId: id, index: 1 })).errors).toBeUndefined();
        await live.ended;
        // Ids, statuses and the update's execution come from the update itself: no read, so every live update took
        // the fast path (one shared execution, written to the socket at once).
        const liveUpdates = live.frames.length - replayedBefore - 1;
        expect(liveUpdates).toBeGreaterThan(5);
        expect(handedOver.mock.results.filter((result) => result.value === true)).toHaveLength(liveUpdates);

        const replay = rawFollow(server.wsUrl, bearer(demoKey), query, { executionId: id });
        await replay.ended;
        expect(replay.frames).toEqual(live.frames);

        type Update = { id: string; sequence: number; execution: { id: string; status: string; lastSequence: number }; step: { id: string; index: number } | null };
        const updates = live.frames
          .map((frame) => JSON.parse(frame) as { type: string; payload?: { data: { stepUpdates: Update } } })
          .filter((message) => message.type === 'next')
          .map((message) => message.payload!.data.stepUpdates);
        for (const update of updates) {
          expect(update.id).toBe(`${id}:update:${update.sequence}`);
          expect(update.execution.id).toBe(id);
          expect(update.execution.lastSequence).toBe(update.sequence);
          if (update.step) expect(update.step.id).toBe(`${id}:step:${update.step.index}`);
        }
        expect(updates.at(-1)!.execution.status).toBe('SUCCEEDED');
        const stepIds = (await demo.request(ExecutionWithStepIdsQuery, { id })).data!.execution!.steps.map((step) => step.id);
        expect(new Set(updates.flatMap((update) => (update.step ? [update.step.id] : [])))).toEqual(new Set(stepIds));
      } finally {
        handedOver.mockRestore();
      }
    });

    it("refuses an update's execution fields that the update does not carry (read again per update) with the cost error", async () => {
      const results = await demo.subscribeWs(UpdateWithExecutionFieldsSubscription, { executionId: finished.id });
      expect(results).toHaveLength(1);
      expect(results[0]!.data ?? undefined).toBeUndefined();
      expect(results[0]!.errors?.map((error) => error.extensions?.code)).toEqual(['QUERY_TOO_COSTLY']);
      // The same fields, read once, are a query.
      const once = await demo.request(NodeQuery, { id: finished.id });
      expect(once.data!.node).toMatchObject({ correlationId: finished.correlationId, totalSteps: 2, plan: { query: 'two steps' } });
    });

    it("keeps Apollo Client's normalized cache on the run as it goes, with no cache code", async () => {
      const id = await submitPlan(demo, WAITING_PLAN);
      await untilWaiting(demo, id);
      const cache = new InMemoryCache();
      const apollo = new ApolloClient({ cache, link: new GraphQLWsLink(demo.wsClient()) });
      try {
        const read = await apollo.query({ query: apolloDocument(ExecutionWithStepIdsQuery), variables: { id } });
        expect(read.data!.execution!.status).toBe('WAITING');
        expect(read.data!.execution!.steps.map((step) => step.status)).toEqual(['WAITING', 'PENDING', 'PENDING']);

        const cachedExecution = () => cache.readFragment({ id: cache.identify({ __typename: 'Execution', id }), fragment: ExecutionStatusFragment });
        const cachedStep = (stepId: string) => cache.readFragment({ id: cache.identify({ __typename: 'StepResult', id: stepId }), fragment: StepStatusFragment });
        const seen: string[] = [];
        await new Promise<void>((resolve, reject) => {
          const subscription = apollo
            .subscribe({ query: apolloDocument(FollowRunSubscription), variables: { executionId: id } })
            .subscribe({
              next: ({ data, error }) => {
                try {
                  if (error) throw error;
                  const update = data!.stepUpdates;
                  // By the time the update is handed out, the cache already shows it.
                  expect(cachedExecution()?.status).toBe(update.execution.status);
                  if (update.step) expect(cachedStep(update.step.id)?.status).toBe(update.step.status);
                  seen.push(update.step ? `${update.step.index}:${update.step.status}` : update.execution.status);
                  if (update.type === 'STEP_WAITING') {
                    demo.request(ApproveStepMutation, { executionId: id, index: 1 }).then(
                      (approved) => approved.errors && reject(new Error(JSON.stringify(approved.errors))),
                      reject,
                    );
                  }
                } catch (failure) {
                  subscription.unsubscribe();
                  reject(failure as Error);
                }
              },
              error: (error: unknown) => reject(error as Error),
              complete: resolve,
            });
        });
        expect(seen).toEqual(expect.arrayContaining(['1:RUNNING', '1:SUCCEEDED', '2:RUNNING', '2:SUCCEEDED', '3:SUCCEEDED', 'SUCCEEDED']));

        // The query the client started with, read from the cache alone, shows the finished run.
        const cached = await apollo.query({ query: apolloDocument(ExecutionWithStepIdsQuery), variables: { id }, fetchPolicy: 'cache-only' });
        expect(cached.data!.execution!.status).toBe('SUCCEEDED');
        expect(cached.data!.execution!.steps.map((step) => step.status)).toEqual(['SUCCEEDED', 'SUCCEEDED', 'SUCCEEDED']);
        expect(cachedExecution()).toMatchObject({ status: 'SUCCEEDED' });
        expect(cachedStep(`${id}:step:3`)).toEqual({ __typename: 'StepResult', status: 'SUCCEEDED', recordCount: 2 });

        // What the README says of StepUpdate.id: selected, every update stays in the cache as an entry of its own,
        // until cache.gc() drops those the subscription's result no longer points to.
        const cachedUpdates = () => Object.keys(cache.extract()).filter((key) => key.startsWith('StepUpdate:'));
        expect(cachedUpdates()).toHaveLength(seen.length);
        cache.gc();
        expect(cachedUpdates().length).toBeLessThanOrEqual(1);

        // And of a replay from sequence 0: the cached execution goes back through the run's statuses and sequences.
        const finalSequence = cachedExecution()!.lastSequence;
        const replayed: { status: string; lastSequence: number }[] = [];
        await new Promise<void>((resolve, reject) => {
          apollo
            .subscribe({ query: apolloDocument(FollowRunSubscription), variables: { executionId: id } })
            .subscribe({
              next: () => replayed.push({ ...cachedExecution()! }),
              error: (error: unknown) => reject(error as Error),
              complete: resolve,
            });
        });
        expect(replayed[0]!.lastSequence).toBeLessThan(finalSequence);
        expect(replayed[0]!.status).not.toBe('SUCCEEDED');
        expect(replayed.at(-1)).toMatchObject({ status: 'SUCCEEDED', lastSequence: finalSequence });
      } finally {
        apollo.stop();
      }
    });
  });
}
