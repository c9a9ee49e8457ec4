/**
 * Which pods use which images, cluster-wide, and when each image was last used: the part of a
 * CachedImage's status that comes from pods. The book only records; the status writer reads the
 * images whose usage changed (`takeChanged`), so a pod churning a hundred times between two
 * writes costs one write, and a pod update that changes no image costs none.
 */
import type { PodRef } from '../kube/types.js';

export interface ImageUsage {
  /** Every pod using the image, sorted by namespace and name. */
  readonly pods: readonly PodRef[];
  /** When a pod last started or stopped using it (ms since the epoch); undefined when never seen. */
  readonly lastUsed: number | undefined;
}

const podKey = (p: PodRef): string => `${p.namespace}/${p.name}`;

export class UsageBook {
  private readonly imagesOf = new Map<string, { readonly ref: PodRef; readonly images: readonly string[] }>();
  private readonly podsOf = new Map<string, Map<string, PodRef>>();
  private readonly lastUsed = new Map<string, number>();
  private readonly changed = new Set<string>();

  constructor(private readonly now: () => number = Date.now) {}

  record(pod: PodRef, images: readonly string[]): void {
    const key = podKey(pod);
    const before = this.imagesOf.get(key)?.images ?? [];
    const after = [...new Set(images)].sort();
    if (before.length === after.length && before.every((i, n) => i === after[n])) return;
    for (const image of before) if (!after.includes(image)) this.unlink(key, image);
    for (const image of after) if (!before.includes(image)) this.link(key, pod, image);
    if (after.length === 0) this.imagesOf.delete(key);
    else this.imagesOf.set(key, { ref: pod, images: after });
  }

  forget(pod: PodRef): void {
    this.record(pod, []);
  }

  usage(image: string): ImageUsage {
    const pods = [...(this.podsOf.get(image)?.values() ?? [])].sort(
      (a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name),
    );
    return { pods, lastUsed: this.lastUsed.get(image) };
  }

  /** Every image any pod uses or used since the book started. */
  images(): string[] {
    return [...this.lastUsed.keys()];
  }

  /** How many images changed since `takeChanged` was last called. */
  get changedCount(): number {
    return this.changed.size;
  }

  /** Images whose usage changed since the last call. */
  takeChanged(): string[] {
    const out = [...this.changed];
    this.changed.clear();
    return out;
  }

  private link(key: string, pod: PodRef, image: string): void {
    let pods = this.podsOf.get(image);
    if (!pods) this.podsOf.set(image, (pods = new Map<string, PodRef>()));
    pods.set(key, pod);
    this.touch(image);
  }

  private unlink(key: string, image: string): void {
    const pods = this.podsOf.get(image);
    pods?.delete(key);
    if (pods?.size === 0) this.podsOf.delete(image);
    this.touch(image);
  }

  private touch(image: string): void {
    this.lastUsed.set(image, this.now());
    this.changed.add(image);
  }
}
