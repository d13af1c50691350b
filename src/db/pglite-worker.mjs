// Runs PGlite off the main thread: a runaway statement cannot block the server, and the host can
// terminate this worker to enforce a timeout that PGlite itself cannot (it has no timer interrupts).
import { parentPort, workerData } from 'node:worker_threads';
import { PGlite } from '@electric-sql/pglite';

const identity = (value) => value;

function serializeError(error) {
  const fields = ['message', 'code', 'detail', 'hint', 'position', 'severity', 'where', 'schema', 'table', 'column', 'constraint'];
  const serialized = { name: error?.name ?? 'Error' };
  for (const field of fields) {
    if (error && error[field] !== undefined) serialized[field] = String(error[field]);
  }
  serialized.message ??= String(error);
  return serialized;
}

async function main() {
  // The host says when to open the data directory: after the worker this one replaces has exited.
  await new Promise((resolve) => parentPort.once('message', resolve));
  let database;
  try {
    database = await PGlite.create(workerData.dataDir);
  } catch (error) {
    parentPort.postMessage({ type: 'init-error', error: serializeError(error) });
    return;
  }
  parentPort.postMessage({ type: 'ready' });
  // One request at a time, in the order they were posted: the host pipelines a transaction's statements (posts
  // the next before the answer to the one before it), and each must run after the one before it has ended.
  let previous = Promise.resolve();
  parentPort.on('message', (request) => {
    previous = previous.then(() => handle(request));
  });

  async function handle(request) {
    try {
      let result;
      if (request.op === 'query') {
        const parsers = Object.fromEntries((request.rawTypes ?? []).map((oid) => [oid, identity]));
        const { rows, fields, affectedRows } = await database.query(request.sql, request.params ?? [], {
          rowMode: request.rowMode ?? 'object',
          parsers,
        });
        result = { rows, fields, affectedRows };
      } else if (request.op === 'exec') {
        const results = await database.exec(request.sql);
        result = results.map(({ rows, fields, affectedRows }) => ({ rows, fields, affectedRows }));
      } else if (request.op === 'checkpoint') {
        // Without a checkpointer process only max_wal_size (1 GB) would bound what a restart replays.
        const { rows } = await database.query('SELECT (pg_current_wal_insert_lsn() - redo_lsn)::float8 AS behind FROM pg_control_checkpoint()');
        result = Number(rows[0].behind) > request.aboveBytes;
        if (result) await database.exec('CHECKPOINT');
      } else if (request.op === 'memory') {
        // The WebAssembly memory PGlite runs in is this thread's external memory.
        result = process.memoryUsage().external;
      } else if (request.op === 'close') {
        await database.close();
        result = null;
      } else {
        throw new Error(`unknown operation ${request.op}`);
      }
      parentPort.postMessage({ type: 'response', id: request.id, ok: true, result });
    } catch (error) {
      parentPort.postMessage({ type: 'response', id: request.id, ok: false, error: serializeError(error) });
    }
  }
}

void main();
