import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Plugin } from 'graphql-yoga';
import type { Registry } from 'prom-client';
import type { Logger } from '../logger.js';

/** What GET /ready answers: 200 when ready, 503 with the reason as text otherwise. */
export interface Readiness {
  ready: boolean;
  reason: string;
}

export interface MetricsEndpointOptions {
  registry: Registry;
  /** When set, a scrape must send `Authorization: Bearer <token>`. */
  token?: string;
}

interface PlainResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

const digest = (text: string) => createHash('sha256').update(text).digest();

function authorized(authorization: string | null | undefined, token: string | undefined): boolean {
  if (token === undefined) return true;
  const match = /^Bearer\s+(.+)$/i.exec(authorization ?? '');
  // Compared as digests: equal lengths, and the time taken says nothing about the token.
  return match !== null && timingSafeEqual(digest(match[1]!.trim()), digest(token));
}

/** GET /metrics: the registry in Prometheus' text format, or 401 without the token. */
export async function scrape({ registry, token }: MetricsEndpointOptions, authorization: string | null | undefined): Promise<PlainResponse> {
  if (!authorized(authorization, token)) {
    return {
      status: 401,
      headers: { 'content-type': 'text/plain; charset=utf-8', 'www-authenticate': 'Bearer realm="stepcast metrics"' },
      body: 'a bearer token is required (STEPCAST_METRICS_TOKEN)\n',
    };
  }
  return { status: 200, headers: { 'content-type': registry.contentType }, body: await registry.metrics() };
}

export function readinessResponse({ ready, reason }: Readiness): PlainResponse {
  return { status: ready ? 200 : 503, headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' }, body: `${reason}\n` };
}

/** Serves GET /metrics on the GraphQL port, before yoga parses anything. */
export function useMetricsEndpoint(options: MetricsEndpointOptions, endpoint = '/metrics'): Plugin {
  return {
    onRequest({ url, request, fetchAPI, endResponse }) {
      if (url.pathname !== endpoint) return undefined;
      return scrape(options, request.headers.get('authorization')).then(({ status, headers, body }) => {
        endResponse(new fetchAPI.Response(body, { status, headers }));
      });
    },
  };
}

export interface ObservabilityListener {
  /** The address it is bound to. */
  address: string;
  port: number;
  close(): Promise<void>;
}

/**
 * A listener of its own for GET /metrics, /health and /ready (STEPCAST_METRICS_PORT): how a worker, which serves no
 * GraphQL, is scraped and probed, and how any process keeps metrics off its public port.
 */
export async function startObservabilityListener({
  port,
  host,
  metrics,
  readiness,
  logger,
}: {
  port: number;
  host: string;
  metrics: MetricsEndpointOptions;
  readiness: () => Promise<Readiness>;
  logger: Logger;
}): Promise<ObservabilityListener> {
  const answer = async (method: string | undefined, path: string, authorization: string | undefined): Promise<PlainResponse> => {
    if (method !== 'GET' && method !== 'HEAD') return { status: 405, headers: { allow: 'GET, HEAD' }, body: '' };
    if (path === '/metrics') return scrape(metrics, authorization);
    // As on the GraphQL port (yoga's health check): 200 with no body.
    if (path === '/health') return { status: 200, headers: {}, body: '' };
    if (path === '/ready') return readinessResponse(await readiness());
    return { status: 404, headers: { 'content-type': 'text/plain; charset=utf-8' }, body: 'not found\n' };
  };
  const server = createServer((request, response) => {
    const path = new URL(request.url ?? '/', 'http://listener').pathname;
    answer(request.method, path, request.headers.authorization).then(
      ({ status, headers, body }) => {
        response.writeHead(status, headers);
        response.end(request.method === 'HEAD' ? undefined : body);
      },
      (error: unknown) => {
        logger.error({ err: error, path }, 'metrics listener failed to answer');
        response.writeHead(500);
        response.end();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  return {
    address: address.address,
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
