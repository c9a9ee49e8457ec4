/**
 * Events on the pods of this node that use a tag the node proxy served stale (its origin could not
 * confirm it): `kubectl describe pod` then says which digest the pod got, how old it is and why
 * the origin was not asked. Only pods whose image names that very tag get one (not another tag of
 * the repository, nor a digest). Rate-limited by the Event recorder (one per pod and reason per
 * repeat period); the message is built from the image, the digest, the age and the origin's
 * failure, never from anything that holds a credential.
 */
import type { EventRecorder } from './event-recorder.js';
import { podImageReferences, repositoryKey, type ProxyRegistryTest } from './pod-images.js';
import type { PodIndex } from './pod-index.js';
import { parseReference } from '../oci/reference.js';

/** What the proxy's tag resolver reports (src/proxy/tag-resolver.ts StaleTag). */
export interface StaleImage {
  readonly registry: string;
  readonly repository: string;
  readonly tag: string;
  readonly digest: string;
  readonly confirmedAt: number | undefined;
  readonly reason: string;
}

export interface StaleImageEventsOptions {
  readonly index: PodIndex;
  readonly recorder: EventRecorder;
  readonly isProxy?: ProxyRegistryTest;
  readonly now?: () => number;
}

export const STALE_IMAGE_REASON = 'StaleImageServed';

/** `3d4h`, `2h5m`, `4m10s`, `12s`: the age of the cached tag at a glance. */
export function shortAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const [d, h, m] = [Math.floor(s / 86400), Math.floor(s / 3600) % 24, Math.floor(s / 60) % 60];
  if (d > 0) return `${String(d)}d${String(h)}h`;
  if (h > 0) return `${String(h)}h${String(m)}m`;
  if (m > 0) return `${String(m)}m${String(s % 60)}s`;
  return `${String(s)}s`;
}

/** Drops what a URL in an error message could carry besides its host and path. */
function scrub(reason: string): string {
  return reason
    .replace(/\/\/[^/@\s]*@/g, '//')
    .replace(/\?\S*/g, '')
    .replace(/\s+/g, ' ')
    .slice(0, 300);
}

export class StaleImageEvents {
  private readonly o: StaleImageEventsOptions & { now: () => number };

  constructor(opts: StaleImageEventsOptions) {
    this.o = { now: Date.now, ...opts };
  }

  /** The sink the node proxy's tag resolver reports to. */
  readonly served = (s: StaleImage): void => {
    const wanted = repositoryKey(s.registry, s.repository);
    if (wanted === undefined) return;
    const image = `${s.registry}/${s.repository}:${s.tag}`;
    const age =
      s.confirmedAt === undefined ? 'of unknown age' : `confirmed ${shortAge(this.o.now() - s.confirmedAt)} ago`;
    const message =
      `${image} served from the node's cache as ${s.digest} (${age}): ` +
      `the origin could not confirm the tag: ${scrub(s.reason)}`;
    for (const ref of this.o.index.podsUsing(s.registry, s.repository)) {
      const pod = this.o.index.pod(ref);
      if (!pod) continue;
      // As written and decoded from the node proxy's address, as the pod index reads them.
      const images = [...podImageReferences(pod, () => false), ...podImageReferences(pod, this.o.isProxy)];
      if (!this.usesTag(images, wanted, s.tag)) continue;
      void this.o.recorder.record(
        {
          apiVersion: 'v1',
          kind: 'Pod',
          namespace: ref.namespace,
          name: ref.name,
          ...(pod.metadata?.uid !== undefined ? { uid: pod.metadata.uid } : {}),
        },
        'Warning',
        STALE_IMAGE_REASON,
        message,
      );
    }
  };

  private usesTag(images: readonly string[], repository: string, tag: string): boolean {
    return images.some((image) => {
      const r = parseReference(image);
      return r.digest === undefined && r.tag === tag && repositoryKey(r.registry, r.repository) === repository;
    });
  }
}
