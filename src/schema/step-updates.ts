import type { StepUpdate } from '../executor/step-update.js';
import { isStreamDenied, type StreamDenied } from '../executor/step-update-stream.js';
import { builder } from './builder.js';
import { isUuid } from './cursor.js';
import { ExecutionStatusEnum, StepUpdateTypeEnum } from './enums.js';
import { badUserInput, notFound, toGraphQLError, unauthenticated } from './errors.js';
import { ExecutionRef } from './execution.js';
import { stepUpdateId } from './global-ids.js';
import { StepResultRef } from './step-result.js';

const StepUpdateRef = builder.objectRef<StepUpdate>('StepUpdate').implement({
  description: "One entry in an execution's append-only log.",
  fields: (t) => ({
    id: t.id({
      description: '`<execution id>:update:<sequence>`: the same whether the update is replayed or live.',
      resolve: (update) => stepUpdateId(update.executionId, update.sequence),
    }),
    executionId: t.exposeID('executionId'),
    execution: t.field({
      type: ExecutionRef,
      description:
        "The execution, with its status and lastSequence just after this update: a normalized client cache (Apollo, urql) that holds the execution follows the run by itself. id, status and lastSequence come with the update. Any other field is read again, as the execution is now, for every update: the cost limit counts it once per update a run may publish, which puts it over the limit at the defaults; read such fields once with execution(id:).",
      resolve: (update) => ({ id: update.executionId, status: update.status, lastSequence: update.sequence, asOfUpdate: true as const }),
    }),
    sequence: t.exposeInt('sequence', { description: '1, 2, 3, ... per execution, with no gaps.' }),
    type: t.field({ type: StepUpdateTypeEnum, resolve: (update) => update.type }),
    at: t.field({ type: 'DateTime', resolve: (update) => update.at }),
    status: t.field({
      type: ExecutionStatusEnum,
      description: "The execution's status after this update.",
      resolve: (update) => update.status,
    }),
    message: t.exposeString('message', {
      nullable: true,
      description: 'What the step reported, on STEP_PROGRESS updates.',
    }),
    step: t.field({
      type: StepResultRef,
      nullable: true,
      description:
        'The step as it was after this update (with the id the step has everywhere, so a client cache follows it); null on execution-level updates.',
      resolve: (update) => update.step,
    }),
    findings: t.field({
      type: [StepResultRef],
      nullable: true,
      description:
        'On STEP_WAITING only: the earlier steps that succeeded (their recordCount, sample and result), for the person deciding on the waiting step.',
      resolve: async (update, _args, context) => {
        if (update.type !== 'STEP_WAITING' || !update.step) return null;
        const waitingIndex = update.step.index;
        const steps = await context.executor.listSteps(context.tenantId, update.executionId);
        return steps.filter((step) => step.index < waitingIndex && step.status === 'SUCCEEDED');
      },
    }),
  }),
});

builder.subscriptionType({
  fields: (t) => ({
    stepUpdates: t.field({
      type: StepUpdateRef,
      description:
        'Every update of the execution after afterSequence (default 0: from the start), then live ones; completes after the last.',
      args: {
        executionId: t.arg.id({ required: true }),
        afterSequence: t.arg.int({ description: 'Resume after this sequence (the last one you received).' }),
      },
      subscribe: async (_root, { executionId, afterSequence }, context) => {
        const after = afterSequence ?? 0;
        if (after < 0) throw badUserInput('afterSequence must be 0 or more');
        const id = String(executionId);
        if (!isUuid(id)) throw notFound(`execution ${id} was not found`);
        try {
          // The stream watches the credential while it listens (and stops as it ends): a quiet stream ends on revocation.
          return await context.executor.stepUpdates(
            { tenantId: context.tenantId, stillAuthorized: context.stillAuthorized, watchRevocation: context.watchCredential },
            id,
            after,
          );
        } catch (error) {
          throw toGraphQLError(error);
        }
      },
      resolve: (item: StepUpdate | StreamDenied) => {
        if (!isStreamDenied(item)) return item;
        if (item.denied === 'credential') throw unauthenticated('the credential was revoked or has expired');
        // A row of another tenant reaching this stream is a defect; it answers like an unknown execution.
        throw notFound('execution was not found');
      },
    }),
  }),
});
