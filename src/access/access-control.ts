/**
 * Who may be served a private image from the cache (docs/credentials.md, "The access model").
 *
 * The proxy cannot tell which pod a request is for, so access is decided per node and repository:
 *
 * 1. A repository the origin served to an anonymous request within `--auth-ttl` is public: served,
 *    no extra request. Older than that, one anonymous HEAD says whether it still is, so a
 *    repository its owner makes private stops being served within `--auth-ttl`, digest pulls
 *    included; an origin that cannot answer leaves it public.
 * 2. Otherwise (private, or not known yet) a copy from the cache is served only while access is
 *    confirmed: within `--auth-ttl` the origin answered 200 to a credential of a pod on this node
 *    that (still) uses the repository, or to a node-wide `--registry-credentials` credential.
 *    Every origin answer the pull path gets anyway (cache misses, tag revalidation) confirms
 *    access for the credential it accepted; past that, a HEAD of the requested manifest or blob
 *    at the origin with the pods' credentials decides.
 * 3. Refused: 401 UNAUTHORIZED, or 404 when the origin says the object is gone, with one log line
 *    naming the pods that use the repository and why each lacked access. Never a credential.
 * 4. When the origin cannot answer: `serve-confirmed` serves a repository whose access was
 *    confirmed for a pod still using it (or node-wide) within the grace period; `refuse` refuses
 *    (503). A repository never seen answered anonymously counts as private here.
 * 5. With a peer policy (`--private-to=node`), a request whose peer is not the node itself is
 *    served public repositories only, whatever the pods on this node may pull.
 * 6. A cluster proxy (`checkEveryRequest`) checks every request before anything is fetched, and
 *    a request that carries a node proxy's origin credential for itself (the cluster tier's hop)
 *    is served a repository that is not public only when the origin accepts that credential for
 *    the object now: one HEAD with it, per request. Nothing of it is recorded: it opens nothing
 *    for any other request.
 *
 * Domain code: no HTTP server, no Kubernetes client; pods and the origin come in as interfaces.
 */
import NodeCache from 'node-cache';
import type { OriginDownPolicy } from '../config/proxy.js';
import type { Credential } from '../oci/credentials.js';
import { OciError, UpstreamError } from '../oci/errors.js';
import type { Log } from '../observability/logger.js';
import type { PeerPolicy } from './node-peers.js';
import type { Privacy, PrivacyBook } from './privacy.js';

export interface PodRef {
  readonly namespace: string;
  readonly name: string;
}

/** The node's pods, as src/kube's PodCredentials provides them. */
export interface PodDirectory {
  podsUsing(registry: string, repository: string): readonly PodRef[];
  lookup(
    pod: PodRef,
    registry: string,
    repository: string,
  ): Promise<{
    readonly known: boolean;
    readonly credentials: readonly unknown[];
    readonly skipped: readonly { readonly source: string; readonly reason: string }[];
  }>;
}

export type ObjectKind = 'manifest' | 'blob';

export interface AccessTarget {
  readonly registry: string;
  readonly repository: string;
}

export interface ProbeRequest extends AccessTarget {
  readonly kind: ObjectKind;
  /** A tag or digest (manifests), a digest (blobs). */
  readonly reference: string;
  /** Only an anonymous attempt (to learn whether the repository is public). */
  readonly anonymousOnly: boolean;
  /** Only this Authorization header value (a request's own credential across the cluster tier). */
  readonly authorization?: string;
}

export interface ProbeAnswer {
  readonly status: number;
  /** The credential the origin answered to; undefined: anonymous. */
  readonly credential: Credential | undefined;
}

/** A HEAD at the origin; throws when the origin cannot be reached. */
export type OriginProbe = (req: ProbeRequest) => Promise<ProbeAnswer>;

/** Bounded label values of the refusal counter. */
export type RefusalReason = 'no-pod' | 'rejected' | 'not-found' | 'origin-unreachable' | 'not-node';
/** Bounded label values of the probe counter. */
export type ProbeResult = 'public' | 'private' | 'granted' | 'refused' | 'not-found' | 'unreachable';

export interface AccessMetrics {
  refused(reason: RefusalReason): void;
  probed(result: ProbeResult): void;
  servedWhileOriginDown(): void;
}

export interface RequestScope {
  readonly log: Log;
  /** The client's address (the socket's peer); undefined: not known, never the node. */
  readonly peer?: string | undefined;
  /** The origin credential a node proxy passed for this request only (the cluster tier's hop). */
  readonly originAuthorization?: string | undefined;
}

/** What the pull path needs; AccessControl implements it. */
export interface AccessGate {
  /** The origin answered 200 for this repository to `credential` (undefined: anonymously). */
  observe(t: AccessTarget, kind: ObjectKind, reference: string, credential: Credential | undefined): void;
  /** The origin refused every credential, anonymous included (401): the repository is private now. */
  observeRefused(t: AccessTarget): void;
  /**
   * Before anything is fetched for a request, from the cache or the origin: throws an OciError when
   * the request may be served public content only and the repository is not public.
   */
  admit(t: AccessTarget, kind: ObjectKind, reference: string, ctx: RequestScope): Promise<void>;
  /** Before a copy from the cache (or another client's fetch) is served; throws an OciError to refuse. */
  authorize(
    t: AccessTarget,
    kind: ObjectKind,
    reference: string,
    ctx: RequestScope,
    hint?: { originUnreachable?: string },
  ): Promise<void>;
}

export interface AccessControlOptions {
  readonly pods: PodDirectory;
  readonly probe: OriginProbe;
  readonly privacy: PrivacyBook;
  /** How long a confirmation is trusted without asking the origin again. */
  readonly authTtlMs: number;
  readonly originDown: OriginDownPolicy;
  /** serve-confirmed: how old a confirmation may be and still serve while the origin is down. */
  readonly originDownGraceMs: number;
  readonly log: Log;
  readonly metrics?: AccessMetrics;
  readonly now?: () => number;
  /** `--private-to=node`: which peers are the node itself. Absent: private content to any peer. */
  readonly peers?: PeerPolicy;
  /**
   * A cluster proxy: every request is authorized before anything is fetched for it (a fill or a
   * manifest fetch in progress may be another node's, fetched with that node's credential).
   */
  readonly checkEveryRequest?: boolean;
}

interface Grants {
  /** pod key -> when the origin last accepted a credential of that pod. */
  readonly pods: Map<string, number>;
  /** When a node-wide (--registry-credentials) credential was last accepted. */
  node?: number;
}

type Verdict =
  | { readonly kind: 'allow' }
  | { readonly kind: 'refuse'; readonly reason: 'rejected' | 'not-found' }
  | { readonly kind: 'unreachable'; readonly why: string };

const MAX_REPOSITORIES = 50_000;

export class AccessControl implements AccessGate {
  private readonly o: AccessControlOptions;
  private readonly now: () => number;
  private readonly grants = new Map<string, Grants>();
  /** Checks in flight by repository, with the object each probes. */
  private readonly checks = new Map<string, { kind: ObjectKind; reference: string; verdict: Promise<Verdict> }>();
  private readonly classifying = new Set<string>();
  /** Anonymous HEADs in flight for requests that may be served public content only. */
  private readonly publicChecks = new Map<string, Promise<Privacy | 'unknown'>>();
  /** Repositories whose "served while the origin is down" line was logged lately. */
  private readonly downLogged = new NodeCache({ stdTTL: 60, checkperiod: 60, useClones: false });
  /** Requests whose own credential the origin accepted, with the repository: one check per request. */
  private readonly hopChecked = new WeakMap<RequestScope, string>();

  constructor(opts: AccessControlOptions) {
    this.o = opts;
    this.now = opts.now ?? Date.now;
  }

  observe(t: AccessTarget, kind: ObjectKind, reference: string, credential: Credential | undefined): void {
    const now = this.now();
    if (!credential) {
      this.o.privacy.set(t.registry, t.repository, 'public', now);
      return;
    }
    this.grant(t, credential, now);
    // A credential was accepted, but anonymous may never have been tried: find out once, in the
    // background, so a public repository pulled with credentials stops being checked. An answer
    // for a tag (a tag revalidation) asks again even while the record is fresh: its owner may
    // have made the repository private, and that is when the proxy asks the origin anyway.
    const privacy = this.o.privacy.get(t.registry, t.repository);
    if (privacy === 'private') return;
    if (privacy === 'public' && this.publicNow(t, now) && !(kind === 'manifest' && !isDigest(reference))) return;
    void this.classifyInBackground(t, kind, reference);
  }

  observeRefused(t: AccessTarget): void {
    this.o.privacy.set(t.registry, t.repository, 'private', this.now());
  }

  async admit(t: AccessTarget, kind: ObjectKind, reference: string, ctx: RequestScope): Promise<void> {
    if (this.o.checkEveryRequest) return this.authorize(t, kind, reference, ctx);
    if (this.fromNode(ctx)) return;
    await this.publicOnly(t, kind, reference, ctx);
  }

  async authorize(
    t: AccessTarget,
    kind: ObjectKind,
    reference: string,
    ctx: RequestScope,
    hint: { originUnreachable?: string } = {},
  ): Promise<void> {
    const privacy = this.o.privacy.get(t.registry, t.repository);
    // Public as last seen, and the origin cannot say otherwise now: still public.
    if (privacy === 'public' && (this.publicNow(t, this.now()) || hint.originUnreachable !== undefined)) return;
    if (!this.fromNode(ctx)) return this.publicOnly(t, kind, reference, ctx);
    if (ctx.originAuthorization !== undefined) {
      return this.checkHop(t, kind, reference, ctx.originAuthorization, ctx, hint);
    }
    const key = repoKey(t);
    const users = this.o.pods.podsUsing(t.registry, t.repository);
    if (this.confirmed(key, users, this.now(), this.o.authTtlMs)) return;
    if (hint.originUnreachable !== undefined) {
      this.whenOriginDown(t, users, hint.originUnreachable, ctx);
      return;
    }
    let check = this.checks.get(key);
    if (!check) {
      const verdict = this.check(t, kind, reference).finally(() => this.checks.delete(key));
      check = { kind, reference, verdict };
      this.checks.set(key, check);
    }
    let verdict = await check.verdict;
    // The other verdicts are about the repository, a 404 only about the object probed: a check
    // shared with a request for another tag or blob must not refuse this one as unknown.
    if (
      verdict.kind === 'refuse' &&
      verdict.reason === 'not-found' &&
      (check.kind !== kind || check.reference !== reference)
    ) {
      verdict = await this.check(t, kind, reference);
    }
    if (verdict.kind === 'allow') return;
    if (verdict.kind === 'unreachable') {
      this.whenOriginDown(t, this.o.pods.podsUsing(t.registry, t.repository), verdict.why, ctx);
      return;
    }
    const current = this.o.pods.podsUsing(t.registry, t.repository);
    const reason: RefusalReason = verdict.reason === 'rejected' && current.length === 0 ? 'no-pod' : verdict.reason;
    return this.refuse(t, kind, reference, current, reason, ctx);
  }

  /**
   * A request with its own origin credential: public as the origin says anonymously, else served
   * only when the origin accepts that credential for the object (one HEAD, never shared with
   * another request, never recorded as a confirmation).
   */
  private async checkHop(
    t: AccessTarget,
    kind: ObjectKind,
    reference: string,
    authorization: string,
    ctx: RequestScope,
    hint: { originUnreachable?: string },
  ): Promise<void> {
    if (this.hopChecked.get(ctx) === repoKey(t)) return;
    const privacy = this.o.privacy.get(t.registry, t.repository);
    if (privacy !== 'private' && hint.originUnreachable === undefined) {
      if ((await this.publicity(t, kind, reference)) === 'public') return;
    }
    let status: number | undefined;
    let unreachable = hint.originUnreachable;
    if (unreachable === undefined) {
      try {
        status = (await this.o.probe({ ...pick(t), kind, reference, anonymousOnly: false, authorization })).status;
      } catch (err) {
        if (isRefusal(err)) status = 401;
        else unreachable = (err as Error).message;
      }
    }
    if (status === 200) {
      this.o.metrics?.probed('granted');
      this.hopChecked.set(ctx, repoKey(t));
      return;
    }
    if (status === undefined || status >= 500) {
      this.o.metrics?.probed('unreachable');
      // Only a node-wide confirmation may serve while the origin cannot check the credential.
      this.whenOriginDown(t, [], unreachable ?? `origin ${t.registry} answered ${status}`, ctx);
      return;
    }
    const reason: RefusalReason = status === 404 ? 'not-found' : 'rejected';
    this.o.metrics?.probed(status === 404 ? 'not-found' : 'refused');
    this.o.metrics?.refused(reason);
    const image = repoKey(t);
    ctx.log.warn(
      { image, [kind === 'manifest' ? 'reference' : 'digest']: reference, reason, status },
      'private image refused: the origin did not accept the credential the node proxy passed for this request',
    );
    if (reason === 'not-found') {
      throw new OciError(
        kind === 'manifest' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN',
        `origin ${t.registry} has no ${kind} ${reference} for private repository ${image}`,
      );
    }
    throw new OciError(
      'UNAUTHORIZED',
      `${image} is private and the origin did not accept the credential passed for this request`,
    );
  }

  /** For tests and health: how many repositories have confirmations. */
  get size(): number {
    return this.grants.size;
  }

  close(): void {
    this.downLogged.close();
  }

  private async check(t: AccessTarget, kind: ObjectKind, reference: string): Promise<Verdict> {
    const privacy = this.o.privacy.get(t.registry, t.repository);
    if (privacy !== 'private') {
      const c = await this.classify(t, kind, reference);
      if (c.kind === 'public') return { kind: 'allow' };
      // Public when last seen and the origin cannot say otherwise: served as public.
      if (c.kind === 'unreachable') return privacy === 'public' ? { kind: 'allow' } : c;
    }
    let answer: ProbeAnswer;
    try {
      answer = await this.o.probe({ ...pick(t), kind, reference, anonymousOnly: false });
    } catch (err) {
      if (isRefusal(err)) {
        this.o.metrics?.probed('refused');
        return { kind: 'refuse', reason: 'rejected' };
      }
      this.o.metrics?.probed('unreachable');
      return { kind: 'unreachable', why: (err as Error).message };
    }
    const { status, credential } = answer;
    if (status === 200) {
      this.o.metrics?.probed(credential ? 'granted' : 'public');
      const now = this.now();
      if (credential) this.grant(t, credential, now);
      else this.o.privacy.set(t.registry, t.repository, 'public', now);
      return { kind: 'allow' };
    }
    if (status === 401 || status === 403) {
      this.o.metrics?.probed('refused');
      return { kind: 'refuse', reason: 'rejected' };
    }
    if (status === 404) {
      this.o.metrics?.probed('not-found');
      return { kind: 'refuse', reason: 'not-found' };
    }
    this.o.metrics?.probed('unreachable');
    return { kind: 'unreachable', why: `origin ${t.registry} answered ${status}` };
  }

  /** One anonymous HEAD: public, private, or the origin could not say. */
  private async classify(
    t: AccessTarget,
    kind: ObjectKind,
    reference: string,
  ): Promise<{ kind: 'public' | 'private' } | { kind: 'unreachable'; why: string }> {
    let status: number;
    try {
      status = (await this.o.probe({ ...pick(t), kind, reference, anonymousOnly: true })).status;
    } catch (err) {
      if (isRefusal(err)) status = 401;
      else {
        this.o.metrics?.probed('unreachable');
        return { kind: 'unreachable', why: (err as Error).message };
      }
    }
    const now = this.now();
    if (status === 200) {
      this.o.metrics?.probed('public');
      this.o.privacy.set(t.registry, t.repository, 'public', now);
      return { kind: 'public' };
    }
    if (status === 401 || status === 403) {
      this.o.metrics?.probed('private');
      this.o.privacy.set(t.registry, t.repository, 'private', now);
      return { kind: 'private' };
    }
    // 404: gone, or a registry that hides private repositories. Private for this decision only.
    if (status === 404) return { kind: 'private' };
    this.o.metrics?.probed('unreachable');
    return { kind: 'unreachable', why: `origin ${t.registry} answered ${status}` };
  }

  private async classifyInBackground(t: AccessTarget, kind: ObjectKind, reference: string): Promise<void> {
    const key = repoKey(t);
    if (this.classifying.has(key)) return;
    this.classifying.add(key);
    try {
      await this.classify(t, kind, reference);
    } catch {
      // classify reports through the book and metrics; nothing to add here.
    } finally {
      this.classifying.delete(key);
    }
  }

  /** Public, as observed within --auth-ttl. */
  private publicNow(t: AccessTarget, now: number): boolean {
    if (this.o.privacy.get(t.registry, t.repository) !== 'public') return false;
    return now - (this.o.privacy.observedAt(t.registry, t.repository) ?? 0) < this.o.authTtlMs;
  }

  private fromNode(ctx: RequestScope): boolean {
    return this.o.peers?.isNode(ctx.peer) ?? true;
  }

  /**
   * Whether a repository is public: a record of either kind younger than --auth-ttl decides;
   * otherwise one anonymous HEAD, shared by concurrent requests, and a repository last seen public
   * stays public while the origin cannot answer.
   */
  private async publicity(t: AccessTarget, kind: ObjectKind, reference: string): Promise<Privacy | 'unknown'> {
    const privacy = this.o.privacy.get(t.registry, t.repository);
    const seen = this.o.privacy.observedAt(t.registry, t.repository) ?? 0;
    if (privacy !== undefined && this.now() - seen < this.o.authTtlMs) return privacy;
    const key = repoKey(t);
    let p = this.publicChecks.get(key);
    if (!p) {
      p = this.classify(t, kind, reference)
        .then((c) => (c.kind === 'unreachable' ? (privacy ?? 'unknown') : c.kind))
        .finally(() => this.publicChecks.delete(key));
      this.publicChecks.set(key, p);
    }
    return p;
  }

  /**
   * A request from a peer that is not the node: public repositories only (publicity()).
   */
  private async publicOnly(t: AccessTarget, kind: ObjectKind, reference: string, ctx: RequestScope): Promise<void> {
    if ((await this.publicity(t, kind, reference)) === 'public') return;
    const image = repoKey(t);
    this.o.metrics?.refused('not-node');
    ctx.log.warn(
      { image, [kind === 'manifest' ? 'reference' : 'digest']: reference, reason: 'not-node', peer: ctx.peer },
      'private image refused: the request does not come from this node',
    );
    throw new OciError(
      'UNAUTHORIZED',
      `${image} is not known to be public, and private images are served only to this node itself ` +
        '(--private-to=node): the request does not come from one of its addresses',
    );
  }

  private grant(t: AccessTarget, credential: Credential, at: number): void {
    const key = repoKey(t);
    let g = this.grants.get(key);
    if (g) this.grants.delete(key);
    else g = { pods: new Map() };
    this.grants.set(key, g);
    const pods = podsOf(credential);
    if (pods) for (const p of pods) g.pods.set(podKey(p), at);
    else g.node = at;
    while (this.grants.size > MAX_REPOSITORIES) {
      const oldest = this.grants.keys().next().value;
      if (oldest === undefined) break;
      this.grants.delete(oldest);
    }
  }

  /** Access confirmed within `windowMs`, node-wide or for a pod that still uses the repository. */
  private confirmed(key: string, users: readonly PodRef[], now: number, windowMs: number): boolean {
    const g = this.grants.get(key);
    if (!g) return false;
    if (g.node !== undefined && now - g.node < windowMs) return true;
    for (const u of users) {
      const at = g.pods.get(podKey(u));
      if (at !== undefined && now - at < windowMs) return true;
    }
    return false;
  }

  private whenOriginDown(t: AccessTarget, users: readonly PodRef[], why: string, ctx: RequestScope): void {
    const key = repoKey(t);
    if (this.o.originDown === 'serve-confirmed' && this.confirmed(key, users, this.now(), this.o.originDownGraceMs)) {
      this.o.metrics?.servedWhileOriginDown();
      if (!this.downLogged.has(key)) {
        this.downLogged.set(key, true);
        ctx.log.warn(
          { image: key, reason: why, policy: this.o.originDown },
          'origin cannot confirm access to a private image; ' +
            'serving it to this node, where access was confirmed recently',
        );
      }
      return;
    }
    this.o.metrics?.refused('origin-unreachable');
    const policy =
      this.o.originDown === 'refuse'
        ? 'refuses private images while the origin cannot confirm access'
        : 'access was not confirmed recently';
    ctx.log.warn(
      { image: key, reason: why, policy: this.o.originDown, pods: users.map(podKey) },
      'private image refused: the origin cannot confirm access',
    );
    throw new OciError(
      'UNAVAILABLE',
      `${key} is private (or not known to be public) and origin ${t.registry} ` +
        `cannot confirm access (${policy}): ${why}`,
      {
        status: 503,
      },
    );
  }

  private async refuse(
    t: AccessTarget,
    kind: ObjectKind,
    reference: string,
    users: readonly PodRef[],
    reason: RefusalReason,
    ctx: RequestScope,
  ): Promise<never> {
    const image = repoKey(t);
    this.o.metrics?.refused(reason);
    const pods = await Promise.all(
      users.map(async (p) => {
        try {
          const l = await this.o.pods.lookup(p, t.registry, t.repository);
          const why = l.skipped.map((s) => `${s.source}: ${s.reason}`);
          if (!l.known) why.push('pod no longer on this node');
          else if (l.credentials.length > 0)
            why.push(
              reason === 'not-found'
                ? 'credentials not confirmed (origin answered 404)'
                : 'credentials rejected by the origin',
            );
          else why.push('no credentials for this registry');
          return { pod: podKey(p), why };
        } catch {
          return { pod: podKey(p), why: ['credentials could not be looked up'] };
        }
      }),
    );
    const msg =
      reason === 'no-pod'
        ? 'private image refused: no pod on this node uses it'
        : reason === 'not-found'
          ? 'private image refused: the origin does not have it, so access cannot be confirmed'
          : 'private image refused: no pod on this node that uses it has credentials the origin accepts';
    ctx.log.warn({ image, [kind === 'manifest' ? 'reference' : 'digest']: reference, reason, pods }, msg);
    if (reason === 'not-found') {
      throw new OciError(
        kind === 'manifest' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN',
        `origin ${t.registry} has no ${kind} ${reference} for private repository ${image}`,
      );
    }
    throw new OciError(
      'UNAUTHORIZED',
      reason === 'no-pod'
        ? `${image} is private and no pod on this node uses it: ` +
            'cached private images are served only where a pod using them has credentials the origin accepts'
        : `${image} is private and no pod on this node that uses it has credentials the origin accepts`,
    );
  }
}

function isDigest(reference: string): boolean {
  return reference.includes(':');
}

function repoKey(t: AccessTarget): string {
  return `${t.registry}/${t.repository}`;
}

function pick(t: AccessTarget): AccessTarget {
  return { registry: t.registry, repository: t.repository };
}

function podKey(p: PodRef): string {
  return `${p.namespace}/${p.name}`;
}

/** A pod credential (src/kube tags each with the pods holding it); undefined: node-wide. */
function podsOf(c: Credential): readonly PodRef[] | undefined {
  const pods = (c as { pods?: unknown }).pods;
  return Array.isArray(pods) ? (pods as PodRef[]) : undefined;
}

/** The registry client gives up with a 401 when no candidate could even be tried. */
function isRefusal(err: unknown): boolean {
  return err instanceof UpstreamError && err.status === 401;
}
