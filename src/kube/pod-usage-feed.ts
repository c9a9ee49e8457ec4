/**
 * Turns pod events into what the controller's usage book needs: which running pod uses which
 * images (fully qualified originals). Finished pods (Succeeded, Failed) use nothing: they will not
 * pull again, and counting them would keep an image "used" forever.
 */
import type * as k8s from '@kubernetes/client-node';
import { isLoopbackRegistry, podImageReferences, type ProxyRegistryTest } from './pod-images.js';
import type { PodSink } from './pod-informer.js';
import type { PodRef } from './types.js';

/** The book the feed writes to (src/controller's UsageBook). */
export interface PodUsageTarget {
  /** The pod uses exactly these images now. */
  record(pod: PodRef, images: readonly string[]): void;
  /** The pod uses nothing any more. */
  forget(pod: PodRef): void;
}

function refOf(pod: k8s.V1Pod): PodRef | undefined {
  const namespace = pod.metadata?.namespace;
  const name = pod.metadata?.name;
  return namespace && name ? { namespace, name } : undefined;
}

export class PodUsageFeed implements PodSink {
  constructor(
    private readonly target: PodUsageTarget,
    private readonly isProxy: ProxyRegistryTest = isLoopbackRegistry,
  ) {}

  upsert(pod: k8s.V1Pod): void {
    const ref = refOf(pod);
    if (!ref) return;
    const phase = pod.status?.phase;
    if (phase === 'Succeeded' || phase === 'Failed') this.target.forget(ref);
    else this.target.record(ref, podImageReferences(pod, this.isProxy));
  }

  remove(pod: k8s.V1Pod): void {
    const ref = refOf(pod);
    if (ref) this.target.forget(ref);
  }
}
