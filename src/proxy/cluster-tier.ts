/**
 * The cluster tier as a node proxy sees it (docs/cluster-tier.md): what the cache registry lacks
 * is asked of one cluster-proxy replica, chosen per object by rendezvous hashing, so every node
 * asks the same replica for the same object and that replica's single-flight makes it one origin
 * fetch for the cluster. The replica speaks the distribution API; the origin it stands for goes
 * in `?ns=`. An answer counts only when it is what was asked for and carries the cluster proxy's
 * `Pullthrough-Source` header (the replica stores what it served: the node does not upload it).
 * Anything else (refused, unreachable, slow to answer headers, a 5xx) is no answer: the caller
 * goes to the origin itself, and a replica that failed is skipped for the cool-down.
 *
 * A private object (the tier answered 401 without a credential) is asked again with the
 * credential this node proved at the origin for this one request, in HOP_AUTHORIZATION_HEADER:
 * a bearer token scoped to the repository, or (an origin that only speaks Basic) the Basic
 * credential itself. It is sent with that request only, never kept here; which repositories
 * needed one is remembered (not the credential), so their next requests carry one at once.
 */
import { createHash } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { request, type Dispatcher } from 'undici';
import type { ObjectKind } from '../access/access-control.js';
import type { HopAuthorizer } from '../access/hop-credential.js';
import { describe, type RegistryResponse } from '../oci/registry-client.js';
import type { Target } from './target.js';

/** The header a cluster proxy names its source in; its presence marks a cluster proxy's answer. */
export const SOURCE_HEADER = 'pullthrough-source';

/**
 * The header a node proxy passes its origin credential for one request in (docs/credentials.md,
 * "Across the cluster tier"). Not `Authorization`: that would be a credential for the cluster
 * proxy itself.
 */
export const HOP_AUTHORIZATION_HEADER = 'pullthrough-origin-authorization';

/** How long a repository the tier refused without a credential is asked with one at once. */
const PRIVATE_MEMORY_MS = 10 * 60_000;
const PRIVATE_MEMORY_MAX = 10_000;

/** An origin answer, and whether the cluster tier gave it (and stores the object itself). */
export interface TierResponse extends RegistryResponse {
  readonly fromTier: true;
}

/** Resolves a host name to every address it has (a headless Service: one per ready replica). */
export type LookupAll = (host: string) => Promise<readonly string[]>;

const lookupAll: LookupAll = async (host) => (await lookup(host, { all: true })).map((a) => a.address);

/** How long a resolved list of replicas is used before the names are looked up again. */
const RESOLVE_EVERY_MS = 10_000;

/**
 * The replicas from the configured URLs: an IP address is one replica; a host name stands for
 * every address it resolves to (a headless Service), looked up again every RESOLVE_EVERY_MS. A
 * failed lookup keeps the last list: the replicas' own failures are what the cool-down is for.
 */
export class ReplicaList {
  private readonly urls: readonly URL[];
  private readonly resolve: LookupAll;
  private readonly now: () => number;
  private list: readonly string[] = [];
  private resolvedAt = -Infinity;
  private refreshing: Promise<void> | undefined;

  constructor(urls: readonly URL[], resolve: LookupAll = lookupAll, now: () => number = Date.now) {
    this.urls = urls;
    this.resolve = resolve;
    this.now = now;
  }

  async current(): Promise<readonly string[]> {
    if (this.now() - this.resolvedAt >= RESOLVE_EVERY_MS) {
      this.refreshing ??= this.refresh().finally(() => (this.refreshing = undefined));
      await this.refreshing;
    }
    return this.list;
  }

  private async refresh(): Promise<void> {
    const out: string[] = [];
    for (const u of this.urls) {
      const host = u.hostname.replace(/^\[|\]$/g, '');
      if (isIP(host)) {
        out.push(baseUrl(u));
        continue;
      }
      try {
        for (const a of await this.resolve(host)) out.push(baseUrl(u, a));
      } catch {
        out.push(...this.list.filter((r) => r.startsWith(`${u.protocol}//`)));
      }
    }
    this.list = [...new Set(out)];
    this.resolvedAt = this.now();
  }
}

/** `scheme://host:port` of a replica, at `address` instead of the URL's host when given. */
export function baseUrl(u: URL, address?: string): string {
  const host =
    address === undefined
      ? u.host
      : `${isIP(address) === 6 ? `[${address}]` : address}:${u.port || (u.protocol === 'https:' ? 443 : 80)}`;
  return `${u.protocol}//${host}`;
}

export interface ClusterTierOptions {
  readonly replicas: ReplicaList;
  /**
   * This proxy's own base URL among them (a cluster proxy replica, `baseUrl`): what it owns it
   * fetches from the origin itself. What another replica owns it asks that one for, its
   * background completions included, so two replicas never fetch the same object.
   */
  readonly self?: string | undefined;
  /** Bounds connect and headers (the agent's timeouts). */
  readonly dispatcher: Dispatcher;
  readonly cooldownMs: number;
  /** A replica failed to answer and is skipped for the cool-down; for the log. */
  readonly onUnavailable?: (replica: string, reason: string) => void;
  /** No replica could be asked (every one cooling down, or none resolved); for metrics. */
  readonly onSkipped?: () => void;
  /**
   * A node proxy's way to a credential for one private object (src/access/hop-credential.ts);
   * absent (a replica): requests carry only the credential they came with.
   */
  readonly authorize?: HopAuthorizer;
  readonly now?: () => number;
}

export interface TierRequest {
  readonly headers?: Record<string, string>;
  readonly signal?: AbortSignal | undefined;
  /** Statuses that are an answer. */
  readonly ok: readonly number[];
  /** The origin credential the request came with (a replica relaying a node's request). */
  readonly authorization?: string | undefined;
}

export class ClusterTier {
  private readonly o: ClusterTierOptions;
  private readonly downUntil = new Map<string, number>();
  private readonly now: () => number;
  private readonly self: string | undefined;
  /** Repositories the tier refused without a credential, until when (insertion order: oldest first). */
  private readonly privateUntil = new Map<string, number>();

  constructor(opts: ClusterTierOptions) {
    this.o = opts;
    this.self = opts.self;
    this.now = opts.now ?? Date.now;
  }

  /**
   * The replica that owns `key` among those not cooling down: the highest hash of replica and key
   * (rendezvous hashing), so losing or adding a replica moves only the keys it owns.
   */
  pick(replicas: readonly string[], key: string): string | undefined {
    const now = this.now();
    let best: string | undefined;
    let bestScore = '';
    for (const r of replicas) {
      if ((this.downUntil.get(r) ?? 0) > now) continue;
      const score = createHash('sha256').update(`${r}\n${key}`).digest('hex');
      if (score > bestScore) {
        best = r;
        bestScore = score;
      }
    }
    return best;
  }

  /** The tier's answer for one object, or undefined: go to the origin. Never throws. */
  async request(
    t: Target,
    method: 'GET' | 'HEAD',
    kind: ObjectKind,
    reference: string,
    opts: TierRequest,
  ): Promise<TierResponse | undefined> {
    const replica = this.pick(await this.o.replicas.current(), `${t.registry}/${t.repository}@${reference}`);
    // Its own objects a replica fetches itself: the chain of owners ends here. (A replica never
    // cools itself down, so an object owned by a higher-scoring replica only ever moves up.)
    if (replica === undefined) {
      this.o.onSkipped?.();
      return undefined;
    }
    if (replica === this.self) return undefined;
    const path = `/v2/${t.repository}/${kind === 'manifest' ? 'manifests' : 'blobs'}/${reference}`;
    const url = `${replica}${path}?ns=${encodeURIComponent(t.registry)}`;
    const repo = `${t.registry}/${t.repository}`;
    let hop = opts.authorization;
    // A HEAD moves no bytes: for a private object the node's own HEAD at the origin (what a
    // credential for the tier costs) is the answer, so a HEAD is never asked with one.
    if (hop === undefined && this.o.authorize && this.knownPrivate(repo)) {
      if (method === 'HEAD') return undefined;
      hop = await this.hopFor(t, kind, reference, opts.signal);
      if (hop === undefined) return undefined;
    }
    let res = await this.ask(replica, url, method, opts, hop);
    if (res?.statusCode === 401 && hop === undefined && this.o.authorize) {
      // Private to the tier: this node proves its own access at the origin, and asks again with it.
      await res.body.dump().catch(() => undefined);
      this.notePrivate(repo);
      if (method === 'HEAD') return undefined;
      hop = await this.hopFor(t, kind, reference, opts.signal);
      if (hop === undefined) return undefined;
      res = await this.ask(replica, url, method, opts, hop);
    }
    if (!res) return undefined;
    if (opts.ok.includes(res.statusCode) && res.headers[SOURCE_HEADER] !== undefined) {
      return {
        statusCode: res.statusCode,
        headers: res.headers,
        body: res.body,
        credential: undefined,
        url,
        redirected: false,
        fromTier: true,
      };
    }
    await res.body.dump().catch(() => undefined);
    // A 4xx is an answer about this object (a private image, a name the tier does not allow):
    // the node asks the origin itself; a 5xx, or a success that is no cluster proxy's, means the
    // replica (or its way to the origin) is unwell.
    if (res.statusCode >= 500 || opts.ok.includes(res.statusCode)) {
      this.unavailable(replica, `answered ${res.statusCode}`);
    }
    return undefined;
  }

  /** One request to a replica; undefined when it gave no answer (and is cooling down). */
  private async ask(
    replica: string,
    url: string,
    method: 'GET' | 'HEAD',
    opts: TierRequest,
    hop: string | undefined,
  ): Promise<Dispatcher.ResponseData | undefined> {
    const headers = { ...opts.headers, ...(hop === undefined ? {} : { [HOP_AUTHORIZATION_HEADER]: hop }) };
    try {
      return await request(url, {
        method,
        dispatcher: this.o.dispatcher,
        headers,
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
    } catch (err) {
      // The client going away is not the replica's fault.
      if (!opts.signal?.aborted) this.unavailable(replica, describe(err));
      return undefined;
    }
  }

  /** This node's credential for the object, proved at the origin; undefined: it has none. */
  private async hopFor(
    t: Target,
    kind: ObjectKind,
    reference: string,
    signal: AbortSignal | undefined,
  ): Promise<string | undefined> {
    if (!this.o.authorize) return undefined;
    try {
      return await this.o.authorize(t, kind, reference, signal);
    } catch {
      // The origin could not say: the node asks it itself, where the failure gets its answer.
      return undefined;
    }
  }

  private knownPrivate(repo: string): boolean {
    const until = this.privateUntil.get(repo);
    if (until === undefined) return false;
    if (until > this.now()) return true;
    this.privateUntil.delete(repo);
    return false;
  }

  private notePrivate(repo: string): void {
    this.privateUntil.delete(repo);
    this.privateUntil.set(repo, this.now() + PRIVATE_MEMORY_MS);
    if (this.privateUntil.size > PRIVATE_MEMORY_MAX) {
      const oldest = this.privateUntil.keys().next().value;
      if (oldest !== undefined) this.privateUntil.delete(oldest);
    }
  }

  private unavailable(replica: string, reason: string): void {
    this.downUntil.set(replica, this.now() + this.o.cooldownMs);
    this.o.onUnavailable?.(replica, reason);
  }
}
