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
 */
import { mkdir, open, readFile, rename, stat, unlink, writeFile, access } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { BlobRange, OpenedBlob, Store, StoredManifest, TagRecord } from './store.js';
import { FileReadable } from './file-readable.js';

export class FsStore implements Store {
  readonly kind = 'embedded' as const;
  readonly dir: string;
  private readonly ready: Promise<void>;

  constructor(dir: string) {
    this.dir = dir;
    this.ready = Promise.all(['blobs', 'repos', 'tmp'].map((d) => mkdir(join(dir, d), { recursive: true }))).then(
      () => undefined,
    );
    // A failed mkdir surfaces through ping() and every operation; do not crash on it here.
    this.ready.catch(() => undefined);
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
    // The stream owns the handle from here and closes it when it ends or is destroyed.
    const stream = new FileReadable(handle, range?.start ?? 0, range?.end ?? size - 1);
    return { size, stream };
  }

  async putBlobFile(repo: string, digest: string, _size: number, file: string): Promise<void> {
    await this.ready;
    const target = this.blobPath(digest);
    await mkdir(join(target, '..'), { recursive: true });
    if (await exists(target)) await unlink(file).catch(() => undefined);
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
    try {
      return { bytes: await readFile(this.blobPath(digest)), mediaType, digest };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async putManifest(repo: string, manifest: StoredManifest): Promise<void> {
    await this.ready;
    const target = this.blobPath(manifest.digest);
    if (!(await exists(target))) await this.atomicWrite(target, manifest.bytes);
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
    try {
      const rec = JSON.parse(text) as { digest?: unknown; confirmedAt?: unknown };
      if (typeof rec.digest !== 'string') return undefined;
      return { digest: rec.digest, confirmedAt: typeof rec.confirmedAt === 'number' ? rec.confirmedAt : 0 };
    } catch {
      return undefined;
    }
  }

  async putTag(repo: string, tag: string, manifest: StoredManifest, confirmedAt: number): Promise<void> {
    await this.ready;
    await this.atomicWrite(this.tagPath(repo, tag), JSON.stringify({ digest: manifest.digest, confirmedAt }));
  }

  /** Nothing to release: every file is opened and closed by the call that uses it. */
  close(): Promise<void> {
    return Promise.resolve();
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
