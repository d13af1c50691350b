import { AsyncResource } from 'node:async_hooks';
import { writeApiCode } from '../../agents/api-agent.js';
import type { LlmClient } from '../../agents/llm-client.js';
import { createApiCaller } from '../../api/api-caller.js';
import { describeCatalog } from '../../api/catalog.js';
import type { SandboxConfig } from '../../config.js';
import { SANDBOX_REFUSAL_CODES, SandboxError } from '../../sandbox/errors.js';
import { runProgram } from '../../sandbox/run-program.js';
import { asStepFailure, StepFailure } from '../errors.js';
import { heapBytesOf } from '../../heap-bytes.js';
import { inferColumns, toRecords } from '../records.js';
import type { TenantKnowledge } from '../tenant-knowledge.js';
import { askAgent, workTimeoutMs, stoppedByCancel, type StepContext, type StepHandler, type StepOutcome } from './step-handler.js';

export interface ApiStepOptions {
  knowledge: TenantKnowledge;
  llm: LlmClient;
  /** The program's limits and its API requests' limits. */
  sandbox: SandboxConfig;
  /** Told of every program the sandbox stops, by its code (metrics); a cancel is not a refusal. */
  onSandboxRefused?: (code: string) => void;
}

/** API steps: the client's program, or one the API code agent writes, run in QuickJS against the tenant's API. */
export function createApiStepHandler({ knowledge, llm, sandbox, onSandboxRefused }: ApiStepOptions): StepHandler {
  return stoppedByCancel(async (context: StepContext): Promise<StepOutcome> => {
    const { tenant, step } = context;
    const operations = knowledge.apiCatalog(tenant);
    if (!operations || !tenant.apiBaseUrl) {
      throw new StepFailure('API_NOT_CONFIGURED', `step ${context.index} is an API step, and tenant ${tenant.id} has no API`);
    }
    // A program the agent wrote read earlier steps' data, which an attacker may have shaped: it may only read.
    const allowedMethods = step.code ? tenant.apiAllowedMethods.map((method) => method.toUpperCase()) : ['GET'];
    const callable = operations.filter((operation) => allowedMethods.includes(operation.method));
    let code = step.code;
    if (!code) {
      try {
        const answer = await askAgent(llm, context, { field: 'code', agent: 'API code agent' }, () =>
          writeApiCode(llm, {
            planQuery: context.planQuery,
            index: context.index,
            task: step,
            catalog: describeCatalog(callable),
            earlier: context.earlier,
            limits: { maxRequests: sandbox.maxRequests, maxConcurrentRequests: sandbox.maxConcurrentRequests, maxPages: sandbox.maxPages },
            signal: context.signal,
          }),
        );
        code = answer.code;
      } catch (error) {
        throw asStepFailure(error);
      }
    }
    let httpRequests = 0;
    // The step's requests end with the step, however it ends: none may outlive it.
    const stepRequests = new AbortController();
    // Bound to the step: the sandbox's worker calls it back from its own message events, outside the step's
    // async context, and its spans and log lines belong to the step.
    const callApi = AsyncResource.bind(createApiCaller({
      baseUrl: tenant.apiBaseUrl,
      operations: callable,
      credentials: knowledge.apiCredentials(tenant),
      allowedMethods,
      limits: sandbox,
      // Aborted with the step too, without waiting for the program to notice.
      signal: AbortSignal.any([stepRequests.signal, context.signal]),
      keepBodiesAsText: true,
      beforeUnsafeCall: context.beforeUnsafeCall,
      // Pages of a paginated call are requests too: every one counts against the step's budget.
      onRequest: () => {
        if (++httpRequests > sandbox.maxRequests) {
          throw Object.assign(new Error(`the program made more than ${sandbox.maxRequests} API requests`), {
            code: 'API_REQUEST_LIMIT',
          });
        }
      },
    }));
    const withCode = (error: unknown) => {
      const failure = asStepFailure(error);
      if (failure instanceof StepFailure) failure.artefact = { code, attempts: 1 };
      return failure;
    };
    // The program gets its own copy of the earlier steps' records, as JSON.
    const inputBytes = context.earlier.reduce((bytes, earlier) => bytes + earlier.heapBytes, 0);
    let resultBytes = 0;
    let run;
    try {
      context.memory.take(inputBytes, "the copy of the earlier steps' records its program gets");
      run = await runProgram({
        code,
        steps: context.earlier.map((earlier) => ({ records: earlier.records })),
        host: { callApi, progress: (message) => context.reportProgress(message) },
        // What is left of the step's time is the program's wall clock, so running out of it reads SANDBOX_TIMEOUT.
        limits: { ...sandbox, wallClockMs: workTimeoutMs(context) },
        signal: context.signal,
        admitResult: (bytes) => {
          context.memory.take(bytes, 'the result its program returned');
          resultBytes = bytes;
        },
      });
    } catch (error) {
      if (error instanceof SandboxError && SANDBOX_REFUSAL_CODES.has(error.code)) onSandboxRefused?.(error.code);
      throw withCode(error);
    } finally {
      stepRequests.abort();
      context.memory.give(inputBytes);
    }
    // At most rowCap of the result's items become records (and one more tells that there were more).
    const { value } = run;
    const records = toRecords(Array.isArray(value) && value.length > context.rowCap ? value.slice(0, context.rowCap + 1) : value);
    const capped = records.length > context.rowCap;
    const kept = capped ? records.slice(0, context.rowCap) : records;
    // The records are what the step keeps: they take the place of the result in the budget.
    context.memory.give(resultBytes);
    const names = new Set<string>();
    try {
      for (const record of kept) context.memory.take(heapBytesOf(record, names) + 8, 'its records');
    } catch (error) {
      throw withCode(error);
    }
    return {
      code,
      records: kept,
      columns: inferColumns(kept),
      truncated: capped,
      attempts: 1,
      logs: run.logs,
    };
  });
}
