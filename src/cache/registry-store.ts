/**
 * The shared store: any OCI distribution registry (the cluster's cache registry), spoken to only
 * through the distribution API.
 *
 * - Blobs are ordinary blobs of the cache repository (`docker.io/library/nginx`).
 * - Manifests are pushed verbatim by digest. distribution refuses a manifest whose blobs it lacks
 *   and (2.8) an index whose child manifests it lacks; callers store blobs first, and an index
 *   whose children are not all cached (a multi-arch image pulled for one platform) is kept as a
 *   blob of the same digest instead: its exact bytes, content-addressed beside the repository.
 * - Tags are pointer manifests in `pullthrough-tags/<cache repository>:<tag>` (a name no encoded
 *   registry can have: it holds no `.` or `_`): an empty OCI manifest whose annotations carry the
 *   target digest, media type and when the origin last confirmed it. So a tag never needs its
 *   target to be pushable, and every node sees when it was last confirmed.
 * - A registry on object storage (distribution's s3 driver) answers blob GETs and HEADs with a 307
 *   to a presigned object URL: reads follow it (each hop that leaves the registry goes through the
 *   client's `elsewhere` dispatcher, which build-proxy.ts holds to the cache registry's trust), and
 *   `blobLocation` hands the GET's redirect out instead, for a client to fetch the bytes itself.
 * - With a write hold (a collection may run on the registry), a blob's bytes go in a PATCH and
 *   the closing PUT, which makes the blob visible, waits for the hold like manifest and tag PUTs.
 */
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { digestOf } from '../oci/digest.js';
import { UpstreamError } from '../oci/errors.js';
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, MediaType, parseManifest } from '../oci/media-types.js';
import { readCappedBytes, type RegistryClient, type RegistryResponse } from '../oci/registry-client.js';
import type { BlobRange, OpenedBlob, Store, StoredManifest, TagRecord } from './store.js';
import type { WriteHold } from './write-hold.js';

/** Tag pointers live in `pullthrough-tags/<cache repository>`. */
export const TAG_REPO_PREFIX = 'pullthrough-tags';
const EMPTY_CONFIG = Buffer.from('{}');
const EMPTY_DIGEST = digestOf(EMPTY_CONFIG);
const A_DIGEST = 'dev.pullthrough.target.digest';
const A_MEDIATYPE = 'dev.pullthrough.target.mediaType';
const A_CONFIRMED = 'dev.pullthrough.confirmedAt';

export class RegistryStoreError extends Error {}

/** Where a blob's bytes are to be fetched from, as the cache registry says. */
export type BlobLocation =
  /** The registry redirects: the URL (presigned, short-lived) serves the blob, Range included. */
  | { readonly kind: 'redirect'; readonly url: string }
  /** The registry serves the bytes itself (filesystem storage, or redirects disabled). */
  | { readonly kind: 'served' }
  | { readonly kind: 'missing' };

/** Times a request is sent when its connection is lost before an answer (see `req`). */
const CONNECTION_ATTEMPTS = 3;
/** A connection refused, reset or closed: no answer came. */
const CONNECTION_LOST = new Set(['UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'ECONNRESET', 'ECONNREFUSED', 'EPIPE']);

function connectionLost(err: unknown): boolean {
  const code = (err as { cause?: { code?: unknown } } | undefined)?.cause?.code;
  return err instanceof UpstreamError && typeof code === 'string' && CONNECTION_LOST.has(code);
}

const UPLOAD_CHUNK = 1024 * 1024;
const UPLOAD_BUFFERS = 3;

/**
 * A spool file as an upload body, read into three buffers in turn instead of a fresh one per
 * chunk (each would be garbage: a GiB of it for a GiB blob, tens of MiB of RSS at any moment).
 * undici writes a stream body chunk by chunk and pauses it while the socket has anything queued: a
 * 1 MiB chunk is far above the socket's high-water mark, so each write waits for 'drain', that is
 * until the chunk is in the kernel, before the next chunk is taken; `Readable.from` reads one
 * chunk ahead. So a buffer comes round again two chunks after it was written out. Were undici ever
 * to hold chunks longer, the registry, which checks the digest of what it receives, would refuse
 * the upload: wrong bytes are never stored (and the conformance suite's multi-MiB upload fails).
 */
async function* fileChunks(file: string): AsyncGenerator<Buffer> {
  const handle = await open(file, 'r');
  try {
    const buffers = Array.from({ length: UPLOAD_BUFFERS }, () => Buffer.allocUnsafe(UPLOAD_CHUNK));
    let pos = 0;
    for (let i = 0; ; i = (i + 1) % UPLOAD_BUFFERS) {
      const buf = buffers[i] as Buffer;
      const { bytesRead } = await handle.read(buf, 0, UPLOAD_CHUNK, pos);
      if (bytesRead === 0) return;
      pos += bytesRead;
      yield bytesRead === UPLOAD_CHUNK ? buf : buf.subarray(0, bytesRead);
    }
  } finally {
    await handle.close();
  }
}

export class RegistryStore implements Store {
  readonly kind = 'registry' as const;
  private readonly client: RegistryClient;
  /** The client resolves this name to the cache registry's base URL. */
  private readonly host: string;
  private readonly emptyConfigPushed = new Set<string>();
  private readonly hold: WriteHold | undefined;

  constructor(client: RegistryClient, host: string, hold?: WriteHold) {
    this.client = client;
    this.host = host;
    this.hold = hold;
  }

  /**
   * One request to the cache registry. When the connection is lost before an answer (a replica
   * behind the registry's Service killed, or one shutting down that closes a kept-alive connection
   * as the request goes out on it), a GET, HEAD or PUT is sent again on a new connection, which the
   * Service routes to a live replica: reads change nothing, manifest and tag PUTs are by content,
   * and an upload's closing PUT the registry did process is refused the second time, as before.
   */
  private async req(
    repo: string,
    method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH',
    path: string,
    extra: {
      headers?: Record<string, string>;
      /** Made again for each attempt. */
      body?: () => Readable | Buffer;
      actions?: string;
      signal?: AbortSignal;
      followRedirects?: boolean;
    } = {},
  ): Promise<RegistryResponse> {
    const { body, ...rest } = extra;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.client.request({
          registry: this.host,
          repository: repo,
          method,
          path,
          ...rest,
          ...(body ? { body: body() } : {}),
        });
      } catch (err) {
        const again = method === 'GET' || method === 'HEAD' || method === 'PUT';
        if (!again || attempt >= CONNECTION_ATTEMPTS || extra.signal?.aborted || !connectionLost(err)) throw err;
      }
    }
  }

  /** true for 200; false (body drained) for 404; anything else is unexpected. */
  private async found(res: RegistryResponse, what: string): Promise<boolean> {
    if (res.statusCode === 200) return true;
    await res.body.dump();
    if (res.statusCode === 404) return false;
    throw unexpected(what, res);
  }

  async ping(): Promise<void> {
    const res = await this.client.request({
      registry: this.host,
      repository: 'pullthrough',
      method: 'GET',
      path: '/v2/',
    });
    await res.body.dump();
    if (res.statusCode !== 200) throw new RegistryStoreError(`cache registry /v2/ answered ${res.statusCode}`);
  }

  async statBlob(repo: string, digest: string): Promise<{ size: number } | undefined> {
    // On object storage the HEAD is a 307 without the blob's length; the presigned HEAD it leads
    // to has it.
    const res = await this.req(repo, 'HEAD', `/v2/${repo}/blobs/${digest}`, { followRedirects: true });
    if (!(await this.found(res, 'HEAD blob'))) return undefined;
    await res.body.dump();
    return { size: Number(res.headers['content-length'] ?? 0) };
  }

  async openBlob(
    repo: string,
    digest: string,
    range?: BlobRange,
    signal?: AbortSignal,
  ): Promise<OpenedBlob | undefined> {
    const headers: Record<string, string> = range ? { range: `bytes=${range.start}-${range.end}` } : {};
    const res = await this.req(repo, 'GET', `/v2/${repo}/blobs/${digest}`, { headers, signal, followRedirects: true });
    if (res.statusCode === 404) {
      await res.body.dump();
      return undefined;
    }
    if (res.statusCode === 200 && !range) return { size: Number(res.headers['content-length'] ?? 0), stream: res.body };
    if (res.statusCode === 206 && range) {
      const total = /\/(\d+)$/.exec(res.headers['content-range'] ?? '')?.[1];
      if (total !== undefined) return { size: Number(total), stream: res.body };
    }
    await res.body.dump();
    throw unexpected('GET blob', res);
  }

  /**
   * Asks for the blob without following a redirect. A body the registry starts sending itself is
   * cut off, not read: the caller learns only that this registry does not redirect.
   */
  async blobLocation(repo: string, digest: string, signal?: AbortSignal): Promise<BlobLocation> {
    const res = await this.req(repo, 'GET', `/v2/${repo}/blobs/${digest}`, { signal });
    const location = res.headers.location;
    if ((res.statusCode === 307 || res.statusCode === 302) && typeof location === 'string' && location) {
      await res.body.dump();
      return { kind: 'redirect', url: new URL(location, res.url).toString() };
    }
    if (res.statusCode === 200) {
      // Destroying an unread body emits an abort error: expected here, not a failure.
      res.body.on('error', () => undefined);
      res.body.destroy();
      return { kind: 'served' };
    }
    await res.body.dump();
    if (res.statusCode === 404) return { kind: 'missing' };
    throw unexpected('GET blob', res);
  }

  async putBlobFile(repo: string, digest: string, size: number, file: string): Promise<void> {
    await this.upload(repo, digest, size, () =>
      Readable.from(fileChunks(file), { objectMode: true, highWaterMark: 1 }),
    );
  }

  private async upload(repo: string, digest: string, size: number, body: () => Readable | Buffer): Promise<void> {
    const start = await this.req(repo, 'POST', `/v2/${repo}/blobs/uploads/`, {
      actions: 'pull,push',
      headers: { 'content-length': '0' },
    });
    await start.body.dump();
    if (start.statusCode !== 202) throw unexpected('POST upload', start);
    const location = start.headers.location ?? '';
    if (!location) throw new RegistryStoreError('cache registry gave no upload location');
    let url = new URL(location, this.client.urlFor(this.host, '/'));
    if (this.hold) {
      const patch = await this.req(repo, 'PATCH', url.toString(), {
        actions: 'pull,push',
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
        body,
      });
      await patch.body.dump();
      if (patch.statusCode !== 202) throw unexpected('PATCH upload', patch);
      url = new URL(patch.headers.location ?? location, this.client.urlFor(this.host, '/'));
      url.searchParams.set('digest', digest);
      await this.hold.clear();
      const put = await this.req(repo, 'PUT', url.toString(), {
        actions: 'pull,push',
        headers: { 'content-length': '0' },
      });
      await put.body.dump();
      if (put.statusCode !== 201) throw unexpected('PUT upload', put);
      return;
    }
    url.searchParams.set('digest', digest);
    const put = await this.req(repo, 'PUT', url.toString(), {
      actions: 'pull,push',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
      body,
    });
    await put.body.dump();
    if (put.statusCode !== 201) throw unexpected('PUT upload', put);
  }

  async getManifest(repo: string, digest: string): Promise<StoredManifest | undefined> {
    const res = await this.req(repo, 'GET', `/v2/${repo}/manifests/${digest}`, {
      headers: { accept: MANIFEST_ACCEPT },
    });
    if (await this.found(res, 'GET manifest')) {
      return verified(await readCappedBytes(res.body, MAX_MANIFEST_BYTES), res.headers['content-type'] ?? '', digest);
    }
    // An index stored as a blob because its children were not all cached.
    const blob = await this.req(repo, 'GET', `/v2/${repo}/blobs/${digest}`, { followRedirects: true });
    if (!(await this.found(blob, 'GET manifest blob'))) return undefined;
    return verified(await readCappedBytes(blob.body, MAX_MANIFEST_BYTES), undefined, digest);
  }

  async putManifest(repo: string, manifest: StoredManifest): Promise<void> {
    await this.hold?.clear();
    const res = await this.req(repo, 'PUT', `/v2/${repo}/manifests/${manifest.digest}`, {
      actions: 'pull,push',
      headers: { 'content-type': manifest.mediaType },
      body: () => manifest.bytes,
    });
    const text = (await readCappedBytes(res.body, 1 << 16).catch(() => Buffer.alloc(0))).toString('utf8');
    if (res.statusCode === 201) return;
    if (
      res.statusCode === 400 &&
      text.includes('MANIFEST_BLOB_UNKNOWN') &&
      parseManifest(manifest.bytes, manifest.mediaType).kind === 'index'
    ) {
      await this.upload(repo, manifest.digest, manifest.bytes.byteLength, () => manifest.bytes);
      return;
    }
    throw unexpected('PUT manifest', res, text);
  }

  async getTag(repo: string, tag: string): Promise<TagRecord | undefined> {
    const pointerRepo = `${TAG_REPO_PREFIX}/${repo}`;
    const res = await this.req(pointerRepo, 'GET', `/v2/${pointerRepo}/manifests/${tag}`, {
      headers: { accept: MediaType.OciManifest },
    });
    if (!(await this.found(res, 'GET tag pointer'))) return undefined;
    const doc = JSON.parse((await readCappedBytes(res.body, 1 << 16)).toString('utf8')) as {
      annotations?: Record<string, string>;
    };
    const digest = doc.annotations?.[A_DIGEST];
    if (!digest) return undefined;
    return { digest, confirmedAt: Date.parse(doc.annotations?.[A_CONFIRMED] ?? '') || 0 };
  }

  async putTag(repo: string, tag: string, manifest: StoredManifest, confirmedAt: number): Promise<void> {
    const pointerRepo = `${TAG_REPO_PREFIX}/${repo}`;
    if (!this.emptyConfigPushed.has(pointerRepo)) {
      const have = await this.statBlob(pointerRepo, EMPTY_DIGEST);
      if (!have) await this.upload(pointerRepo, EMPTY_DIGEST, EMPTY_CONFIG.byteLength, () => EMPTY_CONFIG);
      this.emptyConfigPushed.add(pointerRepo);
    }
    const pointer = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: EMPTY_DIGEST, size: EMPTY_CONFIG.byteLength },
        layers: [],
        annotations: {
          [A_DIGEST]: manifest.digest,
          [A_MEDIATYPE]: manifest.mediaType,
          [A_CONFIRMED]: new Date(confirmedAt).toISOString(),
        },
      }),
    );
    await this.hold?.clear();
    const res = await this.req(pointerRepo, 'PUT', `/v2/${pointerRepo}/manifests/${tag}`, {
      actions: 'pull,push',
      headers: { 'content-type': MediaType.OciManifest },
      body: () => pointer,
    });
    await res.body.dump();
    if (res.statusCode !== 201) throw unexpected('PUT tag pointer', res);
  }

  /** Nothing to release: the registry client's connections belong to whoever built it. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}

function verified(bytes: Buffer, contentType: string | undefined, digest: string): StoredManifest {
  if (digestOf(bytes, digest.startsWith('sha512:') ? 'sha512' : 'sha256') !== digest) {
    throw new RegistryStoreError(`cache registry returned bytes that do not match ${digest}`);
  }
  return { bytes, digest, mediaType: parseManifest(bytes, contentType).mediaType };
}

/**
 * A 5xx is the registry (or its storage: an object store it cannot reach answers 500) not
 * serving: an UpstreamError, so the store is skipped for its cool-down as when it does not
 * answer at all. Anything else is a refusal of this one request.
 */
function unexpected(what: string, res: RegistryResponse, text?: string): RegistryStoreError | UpstreamError {
  const message = `cache registry ${what} answered ${res.statusCode}${text ? `: ${text.slice(0, 200)}` : ''}`;
  if (res.statusCode >= 500) return new UpstreamError('cache registry', message, { status: res.statusCode });
  return new RegistryStoreError(message);
}
