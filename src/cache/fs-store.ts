/**
 * The embedded store: content-addressed files on local disk.
 *
 *   <dir>/blobs/<alg>/<hex>                  blob and manifest bytes, shared by all repositories
 *   <dir>/repos/<repo>/_blobs/<alg>/<hex>    link: the repository holds this blob (empty file)
 *   <dir>/repos/<repo>/_manifests/<alg>/<hex> link: the repository holds this manifest (its media type)
 *   <dir>/repos/<repo>/_tags/<tag>           {"digest","confirmedAt"}
 *   <dir>/tmp/                               files being written; renamed into place when complete
 *
 * Per-repository links keep one repository's blobs from being served under another's name (a
 * private layer must not leak through a public repository that names its digest).
 *
 * With a budget (--max-cache-size), content files are evicted least recently used first, before a
 * commit would exceed it, down to its low-water mark (docs/garbage-collection.md). Coherence: an
 * image manifest is served only while its config and layers are stored, a tag only while its
 * manifest is; otherwise they miss and the pull goes to the origin. A blob evicted while a client
 * reads it stays readable through the open file descriptor (Linux keeps an unlinked file until
 * its last descriptor closes), so the reader gets every byte.
 */
import { mkdir, open, readFile, rename, stat, unlink, utimes, writeFile, access } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { BlobRange, OpenedBlob, Store, StoredManifest, TagRecord } from './store.js';
import { FileReadable } from './file-readable.js';
import { LruIndex } from './lru-index.js';
import { imageBlobs, imageBytes, listContent, tooLarge, type StoreBudget } from './store-budget.js';

export interface FsStoreOptions {
  /** Bounds the stored content; none: unbounded. */
  readonly budget?: StoreBudget;
  /** A content file was evicted to stay within the budget. */
  readonly onEvicted?: (digest: string, bytes: number) => void;
  readonly now?: () => number;
}

/** A stored manifest with, for an image, its config and layers (none for an index). */
interface StoredImage {
  readonly bytes: Buffer;
  readonly blobs: readonly { readonly digest: string; readonly size: number }[];
}

/** A file's modification time follows its accesses to this precision (one utimes per hour at most). */
const PERSIST_ACCESS_MS = 3_600_000;

export class FsStore implements Store {
  readonly kind = 'embedded' as const;
  readonly dir: string;
  private readonly ready: Promise<void>;
  private readonly opts: FsStoreOptions;
  /** Present with a budget. */
  private readonly lru: LruIndex | undefined;
  /** Admissions (room made, file moved in, counted) run one at a time so usage never overshoots. */
  private admitting: Promise<unknown> = Promise.resolve();
  /**
   * With a budget: the manifest getTag's check just read, for the getManifest that resolves the
   * tag right after, so the tag's manifest is read and parsed once. The next getTag replaces it.
   */
  private checked: { readonly digest: string; readonly image: StoredImage } | undefined;

  constructor(dir: string, opts: FsStoreOptions = {}) {
    this.dir = dir;
    this.opts = opts;
    this.lru = opts.budget ? new LruIndex() : undefined;
    this.ready = Promise.all(['blobs', 'repos', 'tmp'].map((d) => mkdir(join(dir, d), { recursive: true }))).then(() =>
      this.loadIndex(),
    );
    // A failed mkdir surfaces through ping() and every operation; do not crash on it here.
    this.ready.catch(() => undefined);
  }

  /** Bytes of stored content (known only with a budget; undefined without). */
  get usedBytes(): number | undefined {
    return this.lru?.usedBytes;
  }

  get tmpDir(): string {
    return join(this.dir, 'tmp');
  }

  async ping(): Promise<void> {
    await this.ready;
    await access(join(this.dir, 'tmp'));
  }

  private blobPath(digest: string): string {
    const [alg, hex] = digest.split(':') as [string, string];
    return join(this.dir, 'blobs', alg, hex);
  }

  private linkPath(repo: string, kind: '_blobs' | '_manifests', digest: string): string {
    const [alg, hex] = digest.split(':') as [string, string];
    return join(this.dir, 'repos', repo, kind, alg, hex);
  }

  private tagPath(repo: string, tag: string): string {
    return join(this.dir, 'repos', repo, '_tags', tag);
  }

  async statBlob(repo: string, digest: string): Promise<{ size: number } | undefined> {
    await this.ready;
    if (!(await exists(this.linkPath(repo, '_blobs', digest)))) return undefined;
    if (this.lru) {
      const size = this.lru.sizeOf(digest);
      return size === undefined ? undefined : { size };
    }
    try {
      return { size: (await stat(this.blobPath(digest))).size };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async openBlob(repo: string, digest: string, range?: BlobRange): Promise<OpenedBlob | undefined> {
    await this.ready;
    if (!(await exists(this.linkPath(repo, '_blobs', digest)))) return undefined;
    if (this.lru && !this.lru.has(digest)) return undefined;
    let handle;
    try {
      handle = await open(this.blobPath(digest), 'r');
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
    let size: number;
    try {
      size = (await handle.stat()).size;
    } catch (err) {
      await handle.close();
      throw err;
    }
    this.touch(digest);
    // The stream owns the handle from here and closes it when it ends or is destroyed.
    const stream = new FileReadable(handle, range?.start ?? 0, range?.end ?? size - 1);
    return { size, stream };
  }

  async putBlobFile(repo: string, digest: string, size: number, file: string): Promise<void> {
    await this.ready;
    const target = this.blobPath(digest);
    await mkdir(join(target, '..'), { recursive: true });
    if (this.lru) {
      await this.admit(digest, size, () => rename(file, target));
      await unlink(file).catch(() => undefined);
    } else if (await exists(target)) await unlink(file).catch(() => undefined);
    else await rename(file, target);
    await this.writeLink(repo, '_blobs', digest, '');
  }

  async getManifest(repo: string, digest: string): Promise<StoredManifest | undefined> {
    await this.ready;
    let mediaType: string;
    try {
      mediaType = await readFile(this.linkPath(repo, '_manifests', digest), 'utf8');
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
    if (!this.lru) {
      const bytes = await this.readContent(digest);
      return bytes && { bytes, mediaType, digest };
    }
    // An image whose config or a layer was evicted is a miss: the pull refills it from the origin.
    const image = await this.whole(digest, this.takeChecked(digest));
    if (!image) return undefined;
    // Its blobs are about to be asked for: they are the last to be evicted.
    this.touch(digest);
    for (const b of image.blobs) this.touch(b.digest);
    return { bytes: image.bytes, mediaType, digest };
  }

  async putManifest(repo: string, manifest: StoredManifest): Promise<void> {
    await this.ready;
    const target = this.blobPath(manifest.digest);
    if (this.lru) {
      const bytes = imageBytes(manifest.bytes);
      const refused = bytes === undefined ? undefined : tooLarge(this.opts.budget as StoreBudget, bytes, 'image');
      if (refused) throw refused;
      await this.admit(manifest.digest, manifest.bytes.byteLength, () => this.atomicWrite(target, manifest.bytes));
    } else if (!(await exists(target))) await this.atomicWrite(target, manifest.bytes);
    await this.writeLink(repo, '_manifests', manifest.digest, manifest.mediaType);
  }

  async getTag(repo: string, tag: string): Promise<TagRecord | undefined> {
    await this.ready;
    let text: string;
    try {
      text = await readFile(this.tagPath(repo, tag), 'utf8');
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
    let rec: TagRecord;
    try {
      const doc = JSON.parse(text) as { digest?: unknown; confirmedAt?: unknown };
      if (typeof doc.digest !== 'string') return undefined;
      rec = { digest: doc.digest, confirmedAt: typeof doc.confirmedAt === 'number' ? doc.confirmedAt : 0 };
    } catch {
      return undefined;
    }
    if (this.lru) {
      // A tag whose manifest or any of its image's blobs was evicted is a miss, not a pointer to nothing.
      const image = await this.whole(rec.digest);
      if (!image) return undefined;
      this.checked = { digest: rec.digest, image };
    }
    return rec;
  }

  async putTag(repo: string, tag: string, manifest: StoredManifest, confirmedAt: number): Promise<void> {
    await this.ready;
    await this.atomicWrite(this.tagPath(repo, tag), JSON.stringify({ digest: manifest.digest, confirmedAt }));
  }

  /** Nothing to release: every file is opened and closed by the call that uses it. */
  close(): Promise<void> {
    return Promise.resolve();
  }

  /**
   * A stored manifest when it is there with, for an image, its config and every layer; `read` is
   * the same manifest read before, which content addressing keeps equal to the file.
   */
  private async whole(digest: string, read?: StoredImage): Promise<StoredImage | undefined> {
    if (!this.lru?.has(digest)) return undefined;
    let image = read;
    if (!image) {
      const bytes = await this.readContent(digest);
      if (!bytes) return undefined;
      image = { bytes, blobs: imageBlobs(bytes) ?? [] };
    }
    return image.blobs.every((b) => this.lru?.has(b.digest)) ? image : undefined;
  }

  /** The manifest getTag checked, once, when `digest` is the one it resolved to. */
  private takeChecked(digest: string): StoredImage | undefined {
    const checked = this.checked;
    if (checked?.digest !== digest) return undefined;
    this.checked = undefined;
    return checked.image;
  }

  /** A content file's bytes; undefined when it is not there. */
  private async readContent(digest: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.blobPath(digest));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /**
   * Counts in a content file that `write` puts in place, first evicting the least recently used
   * ones while it would take usage over the budget; already stored, it is only touched.
   */
  private admit(digest: string, size: number, write: () => Promise<void>): Promise<void> {
    const run = async (): Promise<void> => {
      const lru = this.lru as LruIndex;
      if (lru.has(digest)) {
        this.touch(digest);
        return;
      }
      await this.makeRoom(size);
      await write();
      lru.add(digest, size, this.now());
    };
    const done = this.admitting.then(run, run);
    this.admitting = done.catch(() => undefined);
    return done;
  }

  /** Evicts least recently used files until `incoming` more bytes fit under the low-water mark. */
  private async makeRoom(incoming: number): Promise<void> {
    const lru = this.lru as LruIndex;
    const budget = this.opts.budget as StoreBudget;
    const refused = tooLarge(budget, incoming);
    if (refused) throw refused;
    if (lru.usedBytes + incoming <= budget.maxBytes) return;
    for (const v of lru.oldest(lru.usedBytes + incoming - budget.lowWaterBytes)) {
      // A reader holding the file open keeps reading it: unlink only drops the name.
      try {
        await unlink(this.blobPath(v.digest));
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
      lru.remove(v.digest);
      this.opts.onEvicted?.(v.digest, v.size);
    }
  }

  private touch(digest: string): void {
    if (!this.lru?.touch(digest, this.now(), PERSIST_ACCESS_MS)) return;
    const at = new Date(this.now());
    // Best effort: a missed update only makes the order after a restart a little older.
    utimes(this.blobPath(digest), at, at).catch(() => undefined);
  }

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  /** With a budget: counts what is stored, oldest access first, and evicts what exceeds it. */
  private async loadIndex(): Promise<void> {
    const lru = this.lru;
    if (!lru) return;
    const files = await listContent(this.dir);
    files.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const f of files) lru.add(f.digest, f.size, f.mtimeMs);
    await this.makeRoom(0);
  }

  private async writeLink(repo: string, kind: '_blobs' | '_manifests', digest: string, content: string): Promise<void> {
    const p = this.linkPath(repo, kind, digest);
    await this.atomicWrite(p, content);
  }

  private async atomicWrite(target: string, content: string | Buffer): Promise<void> {
    await mkdir(join(target, '..'), { recursive: true });
    const tmp = join(this.dir, 'tmp', `w-${randomBytes(8).toString('hex')}`);
    try {
      await writeFile(tmp, content);
      await rename(tmp, target);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}
