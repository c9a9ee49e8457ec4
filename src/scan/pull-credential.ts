/**
 * The cache registry as scanning reads it, through the project's RegistryClient (its registry
 * login: challenge, token realm, token cache): the manifests a scan needs, and the pull
 * credential a scanner gets, which is what the spec's `registry.authorization` carries. Against a
 * token-auth registry it is a Bearer token from the registry's own realm, scoped to
 * `repository:<repo>:pull` and fetched new for each hand-over (the scanner needs its whole
 * lifetime), obtained with pullthrough's cache-registry credential, which itself never leaves
 * pullthrough. Against a Basic-auth registry there is nothing shorter-lived to hand out, so it is
 * that credential as Basic; against an open registry, none.
 */
import { getGlobalDispatcher, type Dispatcher } from 'undici';
import type { Credential } from '../oci/credentials.js';
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES } from '../oci/media-types.js';
import { describe, readCappedBytes, RegistryClient, type RegistryResponse } from '../oci/registry-client.js';
import { ScanError } from './errors.js';

export interface PullCredentialIssuer {
  /** An Authorization header value that pulls `repository` from the cache registry; undefined: none needed. */
  issue(repository: string, signal?: AbortSignal): Promise<string | undefined>;
}

/** What a digest scan reads from the cache registry. */
export interface CacheRegistryAccess extends PullCredentialIssuer {
  /** The bytes at `/v2/<repository>/<path>` (a manifest or a blob); undefined: not there. */
  read(repository: string, path: string, signal?: AbortSignal): Promise<Buffer | undefined>;
}

export interface RegistryPullCredentialOptions {
  /** The cache registry's base URL as pullthrough reaches it. */
  readonly registryUrl: string;
  readonly username?: string;
  readonly password?: string;
  /**
   * A client of the cache registry to share (its transport, challenge and token cache; the
   * credential is `username`/`password` all the same); without it one is built on `registryUrl`.
   */
  readonly registry?: RegistryClient;
  /** The name `registry` knows the cache registry by (its `baseUrl` key). Default `cache`. */
  readonly registryName?: string;
  readonly dispatcher?: Dispatcher;
  /** Each request's deadline. Default 10 s. */
  readonly timeoutMs?: number;
}

export function registryPullCredentials(o: RegistryPullCredentialOptions): CacheRegistryAccess {
  const timeoutMs = o.timeoutMs ?? 10_000;
  const name = o.registryName ?? 'cache';
  const client = o.registry ?? ownClient(o.registryUrl, o.dispatcher, timeoutMs);
  // The scan's own account, and nothing else: an anonymous token would pull nothing private.
  const credentials: readonly (Credential | undefined)[] = [
    o.username !== undefined
      ? { kind: 'basic', username: o.username, password: o.password ?? '', label: 'cache registry (scan)' }
      : undefined,
  ];
  const send = (repository: string, path: string, signal: AbortSignal | undefined, freshToken: boolean) => {
    const timeout = AbortSignal.timeout(timeoutMs);
    return client.requestWithAuthorization({
      registry: name,
      repository,
      method: 'GET',
      path,
      headers: { accept: MANIFEST_ACCEPT },
      credentials,
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      freshToken,
      // On object storage the registry answers a blob GET (an index the cache holds as a blob)
      // with a 307 to a presigned URL.
      followRedirects: path.startsWith(`/v2/${repository}/blobs/`),
    });
  };
  return {
    async issue(repository, signal) {
      let answer: { res: RegistryResponse; authorization: string | undefined };
      try {
        // The API root, asked with the repository's scope: the client logs in as it would to pull.
        answer = await send(repository, '/v2/', signal, true);
        await answer.res.body.dump();
      } catch (err) {
        throw new ScanError('PULL_CREDENTIAL_FAILED', `the cache registry: ${describe(err)}`);
      }
      const code = answer.res.statusCode;
      if (code === 401 || code === 403)
        throw new ScanError('PULL_CREDENTIAL_FAILED', `the cache registry refused the credential (${code})`);
      return answer.authorization;
    },
    async read(repository, path, signal) {
      try {
        const { res } = await send(repository, `/v2/${repository}/${path}`, signal, false);
        if (res.statusCode !== 200) {
          await res.body.dump();
          return undefined;
        }
        return await readCappedBytes(res.body, MAX_MANIFEST_BYTES);
      } catch (err) {
        throw new ScanError('CACHE_REGISTRY_UNREACHABLE', `the cache registry: ${describe(err)}`);
      }
    },
  };
}

function ownClient(registryUrl: string, dispatcher: Dispatcher | undefined, timeoutMs: number): RegistryClient {
  const base = registryUrl.replace(/\/+$/, '');
  return new RegistryClient({
    name: 'cache',
    dispatcher: dispatcher ?? getGlobalDispatcher(),
    baseUrl: () => base,
    userAgent: 'pullthrough-scan',
    headersTimeoutMs: timeoutMs,
    bodyTimeoutMs: timeoutMs,
  });
}
