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

export interface SpoolWriterOptions {
  readonly signal: AbortSignal;
  /** Bytes waiting for the write in flight before the source is paused (asked at each chunk). */
  maxPending(): number;
  /** Each chunk as it arrives, before it is written (hash it here). */
  onChunk(chunk: Buffer): void;
  /** After each write: the chunks it held, and the file's length now. */
  onWritten(chunks: Buffer[], length: number): void;
  /** Turns a failed or short write into the error the caller reports. */
  writeError(err: NodeJS.ErrnoException | undefined, written: number, length: number): Error;
}

/**
 * Resolves with the number of bytes written once the source ended and every byte is in the file;
 * rejects with the source's error, a write error, or the signal's reason. The source is destroyed
 * on failure.
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
      handle.writev(chunks, length).then(
        ({ bytesWritten }) => {
          writing = false;
          if (done) return;
          // A short write (a disk filling up) would leave a hole the digest never saw.
          if (bytesWritten !== bytes) return settle(opts.writeError(undefined, bytesWritten, bytes));
          length += bytesWritten;
          opts.onWritten(chunks, length);
          write();
        },
        (err: unknown) => {
          writing = false;
          settle(opts.writeError(err as NodeJS.ErrnoException, 0, bytes));
        },
      );
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
