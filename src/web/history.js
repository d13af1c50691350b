import { graphql } from './api.js';
import { fill, formatDuration, formatTime, h, statusBadge } from './dom.js';

const STATUSES = ['QUEUED', 'RUNNING', 'WAITING', 'SUCCEEDED', 'FAILED', 'CANCELLED'];
const DEFAULT_PAGE_SIZE = 20;

const HISTORY = `query RunPageHistory($first: Int, $after: String, $filter: ExecutionFilter) {
  executions(first: $first, after: $after, filter: $filter) {
    edges { node { id status createdAt durationMs totalSteps successfulSteps failedSteps plan { query } } }
    pageInfo { hasNextPage endCursor }
  }
}`;

/** /runs?status=FAILED&after=<cursor>&first=20: the tenant's executions, newest first, a page at a time. */
export function renderHistory(main, params, onError) {
  let stopped = false;
  const status = STATUSES.includes(params.get('status')) ? params.get('status') : '';
  const after = params.get('after') || undefined;
  const requested = Number.parseInt(params.get('first') ?? '', 10);
  const first = requested >= 1 && requested <= 100 ? requested : DEFAULT_PAGE_SIZE;

  const go = (next) => {
    const query = new URLSearchParams();
    if (next.status) query.set('status', next.status);
    if (next.after) query.set('after', next.after);
    if (first !== DEFAULT_PAGE_SIZE) query.set('first', String(first));
    const search = query.toString();
    location.assign(`/runs${search ? `?${search}` : ''}`);
  };

  const filter = h(
    'select',
    { id: 'status-filter', name: 'status', onchange: (event) => go({ status: event.target.value }) },
    h('option', { value: '' }, 'All statuses'),
    STATUSES.map((s) => h('option', { value: s }, s)),
  );
  filter.value = status;
  const body = h('tbody', {});
  const pager = h('nav', { className: 'pager' });
  fill(main,
    h('h1', {}, 'Runs'),
    h('div', { className: 'toolbar' }, h('label', { for: 'status-filter' }, 'Status '), filter),
    h('table', { className: 'runs', id: 'runs' },
      h('thead', {}, h('tr', {}, ['Run', 'Status', 'Question', 'Steps', 'Created', 'Duration'].map((t) => h('th', {}, t)))),
      body),
    pager,
  );

  graphql(HISTORY, { first, after, filter: status ? { status: [status] } : undefined })
    .then((data) => {
      if (stopped) return;
      const { edges, pageInfo } = data.executions;
      if (edges.length === 0) body.append(h('tr', {}, h('td', { colspan: 6, className: 'muted' }, 'No runs.')));
      for (const { node } of edges) {
        body.append(
          h('tr', { dataset: { executionId: node.id, status: node.status } },
            h('td', {}, h('a', { href: `/runs/${encodeURIComponent(node.id)}` }, node.id)),
            h('td', {}, statusBadge(node.status)),
            h('td', {}, node.plan.query),
            h('td', {}, `${node.successfulSteps}/${node.totalSteps}${node.failedSteps ? `, ${node.failedSteps} failed` : ''}`),
            h('td', {}, formatTime(node.createdAt)),
            h('td', {}, formatDuration(node.durationMs)),
          ),
        );
      }
      if (after) pager.append(h('button', { type: 'button', onclick: () => go({ status }) }, 'First page'));
      if (pageInfo.hasNextPage) pager.append(h('button', { type: 'button', id: 'next-page', onclick: () => go({ status, after: pageInfo.endCursor }) }, 'Next page'));
    })
    .catch((error) => stopped || onError(error));

  return { stop: () => (stopped = true) };
}
