// What the fan-out bench's two subscriber harnesses share (bench/fanout-clients.ts with graphql-ws's client,
// bench/fanout-clients-raw.ts with bare sockets): the commands and reports over IPC, each subscriber's record, the
// count of subscribers ready and ended, and connecting in batches.
import { performance } from 'node:perf_hooks';

export type ClientCommand =
  | {
      type: 'subscribe';
      wsUrl: string;
      executionId: string;
      count: number;
      query: string;
      readyType: string;
      /** Sent as connectionParams when the server wants an API key. */
      authorization?: string;
    }
  | { type: 'close' };

/**
 * Per subscriber: the sequences received and when (performance.timeOrigin + performance.now(), ms), each update's `at`
 * (ms since the epoch, when the query selects it), and its error.
 */
export interface ClientRecord {
  sequences: number[];
  times: number[];
  ats: number[];
  error?: string;
}

export type ClientReport =
  | { type: 'ready' }
  | { type: 'done'; clients: ClientRecord[] }
  | { type: 'closed' }
  | { type: 'failed'; error: string };

export const now = () => performance.timeOrigin + performance.now();
export const report = (message: ClientReport) => process.send!(message);

/** Records an update a subscriber received at `time`. */
export function recordUpdate(record: ClientRecord, update: { sequence: number; at?: string }, time: number): void {
  record.sequences.push(update.sequence);
  record.times.push(time);
  record.ats.push(update.at ? Date.parse(update.at) : Number.NaN);
}

/** One subscriber's progress: `markReady` once it has replayed up to the ready update, `end` once its stream is over. */
export interface Tracked {
  record: ClientRecord;
  isReady(): boolean;
  markReady(): void;
  end(error?: string): void;
}

/**
 * The subscribers of one command: reports `ready` once every one is ready, and calls `onAllEnded` once every one has
 * ended (each counts once, however often its transport reports an end).
 */
export class Subscribers {
  readonly records: ClientRecord[];
  private ready = 0;
  private ended = 0;

  constructor(
    private readonly count: number,
    private readonly onAllEnded: (records: ClientRecord[]) => void,
  ) {
    this.records = Array.from({ length: count }, () => ({ sequences: [], times: [], ats: [] }));
  }

  /** Subscriber `i`; `opened` is called once it is ready (or ended before). */
  track(i: number, opened: () => void): Tracked {
    const record = this.records[i]!;
    let isReady = false;
    let ended = false;
    const markReady = () => {
      if (isReady) return;
      isReady = true;
      this.ready += 1;
      opened();
      if (this.ready === this.count) report({ type: 'ready' });
    };
    return {
      record,
      isReady: () => isReady,
      markReady,
      end: (error) => {
        if (ended) return;
        ended = true;
        if (error) record.error ??= error;
        markReady();
        this.ended += 1;
        if (this.ended === this.count) this.onAllEnded(this.records);
      },
    };
  }
}

/** Opens `count` subscribers 50 at a time: a thousand handshakes at once would measure the accept queue, not the fan-out. */
export async function openInBatches(count: number, open: (i: number) => Promise<void>): Promise<void> {
  const batch = 50;
  for (let start = 0; start < count; start += batch) {
    await Promise.all(Array.from({ length: Math.min(count, start + batch) - start }, (_, k) => open(start + k)));
  }
}

/** Serves the bench's commands: a subscribe (a failure is reported), and a close that reports `closed` once done. */
export function serveCommands(subscribe: (command: Extract<ClientCommand, { type: 'subscribe' }>) => Promise<void>, closeAll: () => Promise<unknown>): void {
  process.on('message', (command: ClientCommand) => {
    if (command.type === 'subscribe') subscribe(command).catch((error: unknown) => report({ type: 'failed', error: String(error) }));
    else if (command.type === 'close') void closeAll().then(() => report({ type: 'closed' }));
  });
}
