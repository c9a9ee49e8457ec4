/**
 * Every namespace's labels, listed and watched, for the webhook's `--namespaces=labelled` mode:
 * admission answers read this cache and never wait on the API server (src/kube/watched-list.ts).
 * Until the first list succeeds every namespace is unknown, which the webhook treats as "leave
 * alone".
 */
import type * as k8s from '@kubernetes/client-node';
import type { NamespaceDirectory, NamespaceLookup } from '../webhook/policy.js';
import type { KubeClient } from './client.js';
import type { KubeLogger } from './logger.js';
import { WatchedList } from './watched-list.js';

export interface NamespaceInformerOptions {
  readonly client: KubeClient;
  readonly logger?: KubeLogger;
  /** Retry delays after a failed list or watch. Default 500 ms doubling to 30 s. */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
}

export class NamespaceInformer implements NamespaceDirectory {
  private readonly namespaces: WatchedList<k8s.V1Namespace>;

  constructor(options: NamespaceInformerOptions) {
    const core = options.client.core;
    this.namespaces = new WatchedList<k8s.V1Namespace>({
      ...options,
      path: '/api/v1/namespaces',
      list: () => core.listNamespace(),
      what: 'namespace list/watch',
      recovered: 'namespace watch recovered',
      staleMeans: 'namespace labels may be stale until it recovers',
    });
  }

  lookup(name: string): NamespaceLookup {
    if (!this.namespaces.synced)
      return { known: false, reason: 'the namespaces have not been listed from the API server yet' };
    const ns = this.namespaces.get(name);
    if (!ns) return { known: false, reason: 'not seen in the namespace watch (created just now?)' };
    return { known: true, labels: ns.metadata?.labels ?? {} };
  }

  /** Starts listing and watching in the background; returns at once. */
  start(): void {
    this.namespaces.start();
  }

  whenSynced(): Promise<void> {
    return this.namespaces.whenSynced();
  }

  stop(): Promise<void> {
    return this.namespaces.stop();
  }
}
