/**
 * Pods listed and watched with client-node's ListWatch and handed to a sink: the pods scheduled to
 * one node (`fieldSelector=spec.nodeName=<node>`, kept in a PodIndex: NodePodInformer) or every pod
 * in the cluster (the controller's usage book). It never blocks startup: `start` returns at once,
 * failures are retried with capped exponential backoff, and the sink keeps its last known content
 * while the API server is away (a 410 on resume makes ListWatch relist and drop what vanished).
 */
import * as k8s from '@kubernetes/client-node';
import type { KubeClient } from './client.js';
import { DeadlineWatch, type WatchDeadlines } from './deadline-watch.js';
import { describeKubeError } from './errors.js';
import { silentLogger, type KubeLogger } from './logger.js';
import { PodIndex } from './pod-index.js';
import type { ProxyRegistryTest } from './pod-images.js';

/** Where pod changes go. */
export interface PodSink {
  upsert(pod: k8s.V1Pod): void;
  remove(pod: k8s.V1Pod): void;
}

export interface PodInformerOptions {
  readonly client: KubeClient;
  /** Only the pods of this node; every pod when unset. */
  readonly nodeName?: string;
  readonly logger?: KubeLogger;
  readonly isProxyRegistry?: ProxyRegistryTest;
  /** Retry delays after a failed list or watch. Default 500 ms doubling to 30 s. */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
  readonly watch?: Partial<WatchDeadlines>;
}

export class PodInformer {
  readonly nodeName: string | undefined;
  private readonly informer: k8s.ListWatch<k8s.V1Pod>;
  private readonly watcher: DeadlineWatch;
  private readonly log: KubeLogger;
  private readonly backoff: { readonly initialMs: number; readonly maxMs: number };
  private delay: number;
  private retry: NodeJS.Timeout | undefined;
  private running = false;
  private failing = false;
  private syncedOnce = false;
  private readonly syncWaiters: (() => void)[] = [];

  constructor(options: Omit<PodInformerOptions, 'isProxyRegistry'>, sink: PodSink) {
    this.nodeName = options.nodeName;
    this.log = options.logger ?? silentLogger;
    this.backoff = options.backoff ?? { initialMs: 500, maxMs: 30_000 };
    this.delay = this.backoff.initialMs;
    // client-go picks a watch timeout between 5 and 10 minutes so watches across nodes spread out.
    const timeoutSeconds = options.watch?.timeoutSeconds ?? 300 + Math.floor(Math.random() * 300);
    const deadlines: WatchDeadlines = {
      connectTimeoutMs: options.watch?.connectTimeoutMs ?? 30_000,
      idleTimeoutMs: options.watch?.idleTimeoutMs ?? (timeoutSeconds + 60) * 1000,
      timeoutSeconds,
    };
    this.watcher = new DeadlineWatch(options.client.config, deadlines, () => this.healthy());
    const fieldSelector = options.nodeName === undefined ? undefined : `spec.nodeName=${options.nodeName}`;
    const core = options.client.core;
    const list = async (): Promise<k8s.V1PodList> => {
      const pods = await core.listPodForAllNamespaces(fieldSelector === undefined ? {} : { fieldSelector });
      this.listed(pods.items.length);
      return pods;
    };
    this.informer = new k8s.ListWatch<k8s.V1Pod>('/api/v1/pods', this.watcher, list, false, undefined, fieldSelector);
    this.informer.on(k8s.ADD, (pod) => sink.upsert(pod));
    this.informer.on(k8s.UPDATE, (pod) => sink.upsert(pod));
    this.informer.on(k8s.DELETE, (pod) => sink.remove(pod));
    this.informer.on(k8s.ERROR, (err) => this.failed(err));
  }

  /** Starts listing and watching in the background; returns at once. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.attempt();
  }

  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.retry);
    await this.informer.stop();
    this.watcher.close();
  }

  /** True once a list has succeeded: until then the index is empty, not authoritative. */
  get synced(): boolean {
    return this.syncedOnce;
  }

  whenSynced(): Promise<void> {
    if (this.syncedOnce) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  /** False while list or watch is failing and being retried. */
  get connected(): boolean {
    return this.syncedOnce && !this.failing;
  }

  private attempt(): void {
    if (!this.running) return;
    this.informer.start().catch((err: unknown) => this.failed(err));
  }

  private listed(count: number): void {
    const first = !this.syncedOnce;
    this.healthy();
    this.log.debug({ node: this.nodeName ?? '(all)', pods: count }, 'listed pods');
    // ListWatch indexes the items after this function's promise settles; let it finish first.
    if (first) {
      setImmediate(() => {
        this.syncedOnce = true;
        this.syncWaiters.splice(0).forEach((w) => w());
      });
    }
  }

  private healthy(): void {
    if (this.failing) this.log.info({ node: this.nodeName ?? '(all)' }, 'pod watch recovered');
    this.failing = false;
    this.delay = this.backoff.initialMs;
  }

  private failed(err: unknown): void {
    if (!this.running) return;
    const f = describeKubeError(err);
    const fields = {
      node: this.nodeName ?? '(all)',
      reason: f.reason,
      ...(f.code !== undefined ? { status: f.code } : {}),
      retryInMs: this.delay,
    };
    // One warning per outage, not one per retry.
    if (!this.failing)
      this.log.warn(fields, 'pod list/watch failed; what is known of pods may be stale until it recovers');
    else this.log.debug(fields, 'pod list/watch still failing');
    this.failing = true;
    clearTimeout(this.retry);
    this.retry = setTimeout(() => this.attempt(), this.delay);
    this.retry.unref();
    this.delay = Math.min(this.backoff.maxMs, this.delay * 2);
  }
}

/** The pods scheduled to one node, by the origin repositories they use. */
export class NodePodInformer extends PodInformer {
  readonly index: PodIndex;
  declare readonly nodeName: string;

  constructor(options: PodInformerOptions & { readonly nodeName: string }) {
    const index = new PodIndex(options.isProxyRegistry);
    super(options, index);
    this.index = index;
  }
}
