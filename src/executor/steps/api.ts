import { writeApiCode } from '../../agents/api-agent.js';
import { AgentError, type LlmClient } from '../../agents/llm-client.js';
import { ApiCallError, createApiCaller } from '../../api/api-caller.js';
import { describeCatalog } from '../../api/catalog.js';
import { runProgram, SandboxError, type SandboxLimits } from '../../sandbox/run-program.js';
import { StepFailure } from '../errors.js';
import { inferColumns, toRecords } from '../records.js';
import type { TenantKnowledge } from '../tenant-knowledge.js';
import { remainingMs, type StepContext, type StepHandler, type StepOutcome } from './step-handler.js';

export interface ApiStepOptions {
  knowledge: TenantKnowledge;
  llm: LlmClient;
  sandbox: Omit<SandboxLimits, 'wallClockMs'>;
  maxResponseBytes: number;
  requestTimeoutMs: number;
}

function toStepFailure(error: unknown): unknown {
  if (error instanceof SandboxError || error instanceof ApiCallError) {
    return new StepFailure(error.code, error.message, { retryable: error.retryable, cause: error });
  }
  if (error instanceof AgentError) {
    return new StepFailure(error.code, error.message, { retryable: error.retryable, cause: error });
  }
  return error;
}

/** API steps: the client's program, or one the API code agent writes, run in QuickJS against the tenant's API. */
export function createApiStepHandler({
  knowledge,
  llm,
  sandbox,
  maxResponseBytes,
  requestTimeoutMs,
}: ApiStepOptions): StepHandler {
  return async (context: StepContext): Promise<StepOutcome> => {
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
      if (!llm.configured) {
        throw new StepFailure(
          'AGENT_NOT_CONFIGURED',
          `step ${context.index} has no code, and no API code agent is configured to write it: set OPENAI_API_KEY (OpenAI) or OPENAI_BASE_URL (an OpenAI-compatible server), or give the step its code`,
        );
      }
      try {
        const answer = await writeApiCode(llm, {
          planQuery: context.planQuery,
          index: context.index,
          task: step,
          catalog: describeCatalog(callable),
          earlier: context.earlier,
          signal: context.signal,
        });
        context.recordUsage(answer.usage);
        code = answer.value.code;
      } catch (error) {
        if (error instanceof AgentError) context.recordUsage(error.usage);
        throw toStepFailure(error);
      }
    }
    let httpRequests = 0;
    const callApi = createApiCaller({
      baseUrl: tenant.apiBaseUrl,
      operations: callable,
      credentials: tenant.apiCredentials ?? {},
      allowedMethods,
      maxResponseBytes,
      timeoutMs: requestTimeoutMs,
      // Pages of a paginated call are requests too: every one counts against the step's budget.
      onRequest: () => {
        if (++httpRequests > sandbox.maxRequests) {
          throw Object.assign(new Error(`the program made more than ${sandbox.maxRequests} API requests`), {
            code: 'API_REQUEST_LIMIT',
          });
        }
      },
    });
    let run;
    try {
      run = await runProgram({
        code,
        steps: context.earlier.map((earlier) => ({ records: earlier.records })),
        host: { callApi, progress: (message) => context.reportProgress(message) },
        // What is left of the step's time is the program's wall clock, so running out of it reads SANDBOX_TIMEOUT.
        limits: { ...sandbox, wallClockMs: remainingMs(context) },
      });
    } catch (error) {
      const failure = toStepFailure(error);
      if (failure instanceof StepFailure) failure.artefact = { code, attempts: 1 };
      throw failure;
    }
    const records = toRecords(run.value);
    const capped = records.length > context.rowCap;
    const kept = capped ? records.slice(0, context.rowCap) : records;
    return {
      code,
      records: kept,
      columns: inferColumns(kept),
      truncated: capped,
      attempts: 1,
      logs: run.logs,
    };
  };
}
