/**
 * The cache's storage interface. Two implementations: the embedded content-addressed store on
 * local disk (fs-store) and a shared OCI registry (registry-store). Both pass test/cache/store
 * conformance. Repositories are cache repository names (`docker.io/library/nginx`).
 *
 * Nothing partial is ever visible: a blob arrives as a complete file whose digest was already
 * verified by the caller, and a manifest as its exact bytes.
 */
import type { Readable } from 'node:stream';

export interface StoredManifest {
  readonly bytes: Buffer;
  readonly mediaType: string;
  readonly digest: string;
}

export interface TagRecord {
  readonly digest: string;
  /** When the origin last confirmed the tag (ms since epoch); 0 when unknown. */
  readonly confirmedAt: number;
}

export interface BlobRange {
  /** inclusive */
  readonly start: number;
  /** inclusive */
  readonly end: number;
}

export interface OpenedBlob {
  readonly size: number;
  readonly stream: Readable;
}

export interface Store {
  readonly kind: 'embedded' | 'registry';
  /** Resolves when the store can serve; rejects with the reason otherwise. */
  ping(): Promise<void>;
  statBlob(repo: string, digest: string): Promise<{ size: number } | undefined>;
  /** Opens a blob (or a byte range of it); undefined when the repository does not hold it. */
  openBlob(repo: string, digest: string, range?: BlobRange, signal?: AbortSignal): Promise<OpenedBlob | undefined>;
  /** Commits a verified blob from a local file. The file may be moved or left; the caller removes leftovers. */
  putBlobFile(repo: string, digest: string, size: number, file: string): Promise<void>;
  getManifest(repo: string, digest: string): Promise<StoredManifest | undefined>;
  /** Stores manifest bytes verbatim. Image manifests only once their blobs are stored. */
  putManifest(repo: string, manifest: StoredManifest): Promise<void>;
  getTag(repo: string, tag: string): Promise<TagRecord | undefined>;
  /** Points a tag at a stored manifest and records when the origin confirmed it. */
  putTag(repo: string, tag: string, manifest: StoredManifest, confirmedAt: number): Promise<void>;
  close(): Promise<void>;
}
