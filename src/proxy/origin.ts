/**
 * The origin as the pull path sees it: one request for one object of a target, its answer
 * checked in one place (a status the caller does not expect becomes the typed error a client is
 * told, in the spirit of go-containerregistry's `transport.CheckError`), and every accepted
 * answer reported to the access gate with the credential it took.
 *
 * With a cluster tier (cluster-tier.ts), a request goes there first and to the origin itself only
 * when the tier gives no answer. A tier answer is not reported to the access gate: the cluster
 * proxy fetched it, not with this node's pods' credentials, so it says nothing about them.
 *
 * containerd moves on to its next host on any status >= 400 except 429, which it retries on the
 * same host: an origin's rate limit therefore becomes a 503 here, so a cluster falls through to
 * its next mirror instead of hammering us. The allowance an origin states on its answers (Docker
 * Hub's `ratelimit-remaining: 76;w=21600`) is reported whatever the status, a 429 included.
 */
import type { AccessGate, ObjectKind } from '../access/access-control.js';
import type { OriginBlobRequest } from '../cache/blob-fill.js';
import type { Credential } from '../oci/credentials.js';
import { OciError, UpstreamError } from '../oci/errors.js';
import { describe, SizeError, type RegistryClient, type RegistryResponse } from '../oci/registry-client.js';
import type { FallbackReason, OriginRateLimit } from '../observability/metrics.js';
import type { ClusterTier, TierResponse } from './cluster-tier.js';
import type { Target } from './target.js';

export interface OriginRequestOptions {
  readonly headers?: Record<string, string>;
  /** The client's, where only it waits for the answer; undefined: none. */
  readonly signal?: AbortSignal | undefined;
  /** Statuses that are an answer; any other becomes its typed error. Default: 200. */
  readonly ok?: readonly number[];
  /**
   * The origin credential a node proxy passed for this request (RequestContext.originAuthorization):
   * sent as it is, and its answer not reported to the access gate (it says nothing about who else
   * may pull).
   */
  readonly authorization?: string | undefined;
  /**
   * Exactly these candidates (undefined: anonymous), instead of what the credential source offers
   * for the repository: a pre-warm proving its own pull secret's access.
   */
  readonly credentials?: readonly (Credential | undefined)[];
}

/** What the pull path reports for metrics; every member optional (tests leave them out). */
export interface PullEvents {
  /** An origin's answer stated its pull allowance. */
  readonly rateLimit?: (registry: string, r: OriginRateLimit) => void;
  /** A pull went past a tier it normally uses. */
  readonly fallback?: (reason: FallbackReason) => void;
}

export class Origin {
  private readonly client: RegistryClient;
  private readonly access: AccessGate | undefined;
  private readonly tier: ClusterTier | undefined;
  private readonly events: PullEvents;

  constructor(client: RegistryClient, access: AccessGate | undefined, tier?: ClusterTier, events: PullEvents = {}) {
    this.client = client;
    this.access = access;
    this.tier = tier;
    this.events = events;
  }

  /** An accepted answer for `reference` (a tag or digest); throws the OciError a client is told. */
  async request(
    t: Target,
    method: 'GET' | 'HEAD',
    kind: ObjectKind,
    reference: string,
    opts: OriginRequestOptions = {},
  ): Promise<RegistryResponse | TierResponse> {
    if (this.tier) {
      const answer = await this.tier.request(t, method, kind, reference, {
        ok: opts.ok ?? [200],
        ...(opts.headers ? { headers: opts.headers } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
        ...(opts.authorization !== undefined ? { authorization: opts.authorization } : {}),
      });
      if (answer) return answer;
    }
    let res: RegistryResponse;
    try {
      res = await this.client.request({
        registry: t.registry,
        repository: t.repository,
        method,
        path: `/v2/${t.repository}/${kind === 'manifest' ? 'manifests' : 'blobs'}/${reference}`,
        followRedirects: kind === 'blob',
        ...(opts.headers ? { headers: opts.headers } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
        ...(opts.authorization !== undefined ? { authorization: opts.authorization } : {}),
        ...(opts.credentials ? { credentials: opts.credentials } : {}),
      });
      const limit = parseRateLimit(res.headers);
      if (limit) this.events.rateLimit?.(t.registry, limit);
      await checkOrigin(res, kind, t.registry, reference, opts.ok);
    } catch (err) {
      throw originFailure(err, t.registry);
    }
    if (opts.authorization === undefined) this.access?.observe(t, kind, reference, res.credential);
    return res;
  }

  /**
   * What a blob fill opens: the blob's body from the origin, with its announced size; with the
   * credential of the request that starts the fill, when it came with one.
   */
  blobRequest(t: Target, digest: string, authorization?: string): OriginBlobRequest {
    return {
      open: async (signal) => {
        const res = await this.request(t, 'GET', 'blob', digest, { signal, authorization });
        const len = headerString(res.headers['content-length']);
        const size = len === undefined ? undefined : Number(len);
        // The cluster proxy that served it stores it: one writer per blob.
        return { size, stream: res.body, ...(fromTier(res) ? { storedElsewhere: true } : {}) };
      },
    };
  }
}

/**
 * The allowance an answer states: Docker Hub's `ratelimit-limit: 100;w=21600` and
 * `ratelimit-remaining: 76;w=21600` (the IETF draft's form without `;w=` is read too). Undefined
 * unless both are there and numeric: Docker Hub leaves them out for accounts without a limit.
 */
export function parseRateLimit(headers: Record<string, string | string[] | undefined>): OriginRateLimit | undefined {
  const field = (name: string): { value: number; window: number | undefined } | undefined => {
    const m = /^\s*(\d+)\s*(?:;\s*w\s*=\s*(\d+))?/.exec(headerString(headers[name]) ?? '');
    return m ? { value: Number(m[1]), window: m[2] === undefined ? undefined : Number(m[2]) } : undefined;
  };
  const limit = field('ratelimit-limit');
  const remaining = field('ratelimit-remaining');
  if (!limit || !remaining) return undefined;
  return { limit: limit.value, remaining: remaining.value, windowSeconds: remaining.window ?? limit.window };
}

/** Whether the cluster tier gave this answer (and stores what it served). */
export function fromTier(res: RegistryResponse | TierResponse): res is TierResponse {
  return 'fromTier' in res;
}

/** Throws the typed error for an answer whose status is not in `ok`, after draining its body. */
export async function checkOrigin(
  res: RegistryResponse,
  kind: ObjectKind,
  registry: string,
  ref: string,
  ok: readonly number[] = [200],
): Promise<void> {
  if (ok.includes(res.statusCode)) return;
  await res.body.dump();
  throw originStatusError(res.statusCode, kind, registry, ref);
}

export function originStatusError(status: number, kind: ObjectKind, registry: string, ref: string): OciError {
  const what = `${kind} ${ref} at ${registry}`;
  if (status === 404) {
    return new OciError(kind === 'manifest' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN', `origin has no ${what}`);
  }
  if (status === 401) return new OciError('UNAUTHORIZED', `origin refused ${what}: no credential it accepts`);
  if (status === 403) return new OciError('DENIED', `origin denied access to ${what}`);
  if (status === 429) return new OciError('TOOMANYREQUESTS', `origin rate-limited ${what}`, { status: 503 });
  return new OciError('UNAVAILABLE', `origin answered ${status} for ${what}`, { status: 502 });
}

const timeoutCodes = new Set([
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'ETIMEDOUT',
]);

/** Any failure to get an answer from the origin, as the OciError a client is told. */
export function originFailure(err: unknown, registry: string): OciError {
  if (err instanceof OciError) return err;
  if (err instanceof SizeError) {
    return new OciError('MANIFEST_INVALID', `origin ${registry} sent a manifest over ${err.max} bytes`, {
      status: 502,
    });
  }
  // The registry client gives up with a 401 when the origin challenged and no candidate
  // credential could be used (Basic without credentials, a token realm refusing them all).
  if (err instanceof UpstreamError && err.status === 401) {
    return new OciError('UNAUTHORIZED', `origin ${registry} refused: no credential it accepts`, { cause: err });
  }
  const cause = err instanceof UpstreamError ? err.cause : err;
  const code = (cause as { code?: string } | undefined)?.code;
  const timedOut = code !== undefined && timeoutCodes.has(code);
  const message = err instanceof UpstreamError ? err.message : describe(err);
  return new OciError('UNAVAILABLE', `origin ${registry} ${timedOut ? 'timed out' : 'unreachable'}: ${message}`, {
    status: timedOut ? 504 : 502,
    cause: err,
  });
}

/** Auth refusals must not be papered over with a stale copy (no private image to a pod without access). */
export function isAuthError(err: unknown): boolean {
  return err instanceof OciError && (err.code === 'UNAUTHORIZED' || err.code === 'DENIED');
}

export function isNotFound(err: unknown): boolean {
  return err instanceof OciError && err.status === 404;
}

export function headerString(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}
