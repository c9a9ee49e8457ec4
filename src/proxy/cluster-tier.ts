/**
 * The cluster tier as a node proxy sees it (docs/cluster-tier.md): what the cache registry lacks
 * is asked of one cluster-proxy replica, chosen per object by rendezvous hashing, so every node
 * asks the same replica for the same object and that replica's single-flight makes it one origin
 * fetch for the cluster. The replica speaks the distribution API; the origin it stands for goes
 * in `?ns=`. An answer counts only when it is what was asked for and carries the cluster proxy's
 * `Pullthrough-Source` header (the replica stores what it served: the node does not upload it).
 * Anything else (refused, unreachable, slow to answer headers, a 5xx) is no answer: the caller
 * goes to the origin itself, and a replica that failed is skipped for the cool-down.
 */
import { createHash } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { request, type Dispatcher } from 'undici';
import type { ObjectKind } from '../access/access-control.js';
import { describe, type RegistryResponse } from '../oci/registry-client.js';
import type { Target } from './target.js';

/** The header a cluster proxy names its source in; its presence marks a cluster proxy's answer. */
export const SOURCE_HEADER = 'pullthrough-source';

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
  readonly now?: () => number;
}

export interface TierRequest {
  readonly headers?: Record<string, string>;
  readonly signal?: AbortSignal | undefined;
  /** Statuses that are an answer. */
  readonly ok: readonly number[];
}

export class ClusterTier {
  private readonly o: ClusterTierOptions;
  private readonly downUntil = new Map<string, number>();
  private readonly now: () => number;
  private readonly self: string | undefined;

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
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, {
        method,
        dispatcher: this.o.dispatcher,
        ...(opts.headers ? { headers: opts.headers } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
    } catch (err) {
      // The client going away is not the replica's fault.
      if (!opts.signal?.aborted) this.unavailable(replica, describe(err));
      return undefined;
    }
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

  private unavailable(replica: string, reason: string): void {
    this.downUntil.set(replica, this.now() + this.o.cooldownMs);
    this.o.onUnavailable?.(replica, reason);
  }
}
