/**
 * Removes images from the shared cache registry and reclaims their space
 * (docs/garbage-collection.md): deletes each chosen image's manifest and tag pointer through the
 * distribution API (reads go on; a removed image misses and fills from the origin), then, with
 * every writer held by the collection Lease and after the writers' settle time, runs
 * distribution's garbage-collect, which deletes the blobs no remaining manifest names.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { TAG_REPO_PREFIX } from '../cache/registry-store.js';
import { cacheRepositoryName } from '../oci/encoding.js';
import { readCapped, type RegistryClient, type RegistryResponse } from '../oci/registry-client.js';
import { parseReference } from '../oci/reference.js';
import { mapLimit } from '../runtime/map-limit.js';
import { ImageFootprints, type Footprint } from './image-footprint.js';

/**
 * Images removed at once: each removal is three small requests (DELETE, HEAD, DELETE), and the
 * deletes are the one part of a pass that grows with the images removed (docs/performance.md,
 * Collection row).
 */
const PARALLEL_REMOVALS = 4;

/** An answer of the registry or the gc-runner is a status and a short message; more is not read. */
export const MAX_ANSWER_BYTES = 64 * 1024;

export type CollectorErrorCode =
  | 'DELETES_DISABLED'
  | 'DELETE_FAILED'
  | 'COLLECT_FAILED'
  /** The gc-runner could not say what the registry's storage holds. */
  | 'STORAGE_UNKNOWN';

export class CollectorError extends Error {
  readonly code: CollectorErrorCode;

  constructor(code: CollectorErrorCode, message: string) {
    super(message);
    this.name = 'CollectorError';
    this.code = code;
  }
}

export interface CollectorLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface RegistryCollectorOptions {
  /** The cache registry, as `host` for the client. */
  readonly client: RegistryClient;
  readonly host: string;
  /** Runs `work` while every writer of the cache registry is held (holdGcLease in a cluster). */
  readonly holdWriters: <T>(work: (held: AbortSignal) => Promise<T>) => Promise<T>;
  /**
   * After the hold is taken, before collecting: a writer's poll period plus the longest a write it
   * started before seeing the hold may take.
   */
  readonly settleMs: number;
  /** Runs distribution's garbage-collect on the registry's storage (never --delete-untagged). */
  readonly garbageCollect: (signal: AbortSignal) => Promise<unknown>;
  /** What the registry's storage holds (the gc-runner's GET /storage). */
  readonly storage?: () => Promise<RegistryStorage>;
  readonly log: CollectorLog;
}

/** What the registry's storage holds, as the gc-runner answers GET /storage. */
export type RegistryStorage =
  | { readonly kind: 'volume'; readonly sizeBytes: number; readonly freeBytes: number }
  /** Object storage (S3): no volume to measure. */
  | { readonly kind: 'no-volume' };

export interface Removal {
  /** The image reference as the CachedImage names it (a tag's pointer is removed too). */
  readonly image: string;
  /** The stored manifest (image or index) to delete. */
  readonly digest: string;
}

const PROBE_DIGEST = `sha256:${'0'.repeat(64)}`;

export class RegistryCollector {
  private readonly o: RegistryCollectorOptions;
  private readonly footprints: ImageFootprints;

  constructor(opts: RegistryCollectorOptions) {
    this.o = opts;
    this.footprints = new ImageFootprints({ client: opts.client, host: opts.host });
  }

  /** The blobs an image's stored manifest holds in the registry (image-footprint.ts). */
  footprint(image: string, digest: string): Promise<Footprint> {
    return this.footprints.footprint(image, digest);
  }

  /** What the registry's storage holds; STORAGE_UNKNOWN without a gc-runner to ask. */
  storage(): Promise<RegistryStorage> {
    if (!this.o.storage) return Promise.reject(new CollectorError('STORAGE_UNKNOWN', 'no gc-runner to ask'));
    return this.o.storage();
  }

  /**
   * Whether the registry deletes manifests: a DELETE of an absent digest answers 404 when it does,
   * 405 UNSUPPORTED when `storage.delete.enabled` is off. Throws DELETES_DISABLED then.
   */
  async checkDeletes(): Promise<void> {
    const repo = `${TAG_REPO_PREFIX}/probe`;
    const res = await this.request(repo, 'DELETE', `/v2/${repo}/manifests/${PROBE_DIGEST}`);
    const text = await bodyText(res);
    if (res.statusCode === 405 || text.includes('UNSUPPORTED')) {
      throw new CollectorError(
        'DELETES_DISABLED',
        'the cache registry refuses deletes: set storage.delete.enabled: true in its configuration ' +
          '(manifests/base/registry.yaml does); nothing can be collected until then',
      );
    }
  }

  /** Deletes an image's manifest and its tag pointer; 'absent' when neither was there. */
  async remove(r: Removal): Promise<'deleted' | 'absent'> {
    const ref = parseReference(r.image);
    const repo = cacheRepositoryName(ref.registry, ref.repository);
    let deleted = await this.deleteManifest(repo, r.digest);
    if (ref.tag !== undefined) {
      const pointerRepo = `${TAG_REPO_PREFIX}/${repo}`;
      const head = await this.request(pointerRepo, 'HEAD', `/v2/${pointerRepo}/manifests/${ref.tag}`, {
        accept: 'application/vnd.oci.image.manifest.v1+json',
      });
      await head.body.dump();
      const pointer = head.headers['docker-content-digest'];
      if (head.statusCode === 200 && typeof pointer === 'string') {
        deleted = (await this.deleteManifest(pointerRepo, pointer)) || deleted;
      }
    }
    return deleted ? 'deleted' : 'absent';
  }

  /**
   * Removes `removals`, then collects with the writers held. Safe to run again after an
   * interruption: a deleted manifest stays deleted, and garbage-collect marks and sweeps anew.
   */
  async collect(removals: readonly Removal[]): Promise<{ deleted: number; absent: number }> {
    const outcomes = await mapLimit(removals, PARALLEL_REMOVALS, (r) => this.remove(r));
    const deleted = outcomes.filter((o) => o === 'deleted').length;
    const absent = outcomes.length - deleted;
    await this.o.holdWriters(async (held) => {
      this.o.log.info({ settleMs: this.o.settleMs }, 'collection: writers held; waiting for writes under way');
      await sleep(this.o.settleMs, undefined, { signal: held });
      await this.o.garbageCollect(held);
    });
    this.o.log.info({ deleted, absent }, 'collection finished; writers go on');
    return { deleted, absent };
  }

  private async deleteManifest(repo: string, digest: string): Promise<boolean> {
    const res = await this.request(repo, 'DELETE', `/v2/${repo}/manifests/${digest}`);
    const text = await bodyText(res);
    if (res.statusCode === 202) return true;
    if (res.statusCode === 404) return false;
    throw new CollectorError(
      'DELETE_FAILED',
      `cache registry DELETE ${repo}@${digest} answered ${res.statusCode}: ${text.slice(0, 200)}`,
    );
  }

  private request(
    repo: string,
    method: 'DELETE' | 'HEAD',
    path: string,
    headers: Record<string, string> = {},
  ): Promise<RegistryResponse> {
    return this.o.client.request({ registry: this.o.host, repository: repo, method, path, headers, actions: '*' });
  }
}

async function bodyText(res: RegistryResponse): Promise<string> {
  try {
    return await readCapped(res.body, MAX_ANSWER_BYTES);
  } catch {
    return '';
  }
}
