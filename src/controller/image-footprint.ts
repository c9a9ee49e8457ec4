/**
 * What an image takes in the cache registry, blob by blob: its manifest (an index, its child
 * manifests, each image manifest's config and layers), read from the cache registry itself. The
 * collection's selection counts a blob shared by two images once, and frees it only when no
 * remaining image names it, as distribution's garbage-collect does. A manifest is immutable under
 * its digest, so each one is read once and remembered (bounded, least recently used dropped).
 */
import { cacheRepositoryName } from '../oci/encoding.js';
import { digestOf } from '../oci/digest.js';
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, parseManifest, type Descriptor } from '../oci/media-types.js';
import { readCappedBytes, type RegistryClient } from '../oci/registry-client.js';
import { parseReference } from '../oci/reference.js';

/** Blob (and manifest) digests an image holds in the cache registry, with their sizes. */
export type Footprint = ReadonlyMap<string, number>;

export interface FootprintSource {
  /**
   * The blobs `digest` (the stored manifest of `image`) holds; an empty map when the registry does
   * not hold it; throws when the registry could not be read.
   */
  footprint(image: string, digest: string, signal?: AbortSignal): Promise<Footprint>;
}

interface Remembered {
  readonly size: number;
  /** An image manifest's config and layers, or an index's children. */
  readonly blobs: readonly Descriptor[];
  readonly children: readonly Descriptor[];
}

export interface ImageFootprintsOptions {
  readonly client: RegistryClient;
  /** The cache registry, as `registry` for the client. */
  readonly host: string;
  /** Manifests remembered at most (each a few descriptors). */
  readonly maxManifests?: number;
}

export class ImageFootprints implements FootprintSource {
  private readonly o: Required<ImageFootprintsOptions>;
  private readonly memo = new Map<string, Remembered>();

  constructor(opts: ImageFootprintsOptions) {
    this.o = { maxManifests: 20_000, ...opts };
  }

  /** Manifests remembered now. */
  get remembered(): number {
    return this.memo.size;
  }

  async footprint(image: string, digest: string, signal?: AbortSignal): Promise<Footprint> {
    const ref = parseReference(image);
    const repo = cacheRepositoryName(ref.registry, ref.repository);
    const out = new Map<string, number>();
    const top = await this.manifest(repo, digest, signal);
    if (!top) return out;
    out.set(digest, top.size);
    for (const b of top.blobs) out.set(b.digest, b.size);
    for (const child of top.children) {
      // An index's child the proxy did not cache (another platform) takes no space.
      const m = await this.manifest(repo, child.digest, signal);
      if (!m) continue;
      out.set(child.digest, m.size);
      for (const b of m.blobs) out.set(b.digest, b.size);
    }
    return out;
  }

  private async manifest(repo: string, digest: string, signal?: AbortSignal): Promise<Remembered | undefined> {
    const known = this.memo.get(digest);
    if (known) {
      this.memo.delete(digest);
      this.memo.set(digest, known);
      return known;
    }
    const res = await this.o.client.request({
      registry: this.o.host,
      repository: repo,
      method: 'GET',
      path: `/v2/${repo}/manifests/${digest}`,
      headers: { accept: MANIFEST_ACCEPT },
      ...(signal ? { signal } : {}),
    });
    if (res.statusCode === 404) {
      await res.body.dump();
      return undefined;
    }
    if (res.statusCode !== 200) {
      await res.body.dump();
      throw new Error(`cache registry GET ${repo}@${digest} answered ${res.statusCode}`);
    }
    const bytes = await readCappedBytes(res.body, MAX_MANIFEST_BYTES);
    if (digestOf(bytes) !== digest) throw new Error(`cache registry ${repo}@${digest}: the bytes do not match`);
    const parsed = parseManifest(bytes, res.headers['content-type']);
    const entry: Remembered =
      parsed.kind === 'image'
        ? { size: bytes.byteLength, blobs: [parsed.config, ...parsed.layers], children: [] }
        : { size: bytes.byteLength, blobs: [], children: parsed.manifests };
    this.memo.set(digest, entry);
    if (this.memo.size > this.o.maxManifests) {
      const oldest = this.memo.keys().next().value;
      if (oldest !== undefined) this.memo.delete(oldest);
    }
    return entry;
  }
}
