import type { Plugin, YogaServerOptions } from 'graphql-yoga';
import { CSRF_HEADER } from './csrf-prevention.js';

type CorsOption = NonNullable<YogaServerOptions<Record<string, unknown>, Record<string, unknown>>['cors']>;

/** How long a browser may reuse a preflight answer. */
const PREFLIGHT_MAX_AGE_SECONDS = 600;

/**
 * yoga's `cors` option for a list of exact origins (config.http.corsOrigins). A listed origin may send GET and POST
 * with the headers clients need (Authorization, Content-Type, the CSRF header); any other origin gets no CORS header
 * at all, so its pages can neither pass a preflight nor read an answer. Credentials are never allowed: clients
 * authenticate with a bearer token they add themselves, not with cookies a browser would add for them.
 * (yoga's default reflects every Origin, with Access-Control-Allow-Credentials: true.)
 */
export function corsForOrigins(origins: readonly string[]): CorsOption {
  const allowed = new Set(origins);
  return (request: Request) => {
    const origin = request.headers.get('origin');
    if (origin === null || !allowed.has(origin)) return false;
    return {
      origin,
      methods: ['GET', 'POST'],
      allowedHeaders: ['authorization', 'content-type', CSRF_HEADER],
      credentials: false,
      maxAge: PREFLIGHT_MAX_AGE_SECONDS,
    };
  };
}

/** The CORS headers of an answer depend on the request's Origin: a shared cache must not hand one origin's to another. */
export const varyOnOrigin: Plugin = {
  onResponse({ response }) {
    response.headers.append('vary', 'Origin');
  },
};
