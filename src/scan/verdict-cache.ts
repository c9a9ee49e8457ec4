/**
 * Verdicts kept in memory, looked up by digest (the node proxy) or by image reference (the
 * webhook): a lookup never waits on anything, so nothing about a scan slows a pull that passes.
 * Whoever learns verdicts (the CachedImage watcher, the controller's scans) replaces them here.
 */
import type { ScanRecord } from './verdict.js';

/** What the gate reads: where verdicts come from is not its business. */
export interface VerdictSource {
  /** The record of a manifest digest (an image, or the index it belongs to). */
  byDigest(digest: string): ScanRecord | undefined;
  /**
   * The record of an image as the cluster names it (normalised, `docker.io/library/nginx:1.27`),
   * with the digest it resolved to; undefined: not known here.
   */
  byImage(image: string): { readonly digest?: string; readonly record?: ScanRecord } | undefined;
}

export interface VerdictEntry {
  /** Normalised image references that resolve to these digests. */
  readonly images: readonly string[];
  /** The image's digest, then its platform manifests' (an index shares its verdict with its children). */
  readonly digests: readonly string[];
  readonly record?: ScanRecord;
}

export class VerdictCache implements VerdictSource {
  private digests = new Map<string, ScanRecord>();
  private images = new Map<string, { digest?: string; record?: ScanRecord }>();

  byDigest(digest: string): ScanRecord | undefined {
    return this.digests.get(digest);
  }

  byImage(image: string): { digest?: string; record?: ScanRecord } | undefined {
    return this.images.get(image);
  }

  /** Replaces everything at once (a fresh list of CachedImages). */
  replaceAll(entries: Iterable<VerdictEntry>): void {
    const digests = new Map<string, ScanRecord>();
    const images = new Map<string, { digest?: string; record?: ScanRecord }>();
    for (const e of entries) fill(e, digests, images);
    this.digests = digests;
    this.images = images;
  }

  get size(): number {
    return this.digests.size;
  }
}

function fill(
  e: VerdictEntry,
  digests: Map<string, ScanRecord>,
  images: Map<string, { digest?: string; record?: ScanRecord }>,
): void {
  if (e.record) for (const d of e.digests) digests.set(d, e.record);
  const first = e.digests[0];
  for (const i of e.images)
    images.set(i, { ...(first ? { digest: first } : {}), ...(e.record ? { record: e.record } : {}) });
}
