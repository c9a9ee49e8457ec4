/**
 * One origin fetch per cold blob, shared by every concurrent puller while it fills the cache.
 *
 * The origin's bytes go to a spool file (hashed on the way); each client reads that file from its
 * own offset and waits for more as it grows, so a slow client never holds memory and a Range
 * request for the tail just waits for its bytes. A client that keeps up copies the latest chunks
 * from memory instead of reading back what was just written. The last byte is released only
 * after the digest and size check out: no client ever receives a complete but unverified blob.
 * Only then is the file committed to the store.
 */
import { EventEmitter } from 'node:events';
import { mkdir, open, readdir, unlink, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { DigestVerifier, parseDigest } from '../oci/digest.js';
import { RecyclingReadable } from './recycling-readable.js';
import { spoolStream } from './spool-writer.js';

/** The local spool file could not be written (disk full, read-only, gone): not the origin's fault. */
export class SpoolError extends Error {
  constructor(message: string, cause: unknown) {
    super(message, { cause });
    this.name = 'SpoolError';
  }
}

/** Per reader: bounded so that many concurrent pullers of many layers stay small in memory. */
const READ_CHUNK = 256 * 1024;
/** Spool writes while the proxy streams little else: one fill, at most FEW_READERS clients (see `run`). */
const BIG_WRITE = 1024 * 1024;
const FEW_READERS = 2;

export interface OriginBlob {
  /** Content-Length as the origin announced it, if it did. */
  readonly size: number | undefined;
  readonly stream: Readable;
}

export type FillState = 'fetching' | 'streaming' | 'verified' | 'failed';

export interface FillEvents {
  /** The fill's outcome, for logs and metrics. */
  onVerified?(fill: BlobFill): void;
  onFailed?(fill: BlobFill, err: Error): void;
}

export class BlobFill extends EventEmitter {
  readonly key: string;
  readonly repo: string;
  readonly digest: string;
  readonly file: string;
  state: FillState = 'fetching';
  size: number | undefined;
  written = 0;
  error: Error | undefined;
  /** Resolves once the origin answered with a body (or rejects with why it did not). */
  readonly started: Promise<void>;
  /** Resolves true once the blob is in the store, false when it never will be from this fill. */
  readonly committed: Promise<boolean>;
  private resolveCommitted!: (ok: boolean) => void;
  /** Resolves once the origin fetch is over: true when every byte arrived and checked out. */
  readonly fetched: Promise<boolean>;
  private resolveFetched!: (ok: boolean) => void;
  private readonly abort = new AbortController();
  private handle: FileHandle | undefined;
  /**
   * The origin's chunks of the latest spool write, kept until the next while a client reads the
   * fill: one that keeps up copies them from here instead of reading back what was just written
   * (two thread-pool round trips per read). Nothing else holds or reuses these buffers.
   */
  private recent: { start: number; bufs: Buffer[] } | undefined;
  private refs = 1;
  private readers = 0;
  /** A background completion owns this fill: it runs on even when no client reads it. */
  private pinned = false;

  /** Whether this fill may write its spool in large batches now (see `run`). */
  private readonly bigWrites: () => boolean;

  constructor(key: string, repo: string, digest: string, file: string, bigWrites: () => boolean) {
    super();
    this.bigWrites = bigWrites;
    this.setMaxListeners(0);
    this.key = key;
    this.repo = repo;
    this.digest = digest;
    this.file = file;
    let resolveStarted!: () => void;
    let rejectStarted!: (e: Error) => void;
    this.started = new Promise((res, rej) => {
      resolveStarted = res;
      rejectStarted = rej;
    });
    this.started.catch(() => undefined);
    this.committed = new Promise<boolean>((res) => (this.resolveCommitted = res));
    this.fetched = new Promise<boolean>((res) => (this.resolveFetched = res));
    this.resolveStarted = resolveStarted;
    this.rejectStarted = rejectStarted;
  }

  private resolveStarted: () => void;
  private rejectStarted: (e: Error) => void;

  /** Bytes a reader may take: all once verified, all but the last before. */
  readableLimit(): number {
    return this.state === 'verified' ? this.written : Math.max(0, this.written - 1);
  }

  async run(fetchOrigin: (signal: AbortSignal) => Promise<OriginBlob>, events: FillEvents): Promise<void> {
    const expected = parseDigest(this.digest);
    try {
      try {
        this.handle = await open(this.file, 'w+');
      } catch (err) {
        throw new SpoolError(`cannot open a spool file in ${this.file.replace(/\/[^/]*$/, '')}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, err);
      }
      const origin = await fetchOrigin(this.abort.signal);
      this.size = origin.size;
      this.state = 'streaming';
      this.resolveStarted();
      this.emit('change');
      const verifier = new DigestVerifier(expected);
      await spoolStream(origin.stream, this.handle, {
        signal: this.abort.signal,
        // Writes of up to 1 MiB carry a cold fill on loopback 12-18 % faster than writes of a
        // reader's chunk. But with many clients, an event-loop turn is long, and the origin's
        // chunks held through a write of 1 MiB outlived the young generation: 20 clients on one
        // fill kept 20 MiB more RSS until a full collection. So large writes only while the proxy
        // streams little else.
        maxPending: () => (this.bigWrites() ? BIG_WRITE : READ_CHUNK),
        onChunk: (chunk) => verifier.update(chunk),
        onWritten: (chunks, length) => {
          if (this.state === 'streaming') this.keepRecent(chunks);
          this.written = length;
          this.emit('change');
        },
        writeError: (err, written, length) =>
          err ? new SpoolError(`spool write failed: ${err.code ?? err.message}`, err) : new SpoolError(`spool write stopped after ${written} of ${length} bytes`, undefined),
      });
      const seen = verifier.finish();
      if (seen !== this.digest) throw new Error(`origin sent bytes with digest ${seen}, not ${this.digest}`);
      if (this.written !== verifier.size) throw new SpoolError(`spool holds ${this.written} of ${verifier.size} bytes`, undefined);
      if (this.size !== undefined && this.written !== this.size) throw new Error(`origin sent ${this.written} bytes, announced ${this.size}`);
      this.size = this.written;
      this.state = 'verified';
      this.emit('change');
      events.onVerified?.(this);
    } catch (err) {
      const e = this.abort.signal.aborted && this.abort.signal.reason instanceof Error ? this.abort.signal.reason : (err as Error);
      this.fail(e);
      events.onFailed?.(this, e);
    } finally {
      this.resolveFetched(this.state === 'verified');
      this.release();
    }
  }

  private keepRecent(bufs: Buffer[]): void {
    // Nobody to copy them for (a background fill, or every client gone): a client joining later
    // reads the file.
    if (this.readers === 0) {
      this.recent = undefined;
      return;
    }
    // The previous write's last chunk stays too: its last byte was withheld until now.
    const prev = this.recent?.bufs.at(-1);
    this.recent = prev ? { start: this.written - prev.byteLength, bufs: [prev, ...bufs] } : { start: this.written, bufs };
  }

  private fail(err: Error): void {
    if (this.state === 'failed' || this.state === 'verified') return;
    this.state = 'failed';
    this.recent = undefined;
    this.error = err;
    this.rejectStarted(err);
    this.emit('change');
  }

  /** Stops the origin fetch: nothing of it will be committed. */
  cancel(reason: Error): void {
    if (this.state === 'verified' || this.state === 'failed') return;
    this.abort.abort(reason);
  }

  /** A stream of the blob from `start` to `end` (inclusive), growing with the fill. */
  reader(start: number, end: number | undefined, opts: { cancelWhenAbandoned: boolean }): Readable {
    this.refs++;
    this.readers++;
    return new FillReader(this, start, end, opts.cancelWhenAbandoned);
  }

  /**
   * For FillReader: copies the bytes from `pos` on, below `limit`, that the latest spool write
   * still holds in memory into `target`; how many (0 when `pos` is not among them). A copy, not
   * the chunks themselves: a chunk queued for twenty clients would outlive the young generation,
   * and its memory would wait for a full collection.
   */
  copyRecent(pos: number, limit: number, target: Buffer): number {
    const r = this.recent;
    if (!r || pos < r.start) return 0;
    const end = Math.min(limit, pos + target.byteLength);
    let at = r.start;
    let n = 0;
    for (const b of r.bufs) {
      const next = at + b.byteLength;
      if (pos + n < next && pos + n < end) n += b.copy(target, n, pos + n - at, Math.min(next, end) - at);
      at = next;
    }
    return n;
  }

  /** For FillReader: the spool file, while the fill holds it open. */
  get spool(): FileHandle | undefined {
    return this.handle;
  }

  /** Clients streaming this blob now. */
  get readerCount(): number {
    return this.readers;
  }

  /** For FillReader: one reader fewer; the last one may take the origin fetch with it. */
  readerGone(cancelWhenAbandoned: boolean): void {
    this.readers--;
    if (cancelWhenAbandoned && this.readers === 0 && !this.pinned && this.state !== 'verified') {
      this.cancel(new Error('every client of this blob went away'));
    }
    if (this.readers === 0) {
      // Kept only for clients (a verified fill may wait a while for its commit).
      this.recent = undefined;
      this.emit('unread');
    }
    this.release();
  }

  private release(): void {
    this.refs--;
    if (this.refs === 0 && this.handle) {
      const h = this.handle;
      this.handle = undefined;
      void h.close().catch(() => undefined);
    }
  }

  settleCommit(ok: boolean): void {
    this.resolveCommitted(ok);
  }

  pin(): void {
    this.pinned = true;
  }

  /** Keeps the spool file open for a commit that reads it after the fill finished. */
  retain(): () => void {
    this.refs++;
    return () => this.release();
  }
}

/**
 * Reads a fill's spool file from its own offset (or, caught up, the fill's latest chunks in
 * memory), and waits for more as the fill grows: a slow client costs disk, not memory.
 */
class FillReader extends RecyclingReadable {
  private readonly fill: BlobFill;
  private readonly end: number | undefined;
  private readonly cancelWhenAbandoned: boolean;
  private pos: number;
  private reading = false;
  private waiting = false;
  private readonly onChange = () => {
    this.waiting = false;
    void this.pump();
  };

  constructor(fill: BlobFill, start: number, end: number | undefined, cancelWhenAbandoned: boolean) {
    super(READ_CHUNK, { highWaterMark: READ_CHUNK });
    this.fill = fill;
    this.pos = start;
    this.end = end;
    this.cancelWhenAbandoned = cancelWhenAbandoned;
  }

  override _read(): void {
    void this.pump();
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.fill.off('change', this.onChange);
    this.fill.readerGone(this.cancelWhenAbandoned);
    cb(err);
  }

  private async pump(): Promise<void> {
    const fill = this.fill;
    if (this.reading || this.waiting || this.destroyed) return;
    if (fill.state === 'failed') {
      this.destroy(fill.error ?? new Error('blob fetch failed'));
      return;
    }
    const last = this.end !== undefined ? this.end + 1 : fill.state === 'verified' ? fill.written : Infinity;
    if (this.pos >= last) {
      this.push(null);
      return;
    }
    const limit = Math.min(fill.readableLimit(), last);
    const handle = fill.spool;
    if (this.pos >= limit || !handle) {
      this.waiting = true;
      fill.once('change', this.onChange);
      return;
    }
    const buf = this.takeBuffer();
    // Caught up with the fill: its latest chunks are still in memory.
    const copied = fill.copyRecent(this.pos, limit, buf);
    if (copied > 0) {
      this.pos += copied;
      if (this.pushChunk(buf, copied)) void this.pump();
      return;
    }
    this.reading = true;
    try {
      const n = Math.min(limit - this.pos, READ_CHUNK);
      const { bytesRead } = await handle.read(buf, 0, n, this.pos);
      this.reading = false;
      if (this.destroyed || bytesRead === 0) {
        this.giveBack(buf);
        if (bytesRead === 0 && !this.destroyed) this.destroy(new SpoolError('spool file ended early', undefined));
        return;
      }
      this.pos += bytesRead;
      if (this.pushChunk(buf, bytesRead)) void this.pump();
    } catch (err) {
      this.reading = false;
      this.giveBack(buf);
      this.destroy(err as Error);
    }
  }
}

export interface BlobFillsOptions {
  readonly tmpDir: string;
  readonly events?: FillEvents;
  /** After a spool failure, how long new fills are not attempted (callers stream straight through). */
  readonly spoolCooldownMs?: number;
  /**
   * For a store that commits by uploading (the cache registry): a verified blob waits, at most
   * this long, until no fill is still fetching and no client is still reading one (its own
   * included: on loopback the origin often finishes well before the client), so the upload does
   * not slow the pulls in progress; and at most `commitConcurrency` commits run at once. 0 (the
   * default) commits at once.
   */
  readonly commitDeferMs?: number;
  readonly commitConcurrency?: number;
  /**
   * At most this many bytes of verified blobs wait out the deferral (the next ones commit at
   * once): each keeps its spool file, and a big image pulled faster than it uploads must not fill
   * the disk. Default 1 GiB.
   */
  readonly maxDeferredBytes?: number;
}

/** The registry of fills in progress, by cache repository and digest. */
export class BlobFills {
  private readonly opts: BlobFillsOptions;
  private readonly active = new Map<string, BlobFill>();
  private spoolFailedUntil = 0;
  /** Fills still talking to the origin. */
  private fetching = 0;
  private committing = 0;
  /** Bytes of verified blobs waiting out the deferral. */
  private deferredBytes = 0;
  /** Bytes of verified blobs not committed yet, deferred or not. */
  private uncommittedBytes = 0;
  private closing = false;
  /** Shutting down: verified blobs commit now instead of waiting out their deferral. */
  private flushing = false;
  private readonly waiters: (() => void)[] = [];

  constructor(opts: BlobFillsOptions) {
    this.opts = opts;
  }

  /** True while the spool directory is failing: serve blobs straight from the origin, uncached. */
  get spoolUnavailable(): boolean {
    return Date.now() < this.spoolFailedUntil;
  }

  get size(): number {
    return this.active.size;
  }

  get(repo: string, digest: string): BlobFill | undefined {
    return this.active.get(`${repo}@${digest}`);
  }

  /**
   * Joins the fill in progress or starts one. `commit` runs after verification with the spool
   * file; the fill leaves the registry once committed (or failed), and the file is removed.
   */
  getOrStart(
    repo: string,
    digest: string,
    fetchOrigin: (signal: AbortSignal) => Promise<OriginBlob>,
    commit: (fill: BlobFill) => Promise<boolean>,
  ): { fill: BlobFill; joined: boolean } {
    const key = `${repo}@${digest}`;
    const existing = this.active.get(key);
    if (existing) return { fill: existing, joined: true };
    const fill = new BlobFill(key, repo, digest, join(this.opts.tmpDir, `fill-${randomBytes(8).toString('hex')}`), () => this.streamingLittle());
    this.active.set(key, fill);
    const hold = fill.retain();
    fill.on('unread', () => this.wake());
    this.fetching++;
    void (async () => {
      let ok = false;
      try {
        try {
          await fill.run(fetchOrigin, this.opts.events ?? {});
        } finally {
          this.fetching--;
          this.wake();
        }
        if (fill.error instanceof SpoolError) this.spoolFailedUntil = Date.now() + (this.opts.spoolCooldownMs ?? 10_000);
        if (fill.state === 'verified') {
          this.uncommittedBytes += fill.written;
          try {
            if (await this.commitSlot(fill.written)) {
              try {
                ok = await commit(fill);
              } finally {
                this.committing--;
                this.wake();
              }
            }
          } finally {
            this.uncommittedBytes -= fill.written;
          }
        }
      } finally {
        this.active.delete(key);
        hold();
        await unlink(fill.file).catch(() => undefined);
        fill.settleCommit(ok);
      }
    })().catch(() => undefined);
    return { fill, joined: false };
  }

  /**
   * Verified blobs not yet committed (deferred, queued for a commit slot, or being uploaded) hold
   * `maxDeferredBytes` or more of spool files: the persister should wait for its own to be stored.
   */
  get commitBacklogFull(): boolean {
    return this.uncommittedBytes >= this.maxDeferredBytes;
  }

  private get maxDeferredBytes(): number {
    return this.opts.maxDeferredBytes ?? 1 << 30;
  }

  /**
   * Until the fills still fetching are done and their clients served (or `commitDeferMs` passed;
   * unless `maxDeferredBytes` wait already) and a commit slot is free. Meanwhile the verified blob
   * is served from its spool file like any fill in progress. False once shutting down: the commit
   * would only meet a closed store.
   */
  private async commitSlot(bytes: number): Promise<boolean> {
    const deferMs = this.opts.commitDeferMs ?? 0;
    const max = this.opts.commitConcurrency ?? Infinity;
    if (deferMs > 0 && this.deferredBytes + bytes <= this.maxDeferredBytes) {
      this.deferredBytes += bytes;
      try {
        const until = Date.now() + deferMs;
        while (!this.closing && !this.flushing && this.busy() && Date.now() < until) await this.changed(until - Date.now());
      } finally {
        this.deferredBytes -= bytes;
      }
    }
    while (!this.closing && this.committing >= max) await this.changed();
    if (this.closing) return false;
    this.committing++;
    return true;
  }

  /** One fill fetching, read by at most a few clients: its spool may be written in large batches. */
  private streamingLittle(): boolean {
    if (this.fetching > 1) return false;
    let readers = 0;
    for (const f of this.active.values()) readers += f.readerCount;
    return readers <= FEW_READERS;
  }

  /** A fill still fetching, or a client still reading one. */
  private busy(): boolean {
    if (this.fetching > 0) return true;
    for (const f of this.active.values()) if (f.readerCount > 0) return true;
    return false;
  }

  private changed(timeoutMs?: number): Promise<void> {
    return new Promise((resolve) => {
      const waiter = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              const i = this.waiters.indexOf(waiter);
              if (i >= 0) this.waiters.splice(i, 1);
              resolve();
            }, Math.min(timeoutMs, 2 ** 31 - 1)); // longer would fire at once
      this.waiters.push(waiter);
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /**
   * Shutdown, first step: fills still fetching stop (their clients resume elsewhere with Range);
   * verified blobs waiting out their deferral commit now, and this resolves once none is left
   * uncommitted or after `maxMs`. A rolling update of the node proxies then loses no upload.
   */
  async flush(reason: Error, maxMs: number): Promise<void> {
    this.flushing = true;
    for (const f of this.active.values()) f.cancel(reason);
    this.wake();
    const until = Date.now() + maxMs;
    while (this.uncommittedBytes > 0 && Date.now() < until) await this.changed(until - Date.now());
  }

  /** Shutdown: cancels every fill; verified blobs still waiting for their commit are dropped. */
  cancelAll(reason: Error): void {
    this.closing = true;
    for (const f of this.active.values()) f.cancel(reason);
    this.wake();
  }
}

/**
 * Creates the spool directory, and empties it of what a killed process left: a fill in progress
 * when the proxy died can never be completed, and would only fill the disk.
 */
export async function prepareSpoolDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const name of await readdir(dir)) {
    if (name.startsWith('fill-') || name.startsWith('w-')) await unlink(join(dir, name)).catch(() => undefined);
  }
}
