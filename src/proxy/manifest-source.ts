/**
 * Manifests by digest: memory, then the store; from the origin one GET per repository and
 * reference at a time, verified before anyone sees it (the digest asked for, or the one the
 * origin claims; a size cap; a parse that proves it is a manifest or index). A manifest the
 * cluster tier served is remembered as such: the tier stores it, this node does not.
 */
import { Memo } from '../cache/memo.js';
import type { ResilientStore } from '../cache/resilient-store.js';
import type { StoredManifest } from '../cache/store.js';
import { digestOf, looksLikeDigest } from '../oci/digest.js';
import { OciError } from '../oci/errors.js';
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, parseManifest } from '../oci/media-types.js';
import { readCappedBytes } from '../oci/registry-client.js';
import { fromTier, headerString, originFailure, type Origin } from './origin.js';
import type { RequestContext } from './request-context.js';
import type { Target } from './target.js';

export class ManifestSource {
  private readonly origin: Origin;
  private readonly store: ResilientStore;
  private readonly memo = new Memo<StoredManifest>({ maxEntries: 5000, maxWeight: 64 * 1024 * 1024 });
  private readonly fetches = new Map<string, Promise<StoredManifest>>();
  private readonly fromTier = new WeakSet<StoredManifest>();

  constructor(origin: Origin, store: ResilientStore) {
    this.origin = origin;
    this.store = store;
  }

  /** The manifest from memory or the store; undefined when neither has it. */
  async cached(t: Target, digest: string): Promise<StoredManifest | undefined> {
    const key = `${t.cacheRepo}@${digest}`;
    const hit = this.memo.get(key);
    if (hit) return hit;
    const stored = await this.store.getManifest(t.cacheRepo, digest);
    if (stored) this.memo.set(key, stored, { weight: stored.bytes.byteLength });
    return stored;
  }

  /** Whether the store (not memory) holds it. */
  async stored(t: Target, digest: string): Promise<boolean> {
    return (await this.store.getManifest(t.cacheRepo, digest)) !== undefined;
  }

  /**
   * Whether the cluster tier served this manifest (and stores it, with its blobs and tag), or a
   * node's credential for one request fetched it: either way, not this proxy's to store.
   */
  storedByTier(m: StoredManifest): boolean {
    return this.fromTier.has(m);
  }

  /** GETs a manifest from the origin (one request per repository and reference at a time). */
  fetch(t: Target, reference: string, ctx: RequestContext): Promise<StoredManifest> {
    const key = `${t.cacheRepo}:${reference}`;
    let p = this.fetches.get(key);
    if (!p) {
      p = this.fetchOnce(t, reference, ctx).finally(() => this.fetches.delete(key));
      this.fetches.set(key, p);
    }
    return p;
  }

  private async fetchOnce(t: Target, reference: string, ctx: RequestContext): Promise<StoredManifest> {
    let bytes: Buffer;
    let contentType: string | undefined;
    let claimed: string | undefined;
    // Not the client's signal: other pullers may be waiting on this same fetch.
    const res = await this.origin.request(t, 'GET', 'manifest', reference, {
      headers: { accept: MANIFEST_ACCEPT },
      authorization: ctx.originAuthorization,
    });
    try {
      const length = Number(res.headers['content-length'] ?? 0);
      if (length > MAX_MANIFEST_BYTES) {
        res.body.destroy();
        const why = `origin manifest is ${length} bytes, over the ${MAX_MANIFEST_BYTES} byte cap`;
        throw new OciError('MANIFEST_INVALID', why, { status: 502 });
      }
      bytes = await readCappedBytes(res.body, MAX_MANIFEST_BYTES);
      contentType = headerString(res.headers['content-type']);
      claimed = headerString(res.headers['docker-content-digest']);
    } catch (err) {
      throw originFailure(err, t.registry);
    }
    const digest = verifiedDigest(bytes, reference, claimed, t.registry);
    let parsed;
    try {
      parsed = parseManifest(bytes, contentType);
    } catch (err) {
      // The origin's fault, not the client's: a gateway error, so containerd tries its next host.
      if (err instanceof OciError)
        throw new OciError(err.code, `origin ${t.registry}: ${err.message}`, { status: 502 });
      throw err;
    }
    const m: StoredManifest = { bytes, digest, mediaType: parsed.mediaType };
    // Fetched with a node's credential for one request: this proxy cannot complete the image (its
    // other blobs) with it later, so it does not store the manifest either.
    if (fromTier(res) || ctx.originAuthorization !== undefined) this.fromTier.add(m);
    this.memo.set(`${t.cacheRepo}@${digest}`, m, { weight: bytes.byteLength });
    ctx.log.debug({ image: `${t.registry}/${t.repository}`, reference, digest }, 'manifest fetched from origin');
    return m;
  }
}

/**
 * The digest of the origin's bytes, in the algorithm asked for (a digest reference) or claimed
 * (sha512), checked against both: a mismatch is the origin's fault (502).
 */
function verifiedDigest(bytes: Buffer, reference: string, claimed: string | undefined, registry: string): string {
  const byDigest = looksLikeDigest(reference);
  const expected = byDigest ? reference : claimed?.startsWith('sha512:') ? claimed : undefined;
  const digest = digestOf(bytes, expected?.startsWith('sha512:') ? 'sha512' : 'sha256');
  if (byDigest && digest !== reference) {
    const why = `origin ${registry} sent a manifest whose digest is ${digest}, not ${reference}`;
    throw new OciError('DIGEST_INVALID', why, { status: 502 });
  }
  if (claimed && claimed.split(':')[0] === digest.split(':')[0] && claimed !== digest) {
    throw new OciError('DIGEST_INVALID', `origin ${registry} claims ${claimed} for bytes whose digest is ${digest}`, {
      status: 502,
    });
  }
  return digest;
}
