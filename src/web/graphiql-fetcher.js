// GraphiQL's fetcher for stepcast, a classic script loaded after graphql-ws's browser build (window.graphqlWs).
// yoga's own fetcher opens one shared WebSocket whose connection_init carries none of the Headers tab, and retries
// a refusal (4403) forever; this one opens a socket per subscription with the tab's headers as connectionParams,
// and answers a refusal as an error GraphiQL shows.
(function () {
  'use strict';

  /** The operation the request runs: the named one, or the only one. */
  function operationType(params, documentAST) {
    const operations = (documentAST?.definitions ?? []).filter((d) => d.kind === 'OperationDefinition');
    const operation = params.operationName ? operations.find((d) => d.name?.value === params.operationName) : operations[0];
    if (operation) return operation.operation;
    return /^\s*subscription\b/m.test(params.query.replace(/#[^\n]*/g, '')) ? 'subscription' : 'query';
  }

  /** The tab's headers as connectionParams, names lower-cased (the server reads `authorization`). */
  function connectionParams(headers) {
    const params = {};
    for (const [name, value] of Object.entries(headers ?? {})) params[name.toLowerCase()] = value;
    return params;
  }

  function refusal(error) {
    if (Array.isArray(error)) return { errors: error };
    if (error && typeof error.code === 'number') {
      const reason = error.reason || 'the connection closed';
      const refused = error.code === 4403 || error.code === 4401;
      return {
        errors: [
          {
            message: refused
              ? `The server refused the WebSocket (${error.code}): ${reason}. Set "Authorization": "Bearer <key>" in the Headers tab.`
              : `The WebSocket closed (${error.code}): ${reason}`,
            extensions: { code: refused ? 'FORBIDDEN' : 'WEBSOCKET_CLOSED', closeCode: error.code },
          },
        ],
      };
    }
    return { errors: [{ message: error instanceof Error ? error.message : String(error) }] };
  }

  /**
   * A subscription as an observable, which GraphiQL unsubscribes from when Stop is clicked: the socket closes at
   * once. (An async generator's return() would wait inside for-await for the next event, and an idle subscription
   * would hold its socket, one of the tenant's few, until then.)
   */
  function subscribe(wsUrl, params, headers) {
    return {
      subscribe(sink) {
        const observer = typeof sink === 'function' ? { next: sink } : (sink ?? {});
        const client = window.graphqlWs.createClient({
          url: wsUrl,
          lazy: true,
          // A refused or lost socket is reported, not retried in silence: run the operation again to reconnect.
          retryAttempts: 0,
          connectionParams: connectionParams(headers),
        });
        let closed = false;
        let stopOperation = () => undefined;
        const close = () => {
          if (closed) return false;
          closed = true;
          stopOperation();
          client.dispose();
          return true;
        };
        stopOperation = client.subscribe(
          { query: params.query, variables: params.variables ?? undefined, operationName: params.operationName ?? undefined },
          {
            next: (result) => {
              if (!closed) observer.next?.(result);
            },
            error: (error) => {
              if (closed) return;
              observer.next?.(refusal(error));
              close();
              observer.complete?.();
            },
            complete: () => {
              if (close()) observer.complete?.();
            },
          },
        );
        if (closed) stopOperation();
        return { unsubscribe: close };
      },
    };
  }

  async function post(endpoint, params, headers) {
    const response = await fetch(endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json, application/json', ...(headers ?? {}) },
      body: JSON.stringify({ query: params.query, variables: params.variables ?? undefined, operationName: params.operationName ?? undefined }),
    });
    try {
      return await response.json();
    } catch {
      return { errors: [{ message: `The server answered HTTP ${response.status} without a GraphQL response` }] };
    }
  }

  window.stepcastGraphiQLFetcher = function stepcastGraphiQLFetcher(endpoint) {
    const httpUrl = new URL(endpoint, location.href);
    const wsUrl = new URL(httpUrl);
    wsUrl.protocol = httpUrl.protocol === 'https:' ? 'wss:' : 'ws:';
    return function fetcher(params, options) {
      const headers = options?.headers ?? {};
      if (operationType(params, options?.documentAST) === 'subscription') return subscribe(wsUrl.toString(), params, headers);
      return post(httpUrl.toString(), params, headers);
    };
  };
})();
