import { Repeater } from 'graphql-yoga';
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

export interface StreamAccess {
  /** The tenant the subscriber acts for: every update is checked against it before it is sent. */
  tenantId: string;
  /** Asked before every update: false once the subscriber's credential was revoked or has expired. */
  stillAuthorized?: () => boolean;
  /** Aborted when the credential stops standing, so that a quiet stream ends too. */
  revoked?: AbortSignal;
}

/**
 * Stored updates after `afterSequence`, then live ones, in sequence order with no gap and no
 * duplicate. Live updates that arrive out of turn (while the replay reads, or after a slow
 * consumer overflowed its buffer) are filled in from the store, which holds every committed update.
 */
export function streamStepUpdates({
  store,
  bus,
  executionId,
  afterSequence,
  shutdown,
  access,
  onClose,
}: {
  store: ExecutionStore;
  bus: StepUpdateBus;
  executionId: string;
  afterSequence: number;
  shutdown: AbortSignal;
  access: StreamAccess;
  /** Called once the stream has ended, however it ended (completed, client gone, shutdown). */
  onClose?: () => void;
}): AsyncIterable<StepUpdate | StreamDenied> {
  return new Repeater<StepUpdate | StreamDenied>(async (push, stop) => {
    let buffered: StepUpdate[] = [];
    let wake: (() => void) | undefined;
    const unsubscribe = bus.subscribe(executionId, (update) => {
      buffered.push(update);
      if (buffered.length > MAX_BUFFERED_LIVE_UPDATES) buffered = buffered.slice(-1);
      wake?.();
    });
    const onShutdown = () => stop();
    shutdown.addEventListener('abort', onShutdown);
    let denied: StreamDenied | undefined;
    const onRevoked = () => {
      denied = { denied: 'credential' };
      wake?.();
    };
    if (access.revoked?.aborted) onRevoked();
    access.revoked?.addEventListener('abort', onRevoked);
    const deny = async (reason: StreamDenied): Promise<true> => {
      await push(reason);
      return true;
    };
    let stopped = false;
    void stop.then(() => {
      stopped = true;
      wake?.();
    });

    let lastSequence = afterSequence;
    const emit = async (updates: StepUpdate[]): Promise<boolean> => {
      for (const update of updates) {
        if (denied) return deny(denied);
        if (update.sequence <= lastSequence) continue;
        if (update.sequence > lastSequence + 1) {
          const missing = await store.loadEvents(executionId, lastSequence, update.sequence - 1);
          if (await emit(missing)) return true;
          if (update.sequence !== lastSequence + 1) continue;
        }
        // Checked per update, not only at subscribe time: a revoked key or a foreign row ends the stream.
        if (update.tenantId !== access.tenantId) return deny({ denied: 'tenant' });
        if (access.stillAuthorized && !access.stillAuthorized()) return deny({ denied: 'credential' });
        await push(update);
        lastSequence = update.sequence;
        if (isTerminalUpdate(update.type)) return true;
      }
      return false;
    };

    try {
      if (shutdown.aborted) return;
      if (await emit(await store.loadEvents(executionId, lastSequence))) return;
      const execution = await store.loadExecution(executionId);
      if (!execution || (isFinished(execution.status as ExecutionStatus) && lastSequence >= execution.lastSequence)) {
        return;
      }
      while (!stopped) {
        if (denied) {
          await deny(denied);
          return;
        }
        if (buffered.length === 0) {
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
          continue;
        }
        const batch = buffered;
        buffered = [];
        if (await emit(batch)) return;
      }
    } finally {
      unsubscribe();
      shutdown.removeEventListener('abort', onShutdown);
      access.revoked?.removeEventListener('abort', onRevoked);
      stop();
      onClose?.();
    }
  });
}
