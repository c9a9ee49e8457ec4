/**
 * The pull credential a scanner gets for the cache registry: what the spec's
 * `registry.authorization` carries. Against a token-auth registry it is a Bearer token from the
 * registry's own realm, scoped to `repository:<repo>:pull` and short-lived (the realm's expiry),
 * obtained with pullthrough's cache-registry credential, which itself never leaves pullthrough.
 * Against a Basic-auth registry there is nothing shorter-lived to hand out, so it is that
 * credential as Basic; against an open registry, none.
 */
import { request, type Dispatcher } from 'undici';
import { parseChallenges } from '../oci/challenge.js';
import { readCapped } from '../oci/registry-client.js';
import { ScanError } from './errors.js';

export interface PullCredentialIssuer {
  /** An Authorization header value that pulls `repository` from the cache registry; undefined: none needed. */
  issue(repository: string, signal?: AbortSignal): Promise<string | undefined>;
}

export interface RegistryPullCredentialOptions {
  /** The cache registry's base URL as pullthrough reaches it. */
  readonly registryUrl: string;
  readonly username?: string;
  readonly password?: string;
  readonly dispatcher?: Dispatcher;
  readonly timeoutMs?: number;
}

export function registryPullCredentials(o: RegistryPullCredentialOptions): PullCredentialIssuer {
  const base = o.registryUrl.replace(/\/+$/, '');
  const timeoutMs = o.timeoutMs ?? 10_000;
  const basic =
    o.username !== undefined
      ? `Basic ${Buffer.from(`${o.username}:${o.password ?? ''}`).toString('base64')}`
      : undefined;
  const get = async (url: string, headers: Record<string, string>, signal?: AbortSignal) => {
    const timeout = AbortSignal.timeout(timeoutMs);
    try {
      const res = await request(url, {
        headers,
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
        ...(o.dispatcher ? { dispatcher: o.dispatcher } : {}),
      });
      return { status: res.statusCode, headers: res.headers, text: await readCapped(res.body, 64 * 1024) };
    } catch (err) {
      throw new ScanError(
        'PULL_CREDENTIAL_FAILED',
        `${new URL(url).host}: ${(err as { code?: string }).code ?? (err as Error).message}`,
      );
    }
  };
  return {
    async issue(repository, signal) {
      const ping = await get(`${base}/v2/`, {}, signal);
      if (ping.status !== 401) return undefined;
      const header = ping.headers['www-authenticate'];
      const challenges = (Array.isArray(header) ? header : [header]).flatMap((h) => parseChallenges(h));
      const bearer = challenges.find((c) => c.scheme === 'bearer');
      if (!bearer) {
        if (!basic)
          throw new ScanError(
            'PULL_CREDENTIAL_FAILED',
            'the cache registry asks for a credential and none is configured',
          );
        return basic;
      }
      const realm = bearer.params.realm;
      if (!realm || !/^https?:\/\//.test(realm))
        throw new ScanError('PULL_CREDENTIAL_FAILED', 'the cache registry names no usable token realm');
      const url = new URL(realm);
      if (bearer.params.service) url.searchParams.set('service', bearer.params.service);
      url.searchParams.set('scope', `repository:${repository}:pull`);
      const res = await get(url.href, basic ? { authorization: basic } : {}, signal);
      if (res.status !== 200)
        throw new ScanError('PULL_CREDENTIAL_FAILED', `the token realm ${url.host} answered ${res.status}`);
      let token: unknown;
      try {
        const j = JSON.parse(res.text) as { token?: unknown; access_token?: unknown };
        token = j.token ?? j.access_token;
      } catch {
        token = undefined;
      }
      if (typeof token !== 'string' || token === '')
        throw new ScanError('PULL_CREDENTIAL_FAILED', `the token realm ${url.host} answered no token`);
      return `Bearer ${token}`;
    },
  };
}
