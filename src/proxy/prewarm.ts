/**
 * Pre-warm: an image fetched into the store ahead of any pull, through the same pull service the
 * proxy serves from (tag resolution, verified fills, the persister that stores blobs, then
 * manifests, then the tag), so nothing partial or unverified is stored. The credentials of one
 * warm (a CachedImage's pull secret) are offered for its repository only, and only while it runs.
 * A refresh asks the origin which digest a tag names with a HEAD (free against Docker Hub's pull
 * limit), through the proxy's origin client and its egress policy, with the same credentials.
 */
import type { StoredManifest } from '../cache/store.js';
import type { Credential, CredentialRequest, CredentialSource } from '../oci/credentials.js';
import { cacheRepositoryName } from '../oci/encoding.js';
import { OciError } from '../oci/errors.js';
import type { HostList } from '../oci/host-pattern.js';
import { formatPlatform, MANIFEST_ACCEPT, parseManifest } from '../oci/media-types.js';
import { parseReference, type ImageReference } from '../oci/reference.js';
import type { RegistryClient } from '../oci/registry-client.js';
import type { Log as Logger } from '../observability/logger.js';
import { headerString, isAuthError, Origin } from './origin.js';
import { wants } from './persister.js';
import type { PullService } from './pull-service.js';
import type { Target } from './target.js';

export interface WarmRequest {
  readonly image: string;
  /** Which platforms of an index; `all` by default. */
  readonly platforms?: readonly string[] | 'all';
  readonly credentials?: readonly Credential[];
  readonly signal?: AbortSignal;
  /**
   * For a tag: the digest the origin names for it now (a refresh found it moved). That digest is
   * fetched, verified and stored, and the stored tag moved to it, whatever the cache said.
   */
  readonly digest?: string;
}

/** Which digest the origin's tag names now. */
export interface UpstreamRequest {
  readonly image: string;
  readonly credentials?: readonly Credential[];
  readonly signal?: AbortSignal;
}

export interface WarmResult {
  /** The digest the reference resolved to (the index's, for a multi-platform image). */
  readonly digest: string;
  /** Bytes of every manifest and blob stored for it. */
  readonly size: number;
  /** The platforms stored (`os/arch[/variant]`); empty for a single-platform manifest without one. */
  readonly platforms: readonly string[];
}

/** Credentials offered per repository while a warm of it runs. */
export class WarmCredentials implements CredentialSource {
  private readonly byRepository = new Map<string, (readonly Credential[])[]>();

  credentialsFor(req: CredentialRequest): Promise<readonly Credential[]> {
    return Promise.resolve((this.byRepository.get(`${req.registry}/${req.repository}`) ?? []).flat());
  }

  async with<T>(t: Target, credentials: readonly Credential[], fn: () => Promise<T>): Promise<T> {
    const key = `${t.registry}/${t.repository}`;
    const lists = this.byRepository.get(key) ?? [];
    lists.push(credentials);
    this.byRepository.set(key, lists);
    try {
      return await fn();
    } finally {
      lists.splice(lists.indexOf(credentials), 1);
      if (lists.length === 0) this.byRepository.delete(key);
    }
  }
}

export interface PrewarmerOptions {
  readonly pull: PullService;
  /** The proxy's origin client (its egress policy, its credentials with the warm's own). */
  readonly origin: RegistryClient;
  readonly credentials: WarmCredentials;
  readonly allowed: HostList;
  readonly log: Logger;
  readonly now?: () => number;
}

export class Prewarmer {
  private readonly origin: Origin;

  constructor(private readonly o: PrewarmerOptions) {
    // No access gate (the warm serves nobody) and no cluster tier: the origin itself answers.
    this.origin = new Origin(o.origin, undefined);
  }

  async warm(req: WarmRequest): Promise<WarmResult> {
    const { ref, t } = this.target(req.image);
    const platforms = req.platforms ?? 'all';
    const ctx = { log: this.o.log, ...(req.signal ? { signal: req.signal } : {}) };
    return this.o.credentials.with(t, req.credentials ?? [], async () => {
      const tagName = ref.digest === undefined ? (ref.tag ?? 'latest') : undefined;
      const reference = ref.digest ?? req.digest ?? tagName ?? 'latest';
      await this.provesAccess(t, reference, req.credentials ?? [], req.signal);
      const { manifest } = await this.o.pull.manifest(t, reference, ctx);
      const tag = tagName !== undefined ? { name: tagName, confirmedAt: (this.o.now ?? Date.now)() } : undefined;
      if (!(await this.o.pull.persister.persist(t, manifest, tag, platforms))) {
        throw new OciError('UNAVAILABLE', `${req.image}: not every blob and manifest could be stored`);
      }
      return this.measure(t, manifest, platforms);
    });
  }

  /**
   * A warm proves what a pull through a node proxy proves: that the origin lets these credentials
   * (or nobody's) read the image. A copy already in the cache does not stand in for that, or a
   * CachedImage without its pull secret would show a private image as Cached. An origin that
   * cannot be asked (air-gapped, down) or no longer has it does not refuse: what is cached is
   * warmed from the cache, as a pull would be served.
   */
  private async provesAccess(
    t: Target,
    reference: string,
    credentials: readonly Credential[],
    signal: AbortSignal | undefined,
  ): Promise<void> {
    try {
      // Its own secret or none: never another warm's of the same repository running meanwhile.
      const res = await this.origin.request(t, 'HEAD', 'manifest', reference, {
        headers: { accept: MANIFEST_ACCEPT },
        credentials: [...credentials, undefined],
        signal,
      });
      await res.body.dump();
    } catch (err) {
      if (isAuthError(err)) throw err;
    }
  }

  /** The digest the origin names for the image's tag now, asked with a HEAD. */
  async upstreamDigest(req: UpstreamRequest): Promise<string> {
    const { ref, t } = this.target(req.image);
    if (ref.digest !== undefined) return ref.digest;
    const tag = ref.tag ?? 'latest';
    return this.o.credentials.with(t, req.credentials ?? [], async () => {
      const res = await this.origin.request(t, 'HEAD', 'manifest', tag, {
        headers: { accept: MANIFEST_ACCEPT },
        credentials: [...(req.credentials ?? []), undefined],
        signal: req.signal,
      });
      await res.body.dump();
      const digest = headerString(res.headers['docker-content-digest']);
      if (digest === undefined) {
        throw new OciError('UNAVAILABLE', `${ref.registry} named no digest for ${ref.repository}:${tag}`);
      }
      return digest;
    });
  }

  private target(image: string): { ref: ImageReference; t: Target } {
    const ref = parseReference(image);
    if (!this.o.allowed.matches(ref.registry)) {
      throw new OciError('DENIED', `registry ${ref.registry} is not in --allowed-registries`);
    }
    return {
      ref,
      t: {
        registry: ref.registry,
        repository: ref.repository,
        cacheRepo: cacheRepositoryName(ref.registry, ref.repository),
      },
    };
  }

  /** What is stored for it now: sizes from the manifests, platforms from the index. */
  private async measure(t: Target, m: StoredManifest, platforms: readonly string[] | 'all'): Promise<WarmResult> {
    const parsed = parseManifest(m.bytes, m.mediaType);
    if (parsed.kind === 'image') {
      const blobs = [parsed.config, ...parsed.layers].reduce((n, d) => n + d.size, 0);
      return { digest: m.digest, size: m.bytes.byteLength + blobs, platforms: [] };
    }
    let size = m.bytes.byteLength;
    const stored: string[] = [];
    for (const d of parsed.manifests.filter((c) => wants(platforms, c))) {
      const { manifest: child } = await this.o.pull.manifest(t, d.digest, { log: this.o.log });
      size += (await this.measure(t, child, platforms)).size;
      if (d.platform) stored.push(formatPlatform(d.platform));
    }
    return { digest: m.digest, size, platforms: stored };
  }
}
