/**
 * A list of one kind of object kept current by list and watch, for answers that must never wait
 * on the API server (admission). It never blocks startup, retries with capped backoff, warns once
 * per outage (not once per retry), and keeps what it last saw while the API server is away.
 */
import * as k8s from '@kubernetes/client-node';
import type { KubeClient } from './client.js';
import { DeadlineWatch, type WatchDeadlines } from './deadline-watch.js';
import { describeKubeError } from './errors.js';
import { silentLogger, type KubeLogger } from './logger.js';

export interface WatchedListOptions<T extends k8s.KubernetesObject> {
  readonly client: KubeClient;
  /** The collection's path, e.g. `/api/v1/namespaces`. */
  readonly path: string;
  /** The list call (with the same label selector as `labelSelector`). */
  readonly list: () => Promise<k8s.KubernetesListObject<T>>;
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  /** What the log lines call it, e.g. `namespace list/watch`. */
  readonly what: string;
  /** What the recovery line says, e.g. `namespace watch recovered`. */
  readonly recovered: string;
  /** Fields on every log line, e.g. the node a pod list is for. */
  readonly logFields?: Record<string, unknown>;
  /** Told of every change after the list (ListWatch's ADD, UPDATE, DELETE). */
  readonly sink?: { upsert(o: T): void; remove(o: T): void };
  /** What a failure means for the answers, for the outage's one warning. */
  readonly staleMeans: string;
  readonly logger?: KubeLogger;
  /** Retry delays after a failed list or watch. Default 500 ms doubling to 30 s. */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
  readonly watch?: Partial<WatchDeadlines>;
}

export class WatchedList<T extends k8s.KubernetesObject> {
  private readonly informer: k8s.ListWatch<T>;
  private readonly watcher: DeadlineWatch;
  private readonly log: KubeLogger;
  private readonly backoff: { readonly initialMs: number; readonly maxMs: number };
  private delay: number;
  private retry: NodeJS.Timeout | undefined;
  private running = false;
  private failing = false;
  private syncedOnce = false;
  private readonly syncWaiters: (() => void)[] = [];

  constructor(private readonly o: WatchedListOptions<T>) {
    this.log = o.logger ?? silentLogger;
    this.backoff = o.backoff ?? { initialMs: 500, maxMs: 30_000 };
    this.delay = this.backoff.initialMs;
    // client-go picks a watch timeout between 5 and 10 minutes so watches across nodes spread out.
    const timeoutSeconds = o.watch?.timeoutSeconds ?? 300 + Math.floor(Math.random() * 300);
    const deadlines: WatchDeadlines = {
      connectTimeoutMs: o.watch?.connectTimeoutMs ?? 30_000,
      idleTimeoutMs: o.watch?.idleTimeoutMs ?? (timeoutSeconds + 60) * 1000,
      timeoutSeconds,
    };
    this.watcher = new DeadlineWatch(o.client.config, deadlines, () => this.healthy());
    const list = async (): Promise<k8s.KubernetesListObject<T>> => {
      const items = await o.list();
      this.listed(items.items.length);
      return items;
    };
    this.informer = new k8s.ListWatch<T>(o.path, this.watcher, list, false, o.labelSelector, o.fieldSelector);
    const sink = o.sink;
    if (sink) {
      this.informer.on(k8s.ADD, (x) => sink.upsert(x));
      this.informer.on(k8s.UPDATE, (x) => sink.upsert(x));
      this.informer.on(k8s.DELETE, (x) => sink.remove(x));
    }
    this.informer.on(k8s.ERROR, (err) => this.failed(err));
  }

  /** Whether the first list has been indexed. */
  get synced(): boolean {
    return this.syncedOnce;
  }

  /** False while list or watch is failing and being retried. */
  get connected(): boolean {
    return this.syncedOnce && !this.failing;
  }

  get(name: string): T | undefined {
    return this.informer.get(name);
  }

  /** Starts listing and watching in the background; returns at once. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.attempt();
  }

  whenSynced(): Promise<void> {
    if (this.syncedOnce) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.retry);
    await this.informer.stop();
    this.watcher.close();
  }

  private attempt(): void {
    if (!this.running) return;
    this.informer.start().catch((err: unknown) => this.failed(err));
  }

  private listed(count: number): void {
    this.healthy();
    this.log.debug({ ...this.o.logFields, items: count }, `${this.o.what}: listed`);
    // ListWatch indexes the items after this function's promise settles; let it finish first.
    if (!this.syncedOnce) {
      setImmediate(() => {
        this.syncedOnce = true;
        this.syncWaiters.splice(0).forEach((w) => w());
      });
    }
  }

  private healthy(): void {
    if (this.failing) this.log.info({ ...this.o.logFields }, this.o.recovered);
    this.failing = false;
    this.delay = this.backoff.initialMs;
  }

  private failed(err: unknown): void {
    if (!this.running) return;
    const f = describeKubeError(err);
    const fields = {
      ...this.o.logFields,
      reason: f.reason,
      ...(f.code !== undefined ? { status: f.code } : {}),
      retryInMs: this.delay,
    };
    if (!this.failing) this.log.warn(fields, `${this.o.what} failed; ${this.o.staleMeans}`);
    else this.log.debug(fields, `${this.o.what} still failing`);
    this.failing = true;
    clearTimeout(this.retry);
    this.retry = setTimeout(() => this.attempt(), this.delay);
    this.retry.unref();
    this.delay = Math.min(this.backoff.maxMs, this.delay * 2);
  }
}
