import type { Dispatcher } from '../executor/dispatcher.js';
import type { Engine } from '../executor/engine.js';
import type { Logger } from '../logger.js';
import type { ClusterSignals } from './signals.js';
import type { WorkQueue } from './work-queue.js';

/**
 * Runs executions on a cluster of workers sharing one PostgreSQL (pg-boss, the queue) and one Redis (the bus).
 *
 * A job says "an execution of this tenant needs a worker"; it is the worker's admission, not its run. A worker with
 * a free slot takes jobs, and for each asks the store for the tenant's next execution under the tenant's cap across
 * the cluster (Engine.runNextOfTenant: the oldest claimable one, while the tenant holds fewer live leases than its
 * cap), claims its lease, and completes the job: from then on the lease carries the execution (a worker that dies lets
 * it lapse, and any worker's sweep resumes it). So a job may start another execution of its tenant than the one it
 * was sent for (each tenant's executions start in submission order), and a job that finds its tenant at its cap is
 * completed without a run. A slot freed by a run's end goes to a tenant this worker owes one (refill), else to a job
 * waiting in the queue, else to the ended run's tenant's next execution; and every worker's sweep offers the tenants
 * with work to its free slots, and owes a slot to those with nothing running anywhere.
 */
export function createClusterDispatcher({
  queue,
  signals,
  engine,
  slots,
  perTenantConcurrency,
  pollMs,
  logger,
}: {
  queue: WorkQueue;
  signals: ClusterSignals;
  engine: Engine;
  /** Executions this worker runs at once (0: an API replica, which runs none). */
  slots: number;
  perTenantConcurrency: number;
  /** How often an idle worker looks for jobs when no hint (a Redis message) came. */
  pollMs: number;
  logger: Logger;
}): Dispatcher {
  /** Slots taken: by runs, and by admissions under way. */
  let taken = 0;
  const running = new Map<string, Promise<void>>();
  let stopped = false;
  let wake: (() => void) | undefined;
  let failingSince: number | undefined;

  const poke = () => wake?.();

  /**
   * Tenants owed a slot of this worker, oldest first: one whose run here ended and whose slot went to another tenant,
   * and one the sweep found with work and nothing running while no slot was free. The next slot freed here is theirs
   * before anyone's: a worker whose slots are all taken frees one only as a run ends, and giving it straight back to
   * that run's tenant would let a few tenants with backlogs keep every slot while another tenant's work waits.
   */
  const owed = new Set<string>();

  /**
   * Starts the tenant's next execution in a slot already counted in `taken`; false (the slot still counted) when it
   * has none to start now: at its cap, or nothing to take.
   */
  const startIn = async (tenantId: string): Promise<boolean> => {
    const started = await engine.runNextOfTenant(tenantId, perTenantConcurrency);
    if (started === null || started === 'at-capacity') return false;
    const { executionId, done } = started;
    running.set(executionId, done);
    owed.delete(tenantId);
    void done
      .catch((error: unknown) => logger.error({ err: error, executionId, tenantId }, 'execution crashed'))
      .finally(() => {
        if (running.get(executionId) === done) running.delete(executionId);
        if (stopped) taken--;
        else void refill(tenantId).finally(poke);
      });
    return true;
  };

  /**
   * Gives the slot a run of `ended` freed (still counted in `taken`): to a tenant owed one, else to a job waiting in
   * the queue (another tenant's new execution, or a decision), else to `ended`'s next execution (jobs of its that came
   * while it was at its cap were completed without a run). `ended` is owed the next one when another took it.
   */
  const refill = async (ended: string): Promise<void> => {
    try {
      for (const tenantId of owed) {
        if (stopped) break;
        owed.delete(tenantId);
        if (tenantId === ended) continue;
        if (await startIn(tenantId)) {
          owed.add(ended);
          return;
        }
      }
      if (!stopped) {
        const [job] = await queue.fetch(1);
        if (job) {
          let started: boolean;
          try {
            started = await startIn(job.data.tenantId);
          } catch (error) {
            await queue.fail(job.id, error).catch(() => undefined);
            throw error;
          }
          // A completion lost (the database went away) lets the job expire and be taken again: an admission more.
          await queue.complete([job.id]).catch(() => undefined);
          if (started) {
            if (job.data.tenantId !== ended) owed.add(ended);
            return;
          }
        }
      }
      if (!stopped && (await startIn(ended))) return;
    } catch (error) {
      logger.warn({ err: error, tenantId: ended }, 'could not admit an execution; the sweep tries again');
    }
    taken--;
  };

  /**
   * Takes the tenant's next execution into a slot already taken for it (counted in `taken`); gives the slot back and
   * answers false when none starts (the tenant is at its cap, or has nothing to take).
   */
  const admitInto = async (tenantId: string): Promise<boolean> => {
    let started: boolean;
    try {
      started = await startIn(tenantId);
    } catch (error) {
      taken--;
      throw error;
    }
    if (!started) taken--;
    return started;
  };

  /** Takes the tenant's next execution into a free slot; false when there is no slot, no work or no room under its cap. */
  const admit = (tenantId: string): Promise<boolean> => {
    if (stopped || taken >= slots) return Promise.resolve(false);
    taken++;
    return admitInto(tenantId);
  };

  const admitQuietly = (tenantId: string) =>
    admit(tenantId).catch((error: unknown) => {
      logger.warn({ err: error, tenantId }, 'could not admit an execution; the sweep tries again');
      return false;
    });

  /** Tenants the sweep found work of, oldest work first, with how many of their executions it found. */
  const offers = new Map<string, number>();
  let offering: Promise<void> | undefined;

  /**
   * Admits the sweep's offers into the free slots, one tenant after another. A tenant at its cap (or with nothing to
   * take) gives its slot back and the next tenant is tried: offering only as many executions as there are free slots,
   * in the order found, would leave those slots to the oldest tenants at their caps, sweep after sweep, and never
   * reach another tenant's execution that no job will bring any more.
   */
  const takeOffers = async () => {
    while (!stopped && taken < slots && offers.size > 0) {
      const [tenantId, count] = offers.entries().next().value!;
      if (count > 1) offers.set(tenantId, count - 1);
      else offers.delete(tenantId);
      // Refused: its other offers would be answered the same.
      if (!(await admitQuietly(tenantId))) offers.delete(tenantId);
    }
    // What found no free slot is offered again by the next sweep.
    offers.clear();
  };

  /** Takes jobs while slots are free; waits for a hint, a freed slot or the poll interval otherwise. */
  const takeJobs = async () => {
    while (!stopped) {
      const free = slots - taken;
      let fetched = 0;
      if (free > 0) {
        // The slots are taken before the jobs: an admission meanwhile (a run's end, the sweep, a submit here) must not
        // leave a job taken with no slot for it, completed without a run.
        taken += free;
        let reserved = free;
        try {
          const jobs = await queue.fetch(free);
          fetched = jobs.length;
          taken -= free - jobs.length;
          reserved = 0;
          const outcomes = await Promise.all(
            jobs.map(async (job): Promise<'done' | { error: unknown }> => {
              if (stopped) {
                // Not this worker's to take any more: pg-boss gives it to another worker after its retry delay.
                taken--;
                return { error: new Error('the worker stopped before admitting it') };
              }
              try {
                await admitInto(job.data.tenantId);
                return 'done';
              } catch (error) {
                return { error };
              }
            }),
          );
          await Promise.all(
            jobs.map((job, i) => {
              const outcome = outcomes[i]!;
              return outcome === 'done' ? undefined : queue.fail(job.id, outcome.error).catch(() => undefined);
            }),
          );
          await queue.complete(jobs.filter((_, i) => outcomes[i] === 'done').map((job) => job.id));
          if (failingSince !== undefined) logger.info('the work queue answers again');
          failingSince = undefined;
        } catch (error) {
          taken -= reserved;
          if (failingSince === undefined) logger.warn({ err: error }, 'cannot take jobs from the work queue; trying again');
          failingSince ??= Date.now();
        }
      }
      if (stopped) return;
      // A full batch may mean more is waiting; otherwise wait for a hint.
      if (fetched > 0 && fetched === free) continue;
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, pollMs);
      });
      clearTimeout(timer);
      wake = undefined;
    }
  };

  const unsubscribeWork = slots > 0 ? signals.onWork(poke) : () => undefined;
  const unsubscribeCancel = signals.onCancel((executionId) => engine.cancelRun(executionId));
  const taking = slots > 0 ? takeJobs() : Promise.resolve();

  return {
    enqueueInTransaction: (tx, executionId, tenantId) => queue.sendInTransaction(tx, { executionId, tenantId }),
    enqueue(executionId, tenantId, { withJob = false } = {}) {
      if (stopped) return;
      // Stored with its job already (a submit), workers can look now. Runnable again (a decision), it needs a job,
      // which this sends (and says so once sent). A submit gets no second job: its first may be taken already, and
      // the singleton key only holds back a second job while the first waits.
      if (withJob) signals.publishWork();
      else {
        void queue.send({ executionId, tenantId }).then(
          () => signals.publishWork(),
          (error: unknown) => logger.warn({ err: error, executionId }, 'could not enqueue the execution; the sweep takes it'),
        );
      }
      void admitQuietly(tenantId);
    },
    offer(tenantId, { executions, running: runningAnywhere }) {
      if (stopped || slots === 0 || executions < 1) return;
      // Nothing of it runs anywhere: if no slot is free now, the next one freed here is its.
      if (runningAnywhere === 0) owed.add(tenantId);
      offers.set(tenantId, (offers.get(tenantId) ?? 0) + executions);
      offering ??= takeOffers().finally(() => (offering = undefined));
    },
    cancelElsewhere(executionId) {
      signals.publishCancel(executionId);
    },
    async stop(graceMs) {
      stopped = true;
      unsubscribeWork();
      poke();
      await taking;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...running.values()]),
        new Promise((resolve) => (timer = setTimeout(resolve, graceMs))),
      ]);
      clearTimeout(timer);
      // Only now: a run that goes on during the grace period is still stopped at once by a cancel sent to another
      // process (the next lease renewal would come up to a third of the lease later).
      unsubscribeCancel();
      return [...running.keys()];
    },
  };
}
