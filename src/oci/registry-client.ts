/**
 * An OCI distribution client for one kind of upstream (origins, or the cache registry) with the
 * registry auth dance: anonymous first, then on a 401 the challenge's scheme — Basic, or Bearer
 * with a token from the realm — for each candidate credential in order. Tokens are cached per
 * (registry, scope, credential identity) until they expire, so identities never share one.
 */
import type { Readable } from 'node:stream';
import type { IncomingHttpHeaders } from 'node:http';
import NodeCache from 'node-cache';
import { interceptors, request, type Dispatcher } from 'undici';
import { parseChallenges, type Challenge } from './challenge.js';
import { credentialIdentity, type Credential, type CredentialSource } from './credentials.js';
import { UpstreamError } from './errors.js';

export type HttpMethod = 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';

export interface RegistryRequest {
  readonly registry: string;
  readonly repository: string;
  readonly method: HttpMethod;
  /** `/v2/...` below the registry's base URL, or an absolute URL (an upload's Location). */
  readonly path: string;
  readonly headers?: Record<string, string>;
  /** A stream cannot be replayed after a 401: send one only once auth is settled (an upload's PUT follows its POST). */
  readonly body?: Readable | Buffer | string;
  /** Token scope actions, `pull` unless pushing. */
  readonly actions?: string;
  readonly signal?: AbortSignal;
  /** Candidates to use instead of asking the credential source. */
  readonly credentials?: readonly (Credential | undefined)[];
  /**
   * Follow redirects (blobs: registries send them to a CDN or object storage). undici drops the
   * Authorization header when a redirect leaves the registry's origin.
   */
  readonly followRedirects?: boolean;
  /**
   * An Authorization header value to send as it is, instead of the auth dance: a credential
   * another proxy obtained for this one request (the cluster tier's hop, docs/credentials.md).
   * Never cached, never tried with anything else; the answer's `credential` is undefined.
   */
  readonly authorization?: string;
  /**
   * Get a new bearer token instead of reusing a cached one: the answer's `authorization` is handed
   * to someone else (a scanner) who needs the token's whole lifetime. The new token is cached.
   */
  readonly freshToken?: boolean;
}

export interface RegistryResponse {
  readonly statusCode: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Dispatcher.ResponseData['body'];
  /** The credential that was accepted (undefined: anonymous). */
  readonly credential: Credential | undefined;
  readonly url: string;
  /** The answer came from where a redirect led, not from the registry itself. */
  readonly redirected: boolean;
}

export interface RegistryClientOptions {
  readonly name: string;
  readonly dispatcher: Dispatcher;
  readonly baseUrl: (registry: string) => string;
  readonly credentials?: CredentialSource;
  readonly userAgent: string;
  readonly headersTimeoutMs: number;
  readonly bodyTimeoutMs: number;
  /**
   * Where requests go that leave the registry's own origin for a place the registry named: a
   * redirect's target, a token realm on another host. They are held to a policy of their own (see
   * src/oci/egress.ts); without it, `dispatcher` serves them too.
   */
  readonly elsewhere?: (registry: string) => Dispatcher;
  /**
   * Told when the registry (or its token realm) refused a credential, by the credential's label:
   * the next candidate is tried, so without this a wrong plugin or secret goes unnoticed.
   */
  readonly onRefused?: (refusal: CredentialRefusal) => void;
}

export interface CredentialRefusal {
  readonly registry: string;
  readonly repository: string;
  /** The credential's label (never its secret). */
  readonly label: string;
  readonly reason: string;
}

class TokenError extends Error {}

export class RegistryClient {
  private readonly opts: RegistryClientOptions;
  private readonly tokens = new NodeCache({ useClones: false, checkperiod: 60 });
  private readonly challenges = new Map<string, Challenge>();
  /** Which identity the origin last accepted for a repository, to try it first next time. */
  private readonly accepted = new NodeCache({ useClones: false, stdTTL: 600, checkperiod: 120 });

  constructor(opts: RegistryClientOptions) {
    this.opts = opts;
  }

  get name(): string {
    return this.opts.name;
  }

  urlFor(registry: string, path: string): string {
    return /^https?:\/\//.test(path) ? path : `${this.opts.baseUrl(registry)}${path}`;
  }

  /** The dispatcher for a URL the registry sent us to: its own, or `elsewhere`'s when it left the registry's origin. */
  private dispatcherFor(registry: string, origin: string): Dispatcher {
    if (!this.opts.elsewhere || origin === new URL(this.opts.baseUrl(registry)).origin) return this.opts.dispatcher;
    return this.opts.elsewhere(registry);
  }

  /** Follows redirects; every hop that leaves the registry's origin goes through `elsewhere`. */
  private redirecting(registry: string): Dispatcher {
    const route: Dispatcher.DispatcherComposeInterceptor = (dispatch) => (opts, handler) => {
      const to = this.dispatcherFor(registry, new URL(String(opts.origin)).origin);
      return to === this.opts.dispatcher ? dispatch(opts, handler) : to.dispatch(opts, handler);
    };
    // compose() wraps in order: the redirect interceptor is outermost, so each hop is routed.
    return this.opts.dispatcher.compose(route, interceptors.redirect({ maxRedirections: 5 }));
  }

  async request(req: RegistryRequest): Promise<RegistryResponse> {
    return (await this.exchange(req)).res;
  }

  /**
   * A request, and the Authorization header value of the answer (undefined: sent without one):
   * for the bearer challenge a token from the realm scoped to `repository:<name>:pull`, for Basic
   * the credential itself. What a node proxy hands its cluster tier for one request.
   */
  async requestWithAuthorization(
    req: RegistryRequest,
  ): Promise<{ readonly res: RegistryResponse; readonly authorization: string | undefined }> {
    return this.exchange(req);
  }

  private async exchange(
    req: RegistryRequest,
  ): Promise<{ readonly res: RegistryResponse; readonly authorization: string | undefined }> {
    if (req.authorization !== undefined) {
      const res = await this.send(req, req.authorization);
      return { res: { ...res, credential: undefined }, authorization: req.authorization };
    }
    const candidates = await this.candidates(req);
    let challenge = this.challenges.get(req.registry);
    let anonymousSent = false;
    if (!challenge) {
      const res = await this.send(req, undefined);
      // A 401 from where a redirect led is not the registry's challenge: never answer it with the
      // registry's credentials.
      if (res.statusCode !== 401 || res.redirected)
        return { res: { ...res, credential: undefined }, authorization: undefined };
      const c = pickChallenge(res.headers['www-authenticate']);
      if (!c) return { res: { ...res, credential: undefined }, authorization: undefined };
      this.challenges.set(req.registry, c);
      challenge = c;
      anonymousSent = true;
      await res.body.dump();
    }
    let last: (Omit<RegistryResponse, 'credential'> & { credential: Credential | undefined }) | undefined;
    let lastAuth: string | undefined;
    for (const cred of candidates) {
      let auth: string | undefined;
      try {
        auth = await this.authorization(req, challenge, cred);
      } catch (err) {
        if (!(err instanceof TokenError)) throw err;
        if (cred) this.refused(req, cred, `the token realm refused it: ${err.message}`);
        continue;
      }
      // Basic has no anonymous credential, but a registry may still serve some repositories to
      // anonymous clients: ask once without one. (Anonymous Bearer is a token of its own.)
      if (auth === undefined && (cred !== undefined || anonymousSent)) continue;
      if (last) await last.body.dump();
      const res = await this.send(req, auth);
      last = { ...res, credential: cred };
      lastAuth = auth;
      if (res.statusCode !== 401 || res.redirected) {
        this.accepted.set(`${req.registry}/${req.repository}`, credentialIdentity(cred));
        return { res: last, authorization: auth };
      }
      // A registry may switch schemes (or realms) under us; follow what it says now.
      const c = pickChallenge(res.headers['www-authenticate']);
      if (c) {
        this.challenges.set(req.registry, c);
        challenge = c;
      }
      this.forgetToken(req, challenge, cred);
      if (cred) this.refused(req, cred, 'the registry refused it (401)');
    }
    if (last) return { res: last, authorization: lastAuth };
    throw new UpstreamError(req.registry, 'no credential could be used for the registry challenge', { status: 401 });
  }

  private refused(req: RegistryRequest, cred: Credential, reason: string): void {
    this.opts.onRefused?.({ registry: req.registry, repository: req.repository, label: cred.label, reason });
  }

  private async candidates(req: RegistryRequest): Promise<(Credential | undefined)[]> {
    const list: (Credential | undefined)[] = req.credentials
      ? [...req.credentials]
      : [
          ...((await this.opts.credentials?.credentialsFor({ registry: req.registry, repository: req.repository })) ??
            []),
          undefined,
        ];
    const preferred = this.accepted.get<string>(`${req.registry}/${req.repository}`);
    if (preferred === undefined) return list;
    const i = list.findIndex((c) => credentialIdentity(c) === preferred);
    if (i > 0) list.unshift(...list.splice(i, 1));
    return list;
  }

  private scope(req: RegistryRequest): string {
    return `repository:${req.repository}:${req.actions ?? 'pull'}`;
  }

  private tokenKey(req: RegistryRequest, challenge: Challenge, cred: Credential | undefined): string {
    return `${req.registry}|${challenge.params.realm ?? ''}|${this.scope(req)}|${credentialIdentity(cred)}`;
  }

  private forgetToken(req: RegistryRequest, challenge: Challenge, cred: Credential | undefined): void {
    this.tokens.del(this.tokenKey(req, challenge, cred));
  }

  private async authorization(
    req: RegistryRequest,
    challenge: Challenge,
    cred: Credential | undefined,
  ): Promise<string | undefined> {
    if (challenge.scheme === 'basic') {
      if (cred?.kind === 'basic') return `Basic ${Buffer.from(`${cred.username}:${cred.password}`).toString('base64')}`;
      if (cred?.kind === 'registry-token') return `Bearer ${cred.token}`;
      return undefined;
    }
    if (cred?.kind === 'registry-token') return `Bearer ${cred.token}`;
    const key = this.tokenKey(req, challenge, cred);
    const cached = req.freshToken ? undefined : this.tokens.get<string>(key);
    if (cached !== undefined) return `Bearer ${cached}`;
    const { token, ttl } = await this.fetchToken(req, challenge, cred);
    this.tokens.set(key, token, ttl);
    return `Bearer ${token}`;
  }

  private async fetchToken(
    req: RegistryRequest,
    challenge: Challenge,
    cred: Credential | undefined,
  ): Promise<{ token: string; ttl: number }> {
    const realm = challenge.params.realm;
    if (!realm || !/^https?:\/\//.test(realm)) throw new TokenError('bearer challenge without a usable realm');
    const url = new URL(realm);
    // A registry reached over https that names a plain-http realm would have credentials cross the
    // network in clear text; anonymous tokens may.
    if (cred && url.protocol === 'http:' && this.opts.baseUrl(req.registry).startsWith('https:')) {
      throw new TokenError('refusing to send credentials to a plain-http token realm of an https registry');
    }
    const service = challenge.params.service;
    const scope = this.scope(req);
    const headers: Record<string, string> = { 'user-agent': this.opts.userAgent };
    let method: HttpMethod = 'GET';
    let body: string | undefined;
    if (cred?.kind === 'identity-token') {
      method = 'POST';
      headers['content-type'] = 'application/x-www-form-urlencoded';
      body = new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: cred.token,
        client_id: 'pullthrough',
        scope,
        ...(service ? { service } : {}),
      }).toString();
    } else {
      if (service) url.searchParams.set('service', service);
      url.searchParams.set('scope', scope);
      if (cred?.kind === 'basic') {
        headers.authorization = `Basic ${Buffer.from(`${cred.username}:${cred.password}`).toString('base64')}`;
        url.searchParams.set('account', cred.username);
      }
    }
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, {
        method,
        headers,
        body,
        // A realm elsewhere is held to the same policy as a redirect: credentials go nowhere the
        // proxy may not connect to.
        dispatcher: this.dispatcherFor(req.registry, url.origin),
        signal: req.signal,
        headersTimeout: this.opts.headersTimeoutMs,
        bodyTimeout: this.opts.bodyTimeoutMs,
      });
    } catch (err) {
      throw new UpstreamError(req.registry, `token request to ${url.host} failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (res.statusCode !== 200) {
      await res.body.dump();
      // Only a refusal says the credential is wrong; anything else means the realm is not serving,
      // which is an outage of the origin (stale tags may be served), not a denial.
      if (res.statusCode === 400 || res.statusCode === 401 || res.statusCode === 403)
        throw new TokenError(`token endpoint answered ${res.statusCode}`);
      throw new UpstreamError(req.registry, `token endpoint ${url.host} answered ${res.statusCode}`);
    }
    const text = await readCapped(res.body, 1 << 20);
    let json: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      json = JSON.parse(text) as typeof json;
    } catch {
      throw new TokenError('token endpoint answered with something that is not JSON');
    }
    const token =
      typeof json.token === 'string'
        ? json.token
        : typeof json.access_token === 'string'
          ? json.access_token
          : undefined;
    if (!token) throw new TokenError('token endpoint answered without a token');
    const expiresIn = typeof json.expires_in === 'number' && json.expires_in > 0 ? json.expires_in : 60;
    return { token, ttl: Math.max(5, expiresIn - 10) };
  }

  private async send(
    req: RegistryRequest,
    authorization: string | undefined,
  ): Promise<Omit<RegistryResponse, 'credential'>> {
    const url = this.urlFor(req.registry, req.path);
    const headers: Record<string, string> = { 'user-agent': this.opts.userAgent, ...req.headers };
    if (authorization) headers.authorization = authorization;
    try {
      const res = await request(url, {
        method: req.method,
        // undici closes the connection after every HEAD unless told not to (for servers that send
        // a body anyway); registries do not, and a tag revalidation should not pay a TCP and TLS
        // handshake each time.
        ...(req.method === 'HEAD' ? { reset: false } : {}),
        headers,
        body: req.body,
        dispatcher: req.followRedirects ? this.redirecting(req.registry) : this.opts.dispatcher,
        signal: req.signal,
        headersTimeout: this.opts.headersTimeoutMs,
        bodyTimeout: this.opts.bodyTimeoutMs,
      });
      // The redirect interceptor records every URL it requested, the last one included.
      const history = (res.context as { history?: readonly URL[] } | undefined)?.history;
      return {
        statusCode: res.statusCode,
        headers: res.headers,
        body: res.body,
        url,
        redirected: (history?.length ?? 0) > 1,
      };
    } catch (err) {
      throw new UpstreamError(req.registry, `${req.method} ${redactUrl(url)}: ${describe(err)}`, { cause: err });
    }
  }
}

function pickChallenge(header: string | string[] | undefined): Challenge | undefined {
  const all = (Array.isArray(header) ? header : [header]).flatMap((h) => parseChallenges(h));
  return all.find((c) => c.scheme === 'bearer') ?? all.find((c) => c.scheme === 'basic');
}

export function describe(err: unknown): string {
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } } | null | undefined;
  const code = e?.code ?? e?.cause?.code;
  const msg = e?.cause?.message && e.cause.message !== e.message ? `${e.message}: ${e.cause.message}` : e?.message;
  return code ? `${code} ${msg ?? ''}`.trim() : String(msg ?? err);
}

function redactUrl(url: string): string {
  // Upload locations carry state tokens in the query; no credential ever travels in URLs we build.
  const i = url.indexOf('?');
  return i < 0 ? url : `${url.slice(0, i)}?…`;
}

/** Reads a small body into a string, refusing more than `max` bytes. */
export async function readCapped(body: AsyncIterable<Uint8Array>, max: number): Promise<string> {
  return (await readCappedBytes(body, max)).toString('utf8');
}

export async function readCappedBytes(
  body: AsyncIterable<Uint8Array> & { destroy?: (e?: Error) => void },
  max: number,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of body) {
    n += chunk.byteLength;
    if (n > max) {
      body.destroy?.();
      throw new SizeError(max);
    }
    chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
  }
  return Buffer.concat(chunks, n);
}

export class SizeError extends Error {
  constructor(readonly max: number) {
    super(`body larger than ${max} bytes`);
  }
}
