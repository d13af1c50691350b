import { createHash } from 'node:crypto';
import { css, editorWorkerService, favicon, graphqlWorker, js, jsonWorker } from '@graphql-yoga/render-graphiql/graphiql';
import type { GraphiQLOptions } from 'graphql-yoga';

const RUN_A_PLAN = `# Welcome to stepcast. Run this mutation (Ctrl-Enter): it stores a plan over the demo data and
# answers at once with the execution's id. Follow it in the "Watch it live" tab, or open
# /runs/<id> in the browser. With authentication on, set the Headers tab first:
#   { "Authorization": "Bearer <your API key>" }
mutation RunAPlan {
  executePlan(
    plan: {
      query: "Which groups do the first five active users belong to?"
      steps: [
        { kind: SQL, queryContext: "the first five active users", entity: "users",
          sql: "SELECT id, email FROM users WHERE status = 'active' ORDER BY id LIMIT 5" }
        { kind: SQL, queryContext: "their groups", entity: "groups",
          sql: "SELECT g.name, count(*) AS members FROM group_members m JOIN step_1 s ON s.id = m.user_id JOIN groups g ON g.id = m.group_id GROUP BY g.name ORDER BY members DESC, g.name" }
      ]
    }
  ) {
    id
    status
  }
}
`;

const WATCH_IT_LIVE = `# Every update of an execution: the stored ones first, then live ones; it completes after the last.
# Put the id from "Run a plan" in the Variables tab. Subscriptions go over graphql-ws; the Headers
# tab's Authorization is sent as the socket's connectionParams.
subscription WatchItLive($executionId: ID!) {
  stepUpdates(executionId: $executionId) {
    sequence
    type
    status
    step { index status durationMs recordCount sample error { code message } }
  }
}
`;

const HISTORY = `# Your latest executions, newest first. Filter by status, page with "after: <endCursor>".
query History {
  executions(first: 10, filter: { status: [SUCCEEDED, FAILED, CANCELLED] }) {
    edges { node { id status createdAt durationMs plan { query } } }
    pageInfo { hasNextPage endCursor }
  }
}
`;

/** GraphiQL's tabs on a first visit (GraphiQL keeps the user's own tabs in localStorage after that). */
export const WELCOME_TABS = [
  { query: RUN_A_PLAN },
  { query: WATCH_IT_LIVE, variables: JSON.stringify({ executionId: 'the id executePlan answered' }, null, 2) },
  { query: HISTORY },
];

/** JSON inside a <script>: no "</script>" or "<!--" can end or change the script. */
const scriptJson = (value: unknown) => JSON.stringify(value).replace(/</g, '\\u003c');

/**
 * The page's one inline script: the same bytes on every render (the options it reads are a JSON data block, which
 * no browser runs), so its hash, computed once at start, is all the Content-Security-Policy lets run inline.
 */
const INLINE_SCRIPT = `
      function prepareBlob(workerContent) {
        return URL.createObjectURL(new Blob([workerContent], { type: 'application/javascript' }));
      }
      const workers = {
        editorWorkerService: prepareBlob(${scriptJson(editorWorkerService)}),
        json: prepareBlob(${scriptJson(jsonWorker)}),
        graphql: prepareBlob(${scriptJson(graphqlWorker)}),
      };
      self['MonacoEnvironment'] = { globalAPI: false, getWorkerUrl: (moduleId, label) => workers[label] };
      ${js};
      const stepcastOptions = JSON.parse(document.getElementById('graphiql-options').textContent);
      YogaGraphiQL.renderYogaGraphiQL(
        window.document.querySelector('#root'),
        Object.assign(stepcastOptions.graphiql, { fetcher: window.stepcastGraphiQLFetcher(stepcastOptions.endpoint) }),
      );
    `;

const INLINE_SCRIPT_HASH = `'sha256-${createHash('sha256').update(INLINE_SCRIPT, 'utf8').digest('base64')}'`;

/**
 * GraphiQL's page shares the tab's sessionStorage (and so the run pages' API key): it runs its own files and the one
 * inline script above, nothing else. Its inline styles, data: icon and fonts, and blob: editor workers are allowed;
 * it talks to this origin only. `connect-src 'self'` covers same-origin ws: in Chromium and Firefox (CSP 3), not in
 * every browser: run-pages.ts adds this host's ws: and wss: to it.
 */
export const GRAPHIQL_CONTENT_SECURITY_POLICY =
  `default-src 'self'; script-src 'self' ${INLINE_SCRIPT_HASH}; worker-src blob:; style-src 'self' 'unsafe-inline'; ` +
  "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; " +
  "frame-ancestors 'none'";

/**
 * yoga's bundled GraphiQL (every asset inline or served by stepcast; nothing from a CDN), opened on stepcast's
 * welcome tabs, with stepcast's fetcher (src/web/graphiql-fetcher.js): subscriptions send the Headers tab as
 * graphql-ws connectionParams, and a refused socket shows as an error instead of reconnecting forever.
 */
export function renderStepcastGraphiQL(options?: GraphiQLOptions): string {
  const { endpoint = '/graphql', ...rest } = (options ?? {}) as GraphiQLOptions & { endpoint?: string };
  const graphiqlOptions = { defaultTabs: WELCOME_TABS, ...rest, title: rest.title ?? 'stepcast' };
  return `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <title>${graphiqlOptions.title.replace(/[<&]/g, '')}</title>
    <link rel="icon" href="${favicon}" />
    <style>
      ${css}
    </style>
  </head>
  <body id="body" class="no-focus-outline">
    <noscript>You need to enable JavaScript to run this app.</noscript>
    <div id="root"></div>
    <script type="application/json" id="graphiql-options">${scriptJson({ graphiql: graphiqlOptions, endpoint })}</script>
    <script src="/web/vendor/graphql-ws.js"></script>
    <script src="/web/graphiql-fetcher.js"></script>
    <script>${INLINE_SCRIPT}</script>
  </body>
</html>
`;
}
