/**
 * The Nodes node-setup labelled `pullthrough.dev/node-ready=false`, listed and watched with that
 * label selector (so a large cluster's healthy nodes cost nothing), for the webhook: a pod already
 * bound to one of them is not rewritten. Never blocks startup; retries with capped backoff; until
 * the first list, and while the API server is away, it answers from what it last saw (nothing at
 * first: a pod is rewritten as before the check existed).
 */
import * as k8s from '@kubernetes/client-node';
import type { NodeReadinessDirectory } from '../webhook/policy.js';
import type { KubeClient } from './client.js';
import { DeadlineWatch } from './deadline-watch.js';
import { describeKubeError } from './errors.js';
import { silentLogger, type KubeLogger } from './logger.js';
import { NODE_READY_LABEL } from './node-readiness.js';

export interface NotReadyNodesOptions {
  readonly client: KubeClient;
  readonly logger?: KubeLogger;
  /** Retry delays after a failed list or watch. Default 500 ms doubling to 30 s. */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
}

const SELECTOR = `${NODE_READY_LABEL}=false`;

export class NotReadyNodes implements NodeReadinessDirectory {
  private readonly informer: k8s.ListWatch<k8s.V1Node>;
  private readonly watcher: DeadlineWatch;
  private readonly log: KubeLogger;
  private readonly backoff: { readonly initialMs: number; readonly maxMs: number };
  private delay: number;
  private retry: NodeJS.Timeout | undefined;
  private running = false;
  private failing = false;
  private syncedOnce = false;
  private readonly syncWaiters: (() => void)[] = [];

  constructor(options: NotReadyNodesOptions) {
    this.log = options.logger ?? silentLogger;
    this.backoff = options.backoff ?? { initialMs: 500, maxMs: 30_000 };
    this.delay = this.backoff.initialMs;
    const timeoutSeconds = 300 + Math.floor(Math.random() * 300);
    this.watcher = new DeadlineWatch(
      options.client.config,
      { connectTimeoutMs: 30_000, idleTimeoutMs: (timeoutSeconds + 60) * 1000, timeoutSeconds },
      () => this.healthy(),
    );
    const core = options.client.core;
    const list = async (): Promise<k8s.V1NodeList> => {
      const nodes = await core.listNode({ labelSelector: SELECTOR });
      this.listed();
      return nodes;
    };
    this.informer = new k8s.ListWatch<k8s.V1Node>('/api/v1/nodes', this.watcher, list, false, SELECTOR);
    this.informer.on(k8s.ERROR, (err) => this.failed(err));
  }

  isNotReady(nodeName: string): boolean {
    // The label, not mere presence: a watch may report a relabelled node as MODIFIED.
    return this.informer.get(nodeName)?.metadata?.labels?.[NODE_READY_LABEL] === 'false';
  }

  /** Starts listing and watching in the background; returns at once. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.informer.start().catch((err: unknown) => this.failed(err));
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

  private listed(): void {
    this.healthy();
    // ListWatch indexes the items after this function's promise settles; let it finish first.
    if (!this.syncedOnce) {
      setImmediate(() => {
        this.syncedOnce = true;
        this.syncWaiters.splice(0).forEach((w) => w());
      });
    }
  }

  private healthy(): void {
    if (this.failing) this.log.info({}, 'node watch recovered');
    this.failing = false;
    this.delay = this.backoff.initialMs;
  }

  private failed(err: unknown): void {
    if (!this.running) return;
    const f = describeKubeError(err);
    const fields = { reason: f.reason, ...(f.code !== undefined ? { status: f.code } : {}), retryInMs: this.delay };
    if (!this.failing) this.log.warn(fields, `node list/watch (${SELECTOR}) failed; node readiness may be stale`);
    else this.log.debug(fields, 'node list/watch still failing');
    this.failing = true;
    clearTimeout(this.retry);
    this.retry = setTimeout(() => {
      if (this.running) this.informer.start().catch((e: unknown) => this.failed(e));
    }, this.delay);
    this.retry.unref();
    this.delay = Math.min(this.backoff.maxMs, this.delay * 2);
  }
}
