/**
 * Every namespace's labels, listed and watched, for the webhook's `--namespaces=labelled` mode:
 * admission answers read this cache and never wait on the API server. Like the pod informer it
 * never blocks startup, retries with capped backoff, and keeps what it last saw while the API
 * server is away. Until the first list succeeds every namespace is unknown, which the webhook
 * treats as "leave alone".
 */
import * as k8s from '@kubernetes/client-node';
import type { NamespaceDirectory, NamespaceLookup } from '../webhook/policy.js';
import type { KubeClient } from './client.js';
import { DeadlineWatch } from './deadline-watch.js';
import { describeKubeError } from './errors.js';
import { silentLogger, type KubeLogger } from './logger.js';

export interface NamespaceInformerOptions {
  readonly client: KubeClient;
  readonly logger?: KubeLogger;
  /** Retry delays after a failed list or watch. Default 500 ms doubling to 30 s. */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
}

export class NamespaceInformer implements NamespaceDirectory {
  private readonly informer: k8s.ListWatch<k8s.V1Namespace>;
  private readonly watcher: DeadlineWatch;
  private readonly log: KubeLogger;
  private readonly backoff: { readonly initialMs: number; readonly maxMs: number };
  private delay: number;
  private retry: NodeJS.Timeout | undefined;
  private running = false;
  private failing = false;
  private syncedOnce = false;
  private readonly syncWaiters: (() => void)[] = [];

  constructor(options: NamespaceInformerOptions) {
    this.log = options.logger ?? silentLogger;
    this.backoff = options.backoff ?? { initialMs: 500, maxMs: 30_000 };
    this.delay = this.backoff.initialMs;
    // Spread like client-go's: 5 to 10 minutes.
    const timeoutSeconds = 300 + Math.floor(Math.random() * 300);
    this.watcher = new DeadlineWatch(
      options.client.config,
      { connectTimeoutMs: 30_000, idleTimeoutMs: (timeoutSeconds + 60) * 1000, timeoutSeconds },
      () => this.healthy(),
    );
    const core = options.client.core;
    const list = async (): Promise<k8s.V1NamespaceList> => {
      const namespaces = await core.listNamespace();
      this.listed(namespaces.items.length);
      return namespaces;
    };
    this.informer = new k8s.ListWatch<k8s.V1Namespace>('/api/v1/namespaces', this.watcher, list, false);
    this.informer.on(k8s.ERROR, (err) => this.failed(err));
  }

  lookup(name: string): NamespaceLookup {
    if (!this.syncedOnce)
      return { known: false, reason: 'the namespaces have not been listed from the API server yet' };
    const ns = this.informer.get(name);
    if (!ns) return { known: false, reason: 'not seen in the namespace watch (created just now?)' };
    return { known: true, labels: ns.metadata?.labels ?? {} };
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
    this.log.debug({ namespaces: count }, 'listed namespaces');
    // ListWatch indexes the items after this function's promise settles; let it finish first.
    if (!this.syncedOnce) {
      setImmediate(() => {
        this.syncedOnce = true;
        this.syncWaiters.splice(0).forEach((w) => w());
      });
    }
  }

  private healthy(): void {
    if (this.failing) this.log.info({}, 'namespace watch recovered');
    this.failing = false;
    this.delay = this.backoff.initialMs;
  }

  private failed(err: unknown): void {
    if (!this.running) return;
    const f = describeKubeError(err);
    const fields = { reason: f.reason, ...(f.code !== undefined ? { status: f.code } : {}), retryInMs: this.delay };
    // One warning per outage, not one per retry.
    if (!this.failing)
      this.log.warn(fields, 'namespace list/watch failed; namespace labels may be stale until it recovers');
    else this.log.debug(fields, 'namespace list/watch still failing');
    this.failing = true;
    clearTimeout(this.retry);
    this.retry = setTimeout(() => this.attempt(), this.delay);
    this.retry.unref();
    this.delay = Math.min(this.backoff.maxMs, this.delay * 2);
  }
}
