import { GraphQLRequestError, ServiceUnavailable, graphql } from './api.js';
import { AuthRequired } from './auth.js';
import { append, fill, formatDuration, formatTime, h, recordsTable, statusBadge } from './dom.js';
import { subscribeOverSse } from './sse.js';

const STEP_FIELDS = `index kind status critical approval queryContext entity sql code recordCount sample columns { name }
  durationMs startedAt finishedAt attempts error { code message retryable } usage { promptTokens completionTokens totalTokens }
  decision decidedBy decisionComment`;

const EXECUTION = `query RunPageExecution($id: ID!) {
  execution(id: $id) {
    id status correlationId createdAt startedAt finishedAt durationMs lastSequence cancelRequestedAt
    error { code message } usage { promptTokens completionTokens totalTokens }
    plan { query reasoning steps { kind queryContext entity sql code critical } }
    steps { ${STEP_FIELDS} }
  }
}`;

const UPDATES = `subscription RunPageUpdates($executionId: ID!, $afterSequence: Int) {
  stepUpdates(executionId: $executionId, afterSequence: $afterSequence) {
    sequence type status at message step { ${STEP_FIELDS} }
  }
}`;

const CANCEL = `mutation RunPageCancel($id: ID!) { cancelExecution(id: $id) { id status } }`;
const APPROVE = `mutation RunPageApprove($executionId: ID!, $index: Int!, $comment: String) {
  approveStep(executionId: $executionId, index: $index, comment: $comment) { id status } }`;
const REJECT = `mutation RunPageReject($executionId: ID!, $index: Int!, $comment: String) {
  rejectStep(executionId: $executionId, index: $index, comment: $comment) { id status } }`;

const FINISHED = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);
const TERMINAL_UPDATES = new Set(['EXECUTION_SUCCEEDED', 'EXECUTION_FAILED', 'EXECUTION_CANCELLED']);
const FIRST_RETRY_MS = 250;
const MAX_RETRY_MS = 5_000;
/** A server's Retry-After is honoured up to this; past it the page asks again anyway. */
const MAX_RETRY_AFTER_MS = 30_000;

/**
 * An error waiting will not mend: no key or a refused one, or an answer about the request (NOT_FOUND, a bad
 * argument). Anything else (a network error, a server stopping or not answering yet, an unexpected error while it
 * shuts down) is waited out.
 */
function isFinal(error) {
  if (error instanceof AuthRequired) return true;
  return error instanceof GraphQLRequestError && error.code !== undefined && error.code !== 'INTERNAL_SERVER_ERROR';
}

/** /runs/<id>: the run as a timeline. Replays its stored updates from the start, then follows it live. */
export function renderRun(main, executionId, onError) {
  const controller = new AbortController();
  const steps = new Map();
  let execution;
  let lastSequence = 0;
  let finished = false;

  const statusBox = h('span', { id: 'execution-status' });
  const connection = h('span', { id: 'connection', className: 'muted' }, 'connecting…');
  const summary = h('dl', { className: 'summary' });
  const actionMessage = h('p', { className: 'error', role: 'alert', id: 'action-error' });
  const cancelButton = h('button', { type: 'button', id: 'cancel-run', className: 'danger', onclick: () => act(CANCEL, { id: executionId }, [cancelButton]) }, 'Cancel run');
  const stepList = h('ol', { className: 'steps', id: 'steps' });
  const timeline = h('ol', { className: 'timeline', id: 'timeline' });

  fill(main,
    h('p', {}, h('a', { href: '/runs' }, '← All runs')),
    h('h1', {}, 'Run ', h('code', {}, executionId), ' ', statusBox),
    h('div', { className: 'toolbar' }, cancelButton, connection),
    actionMessage,
    summary,
    h('h2', {}, 'Steps'),
    stepList,
    h('h2', {}, 'Timeline'),
    timeline,
  );

  function fail(error) {
    if (controller.signal.aborted) return;
    controller.abort();
    onError(error);
  }

  /** Runs a mutation with `buttons` disabled until it is answered, so that a second click sends nothing. */
  async function act(document, variables, buttons = []) {
    actionMessage.textContent = '';
    for (const button of buttons) button.disabled = true;
    try {
      await graphql(document, variables);
    } catch (error) {
      if (error instanceof AuthRequired) return fail(error);
      actionMessage.textContent = error.message;
    } finally {
      // The run's next update redraws the step (and its buttons); the cancel button follows the run's status.
      for (const button of buttons) if (button !== cancelButton || !FINISHED.has(statusBox.dataset.status)) button.disabled = false;
    }
  }

  function renderSummary() {
    const rows = [
      ['Question', execution.plan.query],
      ['Reasoning', execution.plan.reasoning],
      ['Correlation id', execution.correlationId],
      ['Created', formatTime(execution.createdAt)],
      ['Duration', formatDuration(execution.durationMs)],
      ['Tokens', execution.usage ? `${execution.usage.totalTokens} (${execution.usage.promptTokens} prompt, ${execution.usage.completionTokens} completion)` : undefined],
      ['Error', execution.error ? `${execution.error.code}: ${execution.error.message}` : undefined],
    ];
    fill(summary, rows.filter(([, value]) => value).map(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]));
  }

  function setStatus(status) {
    fill(statusBox, statusBadge(status));
    statusBox.dataset.status = status;
    cancelButton.disabled = FINISHED.has(status);
  }

  function stepCard(index) {
    let card = steps.get(index);
    if (card) return card;
    card = h('li', { className: 'step', dataset: { step: String(index) } });
    steps.set(index, card);
    const after = [...steps.keys()].filter((i) => i > index).sort((a, b) => a - b)[0];
    stepList.insertBefore(card, after === undefined ? null : steps.get(after));
    return card;
  }

  function approvalControls(step) {
    const comment = h('textarea', { className: 'comment', rows: 2, placeholder: 'Comment (optional)', 'aria-label': `Comment on step ${step.index}` });
    const decide = (document) => act(document, { executionId, index: step.index, comment: comment.value.trim() || undefined }, [approve, reject]);
    const approve = h('button', { type: 'button', className: 'approve', onclick: () => decide(APPROVE) }, 'Approve');
    const reject = h('button', { type: 'button', className: 'reject danger', onclick: () => decide(REJECT) }, 'Reject');
    return h('div', { className: 'approval' }, h('p', {}, 'This step waits for your decision.'), comment, approve, ' ', reject);
  }

  /** Draws a step as it is now (a StepResult, or a plan step not yet run). */
  function renderStep(step) {
    const card = stepCard(step.index);
    card.dataset.status = step.status;
    const details = [];
    if (step.entity) details.push(h('span', { className: 'muted' }, `entity ${step.entity}`));
    if (step.durationMs !== null && step.durationMs !== undefined) details.push(h('span', { className: 'duration' }, formatDuration(step.durationMs)));
    if (step.recordCount !== null && step.recordCount !== undefined) details.push(h('span', { className: 'records' }, `${step.recordCount} ${step.recordCount === 1 ? 'record' : 'records'}`));
    if (step.attempts > 1) details.push(h('span', {}, `${step.attempts} attempts`));
    if (step.usage) details.push(h('span', { className: 'tokens' }, `${step.usage.totalTokens} tokens (${step.usage.promptTokens} prompt, ${step.usage.completionTokens} completion)`));
    fill(card,
      h('div', { className: 'step-head' },
        h('span', { className: 'step-index' }, `Step ${step.index}`),
        h('span', { className: 'kind' }, step.kind),
        statusBadge(step.status, { className: 'step-status' }),
        step.approval ? h('span', { className: 'muted' }, 'approval') : null,
      ),
      h('p', { className: 'context' }, step.queryContext),
      details.length ? h('p', { className: 'details' }, details.flatMap((d, i) => (i ? [' · ', d] : [d]))) : null,
      step.sql ? h('pre', { className: 'sql' }, step.sql) : null,
      step.code ? h('pre', { className: 'code' }, step.code) : null,
      step.error ? h('p', { className: 'error step-error' }, `${step.error.code}: ${step.error.message}`) : null,
      step.decision
        ? h('p', { className: 'decision' }, `${step.decision} by ${step.decidedBy ?? 'someone'}${step.decisionComment ? `: ${step.decisionComment}` : ''}`)
        : null,
      Array.isArray(step.sample) && step.sample.length > 0
        ? h('details', { open: true }, h('summary', {}, 'Sample'), h('div', { className: 'table-scroll' }, recordsTable(step.sample, step.columns?.map((c) => c.name))))
        : null,
      step.status === 'WAITING' ? approvalControls(step) : null,
    );
  }

  function addToTimeline(update) {
    append(timeline, 
      h('li', { dataset: { sequence: String(update.sequence), type: update.type } },
        h('span', { className: 'seq' }, `#${update.sequence}`), ' ',
        h('time', { datetime: update.at }, formatTime(update.at)), ' ',
        h('strong', {}, update.type),
        update.step ? ` step ${update.step.index}` : '',
        update.message ? ` — ${update.message}` : '',
      ),
    );
  }

  function applyUpdate(update) {
    if (update.sequence <= lastSequence) return;
    lastSequence = update.sequence;
    if (update.step) renderStep(update.step);
    setStatus(update.status);
    addToTimeline(update);
    if (TERMINAL_UPDATES.has(update.type)) finished = true;
  }

  async function load() {
    const data = await graphql(EXECUTION, { id: executionId });
    execution = data.execution;
    renderSummary();
    // Before the replay: the plan's steps as they will run, so the page shows the whole run from the start.
    execution.plan.steps.forEach((step, i) => renderStep({ ...step, index: i + 1, status: 'PENDING' }));
    setStatus('QUEUED');
  }

  /** The run as the store has it now, drawn in full: the page's last word on a finished run. */
  function renderFinished(stored) {
    execution = stored;
    connection.textContent = 'finished';
    renderSummary();
    for (const step of execution.steps) renderStep(step);
    setStatus(execution.status);
    main.dataset.finished = 'true';
  }

  /** A wait the page's stop ends at once. */
  function pause(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      controller.signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  }

  /**
   * Follows the run until a terminal update, then draws it as stored. A stream the server completes without a
   * terminal update (it was stopping: a restart, a shutdown) is not the end of the run: the page asks for the run,
   * draws it if it has finished, and else resumes after the last update it showed. A dropped connection, a server
   * that cannot answer yet (503 with Retry-After, 429 over the tenant's subscriptions, 502/504 from a proxy) and a
   * server that is down are all waited out the same way, with backoff.
   */
  async function follow() {
    let retryMs = FIRST_RETRY_MS;
    while (!controller.signal.aborted) {
      let waitMs = retryMs;
      try {
        if (!finished) {
          connection.textContent = lastSequence === 0 ? 'connecting…' : 'live';
          await subscribeOverSse(UPDATES, { executionId, afterSequence: lastSequence }, {
            signal: controller.signal,
            onNext: (data) => {
              connection.textContent = 'live';
              retryMs = FIRST_RETRY_MS;
              applyUpdate(data.stepUpdates);
            },
          });
          if (controller.signal.aborted) return;
          if (!finished) connection.textContent = 'the server ended the stream before the run ended; checking the run…';
        }
        const data = await graphql(EXECUTION, { id: executionId });
        if (controller.signal.aborted) return;
        if (finished || FINISHED.has(data.execution.status)) return renderFinished(data.execution);
        // Still going: the server completed the stream as it stopped. Resume after the last update shown.
      } catch (error) {
        if (controller.signal.aborted) return;
        if (isFinal(error)) throw error;
        if (error instanceof ServiceUnavailable && error.retryAfterMs !== undefined) waitMs = Math.min(error.retryAfterMs, MAX_RETRY_AFTER_MS);
      }
      // A dropped connection: resume after the last update received, so nothing is missed or shown twice.
      connection.textContent = finished ? 'finished; loading the run again…' : `connection lost, resuming after update ${lastSequence}…`;
      await pause(waitMs);
      retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
    }
  }

  load().then(follow).catch(fail);
  return { stop: () => controller.abort() };
}
