/**
 * The Nodes node-setup labelled `pullthrough.dev/node-ready=false`, listed and watched with that
 * label selector (so a large cluster's healthy nodes cost nothing), for the webhook: a pod already
 * bound to one of them is not rewritten. Never blocks startup; retries with capped backoff; until
 * the first list, and while the API server is away, it answers from what it last saw (nothing at
 * first: a pod is rewritten as before the check existed).
 */
import type * as k8s from '@kubernetes/client-node';
import type { NodeReadinessDirectory } from '../webhook/policy.js';
import type { KubeClient } from './client.js';
import type { KubeLogger } from './logger.js';
import { NODE_READY_LABEL } from './node-readiness.js';
import { WatchedList } from './watched-list.js';

export interface NotReadyNodesOptions {
  readonly client: KubeClient;
  readonly logger?: KubeLogger;
  /** Retry delays after a failed list or watch. Default 500 ms doubling to 30 s. */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
}

const SELECTOR = `${NODE_READY_LABEL}=false`;

export class NotReadyNodes implements NodeReadinessDirectory {
  private readonly nodes: WatchedList<k8s.V1Node>;

  constructor(options: NotReadyNodesOptions) {
    const core = options.client.core;
    this.nodes = new WatchedList<k8s.V1Node>({
      ...options,
      path: '/api/v1/nodes',
      list: () => core.listNode({ labelSelector: SELECTOR }),
      labelSelector: SELECTOR,
      what: `node list/watch (${SELECTOR})`,
      recovered: 'node watch recovered',
      staleMeans: 'node readiness may be stale',
    });
  }

  isNotReady(nodeName: string): boolean {
    // The label, not mere presence: a watch may report a relabelled node as MODIFIED.
    return this.nodes.get(nodeName)?.metadata?.labels?.[NODE_READY_LABEL] === 'false';
  }

  /** Starts listing and watching in the background; returns at once. */
  start(): void {
    this.nodes.start();
  }

  whenSynced(): Promise<void> {
    return this.nodes.whenSynced();
  }

  stop(): Promise<void> {
    return this.nodes.stop();
  }
}
