/**
 * The pods on this node by the origin repositories they use. Fed by the pod informer's add,
 * update and delete callbacks; read on every private-image decision, so lookups are map gets.
 * Pods that are finished (Succeeded, Failed) are left out: they will not pull again, and their
 * credentials must not keep a private image open to the pods that remain.
 */
import type * as k8s from '@kubernetes/client-node';
import { isLoopbackRegistry, podImages, repositoryKey, type ProxyRegistryTest } from './pod-images.js';
import { podKey, type PodRef } from './types.js';

interface Entry {
  readonly ref: PodRef;
  readonly pod: k8s.V1Pod;
  readonly keys: readonly string[];
}

export class PodIndex {
  private readonly pods = new Map<string, Entry>();
  private readonly byRepository = new Map<string, Set<string>>();

  constructor(private readonly isProxy: ProxyRegistryTest = isLoopbackRegistry) {}

  upsert(pod: k8s.V1Pod): void {
    const ref = refOf(pod);
    if (!ref) return;
    this.remove(pod);
    const phase = pod.status?.phase;
    if (phase === 'Succeeded' || phase === 'Failed') return;
    const keys = podImages(pod, this.isProxy).flatMap((i) => repositoryKey(i.registry, i.repository) ?? []);
    const k = podKey(ref);
    this.pods.set(k, { ref, pod, keys });
    for (const rk of keys) {
      let set = this.byRepository.get(rk);
      if (!set) this.byRepository.set(rk, (set = new Set()));
      set.add(k);
    }
  }

  remove(pod: k8s.V1Pod | PodRef): void {
    const ref = 'metadata' in pod || 'spec' in pod ? refOf(pod) : (pod as PodRef);
    if (!ref) return;
    const k = podKey(ref);
    const old = this.pods.get(k);
    if (!old) return;
    this.pods.delete(k);
    for (const rk of old.keys) {
      const set = this.byRepository.get(rk);
      set?.delete(k);
      if (set?.size === 0) this.byRepository.delete(rk);
    }
  }

  /** Pods using registry/repository, ordered by namespace and name so results are stable. */
  podsUsing(registry: string, repository: string): PodRef[] {
    const rk = repositoryKey(registry, repository);
    const set = rk === undefined ? undefined : this.byRepository.get(rk);
    if (!set) return [];
    return [...set].sort().flatMap((k) => this.pods.get(k)?.ref ?? []);
  }

  pod(ref: PodRef): k8s.V1Pod | undefined {
    return this.pods.get(podKey(ref))?.pod;
  }

  get size(): number {
    return this.pods.size;
  }
}

function refOf(pod: k8s.V1Pod): PodRef | undefined {
  const namespace = pod.metadata?.namespace;
  const name = pod.metadata?.name;
  return namespace && name ? { namespace, name } : undefined;
}
