/**
 * One origin fetch of a cold blob, shared by every concurrent puller while it fills the cache.
 *
 * The origin's bytes go to a spool file (hashed on the way); each client reads that file from its
 * own offset (FillReader) and waits for more as it grows, so a slow client never holds memory and
 * a Range request for the tail just waits for its bytes. A client that keeps up copies the latest
 * chunks from memory instead of reading back what was just written. The last byte is released only
 * after the digest and size check out: no client ever receives a complete but unverified blob.
 *
 * When the spool cannot be written (the disk is full), a fill with clients goes on without it:
 * the rest of the origin's bytes stay in memory until every client has read them (the origin
 * paused while too many wait), still verified before the last byte, and nothing is stored.
 */
import { EventEmitter } from 'node:events';
import { open, type FileHandle } from 'node:fs/promises';
import { finished, type Readable } from 'node:stream';
import { DigestVerifier, parseDigest } from '../oci/digest.js';
import type { FillActivity } from './fill-activity.js';
import { FillReader, READ_CHUNK, type FillState, type FollowedFill } from './fill-reader.js';
import { SpoolError, spoolStream } from './spool-writer.js';

/** Spool writes while the proxy streams little else (FillActivity.streamingLittle). */
const BIG_WRITE = 1024 * 1024;

/**
 * Without a spool, the origin's bytes that the slowest client has not read yet, in memory, before
 * the origin is paused: a few writes' worth, so clients that keep up never wait on each other.
 */
const RELAY_MAX_BYTES = 4 * BIG_WRITE;

export interface OriginBlob {
  /** Content-Length as the origin announced it, if it did. */
  readonly size: number | undefined;
  readonly stream: Readable;
  /** Whoever served the bytes stores them (the cluster tier): this fill verifies and relays only. */
  readonly storedElsewhere?: boolean;
}

/** How a fill gets its bytes: the origin's answer for one blob, cancelled through `signal`. */
export interface OriginBlobRequest {
  open(signal: AbortSignal): Promise<OriginBlob>;
}

/** What bounds every fill: its size when none is known, and how long it may take. */
export interface FillBounds {
  /** Without a declared or announced size: the most bytes a fill may take. */
  readonly maxBytes: number;
  /** The deadline of a fill of known size: `baseMs` plus its size at `minBytesPerSecond`. */
  readonly baseMs: number;
  readonly minBytesPerSecond: number;
}

export interface FillEvents {
  /** The fill's outcome, for logs and metrics. */
  onVerified?(fill: BlobFill): void;
  onFailed?(fill: BlobFill, err: Error): void;
  /**
   * The spool could not be opened or written (once per fill, as it happens); the fill goes on
   * for its clients without it, or fails, and stores nothing either way.
   */
  onSpoolFailed?(fill: BlobFill, err: Error): void;
}

/** The origin's bytes past the end of a spool that could not be written, kept for the clients. */
interface Relay {
  /** Blob offset of the first byte still held. */
  start: number;
  readonly bufs: Buffer[];
  bytes: number;
  source: Readable | undefined;
}

export class BlobFill extends EventEmitter implements FollowedFill {
  readonly key: string;
  readonly repo: string;
  readonly digest: string;
  readonly file: string;
  state: FillState = 'fetching';
  size: number | undefined;
  /** Bytes clients may read so far: in the spool, and past it in memory once it failed. */
  written = 0;
  error: Error | undefined;
  /** Set once the source answered: whoever served the bytes stores them (OriginBlob.storedElsewhere). */
  storedElsewhere = false;
  /** Resolves once the origin answered with a body (or rejects with why it did not). */
  readonly started: Promise<void>;
  /** Resolves true once the blob is in the store, false when it never will be from this fill. */
  readonly committed: Promise<boolean>;
  private resolveCommitted!: (ok: boolean) => void;
  /** Resolves once the origin fetch is over: true when every byte arrived and checked out. */
  readonly fetched: Promise<boolean>;
  private resolveFetched!: (ok: boolean) => void;
  private resolveStarted!: () => void;
  private rejectStarted!: (e: Error) => void;
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
  private readonly activity: FillActivity;
  /** Bytes in the spool file: all of `written` unless the spool failed. */
  private spooled = 0;
  /** Set once the spool failed and the fill goes on without it. */
  private relay: Relay | undefined;
  /**
   * The fill went on without its spool and every byte checked out: its clients read to the end
   * (they see it verified) while the fill itself failed, so nothing is stored.
   */
  private relayed = false;
  private spoolFailureReported = false;
  /** Each reader's view of the fill, with how far it has read (while bytes are held for it). */
  private readonly views = new Set<ReaderView>();

  constructor(key: string, repo: string, digest: string, file: string, activity: FillActivity) {
    super();
    this.activity = activity;
    this.setMaxListeners(0);
    this.key = key;
    this.repo = repo;
    this.digest = digest;
    this.file = file;
    this.started = new Promise((res, rej) => {
      this.resolveStarted = res;
      this.rejectStarted = rej;
    });
    this.started.catch(() => undefined);
    this.committed = new Promise<boolean>((res) => (this.resolveCommitted = res));
    this.fetched = new Promise<boolean>((res) => (this.resolveFetched = res));
  }

  readableLimit(): number {
    return this.state === 'verified' || this.relayed ? this.written : Math.max(0, this.written - 1);
  }

  /** The state as readers see it: a fill that served its bytes without a spool ends verified. */
  get readerState(): FillState {
    return this.relayed ? 'verified' : this.state;
  }

  /**
   * Fetches the blob into the spool file and verifies it; never throws (the state says how it
   * went). `declaredSize`: what the manifest declares, when the fill is for one of its descriptors.
   */
  async run(
    request: OriginBlobRequest,
    events: FillEvents,
    bounds: FillBounds,
    declaredSize?: number,
    room?: (size: number) => Promise<Error | undefined>,
  ): Promise<void> {
    const expected = parseDigest(this.digest);
    let deadline: NodeJS.Timeout | undefined;
    try {
      let handle: FileHandle;
      try {
        handle = await open(this.file, 'w+');
        this.handle = handle;
      } catch (err) {
        const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        throw new SpoolError(`cannot open a spool file in ${this.file.replace(/\/[^/]*$/, '')}: ${why}`, err);
      }
      const origin = await request.open(this.abort.signal);
      this.storedElsewhere = origin.storedElsewhere === true;
      if (declaredSize !== undefined && origin.size !== undefined && origin.size !== declaredSize) {
        origin.stream.destroy();
        throw new Error(`origin announced ${origin.size} bytes for a blob the manifest declares as ${declaredSize}`);
      }
      this.size = origin.size ?? declaredSize;
      // An origin that sends more than the size, or trickles, must not hold the spool or a slot.
      const limit = this.size ?? bounds.maxBytes;
      if (this.size !== undefined) {
        const ms = bounds.baseMs + (this.size / bounds.minBytesPerSecond) * 1000;
        deadline = setTimeout(
          () => {
            this.abort.abort(new Error(`origin took over ${Math.round(ms / 1000)} s for ${this.size} bytes`));
          },
          Math.min(ms, 2 ** 31 - 1),
        );
      }
      // Checked before the first byte is written: a blob that cannot be cached is not spooled.
      const refused = this.size !== undefined && room ? await room(this.size) : undefined;
      if (refused && this.pinned && this.readers === 0) {
        // A background completion alone has nobody to serve without caching.
        origin.stream.destroy();
        throw refused;
      }
      this.state = 'streaming';
      this.resolveStarted();
      this.emit('change');
      const verifier = new DigestVerifier(expected);
      let handover: { unwritten: Buffer[]; length: number; ended: boolean } | undefined;
      if (refused) {
        handover = { unwritten: [], length: 0, ended: false };
        await this.relayFrom(origin.stream, handover, verifier, limit);
      } else {
        await this.spoolFrom(handle, origin.stream, verifier, limit, events, (h) => (handover = h));
      }
      const seen = verifier.finish();
      if (seen !== this.digest) throw new Error(`origin sent bytes with digest ${seen}, not ${this.digest}`);
      if (this.written !== verifier.size) {
        throw new SpoolError(`spool holds ${this.written} of ${verifier.size} bytes`, undefined);
      }
      if (this.size !== undefined && this.written !== this.size) {
        throw new Error(`origin sent ${this.written} bytes, announced ${this.size}`);
      }
      this.size = this.written;
      if (handover) {
        // The clients get their last byte; the fill fails, so that nothing is stored.
        this.relayed = true;
        this.emit('change');
        throw refused ?? new SpoolError('served without caching: the spool could not be written', undefined);
      }
      this.state = 'verified';
      this.emit('change');
      events.onVerified?.(this);
    } catch (err) {
      const reason: unknown = this.abort.signal.reason;
      const e = this.abort.signal.aborted && reason instanceof Error ? reason : (err as Error);
      if (e instanceof SpoolError) this.reportSpoolFailure(e, events);
      this.fail(e);
      events.onFailed?.(this, e);
    } finally {
      clearTimeout(deadline);
      this.resolveFetched(this.state === 'verified');
      this.release();
    }
  }

  /**
   * Copies the origin's stream into the spool file; when a write fails and readers are there, the
   * rest is handed over (`handOver`) and relayed without the file.
   */
  private async spoolFrom(
    handle: FileHandle,
    source: Readable,
    verifier: DigestVerifier,
    limit: number,
    events: FillEvents,
    handOver: (h: { unwritten: Buffer[]; length: number; ended: boolean }) => void,
  ): Promise<void> {
    let handover: { unwritten: Buffer[]; length: number; ended: boolean } | undefined;
    const spooling = spoolStream(source, handle, {
      signal: this.abort.signal,
      // Large writes are faster for a fill streamed alone, but with many clients the origin's
      // chunks held through a large write outlive the young generation and inflate the RSS.
      maxPending: () => (this.activity.streamingLittle() ? BIG_WRITE : READ_CHUNK),
      onChunk: (chunk) => {
        if (verifier.size + chunk.byteLength > limit) {
          this.abort.abort(new Error(`origin sent more than the ${limit} bytes of ${this.digest}`));
          return;
        }
        verifier.update(chunk);
      },
      onWritten: (chunks, length) => {
        if (this.state === 'streaming') this.keepRecent(chunks);
        this.written = length;
        this.spooled = length;
        this.emit('change');
      },
      writeError: (err, written, length) =>
        err
          ? new SpoolError(`spool write failed: ${err.code ?? err.message}`, err)
          : new SpoolError(`spool write stopped after ${written} of ${length} bytes`, undefined),
      onWriteFailed: (err, unwritten, length, ended) => {
        this.reportSpoolFailure(err, events);
        // A background completion alone has nobody to serve without a spool.
        if (this.pinned && this.readers === 0) return false;
        handover = { unwritten, length, ended };
        handOver(handover);
        return true;
      },
    });
    try {
      await spooling;
    } catch (err) {
      if (!handover) throw err;
      await this.relayFrom(source, handover, verifier, limit);
    }
  }

  private reportSpoolFailure(err: Error, events: FillEvents): void {
    if (this.spoolFailureReported) return;
    this.spoolFailureReported = true;
    events.onSpoolFailed?.(this, err);
  }

  /**
   * Reads the rest of the origin's answer without the spool: the chunks the spool did not take,
   * then the source, each held in memory until every reader has it. Resolves when the source
   * ended; rejects with its error or the fill's abort.
   */
  private relayFrom(
    source: Readable,
    from: { unwritten: Buffer[]; length: number; ended: boolean },
    verifier: DigestVerifier,
    limit: number,
  ): Promise<void> {
    const relay: Relay = { start: from.length, bufs: [], bytes: 0, source };
    this.relay = relay;
    this.recent = undefined;
    this.spooled = from.length;
    this.written = from.length;
    const add = (chunk: Buffer) => {
      relay.bufs.push(chunk);
      relay.bytes += chunk.byteLength;
      this.written += chunk.byteLength;
    };
    for (const c of from.unwritten) add(c);
    this.emit('change');
    if (from.ended) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const signal = this.abort.signal;
      const onAbort = () => {
        source.destroy(signal.reason instanceof Error ? signal.reason : new Error('fill cancelled'));
      };
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      source.on('data', (chunk: Buffer) => {
        if (verifier.size + chunk.byteLength > limit) {
          this.abort.abort(new Error(`origin sent more than the ${limit} bytes of ${this.digest}`));
          return;
        }
        verifier.update(chunk);
        add(chunk);
        if (relay.bytes >= RELAY_MAX_BYTES) source.pause();
        this.emit('change');
      });
      finished(source, (err) => {
        signal.removeEventListener('abort', onAbort);
        relay.source = undefined;
        if (err) reject(err);
        else resolve();
      });
      source.resume();
    });
  }

  /**
   * Drops the held bytes every reader has read, and lets the origin go on once few enough wait.
   * Held bytes are kept while no reader is there yet: the client that started the fill joins
   * just after it starts.
   */
  private trimRelay(): void {
    const relay = this.relay;
    if (!relay || this.views.size === 0) return;
    let min = Infinity;
    for (const v of this.views) min = Math.min(min, v.pos);
    for (let first = relay.bufs[0]; first && relay.start + first.byteLength <= min; first = relay.bufs[0]) {
      relay.bufs.shift();
      relay.start += first.byteLength;
      relay.bytes -= first.byteLength;
    }
    if (relay.source?.isPaused() && relay.bytes < RELAY_MAX_BYTES) relay.source.resume();
  }

  /** A reader reached `pos` (ReaderView). */
  advanced(): void {
    if (this.relay) this.trimRelay();
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
    this.recent = prev
      ? { start: this.written - prev.byteLength, bufs: [prev, ...bufs] }
      : { start: this.written, bufs };
  }

  private fail(err: Error): void {
    if (this.state === 'failed' || this.state === 'verified') return;
    this.state = 'failed';
    this.recent = undefined;
    // Readers of a relayed fill still need the held bytes; the others never will.
    if (!this.relayed) this.relay = undefined;
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
    const view = new ReaderView(this, start);
    this.views.add(view);
    const reader = new FillReader(view, start, end, opts.cancelWhenAbandoned);
    // Without a spool, bytes every earlier reader had are gone: a reader from before them cannot be served.
    const relay = this.relay;
    if (relay && start < relay.start && relay.start > this.spooled) {
      reader.destroy(new SpoolError('the spool failed and the bytes from this offset are gone', undefined));
    }
    return reader;
  }

  /**
   * Copies the bytes from `pos` on, below `limit`, that the latest spool write still holds in
   * memory into `target`; how many (0 when `pos` is not among them). A copy, not the chunks
   * themselves: a chunk queued for twenty clients would outlive the young generation, and its
   * memory would wait for a full collection.
   */
  copyRecent(pos: number, limit: number, target: Buffer): number {
    const r = this.relay ?? this.recent;
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

  get spool(): FileHandle | undefined {
    return this.handle;
  }

  /** Clients streaming this blob now. */
  get readerCount(): number {
    return this.readers;
  }

  readerGone(cancelWhenAbandoned: boolean, view?: ReaderView): void {
    this.readers--;
    if (view) this.views.delete(view);
    const abandoned = cancelWhenAbandoned && !this.pinned;
    // Without a spool, a fill nobody reads stores nothing: a background completion stops too.
    if (this.readers === 0 && (abandoned || this.relay) && this.state !== 'verified') {
      this.cancel(new Error('every client of this blob went away'));
    }
    if (this.readers === 0) {
      // Kept only for clients (a verified fill may wait a while for its commit).
      this.recent = undefined;
      this.relay = undefined;
      this.activity.wake();
    } else {
      this.advanced();
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
 * A reader's window on its fill: what FillReader follows, and where the reader has got to (the
 * position it copies from), so that a fill without a spool knows which held bytes are read.
 */
class ReaderView implements FollowedFill {
  pos: number;
  private readonly fill: BlobFill;

  constructor(fill: BlobFill, start: number) {
    this.fill = fill;
    this.pos = start;
  }

  get state(): FillState {
    return this.fill.readerState;
  }

  get error(): Error | undefined {
    return this.fill.error;
  }

  get written(): number {
    return this.fill.written;
  }

  get spool(): FileHandle | undefined {
    return this.fill.spool;
  }

  readableLimit(): number {
    return this.fill.readableLimit();
  }

  copyRecent(pos: number, limit: number, target: Buffer): number {
    const n = this.fill.copyRecent(pos, limit, target);
    this.pos = pos + n;
    this.fill.advanced();
    return n;
  }

  readerGone(cancelWhenAbandoned: boolean): void {
    this.fill.readerGone(cancelWhenAbandoned, this);
  }

  // The fill's own events: FillReader only listens for 'change', once at a time.
  once(event: string | symbol, listener: (...args: unknown[]) => void): EventEmitter {
    return this.fill.once(event, listener);
  }

  off(event: string | symbol, listener: (...args: unknown[]) => void): EventEmitter {
    return this.fill.off(event, listener);
  }
}
