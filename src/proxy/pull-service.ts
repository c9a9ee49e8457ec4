/**
 * The pull path's entry: a manifest or a blob for a target, from wherever it can be had, and what
 * the origin served handed to the persister to keep.
 *
 * - Manifests by digest: memory, then the store, then the origin (manifest-source.ts).
 * - Tags: the tag resolver (tag-resolver.ts): the cache while fresh, revalidated after, stale if
 *   the origin cannot confirm.
 * - Blobs: the blob source (blob-source.ts): the store, a shared fill, or straight from the origin.
 * - Private repositories (with an access gate, i.e. pod credentials): a client that is not the node
 *   itself is admitted to public repositories only (`access.admit`, before anything is fetched);
 *   whatever is served from the cache, from another client's fetch or stale passes
 *   `access.authorize` first; every accepted answer from the origin is reported to
 *   `access.observe` (origin.ts). See src/access.
 * - With a cluster tier (--cluster-proxy), what the store lacks is asked of the tier before the
 *   origin (origin.ts); what the tier served it stores, so this node persists none of it.
 */
import type { AccessGate } from '../access/access-control.js';
import type { BlobFills } from '../cache/blob-fills.js';
import type { ResilientStore } from '../cache/resilient-store.js';
import type { StoredManifest } from '../cache/store.js';
import type { Log as Logger } from '../observability/logger.js';
import { parseManifestReference } from '../oci/api-path.js';
import { OciError } from '../oci/errors.js';
import { negotiateManifest } from '../oci/media-types.js';
import type { RegistryClient } from '../oci/registry-client.js';
import { BlobSource, type BlobAnswer, type BlobRedirects } from './blob-source.js';
import type { ClusterTier } from './cluster-tier.js';
import { ManifestSource } from './manifest-source.js';
import { Origin, type PullEvents } from './origin.js';
import { Persister } from './persister.js';
import type { RangeRequest } from './range.js';
import type { RequestContext, Source } from './request-context.js';
import { TagResolver, TagWrites, type StaleSink } from './tag-resolver.js';
import type { Target } from './target.js';

export interface ManifestAnswer {
  readonly manifest: StoredManifest;
  readonly source: Source;
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
  /** Asked before the origin for what the store lacks (--cluster-proxy); none: the origin only. */
  readonly tier?: ClusterTier;
  /** Rate limits the origins state and fallbacks taken, for metrics. */
  readonly events?: PullEvents;
  /** Told of every tag served stale (stale-if-error); the node proxy records Events on its pods. */
  readonly onStale?: StaleSink;
  /** Cached blob GETs answered with the cache registry's redirect (--blob-redirect=auto). */
  readonly blobRedirects?: BlobRedirects;
  /** The vulnerability gate (--scan-policy): a manifest whose verdict it denies is refused. */
  readonly gate?: ServeGate;
}

/** What the proxy asks of the vulnerability gate (src/scan/gate.ts). */
export interface ServeGate {
  serve(
    registry: string,
    repository: string,
    digest: string,
  ): { readonly action: string; readonly reason: string; readonly outcome: string };
}

export class PullService {
  readonly persister: Persister;
  private readonly access: AccessGate | undefined;
  private readonly gate: ServeGate | undefined;
  private readonly log: Logger;
  private readonly manifests: ManifestSource;
  private readonly tags: TagResolver;
  private readonly blobs: BlobSource;

  constructor(opts: PullServiceOptions) {
    const { store, fills, log } = opts;
    this.access = opts.access;
    const events = opts.events ?? {};
    const origin = new Origin(opts.origin, opts.access, opts.tier, events);
    this.gate = opts.gate;
    this.log = log;
    const writes = new TagWrites(store);
    this.manifests = new ManifestSource(origin, store);
    this.tags = new TagResolver({
      origin,
      store,
      manifests: this.manifests,
      writes,
      tagTtlMs: opts.tagTtlMs,
      now: opts.now ?? Date.now,
      access: opts.access,
      events,
      ...(opts.onStale ? { onStale: opts.onStale } : {}),
    });
    this.blobs = new BlobSource({
      origin,
      store,
      fills,
      access: opts.access,
      events,
      redirects: opts.blobRedirects,
    });
    this.persister = new Persister({
      blobs: this.blobs,
      manifests: this.manifests,
      tags: writes,
      store,
      platforms: opts.platforms,
      log,
    });
  }

  /**
   * A manifest by tag or digest. With `accept` (the media types the client's Accept names) the
   * answer is negotiated as distribution does (oci/media-types.ts): a refusal is 404
   * MANIFEST_UNKNOWN, a Docker list asked for by tag may be answered with its linux/amd64 image.
   */
  async manifest(
    t: Target,
    reference: string,
    ctx: RequestContext,
    accept?: ReadonlySet<string>,
  ): Promise<ManifestAnswer> {
    const ref = parseManifestReference(reference);
    // A client that is not the node itself gets public repositories only, cached or not.
    await this.access?.admit(t, 'manifest', reference, ctx);
    let answer: ManifestAnswer;
    if (ref.kind === 'digest') {
      answer = await this.manifestByDigest(t, ref.digest, ctx);
    } else {
      const resolved = await this.tags.resolve(t, ref.tag, ctx);
      if (resolved.fetchedAt !== undefined && !this.manifests.storedByTier(resolved.manifest)) {
        void this.persister.persist(t, resolved.manifest, { name: ref.tag, confirmedAt: resolved.fetchedAt });
      }
      answer = { manifest: resolved.manifest, source: resolved.source };
    }
    if (accept === undefined) return this.gated(t, answer);
    const choice = negotiateManifest(answer.manifest, accept, ref.kind === 'tag');
    if (choice.kind === 'refuse') throw new OciError('MANIFEST_UNKNOWN', choice.message);
    if (choice.kind === 'platform') return this.gated(t, await this.manifestByDigest(t, choice.digest, ctx));
    return this.gated(t, answer);
  }

  /** The answer, unless the vulnerability gate denies its digest (an image's or its index's verdict). */
  private gated(t: Target, answer: ManifestAnswer): ManifestAnswer {
    const d = this.gate?.serve(t.registry, t.repository, answer.manifest.digest);
    if (!d) return answer;
    const fields = { registry: t.registry, repository: t.repository, digest: answer.manifest.digest, reason: d.reason };
    // Served anyway: the log says why (warn mode, or a scan without a verdict failing open).
    if (d.action === 'warn') this.log.info(fields, 'manifest served although the vulnerability gate fails it (warn)');
    else if (d.action === 'allow' && d.outcome === 'scanner-down')
      this.log.info(fields, 'manifest served without a verdict');
    if (d.action !== 'deny') return answer;
    this.log.warn(fields, 'manifest refused by the vulnerability gate');
    throw new OciError('DENIED', `refused by the vulnerability gate: ${d.reason}`);
  }

  /** Requests streaming a blob from a fill another request started. */
  get blobWaiters(): number {
    return this.blobs.waiters;
  }

  async blob(
    t: Target,
    digest: string,
    method: 'GET' | 'HEAD',
    range: RangeRequest,
    ctx: RequestContext,
  ): Promise<BlobAnswer> {
    await this.access?.admit(t, 'blob', digest, ctx);
    return this.blobs.serve(t, digest, method, range, ctx);
  }

  private async manifestByDigest(t: Target, digest: string, ctx: RequestContext): Promise<ManifestAnswer> {
    const cached = await this.manifests.cached(t, digest);
    if (cached) {
      await this.access?.authorize(t, 'manifest', digest, ctx, {});
      return { manifest: cached, source: 'cache' };
    }
    const m = await this.manifests.fetch(t, digest, ctx);
    if (!this.manifests.storedByTier(m)) void this.persister.persist(t, m);
    return { manifest: m, source: 'origin' };
  }
}
