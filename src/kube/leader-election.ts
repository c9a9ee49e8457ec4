/**
 * Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection package does
 * it (client-node 1.x has none): the leader renews the Lease every retry period; a candidate takes
 * it over only when the record has not changed for a whole lease duration on the candidate's own
 * clock (so clocks need not agree); every write is a replace with the read resourceVersion, so two
 * candidates never both win. A leader that cannot renew within the renew deadline, which is
 * shorter than the lease duration, stops leading before anyone else may start.
 */
import * as k8s from '@kubernetes/client-node';
import { describeKubeError } from './errors.js';
import type { KubeLogger } from './logger.js';
import { abortableSleep } from '../runtime/abortable-sleep.js';

/** The three Lease calls this needs (CoordinationV1Api has them). */
export interface LeaseApi {
  readNamespacedLease(req: { name: string; namespace: string }): Promise<k8s.V1Lease>;
  createNamespacedLease(req: { namespace: string; body: k8s.V1Lease }): Promise<k8s.V1Lease>;
  replaceNamespacedLease(req: { name: string; namespace: string; body: k8s.V1Lease }): Promise<k8s.V1Lease>;
}

export interface LeaderElectionOptions {
  readonly api: LeaseApi;
  readonly namespace: string;
  readonly name: string;
  /** Unique per candidate: the pod name. */
  readonly identity: string;
  /** How long a silent leader keeps the Lease. Default 15 s. */
  readonly leaseDurationMs?: number;
  /** A leader that has not renewed for this long stops leading. Default 10 s. */
  readonly renewDeadlineMs?: number;
  /** Between attempts to acquire or renew. Default 2 s. */
  readonly retryPeriodMs?: number;
  /** Hand the Lease back when stopped, so the next leader starts at once. Default true. */
  readonly releaseOnStop?: boolean;
  readonly log: KubeLogger;
  readonly now?: () => number;
}

export type LeadFunction = (leading: AbortSignal) => Promise<void> | void;

export class LeaderElector {
  private readonly opts: Required<Omit<LeaderElectionOptions, 'now'>> & { now: () => number };
  private leading = false;
  /** The last Lease record seen, and when (our clock) it was first seen. */
  private observed: { key: string; at: number } | undefined;
  private held: k8s.V1Lease | undefined;

  constructor(opts: LeaderElectionOptions) {
    this.opts = {
      leaseDurationMs: 15_000,
      renewDeadlineMs: 10_000,
      retryPeriodMs: 2_000,
      releaseOnStop: true,
      now: Date.now,
      ...opts,
    };
    if (this.opts.renewDeadlineMs >= this.opts.leaseDurationMs) {
      throw new Error('the renew deadline must be shorter than the lease duration');
    }
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /**
   * Until `signal` aborts: acquires the Lease, runs `lead` with a signal that aborts when
   * leadership is lost (or on stop), and after a loss competes again.
   */
  async run(signal: AbortSignal, lead: LeadFunction): Promise<void> {
    while (!signal.aborted) {
      if (!(await this.attempt())) {
        await abortableSleep(this.opts.retryPeriodMs, signal);
        continue;
      }
      this.leading = true;
      this.opts.log.info({ lease: this.lease(), identity: this.opts.identity }, 'leading');
      const leadership = new AbortController();
      const stop = (): void => leadership.abort();
      signal.addEventListener('abort', stop, { once: true });
      const work = Promise.resolve()
        .then(() => lead(leadership.signal))
        .catch((err: unknown) => {
          this.opts.log.error({ err: describeKubeError(err) }, 'the leader work failed');
        });
      await this.renewUntilLost(leadership.signal);
      this.leading = false;
      signal.removeEventListener('abort', stop);
      if (!leadership.signal.aborted) {
        this.opts.log.warn({ lease: this.lease(), identity: this.opts.identity }, 'leadership lost: lease not renewed');
      }
      leadership.abort();
      await work;
    }
    if (this.held !== undefined && this.opts.releaseOnStop) await this.release();
  }

  private lease(): string {
    return `${this.opts.namespace}/${this.opts.name}`;
  }

  /** Renews every retry period; returns when stopped or when no renewal succeeded within the deadline. */
  private async renewUntilLost(stopped: AbortSignal): Promise<void> {
    let renewedAt = this.opts.now();
    while (!stopped.aborted) {
      await abortableSleep(this.opts.retryPeriodMs, stopped);
      if (await this.attempt()) renewedAt = this.opts.now();
      else if (this.opts.now() - renewedAt >= this.opts.renewDeadlineMs) return;
    }
  }

  /** One try to acquire or renew; false when another holds the Lease or the write failed. */
  private async attempt(): Promise<boolean> {
    const { api, namespace, name, identity } = this.opts;
    const now = this.opts.now();
    try {
      let current: k8s.V1Lease | undefined;
      try {
        current = await api.readNamespacedLease({ name, namespace });
      } catch (err) {
        if (describeKubeError(err).code !== 404) throw err;
      }
      const seconds = Math.ceil(this.opts.leaseDurationMs / 1000);
      if (current === undefined) {
        this.held = await api.createNamespacedLease({
          namespace,
          body: {
            metadata: { name, namespace },
            spec: {
              holderIdentity: identity,
              leaseDurationSeconds: seconds,
              acquireTime: new k8s.V1MicroTime(now),
              renewTime: new k8s.V1MicroTime(now),
              leaseTransitions: 0,
            },
          },
        });
        return true;
      }
      const spec = current.spec ?? {};
      const holder = spec.holderIdentity ?? '';
      // Every write moves the resourceVersion: an unchanged one means a silent holder.
      const key = `${holder}|${current.metadata?.resourceVersion ?? ''}`;
      if (this.observed?.key !== key) this.observed = { key, at: now };
      const duration = (spec.leaseDurationSeconds ?? seconds) * 1000;
      if (holder !== '' && holder !== identity && now < this.observed.at + duration) {
        this.held = undefined;
        return false;
      }
      const mine = holder === identity;
      this.held = await api.replaceNamespacedLease({
        name,
        namespace,
        body: {
          metadata: current.metadata ?? { name, namespace },
          spec: {
            holderIdentity: identity,
            leaseDurationSeconds: seconds,
            acquireTime: mine && spec.acquireTime ? spec.acquireTime : new k8s.V1MicroTime(now),
            renewTime: new k8s.V1MicroTime(now),
            leaseTransitions: (spec.leaseTransitions ?? 0) + (mine ? 0 : 1),
          },
        },
      });
      return true;
    } catch (err) {
      const failure = describeKubeError(err);
      // A conflict is another candidate's write winning: expected, not worth a warning.
      if (failure.code !== 409) this.opts.log.warn({ lease: this.lease(), err: failure }, 'lease update failed');
      return false;
    }
  }

  /** Empties the holder so the next candidate takes over without waiting out the duration. */
  private async release(): Promise<void> {
    const held = this.held;
    this.held = undefined;
    if (held === undefined) return;
    try {
      await this.opts.api.replaceNamespacedLease({
        name: this.opts.name,
        namespace: this.opts.namespace,
        body: {
          metadata: held.metadata ?? { name: this.opts.name, namespace: this.opts.namespace },
          spec: {
            holderIdentity: '',
            leaseDurationSeconds: 1,
            ...(held.spec?.acquireTime ? { acquireTime: held.spec.acquireTime } : {}),
            renewTime: new k8s.V1MicroTime(),
            ...(held.spec?.leaseTransitions !== undefined ? { leaseTransitions: held.spec.leaseTransitions } : {}),
          },
        },
      });
      this.opts.log.info({ lease: this.lease() }, 'lease released');
    } catch (err) {
      this.opts.log.warn({ lease: this.lease(), err: describeKubeError(err) }, 'lease release failed');
    }
  }
}
