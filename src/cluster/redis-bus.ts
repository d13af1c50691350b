import type { RedisOptions } from 'ioredis';
import type { StepUpdate } from '../executor/step-update.js';
import type { StepUpdateBus, StepUpdateGapListener, StepUpdateListener } from '../executor/step-update-bus.js';
import type { Logger } from '../logger.js';
import type { ClusterSignals } from './signals.js';

/** Reconnect after 100 ms, then 200 ms, … up to every second: a Redis that comes back is used again within a second. */
const reconnectDelayMs = (attempt: number) => Math.min(100 * attempt, 1_000);
/** A failure of the same kind (a publish, a listener) is logged once per this interval, with how many were not. */
const FAILURE_LOG_EVERY_MS = 10_000;
/** Channels per SUBSCRIBE or UNSUBSCRIBE: a reconnect with 10,000 executions watched sends 10 commands, not one huge one. */
const CHANNELS_PER_COMMAND = 1_000;
/** Executions whose updates could not be published, named in the gap notice; beyond that, the notice names them all. */
const MAX_LOST_EXECUTIONS = 10_000;

export interface RedisBus {
  /** Step updates between processes: each execution's updates on a channel of its own. */
  updates: StepUpdateBus;
  signals: ClusterSignals;
  /** Both connections (the one that publishes and the one that listens) are up. */
  readonly healthy: boolean;
  close(): Promise<void>;
}

export interface RedisBusOptions {
  url: string;
  logger: Logger;
  /** Starts every channel's name: the processes that share a Redis and a prefix hear each other. */
  channelPrefix?: string;
  /** How often the subscribers of an execution are told of a gap while its subscription is not in place (Redis down). */
  gapPollMs?: number;
  /**
   * An execution's channel that heard nothing for this long has its subscribers told of a gap (they read the store
   * once): a publisher that died between its commit and its publish leaves no notice of the update it lost.
   */
  quietGapMs?: number;
}

/** The channel an execution's updates are published on. */
export function stepUpdatesChannel(channelPrefix: string, executionId: string): string {
  return `${channelPrefix}updates:${executionId}`;
}

/** Logs the first failure of a kind, then at most one line per interval, saying how many were not logged. */
class ThrottledWarning {
  private lastLoggedAt = Number.NEGATIVE_INFINITY;
  private unlogged = 0;

  constructor(
    private readonly logger: Logger,
    private readonly message: string,
  ) {}

  failed(error: unknown, fields: Record<string, unknown> = {}): void {
    const now = performance.now();
    if (now - this.lastLoggedAt < FAILURE_LOG_EVERY_MS) {
      this.unlogged++;
      return;
    }
    this.logger.warn({ err: error, ...fields, failuresNotLogged: this.unlogged }, this.message);
    this.lastLoggedAt = now;
    this.unlogged = 0;
  }
}

/**
 * The bus between stepcast processes, on Redis pub/sub: one connection publishes, one listens. A process's own
 * publishes reach its listeners through Redis too, so that every listener sees one order.
 *
 * Redis pub/sub keeps nothing: what is published while a subscriber's connection is down, or before its SUBSCRIBE
 * is in place, is lost to it. The store holds every update, so the bus says when that may have happened (onGap) and
 * the stream reads the store: once an execution's SUBSCRIBE is answered (on every connection, the first and each
 * reconnect), and every gapPollMs while it is not. Publishing never throws: the engine publishes after its commit,
 * and a publish that fails is logged (throttled) and, once Redis answers again, announced on the gap channel so that
 * the subscribers of those executions read the store.
 *
 * Resolves once both connections are up and the signals' channels subscribed, or after a first attempt failed: then
 * the outage is logged, and the bus serves (publishes fail, subscribers are told of gaps) and connects as soon as
 * Redis can be reached.
 */
export async function createRedisBus({
  url,
  logger,
  channelPrefix = 'stepcast:',
  gapPollMs = 1_000,
  quietGapMs = 30_000,
}: RedisBusOptions): Promise<RedisBus> {
  // Loaded here, not at every start: only the processes of a cluster have a bus.
  const { Redis } = await import('ioredis');
  const common: RedisOptions = {
    retryStrategy: reconnectDelayMs,
    connectTimeout: 5_000,
    // Finds a peer that vanished without closing (a machine gone) sooner than the system's default of hours.
    keepAlive: 10_000,
  };
  const publisher = new Redis(url, {
    ...common,
    connectionName: 'stepcast-publisher',
    // A publish while Redis is away fails at once instead of queuing (the store has the update, the gap notice
    // tells subscribers), and one in flight when the connection drops fails at that drop instead of being resent.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: 2_000,
  });
  const subscriber = new Redis(url, {
    ...common,
    connectionName: 'stepcast-subscriber',
    // The bus subscribes again itself after a reconnect, to know when each channel is in place (ioredis's own
    // resubscribe does not say); nothing is sent while the connection is down, and nothing is resent after it.
    autoResubscribe: false,
    autoResendUnfulfilledCommands: false,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
  });

  const cancelChannel = `${channelPrefix}cancel`;
  const workChannel = `${channelPrefix}work`;
  /** Where a process says which executions' updates it could not publish (JSON: { executionIds? }; none: all). */
  const gapChannel = `${channelPrefix}gap`;
  const signalChannels = [cancelChannel, workChannel, gapChannel];

  /** An execution's channel → its local listeners and their gap listeners; subscribed in Redis while it has any. */
  const listeners = new Map<string, Map<StepUpdateListener, StepUpdateGapListener | undefined>>();
  const cancelListeners = new Set<(executionId: string) => void>();
  const workListeners = new Set<() => void>();

  /** Channels whose SUBSCRIBE the current subscriber connection answered. */
  const subscribed = new Set<string>();
  let toSubscribe = new Set<string>(signalChannels);
  const toUnsubscribe = new Set<string>();
  /** Counts the subscriber's connections: an answer that arrives after its connection closed confirms nothing. */
  let connectionEpoch = 0;
  let syncing = false;
  let gapTimer: NodeJS.Timeout | undefined;

  const lostExecutions = new Set<string>();
  let lostTooMany = false;
  let noticeTimer: NodeJS.Timeout | undefined;

  let started = false;
  /** Called as the start makes progress (a connection up or failed, the signals' channels subscribed). */
  let startupProgress: (() => void) | undefined;
  let closed = false;
  let outageSince: number | undefined;
  let lastError: Error | undefined;

  const publishFailures = new ThrottledWarning(logger, 'could not publish to Redis; subscribers read the store instead');
  const subscribeFailures = new ThrottledWarning(logger, 'could not subscribe in Redis; trying again');
  const listenerFailures = new ThrottledWarning(logger, 'a listener of the Redis bus failed');
  const decodeFailures = new ThrottledWarning(logger, 'dropped a message of the Redis bus that could not be read');

  /** When each execution's channel last heard a message (or was first listened to). */
  const heard = new Map<string, number>();
  // One timer for the whole bus, not one per stream: a quiet execution costs its streams one read of the store per
  // quietGapMs (a slow step), and a lost terminal update (its publisher died after the commit) ends them within it.
  const quietTimer = setInterval(() => {
    const due = Date.now() - quietGapMs;
    for (const [channel, forChannel] of listeners) {
      if ((heard.get(channel) ?? 0) > due) continue;
      heard.set(channel, Date.now());
      tellGap(forChannel);
    }
  }, Math.max(100, Math.min(quietGapMs, 5_000)));
  quietTimer.unref();

  const isWanted = (channel: string) => listeners.has(channel) || signalChannels.includes(channel);

  function take(channels: Set<string>): string[] {
    const batch: string[] = [];
    for (const channel of channels) {
      if (batch.length === CHANNELS_PER_COMMAND) break;
      batch.push(channel);
      channels.delete(channel);
    }
    return batch;
  }

  function tellGap(forChannel: Map<StepUpdateListener, StepUpdateGapListener | undefined>): void {
    for (const onGap of forChannel.values()) {
      try {
        onGap?.();
      } catch (error) {
        listenerFailures.failed(error);
      }
    }
  }

  /** Brings the subscriber connection's channels to what is wanted, one command at a time; never rejects. */
  async function sync(): Promise<void> {
    if (syncing) return;
    syncing = true;
    try {
      while (!closed && subscriber.status === 'ready' && (toSubscribe.size > 0 || toUnsubscribe.size > 0)) {
        const epoch = connectionEpoch;
        const subscribing = toSubscribe.size > 0;
        const batch = take(subscribing ? toSubscribe : toUnsubscribe);
        try {
          await (subscribing ? subscriber.subscribe(...batch) : subscriber.unsubscribe(...batch));
        } catch (error) {
          // A dropped connection is taken care of by its close (all is subscribed again on the next one); any other
          // failure is tried again at the next gap poll.
          if (epoch !== connectionEpoch || subscriber.status !== 'ready') continue;
          subscribeFailures.failed(error, { channels: batch.length });
          for (const channel of batch) if (isWanted(channel) === subscribing) (subscribing ? toSubscribe : toUnsubscribe).add(channel);
          armGapPoll();
          return;
        }
        if (epoch !== connectionEpoch || subscriber.status !== 'ready') continue;
        for (const channel of batch) {
          if (subscribing) subscribed.add(channel);
          else subscribed.delete(channel);
          // Listened to again, or left, while the command was on its way.
          if (isWanted(channel) !== subscribing) (subscribing ? toUnsubscribe : toSubscribe).add(channel);
          else if (subscribing) {
            const forChannel = listeners.get(channel);
            // In place now: what was published before it (since the listeners came, or while Redis was away) went past.
            if (forChannel) tellGap(forChannel);
          }
        }
        startupProgress?.();
      }
    } catch (error) {
      subscribeFailures.failed(error);
    } finally {
      syncing = false;
    }
  }

  /** Tells the listeners of every channel not in place that they may miss updates, every gapPollMs until all are. */
  function armGapPoll(): void {
    if (gapTimer || closed) return;
    gapTimer = setTimeout(pollGaps, gapPollMs);
    gapTimer.unref();
  }

  function pollGaps(): void {
    gapTimer = undefined;
    let waiting = toSubscribe.size > 0;
    for (const [channel, forChannel] of listeners) {
      if (subscribed.has(channel)) continue;
      waiting = true;
      tellGap(forChannel);
    }
    if (!waiting) return;
    void sync();
    armGapPoll();
  }

  function noteLost(executionId: string): void {
    if (lostTooMany) return;
    if (lostExecutions.size >= MAX_LOST_EXECUTIONS) {
      lostTooMany = true;
      lostExecutions.clear();
    } else lostExecutions.add(executionId);
    armNotice();
  }

  function armNotice(): void {
    if (noticeTimer || closed) return;
    noticeTimer = setTimeout(sendGapNotice, gapPollMs);
    noticeTimer.unref();
  }

  /** Once Redis answers again, tells every process which executions' updates this one could not publish. */
  function sendGapNotice(): void {
    clearTimeout(noticeTimer);
    noticeTimer = undefined;
    if (closed || (!lostTooMany && lostExecutions.size === 0)) return;
    if (publisher.status !== 'ready') return armNotice();
    const executionIds = lostTooMany ? undefined : [...lostExecutions];
    lostTooMany = false;
    lostExecutions.clear();
    publisher.publish(gapChannel, JSON.stringify({ executionIds })).catch((error: unknown) => {
      publishFailures.failed(error);
      if (executionIds) for (const executionId of executionIds) noteLost(executionId);
      else lostTooMany = true;
      armNotice();
    });
  }

  /** Publishes without ever throwing; `lostUpdate`: the message is an update of that execution (named in the gap notice if lost). */
  function send(channel: string, message: string, executionId?: string, lostUpdate = false): void {
    if (closed) return;
    let sent: Promise<unknown>;
    try {
      sent = publisher.publish(channel, message);
    } catch (error) {
      sent = Promise.reject(error);
    }
    sent.catch((error: unknown) => {
      publishFailures.failed(error, { executionId });
      if (lostUpdate && executionId) noteLost(executionId);
    });
  }

  function decode(message: string): StepUpdate | undefined {
    try {
      const update = JSON.parse(message) as Omit<StepUpdate, 'at'> & { at: string | Date };
      // The one Date of an update; the step's own dates are ISO text, as the store gives them.
      update.at = new Date(update.at);
      if (Number.isNaN(update.at.getTime())) throw new Error('the update has no valid "at"');
      return update as StepUpdate;
    } catch (error) {
      decodeFailures.failed(error);
      return undefined;
    }
  }

  function onGapNotice(message: string): void {
    let executionIds: string[] | undefined;
    try {
      executionIds = (JSON.parse(message) as { executionIds?: string[] }).executionIds;
    } catch (error) {
      decodeFailures.failed(error);
    }
    if (!executionIds) {
      for (const forChannel of listeners.values()) tellGap(forChannel);
      return;
    }
    for (const executionId of executionIds) {
      const forChannel = listeners.get(stepUpdatesChannel(channelPrefix, executionId));
      if (forChannel) tellGap(forChannel);
    }
  }

  function call<T extends unknown[]>(listener: (...args: T) => void, ...args: T): void {
    try {
      listener(...args);
    } catch (error) {
      listenerFailures.failed(error);
    }
  }

  subscriber.on('message', (channel: string, message: string) => {
    const forChannel = listeners.get(channel);
    if (forChannel) {
      heard.set(channel, Date.now());
      const update = decode(message);
      // One object for all the listeners of a process: the fan-out executes a live update once per selection, keyed on it.
      if (update) for (const listener of forChannel.keys()) call(listener, update);
    } else if (channel === cancelChannel) for (const listener of cancelListeners) call(listener, message);
    else if (channel === workChannel) for (const listener of workListeners) call(listener);
    else if (channel === gapChannel) onGapNotice(message);
  });

  /** The outage is logged once as it starts and once as it ends, not at each reconnect attempt. */
  function checkHealth(): void {
    if (!started || closed) return;
    if (publisher.status === 'ready' && subscriber.status === 'ready') {
      if (outageSince === undefined) return;
      logger.info({ outageMs: Math.round(performance.now() - outageSince) }, 'Redis is reachable again: live updates between processes resume');
      outageSince = undefined;
      lastError = undefined;
    } else if (outageSince === undefined) {
      outageSince = performance.now();
      logger.warn(
        { reason: lastError?.message ?? 'the connection closed' },
        'Redis cannot be reached: live updates between processes are read from the store until it can',
      );
    }
  }

  for (const connection of [publisher, subscriber]) {
    connection.on('error', (error: Error) => (lastError = error));
    connection.on('close', checkHealth);
  }
  publisher.on('ready', () => {
    checkHealth();
    sendGapNotice();
  });
  subscriber.on('ready', () => {
    checkHealth();
    void sync();
  });
  subscriber.on('close', () => {
    if (closed) return;
    // A new connection has no subscriptions: all that is wanted is subscribed again once it is up.
    connectionEpoch++;
    subscribed.clear();
    toUnsubscribe.clear();
    toSubscribe = new Set([...signalChannels, ...listeners.keys()]);
    armGapPoll();
  });

  // Up with the signals' channels subscribed (a signal sent once this resolves is heard), or the first attempt of a
  // connection failed (refused, timed out): the bus serves either way.
  await new Promise<void>((resolve) => {
    startupProgress = () => {
      const up = publisher.status === 'ready' && signalChannels.every((channel) => subscribed.has(channel));
      if (!up && ![publisher, subscriber].some((connection) => connection.status === 'reconnecting' || connection.status === 'end')) return;
      startupProgress = undefined;
      for (const connection of [publisher, subscriber]) connection.off('close', settle).off('ready', settle);
      resolve();
    };
    const settle = () => startupProgress?.();
    for (const connection of [publisher, subscriber]) connection.on('close', settle).on('ready', settle);
  });
  started = true;
  checkHealth();

  const updates: StepUpdateBus = {
    publish(update) {
      let message: string;
      try {
        message = JSON.stringify(update);
      } catch (error) {
        publishFailures.failed(error, { executionId: update.executionId });
        return;
      }
      send(stepUpdatesChannel(channelPrefix, update.executionId), message, update.executionId, true);
    },
    subscribe(executionId, listener, onGap) {
      if (closed) return () => undefined;
      const channel = stepUpdatesChannel(channelPrefix, executionId);
      let forChannel = listeners.get(channel);
      if (!forChannel) {
        forChannel = new Map();
        listeners.set(channel, forChannel);
        heard.set(channel, Date.now());
        // Still subscribed: an UNSUBSCRIBE was due, and is not now (the subscription never lapsed, nothing was missed).
        if (subscribed.has(channel)) toUnsubscribe.delete(channel);
        else {
          toSubscribe.add(channel);
          void sync();
          armGapPoll();
        }
      }
      forChannel.set(listener, onGap);
      return () => {
        if (!forChannel.delete(listener) || forChannel.size > 0 || listeners.get(channel) !== forChannel) return;
        listeners.delete(channel);
        heard.delete(channel);
        if (!toSubscribe.delete(channel) && subscribed.has(channel)) {
          toUnsubscribe.add(channel);
          void sync();
        }
      };
    },
  };

  const signals: ClusterSignals = {
    publishCancel(executionId) {
      send(cancelChannel, executionId, executionId);
    },
    onCancel(listener) {
      cancelListeners.add(listener);
      return () => cancelListeners.delete(listener);
    },
    publishWork() {
      send(workChannel, '');
    },
    onWork(listener) {
      workListeners.add(listener);
      return () => workListeners.delete(listener);
    },
  };

  return {
    updates,
    signals,
    get healthy() {
      return !closed && publisher.status === 'ready' && subscriber.status === 'ready';
    },
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(quietTimer);
      heard.clear();
      clearTimeout(gapTimer);
      clearTimeout(noticeTimer);
      listeners.clear();
      cancelListeners.clear();
      workListeners.clear();
      await Promise.all(
        [publisher, subscriber].map(async (connection) => {
          // QUIT lets what is on its way finish; a connection that is not up has nothing on its way.
          if (connection.status === 'ready') await connection.quit().catch(() => connection.disconnect());
          else connection.disconnect();
        }),
      );
    },
  };
}
