/**
 * The Lease that holds the cache registry's writers while a collection runs there
 * (docs/garbage-collection.md). The collector holds it as a leader holds its Lease
 * (leader-election.ts: renewed every retry period; lost, the work's signal aborts before anyone
 * may see it expire). Each writer reads it every poll period: writes wait while it has a holder
 * that has renewed within its duration (on the writer's own clock), while the writer has not read
 * it for a poll period, and while it cannot be read. A collector therefore waits out a poll period
 * and the longest a started write takes before it collects.
 */
import type * as k8s from '@kubernetes/client-node';
import { describeKubeError } from './errors.js';
import { LeaderElector, type LeaseApi } from './leader-election.js';
import type { KubeLogger } from './logger.js';
import { abortableSleep } from '../runtime/abortable-sleep.js';

export const GC_LEASE_NAME = 'pullthrough-gc';

export interface GcLeaseOptions {
  readonly api: LeaseApi;
  readonly namespace: string;
  /** Default pullthrough-gc. */
  readonly name?: string;
  readonly log: KubeLogger;
  readonly now?: () => number;
}

export interface GcHoldOptions extends GcLeaseOptions {
  readonly identity: string;
  /** Default 15 s; the writers honour the duration the Lease states. */
  readonly leaseDurationMs?: number;
  readonly renewDeadlineMs?: number;
  readonly retryPeriodMs?: number;
}

/**
 * Takes the Lease (waiting for a holder to release it or let it expire), runs `work` with a
 * signal that aborts if the Lease is lost, and releases it when `work` ends.
 */
export async function holdGcLease<T>(opts: GcHoldOptions, work: (held: AbortSignal) => Promise<T>): Promise<T> {
  const elector = new LeaderElector({
    api: opts.api,
    namespace: opts.namespace,
    name: opts.name ?? GC_LEASE_NAME,
    identity: opts.identity,
    leaseDurationMs: opts.leaseDurationMs ?? 15_000,
    renewDeadlineMs: opts.renewDeadlineMs ?? 10_000,
    retryPeriodMs: opts.retryPeriodMs ?? 2_000,
    releaseOnStop: true,
    log: opts.log,
    ...(opts.now ? { now: opts.now } : {}),
  });
  const done = new AbortController();
  let outcome: { ok: true; value: T } | { ok: false; err: unknown } | undefined;
  await elector.run(done.signal, async (held) => {
    try {
      outcome = { ok: true, value: await work(held) };
    } catch (err) {
      outcome = { ok: false, err };
    } finally {
      done.abort();
    }
  });
  if (!outcome) throw new Error('the collection Lease was never held');
  if (!outcome.ok) throw outcome.err;
  return outcome.value;
}

export interface LeaseWriteHoldOptions extends GcLeaseOptions {
  /** Between reads of the Lease; what was read counts for this long. Default 5 s. */
  readonly pollMs?: number;
}

/** The writers' view of the Lease: a WriteHold (src/cache/write-hold.ts). */
export class LeaseWriteHold {
  private readonly opts: Required<Omit<LeaseWriteHoldOptions, 'now'>> & { now: () => number };
  /** Writes may go on until this time (ms, own clock); 0: not known to be free. */
  private freeUntil = 0;
  private observed: { key: string; at: number } | undefined;
  private waiters: (() => void)[] = [];
  private readonly stopped = new AbortController();
  private loop: Promise<void> | undefined;
  private lastState: 'free' | 'held' | 'unknown' | undefined;
  private readCount = 0;

  constructor(opts: LeaseWriteHoldOptions) {
    this.opts = { name: GC_LEASE_NAME, pollMs: 5_000, now: Date.now, ...opts };
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopped.abort();
    for (const w of this.waiters.splice(0)) w();
    await this.loop;
  }

  /** How many times the Lease was read (or failed to be). */
  get reads(): number {
    return this.readCount;
  }

  /** True while writes wait (the Lease is held, unreadable, or not read for a poll period). */
  get held(): boolean {
    return this.opts.now() >= this.freeUntil;
  }

  /** Resolves once writes may go on; rejects with the signal's reason, or once stopped. */
  async clear(signal?: AbortSignal): Promise<void> {
    while (this.held) {
      if (this.stopped.signal.aborted) throw new Error('the write hold was stopped');
      signal?.throwIfAborted();
      await new Promise<void>((resolve) => {
        const done = (): void => {
          signal?.removeEventListener('abort', done);
          resolve();
        };
        this.waiters.push(done);
        signal?.addEventListener('abort', done, { once: true });
      });
    }
  }

  private async run(): Promise<void> {
    while (!this.stopped.signal.aborted) {
      await this.poll();
      await abortableSleep(this.opts.pollMs, this.stopped.signal);
    }
  }

  /** One read: free makes writes go on for a poll period from when the read started. */
  private async poll(): Promise<void> {
    const startedAt = this.opts.now();
    let state: 'free' | 'held' | 'unknown';
    try {
      state = this.stateOf(
        await this.opts.api.readNamespacedLease({ name: this.opts.name, namespace: this.opts.namespace }),
      );
    } catch (err) {
      const failure = describeKubeError(err);
      state = failure.code === 404 ? 'free' : 'unknown';
      if (state === 'unknown' && this.lastState !== 'unknown') {
        this.opts.log.warn({ lease: this.opts.name, err: failure }, 'collection Lease unreadable: cache writes wait');
      }
    }
    if (state !== this.lastState && state !== 'unknown') {
      this.opts.log.info(
        { lease: this.opts.name, state },
        state === 'held' ? 'collection running: cache writes wait' : 'cache writes go on',
      );
    }
    this.lastState = state;
    this.readCount++;
    this.freeUntil = state === 'free' ? startedAt + this.opts.pollMs : 0;
    if (state === 'free') for (const w of this.waiters.splice(0)) w();
  }

  private stateOf(lease: k8s.V1Lease): 'free' | 'held' {
    const holder = lease.spec?.holderIdentity ?? '';
    const now = this.opts.now();
    const key = `${holder}|${lease.metadata?.resourceVersion ?? ''}`;
    if (this.observed?.key !== key) this.observed = { key, at: now };
    const duration = (lease.spec?.leaseDurationSeconds ?? 15) * 1000;
    return holder !== '' && now < this.observed.at + duration ? 'held' : 'free';
  }
}
