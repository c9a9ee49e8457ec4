/**
 * The store as the pull path sees it: a failing store (cache registry down, disk full or
 * read-only) turns into a miss on reads and a logged, counted no-op on writes, so pulls carry on
 * from the origin as through a plain proxy. After a failure the store is skipped for a cool-down
 * so that a hanging cache registry costs one timeout, not one per request. A disk found full (by
 * a store write or a blob fill's spool) is remembered until a write succeeds or the cool-down
 * passes, so that readiness can say the node caches nothing.
 */
import { UpstreamError } from '../oci/errors.js';
import type { BlobLocation, RegistryStore } from './registry-store.js';
import { isDiskFull } from './spool-writer.js';
import type { BlobRange, OpenedBlob, Store, StoredManifest, TagRecord } from './store.js';

export interface StoreFailureSink {
  storeFailed(op: string, err: Error): void;
  /** An operation was not tried: the store is cooling down after a failure. */
  storeSkipped?(op: string): void;
  storeRecovered(): void;
}

export class ResilientStore {
  readonly inner: Store;
  private readonly sink: StoreFailureSink;
  private readonly cooldownMs: number;
  private skipUntil = 0;
  private diskFullUntil = 0;

  constructor(inner: Store, sink: StoreFailureSink, cooldownMs: number) {
    this.inner = inner;
    this.sink = sink;
    this.cooldownMs = cooldownMs;
  }

  get kind(): Store['kind'] {
    return this.inner.kind;
  }

  /** True while the store is being skipped after a failure. */
  get degraded(): boolean {
    return Date.now() < this.skipUntil;
  }

  /** True while a write recently failed for lack of space and none has succeeded since. */
  get diskFull(): boolean {
    return Date.now() < this.diskFullUntil;
  }

  /** A write (here or to a fill's spool) failed for lack of space. */
  noteDiskFull(): void {
    this.diskFullUntil = Date.now() + this.cooldownMs;
  }

  /** A write (here or a whole fill's spool) succeeded: there is space again. */
  noteWritten(): void {
    this.diskFullUntil = 0;
  }

  private async guard<T>(
    op: string,
    fallback: T,
    fn: () => Promise<T>,
    opts: { signal?: AbortSignal; write?: boolean } = {},
  ): Promise<T> {
    if (this.degraded) {
      this.sink.storeSkipped?.(op);
      return fallback;
    }
    try {
      const out = await fn();
      if (this.skipUntil !== 0) {
        this.skipUntil = 0;
        this.sink.storeRecovered();
      }
      if (opts.write) this.noteWritten();
      return out;
    } catch (err) {
      // The client went away: not the store's failure, and nothing more to do for that request.
      if (opts.signal?.aborted) throw err;
      // Only an unreachable store is skipped; a refusal (disk full, a 4xx) leaves reads working.
      if (err instanceof UpstreamError) this.skipUntil = Date.now() + this.cooldownMs;
      if (isDiskFull(err)) this.noteDiskFull();
      this.sink.storeFailed(op, err as Error);
      return fallback;
    }
  }

  ping(): Promise<void> {
    return this.inner.ping();
  }

  statBlob(repo: string, digest: string): Promise<{ size: number } | undefined> {
    return this.guard('statBlob', undefined, () => this.inner.statBlob(repo, digest));
  }

  openBlob(repo: string, digest: string, range?: BlobRange, signal?: AbortSignal): Promise<OpenedBlob | undefined> {
    return this.guard('openBlob', undefined, () => this.inner.openBlob(repo, digest, range, signal), { signal });
  }

  /**
   * Where the cache registry has a blob fetched from (registry-store.ts): undefined for a store
   * that does not say (the embedded one) and on a failure, which counts toward the cool-down as
   * any other read's.
   */
  blobLocation(repo: string, digest: string, signal?: AbortSignal): Promise<BlobLocation | undefined> {
    const inner = this.inner as Store & Partial<Pick<RegistryStore, 'blobLocation'>>;
    if (!inner.blobLocation) return Promise.resolve(undefined);
    const locate = inner.blobLocation.bind(inner);
    return this.guard<BlobLocation | undefined>('blobLocation', undefined, () => locate(repo, digest, signal), {
      signal,
    });
  }

  getManifest(repo: string, digest: string): Promise<StoredManifest | undefined> {
    return this.guard('getManifest', undefined, () => this.inner.getManifest(repo, digest));
  }

  getTag(repo: string, tag: string): Promise<TagRecord | undefined> {
    return this.guard('getTag', undefined, () => this.inner.getTag(repo, tag));
  }

  /** Writes report success; a failed write is logged and counted, never thrown. */
  putBlobFile(repo: string, digest: string, size: number, file: string): Promise<boolean> {
    return this.guard(
      'putBlob',
      false,
      async () => {
        await this.inner.putBlobFile(repo, digest, size, file);
        return true;
      },
      { write: true },
    );
  }

  putManifest(repo: string, manifest: StoredManifest): Promise<boolean> {
    return this.guard(
      'putManifest',
      false,
      async () => {
        await this.inner.putManifest(repo, manifest);
        return true;
      },
      { write: true },
    );
  }

  putTag(repo: string, tag: string, manifest: StoredManifest, confirmedAt: number): Promise<boolean> {
    return this.guard(
      'putTag',
      false,
      async () => {
        await this.inner.putTag(repo, tag, manifest, confirmedAt);
        return true;
      },
      { write: true },
    );
  }
}
