/**
 * The cache registry's blob redirects, remembered per (cache repository, digest) for a short
 * while, so that a warm blob GET asked again costs the node proxy no round trip to the registry
 * (which itself stats the object and signs a URL). In memory only, bounded in entries; a URL is
 * kept for less than its own remaining validity and never longer than REDIRECT_CACHE_MAX_MS.
 * The URLs are credentials: nothing here logs them.
 */

/**
 * The longest a redirect is handed out again. A blob that garbage collection removed in the
 * meantime leads a client with a remembered URL to a 404 from the object store, which makes
 * containerd go on to its next host (test/e2e/s3-registry.test.ts): a pull then still succeeds,
 * from the cluster proxy or the origin. One minute bounds that window after a collection that the
 * proxy does not see (its write hold empties the cache when it does), and still covers what repeats
 * on one node: pulls of one image by several pods at once, a range resumed, images removed and
 * pulled again.
 */
export const REDIRECT_CACHE_MAX_MS = 60_000;

/** Entries at most: a URL is ~0.5-1 KiB, and a node pulls far fewer distinct blobs in a minute. */
export const REDIRECT_CACHE_ENTRIES = 1024;

/**
 * Validity a URL keeps beyond the time it is remembered: the client sends its request after the
 * 307 reaches it, and the clocks of this node and of the registry that signed may differ.
 */
const VALIDITY_MARGIN_MS = 60_000;

/**
 * When a presigned URL stops being valid (ms since the epoch), from its query: SigV4's
 * `X-Amz-Date` + `X-Amz-Expires` (GCS's `X-Goog-` equivalents likewise), or SigV2's (and
 * CloudFront's) `Expires` in seconds since the epoch. Undefined when none parses.
 */
export function presignedExpiry(url: string): number | undefined {
  let q: URLSearchParams;
  try {
    q = new URL(url).searchParams;
  } catch {
    return undefined;
  }
  for (const prefix of ['X-Amz-', 'X-Goog-']) {
    const date = q.get(`${prefix}Date`);
    const expires = q.get(`${prefix}Expires`);
    if (date === null || expires === null) continue;
    const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(date);
    if (!m || !/^\d{1,9}$/.test(expires)) return undefined;
    const [y, mo, d, h, mi, s] = m.slice(1).map(Number) as [number, number, number, number, number, number];
    return Date.UTC(y, mo - 1, d, h, mi, s) + Number(expires) * 1000;
  }
  const v2 = q.get('Expires');
  if (v2 !== null && /^\d{1,12}$/.test(v2)) return Number(v2) * 1000;
  return undefined;
}

export interface RedirectCacheOptions {
  readonly maxEntries?: number;
  readonly maxAgeMs?: number;
  readonly now?: () => number;
  /**
   * True while a collection may be removing blobs from the cache registry (its write hold): the
   * cache is then emptied and neither read nor filled.
   */
  readonly paused?: () => boolean;
}

export class RedirectCache {
  private readonly entries = new Map<string, { readonly url: string; readonly until: number }>();
  private readonly maxEntries: number;
  private readonly maxAgeMs: number;
  private readonly now: () => number;
  private readonly paused: () => boolean;

  constructor(opts: RedirectCacheOptions = {}) {
    this.maxEntries = opts.maxEntries ?? REDIRECT_CACHE_ENTRIES;
    this.maxAgeMs = opts.maxAgeMs ?? REDIRECT_CACHE_MAX_MS;
    this.now = opts.now ?? Date.now;
    this.paused = opts.paused ?? (() => false);
  }

  get size(): number {
    return this.entries.size;
  }

  get(repo: string, digest: string): string | undefined {
    if (this.entries.size === 0) return undefined;
    if (this.paused()) {
      this.entries.clear();
      return undefined;
    }
    const key = `${repo}@${digest}`;
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (this.now() < e.until) return e.url;
    this.entries.delete(key);
    return undefined;
  }

  /** Remembers a URL the registry just handed out; one without a parsable expiry is not kept. */
  set(repo: string, digest: string, url: string): void {
    if (this.paused()) return;
    const expiry = presignedExpiry(url);
    if (expiry === undefined) return;
    const now = this.now();
    const until = Math.min(expiry - VALIDITY_MARGIN_MS, now + this.maxAgeMs);
    if (until <= now) return;
    const key = `${repo}@${digest}`;
    // Insertion order is age order: the oldest entry goes first.
    this.entries.delete(key);
    if (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    this.entries.set(key, { url, until });
  }
}
