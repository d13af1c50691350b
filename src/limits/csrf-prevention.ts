import { GraphQLError } from 'graphql';
import type { Plugin } from 'graphql-yoga';

export const UNSUPPORTED_MEDIA_TYPE = 'UNSUPPORTED_MEDIA_TYPE';
export const CSRF_HEADER_REQUIRED = 'CSRF_HEADER_REQUIRED';

/** Bodies a browser can only send cross-site after a CORS preflight: none of them is a "simple" content type. */
const OPERATION_CONTENT_TYPES = ['application/json', 'application/graphql+json', 'application/graphql'];

/** The header graphql-yoga's own CSRF plugin asks GET requests for; any header a form cannot set would do. */
export const CSRF_HEADER = 'x-graphql-yoga-csrf';

/** The media type without parameters ("application/json; charset=utf-8" is application/json), lower case. */
function mediaTypeOf(request: Request): string {
  return (request.headers.get('content-type') ?? '').split(/[;,]/)[0]!.trim().toLowerCase();
}

/**
 * CSRF prevention, the rule of graphql-yoga's CSRF-prevention plugin made stricter: a browser sends form-encoded,
 * multipart and text/plain bodies cross-site without asking (no CORS preflight), so
 * - a body runs an operation only as JSON or GraphQL; anything else is refused with HTTP 415 UNSUPPORTED_MEDIA_TYPE
 *   before it is read (yoga itself would run a form-encoded or multipart mutation);
 * - a GET (queries only: yoga refuses mutations over GET) runs only with a header no form or link can add:
 *   `Authorization` (every authenticated client sends it) or `x-graphql-yoga-csrf`; otherwise HTTP 403
 *   CSRF_HEADER_REQUIRED. With authentication off, that keeps another site's page from spending the demo
 *   tenant's model budget through planQuery.
 * /health, /ready and the GraphiQL page are answered before request parsing, so they are not affected.
 */
export function csrfPreventionPlugin(): Plugin {
  return {
    onRequestParse({ request }) {
      if (request.method === 'GET') {
        if (request.headers.has('authorization') || request.headers.has(CSRF_HEADER)) return;
        throw new GraphQLError(
          `A GET request runs an operation only with an Authorization or ${CSRF_HEADER} header (CSRF prevention); or POST it as application/json.`,
          { extensions: { code: CSRF_HEADER_REQUIRED, http: { status: 403 } } },
        );
      }
      const mediaType = mediaTypeOf(request);
      if (OPERATION_CONTENT_TYPES.includes(mediaType)) return;
      throw new GraphQLError(
        `A request body runs an operation only as application/json or application/graphql, not ${mediaType || 'without a Content-Type'} (CSRF prevention).`,
        { extensions: { code: UNSUPPORTED_MEDIA_TYPE, http: { status: 415 } } },
      );
    },
  };
}
