/**
 * Pods listed and watched with client-node's ListWatch and handed to a sink: the pods scheduled to
 * one node (`fieldSelector=spec.nodeName=<node>`, kept in a PodIndex: NodePodInformer) or every pod
 * in the cluster (the controller's usage book), through src/kube/watched-list.ts: it never blocks
 * startup, retries with capped backoff, and the sink keeps its last known content while the API
 * server is away (a 410 on resume makes ListWatch relist and drop what vanished).
 */
import type * as k8s from '@kubernetes/client-node';
import type { KubeClient } from './client.js';
import type { WatchDeadlines } from './deadline-watch.js';
import type { KubeLogger } from './logger.js';
import { PodIndex } from './pod-index.js';
import type { ProxyRegistryTest } from './pod-images.js';
import { WatchedList } from './watched-list.js';

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
  private readonly pods: WatchedList<k8s.V1Pod>;

  constructor(options: Omit<PodInformerOptions, 'isProxyRegistry'>, sink: PodSink) {
    this.nodeName = options.nodeName;
    const fieldSelector = options.nodeName === undefined ? undefined : `spec.nodeName=${options.nodeName}`;
    const core = options.client.core;
    this.pods = new WatchedList<k8s.V1Pod>({
      client: options.client,
      path: '/api/v1/pods',
      list: () => core.listPodForAllNamespaces(fieldSelector === undefined ? {} : { fieldSelector }),
      ...(fieldSelector !== undefined ? { fieldSelector } : {}),
      what: 'pod list/watch',
      recovered: 'pod watch recovered',
      staleMeans: 'what is known of pods may be stale until it recovers',
      logFields: { node: options.nodeName ?? '(all)' },
      sink,
      ...(options.logger ? { logger: options.logger } : {}),
      ...(options.backoff ? { backoff: options.backoff } : {}),
      ...(options.watch ? { watch: options.watch } : {}),
    });
  }

  /** Starts listing and watching in the background; returns at once. */
  start(): void {
    this.pods.start();
  }

  stop(): Promise<void> {
    return this.pods.stop();
  }

  /** True once a list has succeeded: until then the index is empty, not authoritative. */
  get synced(): boolean {
    return this.pods.synced;
  }

  whenSynced(): Promise<void> {
    return this.pods.whenSynced();
  }

  /** False while list or watch is failing and being retried. */
  get connected(): boolean {
    return this.pods.connected;
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
