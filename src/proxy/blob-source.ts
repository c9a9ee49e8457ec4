/**
 * Where a blob's bytes come from: the store; else the fill in progress or a new one (one shared
 * origin fetch per blob, committed after verification: src/cache/blob-fills.ts); straight from
 * the origin, uncached, when the spool directory cannot be written. Whatever is served from the
 * cache or from another client's fetch passes the access gate first.
 */
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AccessGate } from '../access/access-control.js';
import type { BlobFill } from '../cache/blob-fill.js';
import type { BlobFills } from '../cache/blob-fills.js';
import type { BlobLocation } from '../cache/registry-store.js';
import type { ResilientStore } from '../cache/resilient-store.js';
import { SpoolError } from '../cache/spool-writer.js';
import { parseDigest } from '../oci/digest.js';
import { OciError } from '../oci/errors.js';
import type { Descriptor } from '../oci/media-types.js';
import { verifyingStream } from '../oci/verifying-stream.js';
import { headerString, originFailure, type Origin, type PullEvents } from './origin.js';
import { resolveRange, type ByteRange, type RangeRequest } from './range.js';
import { RedirectCache } from './redirect-cache.js';
import type { RequestContext, Source } from './request-context.js';
import type { Target } from './target.js';

/**
 * How long a background completion waits for the replica that owns a blob to upload it: its
 * uploads yield to pulls for up to 30 s (build-proxy.ts), then take as long as the upload.
 */
const OWNER_COMMIT_WAIT_MS = 5 * 60_000;

export interface BlobAnswer {
  readonly size: number | undefined;
  readonly source: Source;
  /** Absent for HEAD and for a redirect. */
  readonly stream?: Readable;
  readonly range?: ByteRange;
  /** Where the client fetches the bytes itself (a presigned URL: a credential, never logged). */
  readonly redirect?: string;
}

export type BlobLocator = Pick<ResilientStore, 'blobLocation'>;

/**
 * How long a cache registry that served a blob itself is not asked for redirects again: it has no
 * redirecting storage, and each ask costs a request whose body is cut off.
 */
const NO_REDIRECT_RECHECK_MS = 5 * 60_000;

/**
 * The cache registry's redirects for cached blobs (--blob-redirect=auto), remembered for a short
 * while (redirect-cache.ts). Asked through the resilient store, so that a failing registry is
 * skipped for its cool-down after one failure, as for any other read.
 */
export class BlobRedirects {
  private noRedirectUntil = 0;

  constructor(
    private readonly locator: BlobLocator,
    private readonly cache: RedirectCache = new RedirectCache(),
  ) {}

  /** Where the blob is, as the cache registry says; undefined when it is not asked or failed. */
  async locate(repo: string, digest: string, signal?: AbortSignal): Promise<BlobLocation | undefined> {
    const remembered = this.cache.get(repo, digest);
    if (remembered !== undefined) return { kind: 'redirect', url: remembered };
    if (Date.now() < this.noRedirectUntil) return undefined;
    const loc = await this.locator.blobLocation(repo, digest, signal);
    if (loc?.kind === 'served') this.noRedirectUntil = Date.now() + NO_REDIRECT_RECHECK_MS;
    if (loc?.kind === 'redirect') this.cache.set(repo, digest, loc.url);
    return loc;
  }
}

/** A blob on its way into the store. */
export interface BlobProgress {
  /** True once stored; false when it will not be. */
  readonly stored: Promise<boolean>;
}

export interface BlobSourceOptions {
  readonly origin: Origin;
  readonly store: ResilientStore;
  readonly fills: BlobFills;
  readonly access: AccessGate | undefined;
  readonly events?: PullEvents;
  /** With --blob-redirect=auto and a cache registry; absent: cached bytes are relayed. */
  readonly redirects?: BlobRedirects | undefined;
}

export class BlobSource {
  private readonly o: BlobSourceOptions;
  private joinedReaders = 0;

  constructor(opts: BlobSourceOptions) {
    this.o = opts;
  }

  /** Requests streaming from a fill another request started (they cost the origin nothing). */
  get waiters(): number {
    return this.joinedReaders;
  }

  async serve(
    t: Target,
    digest: string,
    method: 'GET' | 'HEAD',
    range: RangeRequest,
    ctx: RequestContext,
  ): Promise<BlobAnswer> {
    parseDigest(digest);
    const { store, fills, access, redirects } = this.o;
    let located: BlobLocation | undefined;
    if (method === 'GET' && redirects && !store.degraded) {
      located = await redirects.locate(t.cacheRepo, digest, ctx.signal);
      if (located?.kind === 'redirect') {
        await access?.authorize(t, 'blob', digest, ctx, {});
        return { size: undefined, source: 'cache', redirect: located.url };
      }
    }
    // The registry just said it does not hold the blob: no second question.
    const stat = located?.kind === 'missing' ? undefined : await store.statBlob(t.cacheRepo, digest);
    if (stat) {
      await access?.authorize(t, 'blob', digest, ctx, {});
      const r = resolveRange(range, stat.size);
      if (method === 'HEAD') return { size: stat.size, source: 'cache' };
      const opened = await store.openBlob(t.cacheRepo, digest, r, ctx.signal);
      if (opened) return { size: opened.size, source: 'cache', stream: opened.stream, ...(r ? { range: r } : {}) };
    }
    if (method === 'HEAD') return this.headAtOrigin(t, digest, ctx);
    if (ctx.signal?.aborted) throw new OciError('UNAVAILABLE', 'the client went away', { status: 499 });
    // Joining a fill another request started is serving what that request was allowed to fetch.
    if (fills.get(t.cacheRepo, digest)) await access?.authorize(t, 'blob', digest, ctx, {});
    if (fills.spoolUnavailable && !fills.get(t.cacheRepo, digest)) return this.passThrough(t, digest, range, ctx);
    const { fill, joined } = this.fill(t, digest, undefined, ctx.originAuthorization);
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
    if (joined) {
      this.joinedReaders++;
      stream.once('close', () => this.joinedReaders--);
    }
    return { size, source: joined ? 'shared-fetch' : 'origin', stream, ...(r ? { range: r } : {}) };
  }

  /**
   * For the persister: the blob is stored, or being fetched in the background until it is;
   * resolves once its bytes are fetched (storing them may take longer: `stored` tells).
   */
  async prefetch(t: Target, d: Descriptor): Promise<BlobProgress> {
    if (await this.o.store.statBlob(t.cacheRepo, d.digest)) return { stored: Promise.resolve(true) };
    const { fill } = this.fill(t, d.digest, d.size);
    fill.pin();
    const fetched = await fill.fetched;
    // Relayed from the replica that owns it: that one uploads it, in its own time. A manifest put
    // before its blobs are in the store would be refused, so this waits until they are.
    if (fetched && fill.storedElsewhere) return { stored: this.storedByOwner(t, d.digest) };
    // Uploads falling behind: hold the slot until this one is stored, so the spool stays bounded.
    if (this.o.fills.commitBacklogFull) await fill.committed;
    return { stored: fill.committed };
  }

  /** True once the store holds the blob another replica uploads; false after OWNER_COMMIT_WAIT_MS. */
  private async storedByOwner(t: Target, digest: string): Promise<boolean> {
    const until = Date.now() + OWNER_COMMIT_WAIT_MS;
    for (let wait = 500; Date.now() < until; wait = Math.min(wait * 2, 5_000)) {
      if (await this.o.store.statBlob(t.cacheRepo, digest)) return true;
      await sleep(wait, undefined, { ref: false });
    }
    return false;
  }

  private fill(
    t: Target,
    digest: string,
    declaredSize?: number,
    authorization?: string,
  ): { fill: BlobFill; joined: boolean } {
    const open = this.o.origin.blobRequest(t, digest, authorization);
    return this.o.fills.getOrStart(t.cacheRepo, digest, open, declaredSize);
  }

  /**
   * Straight from the origin to the client, nothing cached: when the spool directory cannot be
   * written. A whole blob is still verified on the way (the last chunk waits for the digest); a
   * byte range cannot be, and the client checks the blob it assembles.
   */
  private async passThrough(t: Target, digest: string, range: RangeRequest, ctx: RequestContext): Promise<BlobAnswer> {
    const headers: Record<string, string> = {};
    if (range.kind === 'single') {
      headers.range =
        range.suffix !== undefined ? `bytes=-${range.suffix}` : `bytes=${range.first ?? 0}-${range.last ?? ''}`;
    }
    const res = await this.o.origin.request(t, 'GET', 'blob', digest, {
      headers,
      ok: [200, 206],
      signal: ctx.signal,
      authorization: ctx.originAuthorization,
    });
    ctx.log.debug(
      { image: `${t.registry}/${t.repository}@${digest}` },
      'spool unavailable: blob served from the origin without caching',
    );
    this.o.events?.fallback?.('spool-direct');
    const length = Number(headerString(res.headers['content-length']) ?? NaN);
    if (res.statusCode === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(headerString(res.headers['content-range']) ?? '');
      if (!m) {
        res.body.destroy();
        throw new OciError('UNAVAILABLE', `origin ${t.registry} answered a range without a valid Content-Range`, {
          status: 502,
        });
      }
      return {
        size: Number(m[3]),
        source: 'origin',
        stream: res.body,
        range: { start: Number(m[1]), end: Number(m[2]) },
      };
    }
    const size = Number.isFinite(length) ? length : undefined;
    const verified = verifyingStream(digest, size);
    res.body.on('error', (err) => verified.destroy(err));
    verified.on('close', () => res.body.destroy());
    return { size, source: 'origin', stream: res.body.pipe(verified) };
  }

  private async headAtOrigin(t: Target, digest: string, ctx: RequestContext): Promise<BlobAnswer> {
    const inflight = this.o.fills.get(t.cacheRepo, digest);
    if (inflight?.size !== undefined) {
      await this.o.access?.authorize(t, 'blob', digest, ctx, {});
      return { size: inflight.size, source: 'shared-fetch' };
    }
    const res = await this.o.origin.request(t, 'HEAD', 'blob', digest, {
      signal: ctx.signal,
      authorization: ctx.originAuthorization,
    });
    try {
      await res.body.dump();
    } catch (err) {
      throw originFailure(err, t.registry);
    }
    const len = headerString(res.headers['content-length']);
    return { size: len === undefined ? undefined : Number(len), source: 'origin' };
  }
}
