/**
 * The pull path: where the bytes of a manifest or blob come from, and what is kept of them.
 *
 * - By digest: memory, then the store; the origin only when neither has it.
 * - Tags: served from the cache while younger than the tag TTL; after that revalidated with a
 *   HEAD (free against Docker Hub's pull limit); when the origin cannot answer, or deleted the
 *   tag, the cached tag is served stale and the log says so. Auth refusals are never papered over.
 * - Cold blobs: one shared origin fetch per blob (BlobFills), committed after verification.
 * - Private repositories (with an access gate, i.e. pod credentials): whatever is served from the
 *   cache, from another client's fetch or stale passes `access.authorize` first; every 200 from
 *   the origin is reported to `access.observe` (which credential it accepted). See src/access.
 */
import type { Readable } from 'node:stream';
import type { AccessGate, ObjectKind } from '../access/access-control.js';
import type { Log as Logger } from '../observability/logger.js';
import { SpoolError, type BlobFill, type BlobFills, type OriginBlob } from '../cache/blob-fill.js';
import { verifyingStream } from '../oci/verifying-stream.js';
import { Memo } from '../cache/memo.js';
import type { ResilientStore } from '../cache/resilient-store.js';
import type { StoredManifest, TagRecord } from '../cache/store.js';
import { digestOf, looksLikeDigest, parseDigest } from '../oci/digest.js';
import { OciError } from '../oci/errors.js';
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, parseManifest, type Descriptor } from '../oci/media-types.js';
import { isValidTag } from '../oci/reference.js';
import { readCappedBytes, type RegistryClient, type RegistryResponse } from '../oci/registry-client.js';
import type { Credential } from '../oci/credentials.js';
import { isAuthError, isNotFound, originFailure, originStatusError } from './origin-errors.js';
import { Persister, type BlobProgress } from './persister.js';
import { resolveRange, type ByteRange, type RangeRequest } from './range.js';
import type { Target } from './target.js';

export type Source = 'cache' | 'origin' | 'shared-fetch' | 'stale';

export interface ManifestAnswer {
  readonly manifest: StoredManifest;
  readonly source: Source;
}

export interface BlobAnswer {
  readonly size: number | undefined;
  readonly source: Source;
  /** Absent for HEAD. */
  readonly stream?: Readable;
  readonly range?: ByteRange;
}

export interface PullServiceOptions {
  readonly origin: RegistryClient;
  readonly store: ResilientStore;
  readonly fills: BlobFills;
  readonly tagTtlMs: number;
  readonly platforms: readonly string[] | 'all';
  readonly log: Logger;
  readonly now?: () => number;
  /** Decides who may be served private images from the cache; none: every cached copy is served. */
  readonly access?: AccessGate;
}

export interface RequestContext {
  readonly signal?: AbortSignal;
  readonly log: Logger;
}

export class PullService {
  private readonly o: PullServiceOptions;
  private readonly now: () => number;
  readonly persister: Persister;
  private readonly manifests = new Memo<StoredManifest>({ maxEntries: 5000, maxWeight: 64 * 1024 * 1024 });
  private readonly tags = new Memo<TagRecord>({ maxEntries: 20000 });
  private readonly manifestFetches = new Map<string, Promise<StoredManifest>>();
  private readonly tagWrites = new Map<string, Promise<boolean>>();

  constructor(opts: PullServiceOptions) {
    this.o = opts;
    this.now = opts.now ?? Date.now;
    this.persister = new Persister({
      ensureBlob: (t, d) => this.ensureBlob(t, d),
      ensureManifest: (t, digest) => this.ensureManifest(t, digest),
      hasManifest: (t, digest) => this.manifestInStore(t, digest),
      putManifest: async (t, m) => this.o.store.putManifest(t.cacheRepo, m),
      putTag: async (t, tag, m, confirmedAt) => this.writeTag(t, tag, m, confirmedAt),
      platforms: opts.platforms,
      log: opts.log,
    });
  }

  async manifest(t: Target, reference: string, ctx: RequestContext): Promise<ManifestAnswer> {
    if (looksLikeDigest(reference)) return this.manifestByDigest(t, parseDigest(reference).value, ctx);
    if (!isValidTag(reference)) throw new OciError('NAME_INVALID', `invalid tag ${JSON.stringify(reference.slice(0, 140))}`, { status: 400 });
    return this.manifestByTag(t, reference, ctx);
  }

  private async manifestByDigest(t: Target, digest: string, ctx: RequestContext): Promise<ManifestAnswer> {
    const cached = await this.cachedManifest(t, digest);
    if (cached) {
      await this.authorize(t, 'manifest', digest, ctx);
      return { manifest: cached, source: 'cache' };
    }
    const m = await this.fetchManifest(t, digest, ctx);
    void this.persister.persist(t, m);
    return { manifest: m, source: 'origin' };
  }

  private async manifestByTag(t: Target, tag: string, ctx: RequestContext): Promise<ManifestAnswer> {
    const key = `${t.cacheRepo}:${tag}`;
    const now = this.now();
    const rec = this.tags.get(key) ?? (await this.o.store.getTag(t.cacheRepo, tag));
    const cached = rec ? await this.cachedManifest(t, rec.digest) : undefined;
    if (rec && cached && now - rec.confirmedAt < this.o.tagTtlMs) {
      this.tags.set(key, rec, { ttlMs: rec.confirmedAt + this.o.tagTtlMs - now });
      await this.authorize(t, 'manifest', tag, ctx);
      return { manifest: cached, source: 'cache' };
    }
    if (cached) {
      const revalidated = await this.revalidate(t, tag, cached, ctx);
      if (revalidated) return revalidated;
    }
    let m: StoredManifest;
    try {
      m = await this.fetchManifest(t, tag, ctx);
    } catch (err) {
      if (cached && !isAuthError(err)) return this.stale(t, tag, cached, (err as Error).message, ctx, !isNotFound(err));
      throw err;
    }
    this.rememberTag(t, tag, m.digest, now);
    void this.persister.persist(t, m, { name: tag, confirmedAt: now });
    return { manifest: m, source: 'origin' };
  }

  /** A HEAD at the origin: same digest -> still good; else undefined (fetch anew) or stale. */
  private async revalidate(t: Target, tag: string, cached: StoredManifest, ctx: RequestContext): Promise<ManifestAnswer | undefined> {
    let status: number;
    let digest: string | undefined;
    let credential: Credential | undefined;
    try {
      const res = await this.atOrigin(t, 'HEAD', 'manifests', tag, { headers: { accept: MANIFEST_ACCEPT }, signal: ctx.signal });
      await res.body.dump();
      status = res.statusCode;
      digest = headerString(res.headers['docker-content-digest']);
      credential = res.credential;
    } catch (err) {
      const failure = originFailure(err, t.registry);
      if (isAuthError(failure)) throw failure;
      return this.stale(t, tag, cached, failure.message, ctx, true);
    }
    if (status === 200) this.o.access?.observe(t, 'manifest', tag, credential);
    if (status === 200 && digest === cached.digest) {
      const now = this.now();
      this.rememberTag(t, tag, cached.digest, now);
      void this.writeTag(t, tag, cached, now);
      return { manifest: cached, source: 'cache' };
    }
    if (status === 200) return undefined;
    const err = originStatusError(status, 'manifest', t.registry, tag);
    if (isAuthError(err)) throw err;
    return this.stale(t, tag, cached, err.message, ctx, status !== 404);
  }

  /**
   * Serves a cached tag the origin could not confirm. A private one only as the access gate says:
   * `unreachable` when the origin could not answer at all (its origin-down policy applies).
   */
  private async stale(t: Target, tag: string, cached: StoredManifest, why: string, ctx: RequestContext, unreachable: boolean): Promise<ManifestAnswer> {
    await this.authorize(t, 'manifest', tag, ctx, unreachable ? why : undefined);
    ctx.log.warn({ image: `${t.registry}/${t.repository}:${tag}`, digest: cached.digest, reason: why }, 'origin could not confirm tag; serving the cached copy (stale-if-error)');
    return { manifest: cached, source: 'stale' };
  }

  /**
   * Tag writes of one tag, one after the other, and never older over newer: the persist of an
   * image the tag pointed to before can finish after the persist of what it points to now.
   */
  private writeTag(t: Target, tag: string, m: StoredManifest, confirmedAt: number): Promise<boolean> {
    const key = `${t.cacheRepo}:${tag}`;
    const write = (this.tagWrites.get(key) ?? Promise.resolve(true)).then(async () => {
      const current = await this.o.store.getTag(t.cacheRepo, tag);
      if (current && current.confirmedAt > confirmedAt) return true;
      return this.o.store.putTag(t.cacheRepo, tag, m, confirmedAt);
    });
    this.tagWrites.set(key, write);
    void write
      .finally(() => {
        if (this.tagWrites.get(key) === write) this.tagWrites.delete(key);
      })
      .catch(() => undefined);
    return write;
  }

  private rememberTag(t: Target, tag: string, digest: string, confirmedAt: number): void {
    this.tags.set(`${t.cacheRepo}:${tag}`, { digest, confirmedAt }, { ttlMs: this.o.tagTtlMs });
  }

  private async authorize(t: Target, kind: ObjectKind, reference: string, ctx: RequestContext, originUnreachable?: string): Promise<void> {
    if (!this.o.access) return;
    await this.o.access.authorize(t, kind, reference, ctx, originUnreachable === undefined ? {} : { originUnreachable });
  }

  private async cachedManifest(t: Target, digest: string): Promise<StoredManifest | undefined> {
    const key = `${t.cacheRepo}@${digest}`;
    const hit = this.manifests.get(key);
    if (hit) return hit;
    const stored = await this.o.store.getManifest(t.cacheRepo, digest);
    if (stored) this.manifests.set(key, stored, { weight: stored.bytes.byteLength });
    return stored;
  }

  /** GETs a manifest from the origin (one request per repository and reference at a time). */
  private fetchManifest(t: Target, reference: string, ctx: RequestContext): Promise<StoredManifest> {
    const key = `${t.cacheRepo}:${reference}`;
    let p = this.manifestFetches.get(key);
    if (!p) {
      p = this.doFetchManifest(t, reference, ctx).finally(() => this.manifestFetches.delete(key));
      this.manifestFetches.set(key, p);
    }
    return p;
  }

  private async doFetchManifest(t: Target, reference: string, ctx: RequestContext): Promise<StoredManifest> {
    let bytes: Buffer;
    let contentType: string | undefined;
    let claimed: string | undefined;
    try {
      // Not the client's signal: other pullers may be waiting on this same fetch.
      const res = await this.atOrigin(t, 'GET', 'manifests', reference, { headers: { accept: MANIFEST_ACCEPT } });
      if (res.statusCode !== 200) {
        await res.body.dump();
        throw originStatusError(res.statusCode, 'manifest', t.registry, reference);
      }
      this.o.access?.observe(t, 'manifest', reference, res.credential);
      const length = Number(res.headers['content-length'] ?? 0);
      if (length > MAX_MANIFEST_BYTES) {
        res.body.destroy();
        throw new OciError('MANIFEST_INVALID', `origin manifest is ${length} bytes, over the ${MAX_MANIFEST_BYTES} byte cap`, { status: 502 });
      }
      bytes = await readCappedBytes(res.body, MAX_MANIFEST_BYTES);
      contentType = headerString(res.headers['content-type']);
      claimed = headerString(res.headers['docker-content-digest']);
    } catch (err) {
      throw originFailure(err, t.registry);
    }
    const expected = looksLikeDigest(reference) ? reference : claimed && claimed.startsWith('sha512:') ? claimed : undefined;
    const digest = digestOf(bytes, expected?.startsWith('sha512:') ? 'sha512' : 'sha256');
    if (looksLikeDigest(reference) && digest !== reference) {
      throw new OciError('DIGEST_INVALID', `origin ${t.registry} sent a manifest whose digest is ${digest}, not ${reference}`, { status: 502 });
    }
    if (claimed && claimed.split(':')[0] === digest.split(':')[0] && claimed !== digest) {
      throw new OciError('DIGEST_INVALID', `origin ${t.registry} claims ${claimed} for bytes whose digest is ${digest}`, { status: 502 });
    }
    let parsed;
    try {
      parsed = parseManifest(bytes, contentType);
    } catch (err) {
      // The origin's fault, not the client's: a gateway error, so containerd tries its next host.
      if (err instanceof OciError) throw new OciError(err.code, `origin ${t.registry}: ${err.message}`, { status: 502 });
      throw err;
    }
    const m: StoredManifest = { bytes, digest, mediaType: parsed.mediaType };
    this.manifests.set(`${t.cacheRepo}@${digest}`, m, { weight: bytes.byteLength });
    ctx.log.debug({ image: `${t.registry}/${t.repository}`, reference, digest }, 'manifest fetched from origin');
    return m;
  }

  async blob(t: Target, digest: string, method: 'GET' | 'HEAD', range: RangeRequest, ctx: RequestContext): Promise<BlobAnswer> {
    parseDigest(digest);
    const stat = await this.o.store.statBlob(t.cacheRepo, digest);
    if (stat) {
      await this.authorize(t, 'blob', digest, ctx);
      const r = resolveRange(range, stat.size);
      if (method === 'HEAD') return { size: stat.size, source: 'cache' };
      const opened = await this.o.store.openBlob(t.cacheRepo, digest, r, ctx.signal);
      if (opened) return { size: opened.size, source: 'cache', stream: opened.stream, ...(r ? { range: r } : {}) };
    }
    if (method === 'HEAD') return this.headOriginBlob(t, digest, ctx);
    if (ctx.signal?.aborted) throw new OciError('UNAVAILABLE', 'the client went away', { status: 499 });
    // Joining a fill another request started is serving what that request was allowed to fetch.
    if (this.o.fills.get(t.cacheRepo, digest)) await this.authorize(t, 'blob', digest, ctx);
    if (this.o.fills.spoolUnavailable && !this.o.fills.get(t.cacheRepo, digest)) return this.passThrough(t, digest, range, ctx);
    const { fill, joined } = this.startFill(t, digest);
    try {
      await fill.started;
    } catch (err) {
      // The local disk failed, not the origin: serve as a plain proxy, uncached.
      if (err instanceof SpoolError) return this.passThrough(t, digest, range, ctx);
      throw originFailure(err, t.registry);
    }
    const size = fill.size;
    const r = size === undefined ? undefined : resolveRange(range, size);
    const stream = fill.reader(r?.start ?? 0, r?.end, { cancelWhenAbandoned: true });
    return { size, source: joined ? 'shared-fetch' : 'origin', stream, ...(r ? { range: r } : {}) };
  }

  /**
   * Straight from the origin to the client, nothing cached: when the spool directory cannot be
   * written. A whole blob is still verified on the way (the last chunk waits for the digest); a
   * byte range cannot be, and the client checks the blob it assembles.
   */
  private async passThrough(t: Target, digest: string, range: RangeRequest, ctx: RequestContext): Promise<BlobAnswer> {
    const headers: Record<string, string> = {};
    if (range.kind === 'single') {
      headers.range = range.suffix !== undefined ? `bytes=-${range.suffix}` : `bytes=${range.first ?? 0}-${range.last ?? ''}`;
    }
    let res: RegistryResponse;
    try {
      res = await this.atOrigin(t, 'GET', 'blobs', digest, { headers, signal: ctx.signal });
    } catch (err) {
      throw originFailure(err, t.registry);
    }
    if (res.statusCode !== 200 && res.statusCode !== 206) {
      await res.body.dump();
      throw originStatusError(res.statusCode, 'blob', t.registry, digest);
    }
    this.o.access?.observe(t, 'blob', digest, res.credential);
    ctx.log.debug({ image: `${t.registry}/${t.repository}@${digest}` }, 'spool unavailable: blob served from the origin without caching');
    const length = Number(headerString(res.headers['content-length']) ?? NaN);
    if (res.statusCode === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(headerString(res.headers['content-range']) ?? '');
      if (!m) {
        res.body.destroy();
        throw new OciError('UNAVAILABLE', `origin ${t.registry} answered a range without a valid Content-Range`, { status: 502 });
      }
      return { size: Number(m[3]), source: 'origin', stream: res.body, range: { start: Number(m[1]), end: Number(m[2]) } };
    }
    const size = Number.isFinite(length) ? length : undefined;
    const verified = verifyingStream(digest, size);
    res.body.on('error', (err) => verified.destroy(err));
    verified.on('close', () => res.body.destroy());
    return { size, source: 'origin', stream: res.body.pipe(verified) };
  }

  private async headOriginBlob(t: Target, digest: string, ctx: RequestContext): Promise<BlobAnswer> {
    const inflight = this.o.fills.get(t.cacheRepo, digest);
    if (inflight?.size !== undefined) {
      await this.authorize(t, 'blob', digest, ctx);
      return { size: inflight.size, source: 'shared-fetch' };
    }
    try {
      const res = await this.atOrigin(t, 'HEAD', 'blobs', digest, { signal: ctx.signal });
      await res.body.dump();
      if (res.statusCode !== 200) throw originStatusError(res.statusCode, 'blob', t.registry, digest);
      this.o.access?.observe(t, 'blob', digest, res.credential);
      const len = headerString(res.headers['content-length']);
      return { size: len === undefined ? undefined : Number(len), source: 'origin' };
    } catch (err) {
      throw originFailure(err, t.registry);
    }
  }

  private startFill(t: Target, digest: string): { fill: BlobFill; joined: boolean } {
    return this.o.fills.getOrStart(
      t.cacheRepo,
      digest,
      (signal) => this.openOriginBlob(t, digest, signal),
      (fill) => this.o.store.putBlobFile(t.cacheRepo, digest, fill.written, fill.file),
    );
  }

  private async openOriginBlob(t: Target, digest: string, signal: AbortSignal): Promise<OriginBlob> {
    const res = await this.atOrigin(t, 'GET', 'blobs', digest, { signal });
    if (res.statusCode !== 200) {
      await res.body.dump();
      throw originStatusError(res.statusCode, 'blob', t.registry, digest);
    }
    this.o.access?.observe(t, 'blob', digest, res.credential);
    const len = headerString(res.headers['content-length']);
    return { size: len === undefined ? undefined : Number(len), stream: res.body };
  }

  private atOrigin(
    t: Target,
    method: 'GET' | 'HEAD',
    kind: 'manifests' | 'blobs',
    reference: string,
    opts: { headers?: Record<string, string>; signal?: AbortSignal } = {},
  ): Promise<RegistryResponse> {
    return this.o.origin.request({
      registry: t.registry,
      repository: t.repository,
      method,
      path: `/v2/${t.repository}/${kind}/${reference}`,
      followRedirects: kind === 'blobs',
      ...opts,
    });
  }

  /** For the persister: the blob is stored, or being fetched in the background until it is. */
  private async ensureBlob(t: Target, d: Descriptor): Promise<BlobProgress> {
    if (await this.o.store.statBlob(t.cacheRepo, d.digest)) return { stored: Promise.resolve(true) };
    const { fill } = this.startFill(t, d.digest);
    fill.pin();
    await fill.fetched;
    // Uploads falling behind: hold the slot until this one is stored, so the spool stays bounded.
    if (this.o.fills.commitBacklogFull) await fill.committed;
    return { stored: fill.committed };
  }

  private async ensureManifest(t: Target, digest: string): Promise<boolean> {
    if (await this.manifestInStore(t, digest)) return true;
    const m = await this.fetchManifest(t, digest, { log: this.o.log });
    return this.persister.persistManifest(t, m);
  }

  private async manifestInStore(t: Target, digest: string): Promise<boolean> {
    return (await this.o.store.getManifest(t.cacheRepo, digest)) !== undefined;
  }
}

function headerString(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}
