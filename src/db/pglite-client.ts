import { Worker } from 'node:worker_threads';

export interface PgliteField {
  name: string;
  dataTypeID: number;
}

export interface PgliteResult<Row = unknown> {
  rows: Row[];
  fields: PgliteField[];
  affectedRows?: number;
}

export interface PgliteQueryOptions {
  rowMode?: 'object' | 'array';
  /** Type OIDs whose text form is returned as is (drizzle passes identity parsers). */
  parsers?: Record<number, unknown>;
  /** Abandon the statement after this many milliseconds by restarting the database worker. */
  timeoutMs?: number;
  /** Abandon the statement when this aborts, the same way; the query then rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface PgliteQueryable {
  query<Row = unknown>(sql: string, params?: unknown[], options?: PgliteQueryOptions): Promise<PgliteResult<Row>>;
}

export class DatabaseQueryError extends Error {
  override name = 'DatabaseQueryError';
  code?: string;
  detail?: string;
  hint?: string;
  position?: string;
  /** Where in the tenant's statement (1-based characters) the error is, when the database placed it there. */
  statementPosition?: number;
}

export class StatementTimeoutError extends Error {
  override name = 'StatementTimeoutError';
  readonly code = '57014';
  constructor(timeoutMs: number) {
    super(`canceling statement due to statement timeout (${timeoutMs} ms)`);
  }
}

interface SerializedError {
  message: string;
  code?: string;
  detail?: string;
  hint?: string;
  position?: string;
}

interface PendingRequest {
  worker: Worker;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
}

type WorkerMessage =
  | { type: 'ready' }
  | { type: 'init-error'; error: SerializedError }
  | { type: 'response'; id: number; ok: true; result: unknown }
  | { type: 'response'; id: number; ok: false; error: SerializedError };

function toQueryError(serialized: SerializedError): DatabaseQueryError {
  return Object.assign(new DatabaseQueryError(serialized.message), serialized, { name: 'DatabaseQueryError' });
}

const workerUrl = new URL('./pglite-worker.mjs', import.meta.url);

/**
 * PGlite in a worker thread, shaped like the PGlite API that drizzle's pglite driver uses.
 * PGlite serves one connection, so every top-level query and transaction takes a turn.
 */
export class PgliteWorkerClient implements PgliteQueryable {
  private worker: Worker | undefined;
  private starting: Promise<Worker> | undefined;
  private readonly pending = new Map<number, PendingRequest>();
  private nextRequestId = 1;
  private turn: Promise<void> = Promise.resolve();
  private closed = false;

  private constructor(private readonly dataDir: string) {}

  static async open(dataDir: string): Promise<PgliteWorkerClient> {
    const client = new PgliteWorkerClient(dataDir);
    await client.ensureWorker();
    return client;
  }

  query<Row = unknown>(sql: string, params: unknown[] = [], options: PgliteQueryOptions = {}): Promise<PgliteResult<Row>> {
    return this.inTurn(() => this.send<PgliteResult<Row>>(queryRequest(sql, params, options), options), options.signal);
  }

  /** Runs a multi-statement script in one transaction, rolled back if any statement fails. */
  execInTransaction(script: string): Promise<void> {
    return this.inTurn(async () => {
      try {
        await this.send({ op: 'exec', sql: `BEGIN;\n${script}\nCOMMIT;` });
      } catch (error) {
        await this.send({ op: 'exec', sql: 'ROLLBACK' }).catch(() => undefined);
        throw error;
      }
    });
  }

  /** Aborting `signal` while the transaction waits for its turn rejects at once, and the transaction never runs. */
  transaction<T>(work: (tx: PgliteQueryable) => Promise<T>, signal?: AbortSignal): Promise<T> {
    return this.inTurn(async () => {
      const tx: PgliteQueryable = {
        query: <Row>(sql: string, params: unknown[] = [], options: PgliteQueryOptions = {}) =>
          this.send<PgliteResult<Row>>(queryRequest(sql, params, options), options),
      };
      const worker = await this.ensureWorker();
      await this.sendTo(worker, queryRequest('BEGIN', [], {}));
      try {
        const result = await work(tx);
        await this.send(queryRequest('COMMIT', [], {}));
        return result;
      } catch (error) {
        // A statement abandoned by restarting the worker took the transaction with it.
        if (this.worker === worker) await this.send(queryRequest('ROLLBACK', [], {})).catch(() => undefined);
        throw error;
      }
    }, signal);
  }

  /**
   * Checkpoints when more than `bytes` of WAL were written since the last checkpoint: a restarted worker
   * replays that much before it answers (about a second per 100 MB), and PGlite has no checkpointer to
   * bound it. True when it checkpointed.
   */
  checkpointAbove(bytes: number, signal?: AbortSignal): Promise<boolean> {
    return this.inTurn(() => this.send<boolean>({ op: 'checkpoint', aboveBytes: bytes }), signal);
  }

  /**
   * WebAssembly memory never shrinks: once statements made the database grow past maxBytes, the
   * worker is restarted (the database closed first) to give the memory back. True when it was.
   */
  releaseMemoryAbove(maxBytes: number): Promise<boolean> {
    return this.inTurn(async () => {
      const worker = await this.ensureWorker();
      if ((await this.sendTo<number>(worker, { op: 'memory' })) <= maxBytes) return false;
      this.worker = undefined;
      await this.sendTo(worker, { op: 'close' }).catch(() => undefined);
      await worker.terminate();
      await this.ensureWorker();
      return true;
    });
  }

  /** Waits up to graceMs for the statement in progress; past that the worker is stopped as in a crash. */
  async close(graceMs = 5_000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    let timer: NodeJS.Timeout | undefined;
    const settled = await Promise.race([
      this.turn.then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), graceMs))),
    ]);
    clearTimeout(timer);
    const worker = this.worker;
    this.worker = undefined;
    if (!worker) return;
    if (settled) await this.sendTo(worker, { op: 'close' }).catch(() => undefined);
    await worker.terminate();
  }

  private inTurn<T>(work: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    let started = false;
    const run = this.turn.then(() => {
      if (this.closed) throw new Error('database is closed');
      signal?.throwIfAborted();
      started = true;
      return work();
    });
    this.turn = run.then(
      () => undefined,
      () => undefined,
    );
    if (!signal) return run;
    // Aborted while it waits for its turn, the caller need not wait for the queries before it.
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => {
        if (!started) reject(signal.reason);
      };
      if (signal.aborted) onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      run.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  private async send<T>(request: Record<string, unknown>, limits: Pick<PgliteQueryOptions, 'timeoutMs' | 'signal'> = {}): Promise<T> {
    return this.sendTo<T>(await this.ensureWorker(), request, limits);
  }

  /**
   * PGlite cannot interrupt a statement: one that runs past timeoutMs, or is still running when `signal`
   * aborts, is abandoned by terminating the worker, and the request rejects once a new worker is up.
   */
  private async sendTo<T>(
    worker: Worker,
    request: Record<string, unknown>,
    { timeoutMs, signal }: Pick<PgliteQueryOptions, 'timeoutMs' | 'signal'> = {},
  ): Promise<T> {
    signal?.throwIfAborted();
    const id = this.nextRequestId++;
    const response = new Promise<T>((resolve, reject) => {
      this.pending.set(id, { worker, resolve: resolve as (value: unknown) => void, reject });
    });
    worker.postMessage({ ...request, id });
    if (timeoutMs === undefined && signal === undefined) return response;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const abandoned = new Promise<never>((_, reject) => {
      const abandon = (error: unknown) => {
        clearTimeout(timer);
        if (onAbort) signal?.removeEventListener('abort', onAbort);
        if (!this.pending.delete(id)) return;
        const restart = this.closed ? Promise.resolve() : this.restartWorker();
        void restart.catch(() => undefined).finally(() => reject(error));
      };
      if (timeoutMs !== undefined) timer = setTimeout(() => abandon(new StatementTimeoutError(timeoutMs)), timeoutMs);
      if (signal) {
        onAbort = () => abandon(signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
      }
    });
    try {
      return await Promise.race([response, abandoned]);
    } finally {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
  }

  private async restartWorker(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    // The next worker starts while this one exits, and opens the data directory once it is gone.
    await this.ensureWorker(worker?.terminate());
  }

  private ensureWorker(previousExit?: Promise<unknown>): Promise<Worker> {
    if (this.worker) return Promise.resolve(this.worker);
    if (this.closed) return Promise.reject(new Error('database is closed'));
    this.starting ??= this.startWorker(previousExit).finally(() => {
      this.starting = undefined;
    });
    return this.starting;
  }

  private startWorker(previousExit: Promise<unknown> = Promise.resolve()): Promise<Worker> {
    return new Promise<Worker>((resolve, reject) => {
      const worker = new Worker(workerUrl, { workerData: { dataDir: this.dataDir } });
      // Two workers must never have the data directory open at once.
      void previousExit.then(
        () => worker.postMessage({ op: 'open' }),
        () => worker.postMessage({ op: 'open' }),
      );
      let ready = false;
      worker.on('message', (message: WorkerMessage) => {
        if (message.type === 'ready') {
          ready = true;
          this.worker = worker;
          resolve(worker);
        } else if (message.type === 'init-error') {
          reject(toQueryError(message.error));
          void worker.terminate();
        } else {
          const request = this.pending.get(message.id);
          if (!request) return;
          this.pending.delete(message.id);
          if (message.ok) request.resolve(message.result);
          else request.reject(toQueryError(message.error));
        }
      });
      worker.on('error', (error) => {
        if (!ready) reject(error);
      });
      worker.on('exit', () => {
        if (this.worker === worker) this.worker = undefined;
        if (!ready) reject(new Error('database worker exited while starting'));
        for (const [id, request] of this.pending) {
          if (request.worker !== worker) continue;
          this.pending.delete(id);
          request.reject(new Error('database worker stopped'));
        }
      });
    });
  }
}

function queryRequest(sql: string, params: unknown[], options: PgliteQueryOptions): Record<string, unknown> {
  return {
    op: 'query',
    sql,
    params,
    rowMode: options.rowMode ?? 'object',
    rawTypes: Object.keys(options.parsers ?? {}).map(Number),
  };
}
