// Run by `npm install` (postinstall). postgres.js 3.4.9 writes to a connection's socket after it closed
// (porsager/postgres#1154, #1208): a query sent on a connection whose backend died, which is what sql.begin()'s
// own ROLLBACK does when the backend is terminated or the server restarts mid-transaction, throws
// `TypeError: Cannot read properties of null (reading 'write')` from a setImmediate, and the process exits.
// This patches the installed driver in place so that such a query is rejected with CONNECTION_CLOSED instead, and
// so that a reserve()d connection that closed can neither be released back into the pool (where the next query
// found a connection with no socket) nor carry queries into the session it was reopened for, and so that a query
// sent between a socket's 'error' and its 'close' is rejected rather than left waiting forever, and so that a
// query's cancel request that cannot be sent is not an unhandled rejection.
// It also sends a query whose parameters all have their types in one flight, without describing it first, and
// keeps a connection's first read of the array types from becoming an unhandled rejection when its backend dies.
// Idempotent; fails loudly when the driver's text is not what it was written for (a new version: re-check
// the issues, then drop or update this patch).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const MARKER = 'stepcast patch (porsager/postgres#1208)';
const EXPECTED_VERSION = '3.4.9';
const TYPED_MARKER = 'stepcast patch: typed parameters in one flight';
const TYPES_MARKER = 'stepcast patch: a failed read of the array types is not an unhandled rejection';

/** [what the driver has, what it gets]: each must occur exactly once in its file. */
const CONNECTION_EDITS = [
  // The one guard that matters: nothing is written for a query on a connection with no socket; the query is
  // rejected (settled, not dropped, or its caller would wait forever). true keeps the pool from parking the
  // connection in its `full` queue, where nothing would ever take it out again.
  [
    `    if (terminated)
      return queryError(q, Errors.connection('CONNECTION_DESTROYED', options))
`,
    `    if (terminated)
      return queryError(q, Errors.connection('CONNECTION_DESTROYED', options))

    // ${MARKER}: a closed connection has no socket to write to
    if (socket === null)
      return (queryError(q, Errors.connection('CONNECTION_CLOSED', options)), true)
`,
  ],
  // Behind it, a write that still finds no socket settles what was waiting instead of throwing from a timer.
  [
    `  function nextWrite(fn) {
    const x = socket.write(chunk, fn)
`,
    `  function nextWrite(fn) {
    // ${MARKER}: never throw from a timer with no caller to catch it
    if (socket === null) {
      nextWriteTimer !== null && clearImmediate(nextWriteTimer)
      chunk = nextWriteTimer = null
      error(Errors.connection('CONNECTION_CLOSED', options))
      return true
    }
    const x = socket.write(chunk, fn)
`,
  ],
  // A closed socket's unsent bytes belong to the dead session, and a cleared timer left non-null would stop
  // every later write from being scheduled (the reconnected session's startup message would never be sent).
  [
    `    incomings = null
    clearImmediate(nextWriteTimer)
    socket.removeListener('data', data)
`,
    `    incomings = null
    clearImmediate(nextWriteTimer)
    chunk = nextWriteTimer = null // ${MARKER}
    socket.removeListener('data', data)
`,
  ],
  // After a socket error, error() rejected what was waiting then; a query sent between the socket's 'error' and
  // its 'close' (a reserved connection released and reused at once) was in nobody's hands and waited forever.
  [
    `    !hadError && (query || sent.length) && error(Errors.connection('CONNECTION_CLOSED', options, socket))
`,
    `    ;(query || sent.length) && error(Errors.connection('CONNECTION_CLOSED', options, socket)) // ${MARKER}
`,
  ],
  // Not a bug fix: a query with parameters waits for the server to describe them (Parse, Describe, Flush) before
  // it binds them, a round trip of its own that also holds back every query pipelined behind it. When every
  // parameter's type is given (sql.typed, or one postgres.js infers), the server takes the types from Parse and
  // describes nothing postgres.js needs: the query is parsed, bound and run in one flight, as one without
  // parameters is.
  [
    `    q.describeFirst = q.onlyDescribe || (parameters.length && !q.prepared)
`,
    `    q.describeFirst = q.onlyDescribe || (parameters.length && !q.prepared && !types.every(Boolean)) // ${TYPED_MARKER}
`,
  ],
  // Every new connection first reads the array types; that promise was dropped, so a backend that dies during it
  // (a restart, pg_terminate_backend) was an unhandled rejection, which ends the process. The connection's close
  // fails its waiting query, so the rejection needs no other handling.
  [
    `        return fetchArrayTypes()
`,
    `        return fetchArrayTypes().catch(() => undefined) // ${TYPES_MARKER}
`,
  ],
];

const INDEX_EDITS = [
  // onclose() sets c.reserved = null: the reservation ended with its connection, whatever was reopened since.
  [
    `    c.reserved.release = true

    const sql = Sql(handler)
    sql.release = () => {
      c.reserved = null
      onopen(c)
    }
`,
    `    c.reserved.release = true
    const reservation = c.reserved // ${MARKER}

    const sql = Sql(handler)
    sql.release = () => {
      if (c.reserved !== reservation) return // ${MARKER}: closed while reserved, back in the pool already
      c.reserved = null
      onopen(c)
    }
`,
  ],
  [
    `    function handler(q) {
      c.queue === full
        ? queue.push(q)
        : c.execute(q) || move(c, full)
    }
  }
`,
    `    function handler(q) {
      if (c.reserved !== reservation) // ${MARKER}: never into the session of whoever the connection serves now
        return q.reject(Errors.connection('CONNECTION_CLOSED', options))
      c.queue === full
        ? queue.push(q)
        : c.execute(q) || move(c, full)
    }
  }
`,
  ],
];

const QUERY_EDITS = [
  // query.cancel() drops the promise of the cancel request it sends on a new connection: when that connection
  // cannot be made (the server refuses connections, a DNS blip), the rejection is unhandled and the process exits.
  [
    `  cancel() {
    return this.canceller && (this.canceller(this), this.canceller = null)
  }
`,
    `  cancel() {
    // ${MARKER}: a cancel that cannot be sent is not the process's end; the caller may cancel another way
    return this.canceller && (this.canceller(this).catch(() => undefined), this.canceller = null)
  }
`,
  ],
];

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const driver = join(root, 'node_modules', 'postgres');

function fail(message) {
  console.error(`patch-postgres: ${message}`);
  process.exit(1);
}

if (!existsSync(driver)) fail(`${driver} is missing: run npm install first`);
const { version } = JSON.parse(readFileSync(join(driver, 'package.json'), 'utf8'));
if (version !== EXPECTED_VERSION) {
  fail(`postgres ${version} is installed, this patch is for ${EXPECTED_VERSION}: check whether porsager/postgres#1208 is fixed, then update or remove scripts/patch-postgres.mjs`);
}

// The ESM build (import), the CommonJS build (require) and the Cloudflare build share this code.
const FILES = ['src', 'cjs/src', 'cf/src'].flatMap((dir) => [
  [`${dir}/connection.js`, CONNECTION_EDITS],
  [`${dir}/index.js`, INDEX_EDITS],
  [`${dir}/query.js`, QUERY_EDITS],
]);
for (const [file, edits] of FILES) {
  const path = join(driver, file);
  if (!existsSync(path)) fail(`${path} is missing`);
  const original = readFileSync(path, 'utf8');
  let text = original;
  // Edit by edit, so that a driver patched by an earlier version of this script gets only what it lacks.
  for (const [before, after] of edits) {
    if (text.split(after).length - 1 === 1) continue;
    const occurrences = text.split(before).length - 1;
    if (occurrences !== 1) fail(`${path}: expected the text below exactly once, found it ${occurrences} times (reinstall postgres):\n${before}`);
    text = text.replace(before, after);
  }
  if (text === original) continue;
  writeFileSync(path, text);
  console.log(`patch-postgres: patched ${file}`);
}
