import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Plugin } from 'graphql-yoga';

/** Where the pages' files live: beside this module, or in src/web when this module runs compiled from elsewhere. */
function assetDirectory(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [here, resolve(here, '../../src/web'), resolve(here, '../../../src/web')];
  const found = candidates.find((directory) => existsSync(join(directory, 'app.html')));
  if (!found) throw new Error(`the run pages' files (app.html) are missing; looked in ${candidates.join(', ')}`);
  return found;
}

/** graphql-ws's browser build, for GraphiQL's subscriptions: served from the installed package, never a CDN. */
function graphqlWsBrowserBuild(): string {
  const packageJson = createRequire(import.meta.url).resolve('graphql-ws/package.json');
  return readFileSync(join(dirname(packageJson), 'umd', 'graphql-ws.min.js'), 'utf8');
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

/** The browser modules and styles of the pages; only these names are served (no path from the URL reaches the disk). */
const ASSETS = ['app.js', 'api.js', 'dom.js', 'auth.js', 'history.js', 'run.js', 'sse.js', 'style.css', 'graphiql-fetcher.js'];

/**
 * The pages run nothing but their own files and talk only to this server: no inline script or style, no other
 * host, and no frame may embed them (clickjacking the approve and cancel buttons).
 */
export const RUN_PAGE_SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

interface Asset {
  body: string;
  type: string;
}

/** Loads every file once, at start: a missing one fails the start, not a page view. */
function loadAssets(): Map<string, Asset> {
  const directory = assetDirectory();
  const assets = new Map<string, Asset>();
  for (const name of ASSETS) {
    assets.set(`/web/${name}`, { body: readFileSync(join(directory, name), 'utf8'), type: TYPES[name.slice(name.lastIndexOf('.'))]! });
  }
  assets.set('/web/vendor/graphql-ws.js', { body: graphqlWsBrowserBuild(), type: TYPES['.js']! });
  assets.set('/runs', { body: readFileSync(join(directory, 'app.html'), 'utf8'), type: TYPES['.html']! });
  return assets;
}

/** `/runs/<id>`: an id of letters, digits, '-' and '_' (what the API hands out); anything else is not a page. */
const RUN_PATH = /^\/runs\/[A-Za-z0-9_-]{1,100}\/?$/;

/**
 * GET /runs (a tenant's history) and /runs/<id> (one run, live) with their files under /web/. One HTML shell for
 * both: its script reads the path. The pages call /graphql like any client, with the key the user enters.
 */
/** GraphiQL's page: its CSP (with this host's WebSocket origins), no framing, no referrer. */
async function secureGraphiQLPage(request: Request, response: Response): Promise<void> {
  // The GraphiQL page's module (9 MB) is loaded when the page is first asked for, not at every start.
  const { GRAPHIQL_CONTENT_SECURITY_POLICY } = await import('./graphiql-page.js');
  const host = new URL(request.url).host;
  response.headers.set('content-security-policy', GRAPHIQL_CONTENT_SECURITY_POLICY.replace("connect-src 'self'", `connect-src 'self' ws://${host} wss://${host}`));
  response.headers.set('x-frame-options', 'DENY');
  response.headers.set('referrer-policy', 'no-referrer');
}

export function runPagesPlugin(): Plugin {
  const assets = loadAssets();
  return {
    // GraphiQL's page (rendered by yoga) runs one inline script, allowed by its hash (graphiql-page.ts), and may not
    // be framed. An answer for a path that is nothing (404) gets the pages' headers too.
    // Synchronous for every answer but GraphiQL's page: this hook runs on every GraphQL response.
    onResponse({ request, response }) {
      if (response.status === 404) {
        for (const [name, value] of Object.entries(RUN_PAGE_SECURITY_HEADERS)) if (!response.headers.has(name)) response.headers.set(name, value);
        return;
      }
      if (!(response.headers.get('content-type') ?? '').startsWith('text/html')) return;
      response.headers.set('x-content-type-options', 'nosniff');
      if (!response.headers.has('content-security-policy')) return secureGraphiQLPage(request, response);
    },
    onRequest({ request, url, endResponse, fetchAPI }) {
      if (request.method !== 'GET' && request.method !== 'HEAD') return;
      const path = url.pathname === '/runs/' || RUN_PATH.test(url.pathname) ? '/runs' : url.pathname;
      const asset = assets.get(path);
      if (!asset) return;
      endResponse(
        new fetchAPI.Response(request.method === 'HEAD' ? null : asset.body, {
          status: 200,
          headers: {
            'content-type': asset.type,
            // The pages change with the server's version; a reload must not mix an old module with a new one.
            'cache-control': 'no-cache',
            ...RUN_PAGE_SECURITY_HEADERS,
          },
        }),
      );
    },
  };
}
