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
    <script src="/web/vendor/graphql-ws.js"></script>
    <script src="/web/graphiql-fetcher.js"></script>
    <script>
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
      YogaGraphiQL.renderYogaGraphiQL(
        window.document.querySelector('#root'),
        Object.assign(${scriptJson(graphiqlOptions)}, { fetcher: window.stepcastGraphiQLFetcher(${scriptJson(endpoint)}) }),
      );
    </script>
  </body>
</html>
`;
}
