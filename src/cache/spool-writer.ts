/**
 * Copies a stream into a file: the chunks that arrive while one write is in flight go together
 * in the next positional writev, and the stream pauses while `maxPending` bytes wait.
 *
 * Why not `pipeline(source, new Writable({ writev }))`: a Writable resumes its source only once
 * its whole buffer is written (its 'drain'), so the source stalls for a write's duration each time
 * it fills; here it resumes as the next write starts. A fill's spool is where every cold byte
 * passes.
 */
import type { FileHandle } from 'node:fs/promises';
import { finished, type Readable } from 'node:stream';

/** The local spool file could not be written (disk full, read-only, gone): not the origin's fault. */
export class SpoolError extends Error {
  constructor(message: string, cause: unknown) {
    super(message, { cause });
    this.name = 'SpoolError';
  }
}

const NO_SPACE = new Set(['ENOSPC', 'EDQUOT']);

/** A write that failed for lack of space (the error or its cause): the disk or the quota is full. */
export function isDiskFull(err: unknown): boolean {
  for (let e = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== undefined && NO_SPACE.has(code)) return true;
  }
  return false;
}

export interface SpoolWriterOptions {
  readonly signal: AbortSignal;
  /** Bytes waiting for the write in flight before the source is paused (asked at each chunk). */
  maxPending(): number;
  /** Each chunk as it arrives, before it is written (hash it here). */
  onChunk(chunk: Buffer): void;
  /** After each write: the chunks it held, and the file's length now. */
  onWritten(chunks: Buffer[], length: number): void;
  /**
   * Turns a failed write, or one that wrote nothing, into the error the caller reports: `written`
   * of the `length` bytes of that write made it to the file.
   */
  writeError(err: NodeJS.ErrnoException | undefined, written: number, length: number): Error;
  /**
   * A write failed with `err` (writeError's). `unwritten`: the chunks not in the file, in order,
   * from byte `length` of the source on; `ended`: the source has ended. Returning true hands the
   * source over instead of destroying it: paused, with none of the writer's listeners, for the
   * caller to read on without the file. The promise rejects with `err` either way.
   */
  onWriteFailed?(err: Error, unwritten: Buffer[], length: number, ended: boolean): boolean;
}

/**
 * Resolves with the number of bytes written once the source ended and every byte is in the file;
 * rejects with the source's error, a write error, or the signal's reason. The source is destroyed
 * on failure, unless onWriteFailed takes it over. A short write (the disk filling up) is followed
 * by a write of the rest, whose error says why.
 */
export function spoolStream(source: Readable, handle: FileHandle, opts: SpoolWriterOptions): Promise<number> {
  return new Promise((resolve, reject) => {
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let length = 0;
    let writing = false;
    let ended = false;
    let done = false;

    const settle = (err?: Error) => {
      if (done) return;
      done = true;
      opts.signal.removeEventListener('abort', onAbort);
      cleanup();
      if (err) {
        source.destroy();
        reject(err);
      } else {
        resolve(length);
      }
    };
    const onAbort = () => settle(opts.signal.reason instanceof Error ? opts.signal.reason : new Error('spool aborted'));
    /** A write failed: `unwritten` are its chunks (or what is left of them) not in the file. */
    const writeFailed = (err: Error, unwritten: Buffer[]) => {
      if (done) return;
      if (!opts.onWriteFailed) {
        settle(err);
        return;
      }
      done = true;
      opts.signal.removeEventListener('abort', onAbort);
      cleanup();
      // Paused before the listener goes: a flowing stream without one would drop its chunks.
      source.pause();
      source.off('data', onData);
      if (!opts.onWriteFailed(err, [...unwritten, ...pending], length, ended)) source.destroy();
      reject(err);
    };

    /**
     * Writes `chunks` (`bytes` in all) at the end of the file; after a short write, the rest.
     * `batch`: the chunks of the whole write, `alreadyWritten` of its bytes written before these.
     */
    const writeBatch = (batch: Buffer[], chunks: Buffer[], bytes: number, alreadyWritten: number) => {
      handle.writev(chunks, length).then(
        ({ bytesWritten }) => {
          if (done) return;
          if (bytesWritten !== bytes) {
            // Nothing written: a hole the digest never saw would follow.
            if (bytesWritten === 0) {
              writing = false;
              return writeFailed(opts.writeError(undefined, alreadyWritten, alreadyWritten + bytes), chunks);
            }
            length += bytesWritten;
            const rest = skip(chunks, bytesWritten);
            return writeBatch(batch, rest, bytes - bytesWritten, alreadyWritten + bytesWritten);
          }
          writing = false;
          length += bytesWritten;
          opts.onWritten(batch, length);
          write();
        },
        (err: unknown) => {
          writing = false;
          writeFailed(opts.writeError(err as NodeJS.ErrnoException, alreadyWritten, alreadyWritten + bytes), chunks);
        },
      );
    };

    const write = () => {
      if (writing || done) return;
      if (pending.length === 0) {
        if (ended) settle();
        return;
      }
      const chunks = pending;
      const bytes = pendingBytes;
      pending = [];
      pendingBytes = 0;
      writing = true;
      if (source.isPaused() && !ended) source.resume();
      writeBatch(chunks, chunks, bytes, 0);
    };

    const onData = (chunk: Buffer) => {
      if (done) return;
      opts.onChunk(chunk);
      pending.push(chunk);
      pendingBytes += chunk.byteLength;
      if (writing && pendingBytes >= opts.maxPending()) source.pause();
      write();
    };
    // `finished` also reports a source that closes without ending (a premature close).
    const cleanup = finished(source, (err) => {
      if (err) return settle(err);
      ended = true;
      write();
    });

    if (opts.signal.aborted) return onAbort();
    opts.signal.addEventListener('abort', onAbort, { once: true });
    source.on('data', onData);
  });
}

/** `chunks` without their first `n` bytes (views, not copies). */
function skip(chunks: Buffer[], n: number): Buffer[] {
  const out: Buffer[] = [];
  let left = n;
  for (const c of chunks) {
    if (left >= c.byteLength) {
      left -= c.byteLength;
      continue;
    }
    out.push(left > 0 ? c.subarray(left) : c);
    left = 0;
  }
  return out;
}
