/**
 * Kubernetes Events (core/v1, so `kubectl describe` shows them) about pullthrough's objects,
 * rate-limited: the same reason on the same object at most once per `repeatAfterMs`, and at most
 * `perSecond` in all. Messages are built by callers from non-secret fields only; a failed create is
 * logged and dropped (an Event is never worth a retry storm).
 */
import type { KubeClient } from './client.js';
import { describeKubeError } from './errors.js';
import type { KubeLogger } from './logger.js';
import { TokenBucket } from '../runtime/token-bucket.js';

export interface EventTarget {
  readonly apiVersion: string;
  readonly kind: string;
  readonly name: string;
  readonly namespace?: string;
  readonly uid?: string;
}

export interface EventRecorderOptions {
  readonly client: KubeClient;
  /** Where Events of cluster-scoped objects go (the controller's own namespace). */
  readonly namespace: string;
  readonly component: string;
  readonly log: KubeLogger;
  readonly perSecond?: number;
  readonly repeatAfterMs?: number;
  readonly now?: () => number;
}

export class EventRecorder {
  private readonly o: Required<EventRecorderOptions>;
  private readonly lastSent = new Map<string, number>();
  private readonly budget: TokenBucket;

  constructor(opts: EventRecorderOptions) {
    this.o = { perSecond: 5, repeatAfterMs: 5 * 60_000, now: Date.now, ...opts };
    this.budget = new TokenBucket(this.o.perSecond, this.o.now);
  }

  /** Records it unless the same reason on the same object was recorded lately or the budget is spent. */
  async record(target: EventTarget, type: 'Normal' | 'Warning', reason: string, message: string): Promise<boolean> {
    const now = this.o.now();
    const key = `${target.kind}/${target.namespace ?? ''}/${target.name}/${reason}`;
    const last = this.lastSent.get(key);
    if (last !== undefined && now - last < this.o.repeatAfterMs) return false;
    if (!this.budget.tryTake()) return false;
    this.lastSent.set(key, now);
    const namespace = target.namespace ?? this.o.namespace;
    const time = new Date(now);
    try {
      await this.o.client.core.createNamespacedEvent({
        namespace,
        body: {
          metadata: { generateName: `${target.name.slice(0, 200)}.`, namespace },
          involvedObject: {
            apiVersion: target.apiVersion,
            kind: target.kind,
            name: target.name,
            ...(target.namespace !== undefined ? { namespace: target.namespace } : {}),
            ...(target.uid !== undefined ? { uid: target.uid } : {}),
          },
          type,
          reason,
          message: message.slice(0, 1024),
          source: { component: this.o.component },
          reportingComponent: this.o.component,
          firstTimestamp: time,
          lastTimestamp: time,
          count: 1,
        },
      });
      return true;
    } catch (err) {
      this.o.log.warn({ reason, object: target.name, err: describeKubeError(err) }, 'event not recorded');
      return false;
    }
  }
}
