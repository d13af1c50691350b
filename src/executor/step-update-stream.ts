import { isFinished, isTerminalUpdate, type ExecutionStatus, type StepUpdate } from './step-update.js';
import type { StepUpdateBus } from './step-update-bus.js';
import type { ExecutionStore } from './store.js';

const MAX_BUFFERED_LIVE_UPDATES = 1_000;

/** Ends a stream instead of an update: the subscriber may no longer see this execution's updates. */
export interface StreamDenied {
  denied: 'credential' | 'tenant';
}

export function isStreamDenied(item: StepUpdate | StreamDenied): item is StreamDenied {
  return 'denied' in item;
}

/**
 * A stream's slot (a symbol, so that only code that knows it sets it) for a consumer that delivers live updates
 * itself: set, it is offered each live update that the consumer could be handed at once, while the consumer waits for
 * one (see streamStepUpdates). True means it delivered the update, false (or a throw) that the update goes the usual
 * way, through next(). A property, not a method: a thousand idle streams hold no function for it.
 */
export const liveUpdateTaker = Symbol('stepcast.liveUpdateTaker');

export type LiveUpdateTaker = (update: StepUpdate) => boolean;

export interface LiveUpdateOffers {
  [liveUpdateTaker]: LiveUpdateTaker | undefined;
}

export function offersLiveUpdates(iterator: object): iterator is LiveUpdateOffers {
  return liveUpdateTaker in iterator;
}

export interface StreamAccess {
  /** The tenant the subscriber acts for: every update is checked against it before it is sent. */
  tenantId: string;
  /** Asked before every update: false once the subscriber's credential was revoked or has expired. */
  stillAuthorized?: () => boolean;
  /** Aborted when the credential stops standing, so that a quiet stream ends too. */
  revoked?: AbortSignal;
  /**
   * The same as `revoked`, without an AbortController per stream: called as the stream starts listening with what to
   * call once the credential stops standing; what it returns is called as the stream ends.
   */
  watchRevocation?: (onRevoked: () => void) => () => void;
}

/**
 * Stored updates after `afterSequence`, then live ones, in sequence order with no gap and no
 * duplicate. Live updates that arrive out of turn (while the replay reads, or after a slow
 * consumer overflowed its buffer) are filled in from the store, which holds every committed update.
 * When the bus says it may have lost updates (onGap: a bus between processes whose Redis went away),
 * the store is read again after the last update handed out, as the replay reads it: a stream still
 * completes after the terminal update when its message never came.
 *
 * Pulled, not pushed: nothing runs between the consumer's calls to next() but the bus listener, and a quiet stream
 * holds a buffer, a few closures and the one pending next() (a thousand idle subscriptions are held in memory at
 * once). The bus is listened to from the first next() (before the replay reads) until the stream ends.
 *
 * Handed over at once ([liveUpdateTaker]): a consumer that can deliver an update itself, synchronously, is offered
 * each live update in the bus listener instead of having it go through next() and the promises of every layer above,
 * but only when next() would hand out exactly that update now: the consumer waits in next() (so it has delivered
 * everything before), nothing is buffered or ready, the replay is done, no gap is suspected, and the update is the
 * next sequence and passes the same checks as next()'s (tenant, credential). What the consumer declines goes through
 * next(), and updates after it wait their turn behind it. A terminal update handed over ends the stream: the waiting
 * next() answers done, after it.
 */
export function streamStepUpdates({
  store,
  bus,
  executionId,
  afterSequence,
  shutdown,
  access,
  onClose,
  readBefore,
}: {
  store: ExecutionStore;
  bus: StepUpdateBus;
  executionId: string;
  afterSequence: number;
  /**
   * The execution as the caller read it just before opening the stream (to check that it may): the first replay
   * decides from it whether more updates can come, instead of reading it again.
   */
  readBefore?: { status: string; lastSequence: number };
  shutdown: AbortSignal;
  access: StreamAccess;
  /** Called once the stream has ended, however it ended (completed, client gone, shutdown). */
  onClose?: () => void;
}): AsyncIterableIterator<StepUpdate | StreamDenied> & LiveUpdateOffers {
  /** Live updates from the bus, not yet looked at. */
  let buffered: StepUpdate[] = [];
  /** Contiguous updates after the last one handed out, up to lastSequence; checked as each is handed out. */
  let ready: StepUpdate[] = [];
  let lastSequence = afterSequence;
  let wake: (() => void) | undefined;
  let denied: StreamDenied | undefined;
  let started = false;
  let replayed = false;
  /** The bus may have lost updates since the store was last read: it is read again at the next pull. */
  let gapped = false;
  /** Nothing more comes after `ready`: the terminal update is in it, or the execution had ended. */
  let ending = false;
  let closed = false;
  let unsubscribe: (() => void) | undefined;
  let unwatchRevocation: (() => void) | undefined;
  /** The next() being answered: calls run one after another. */
  let pulling: Promise<unknown> | undefined;

  // Methods of one object rather than `const f = () => …`: tsx (esbuild's keepNames) gives every named function
  // expression its name with Object.defineProperty, which costs each of them a dictionary of properties (about
  // 250 bytes), per stream; shorthand methods are left as they are.
  const self = {
    onRevoked() {
      denied = { denied: 'credential' };
      wake?.();
    },
    onGap() {
      gapped = true;
      wake?.();
    },
    onLive(live: StepUpdate) {
      const take = stream[liveUpdateTaker];
      // `wake` is set while a next() waits, and stays set until it resumes; whatever woke it also set one of the
      // conditions after it (buffered, gapped, denied, ending, closed), so a woken next() is offered nothing. A waiting
      // next() has handed out everything up to lastSequence and looked at every buffered update.
      if (
        take &&
        wake &&
        buffered.length === 0 &&
        !gapped &&
        !denied &&
        !ending &&
        live.sequence === lastSequence + 1 &&
        // next()'s own checks, before anything is handed out.
        live.tenantId === access.tenantId &&
        (!access.stillAuthorized || access.stillAuthorized())
      ) {
        let taken = false;
        try {
          taken = take(live);
        } catch {
          // Not taken: it goes through next(), which meets the same failure where it is reported.
        }
        if (taken) {
          lastSequence = live.sequence;
          if (isTerminalUpdate(live.type)) {
            ending = true;
            wake();
          }
          return;
        }
      }
      buffered.push(live);
      if (buffered.length > MAX_BUFFERED_LIVE_UPDATES) buffered = buffered.slice(-1);
      wake?.();
    },
    close() {
      if (closed) return;
      closed = true;
      unsubscribe?.();
      shutdown.removeEventListener('abort', self.close);
      access.revoked?.removeEventListener('abort', self.onRevoked);
      unwatchRevocation?.();
      buffered = [];
      ready = [];
      stream[liveUpdateTaker] = undefined;
      wake?.();
      onClose?.();
    },
    done(): IteratorResult<StepUpdate | StreamDenied> {
      self.close();
      return { done: true, value: undefined };
    },
    deny(reason: StreamDenied): IteratorResult<StepUpdate | StreamDenied> {
      ending = true;
      ready = [];
      return { done: false, value: reason };
    },

    /** Puts `updates` in `ready` in sequence, filling gaps from the store; true once the terminal update is in. */
    async accept(updates: readonly StepUpdate[]): Promise<boolean> {
      for (const update of updates) {
        if (update.sequence <= lastSequence) continue;
        if (update.sequence > lastSequence + 1) {
          const missing = await store.loadEvents(executionId, lastSequence, update.sequence - 1);
          if (await self.accept(missing)) return true;
          if (update.sequence !== lastSequence + 1) continue;
        }
        ready.push(update);
        lastSequence = update.sequence;
        if (isTerminalUpdate(update.type)) return true;
      }
      return false;
    },

    /** The stored updates; true when nothing comes after them. */
    async replay(): Promise<boolean> {
      if (await self.accept(await store.loadEvents(executionId, lastSequence))) return true;
      const known = readBefore;
      readBefore = undefined;
      if (known) {
        // Unfinished when read, before the bus was listened to: its later updates are among the events just read or
        // come through the bus (it could have been deleted meanwhile only if it had finished, and stayed finished for
        // the retention age, between that read and this first pull). Finished: its last sequence is final, and the
        // events read reach it unless it was deleted since, which the read below tells.
        if (!isFinished(known.status as ExecutionStatus)) return false;
        if (lastSequence >= known.lastSequence) return true;
      }
      const execution = await store.loadExecution(executionId);
      return !execution || (isFinished(execution.status as ExecutionStatus) && lastSequence >= execution.lastSequence);
    },

    start() {
      started = true;
      // Returned before its first next(): nothing to listen for.
      if (closed) return;
      if (shutdown.aborted) return self.close();
      unsubscribe = bus.subscribe(executionId, self.onLive, self.onGap);
      shutdown.addEventListener('abort', self.close);
      if (access.revoked?.aborted) self.onRevoked();
      access.revoked?.addEventListener('abort', self.onRevoked);
      unwatchRevocation = access.watchRevocation?.(self.onRevoked);
    },

    async pull(): Promise<IteratorResult<StepUpdate | StreamDenied>> {
      for (;;) {
        if (closed) return { done: true, value: undefined };
        if (denied) return ending && ready.length === 0 ? self.done() : self.deny(denied);
        const update = ready.shift();
        if (update) {
          // Checked per update as it is handed out, not only at subscribe time: a revoked key or a foreign row ends the stream.
          if (update.tenantId !== access.tenantId) return self.deny({ denied: 'tenant' });
          if (access.stillAuthorized && !access.stillAuthorized()) return self.deny({ denied: 'credential' });
          if (isTerminalUpdate(update.type)) ending = true;
          return { done: false, value: update };
        }
        if (ending) return self.done();
        // A gap before the replay is covered by it; one after is read the same way, after the last sequence handed out.
        if (!replayed || gapped) {
          replayed = true;
          gapped = false;
          if (await self.replay()) ending = true;
          continue;
        }
        if (buffered.length === 0) {
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
          continue;
        }
        const batch = buffered;
        buffered = [];
        if (await self.accept(batch)) ending = true;
      }
    },
  };

  const stream: AsyncIterableIterator<StepUpdate | StreamDenied> & LiveUpdateOffers = {
    [liveUpdateTaker]: undefined,
    [Symbol.asyncIterator]() {
      return this;
    },
    next() {
      // Listening starts with the first next(), at once: an update published before its pull runs is not missed.
      if (!started) self.start();
      const result = (pulling ? pulling.then(self.pull) : self.pull()).catch((error: unknown) => {
        self.close();
        throw error;
      });
      pulling = result.then(
        () => undefined,
        () => undefined,
      );
      return result;
    },
    // Ends at once, even while a next() waits on a quiet stream: that next() answers done.
    async return() {
      self.close();
      return { done: true, value: undefined };
    },
    async throw(error?: unknown) {
      self.close();
      throw error;
    },
  };
  return stream;
}
