/**
 * A stored blob file as a stream, read in 1 MiB chunks into reused buffers (see
 * RecyclingReadable). Owns the file handle: closes it when the stream ends or is destroyed.
 */
import type { FileHandle } from 'node:fs/promises';
import { RecyclingReadable } from './recycling-readable.js';

/** Large reads: fewer trips to the thread pool for a warm blob (measured: 1 MiB beats 256 KiB). */
const CHUNK = 1024 * 1024;

export class FileReadable extends RecyclingReadable {
  private readonly handle: FileHandle;
  private pos: number;
  /** One past the last byte to read. */
  private readonly stop: number;

  /** `end` is inclusive, as in a Range header. */
  constructor(handle: FileHandle, start: number, end: number) {
    super(CHUNK, { highWaterMark: CHUNK });
    this.handle = handle;
    this.pos = start;
    this.stop = end + 1;
  }

  override _read(): void {
    if (this.pos >= this.stop) {
      this.push(null);
      return;
    }
    const buf = this.takeBuffer();
    const n = Math.min(this.stop - this.pos, CHUNK);
    this.handle.read(buf, 0, n, this.pos).then(
      ({ bytesRead }) => {
        if (this.destroyed) return;
        if (bytesRead === 0) {
          this.giveBack(buf);
          this.destroy(new Error(`blob file ended at ${this.pos} of ${this.stop} bytes`));
          return;
        }
        this.pos += bytesRead;
        this.pushChunk(buf, bytesRead);
      },
      (err: unknown) => {
        this.giveBack(buf);
        this.destroy(err as Error);
      },
    );
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.handle.close().then(
      () => cb(err),
      (closeErr: unknown) => cb(err ?? (closeErr as Error)),
    );
  }
}
