/**
 * A Readable that reads into a few reused buffers instead of a fresh one per chunk.
 *
 * Every fresh Buffer is external memory that only a garbage collection gives back, and V8 lets
 * about 32 MiB of it pile up between collections: streaming a big blob that way holds tens of MiB
 * of dead buffers at any moment. A pushed buffer may be reused only once nothing can read it any
 * more, and that is known for one consumer only: a single HTTP response (or socket) this stream
 * is piped to, as fastify pipes a reply's stream into the response. Streams are FIFO, so
 * of the bytes pushed so far, all but those still in our queue (`readableLength`) and those the
 * response has not finished writing (`writableLength`: its own queue, the socket's, and a write
 * the kernel has not completed) are done with; the buffers holding only those are reused. The
 * response's headers and framing only make that count more cautious. Consumed any other way
 * (read(), any 'data' or 'readable' listener besides the pipe's, async iteration, two pipes, a
 * Writable of our own, which may keep a chunk after its callback), it never reuses a buffer.
 */
import { OutgoingMessage } from 'node:http';
import { Socket } from 'node:net';
import { Readable, type ReadableOptions, type Writable } from 'node:stream';

const SPARE_BUFFERS = 4;
/** Buffers whose release is still unknown beyond this are left to the garbage collector. */
const MAX_LENT = 16;

export class RecyclingReadable extends Readable {
  private readonly chunkSize: number;
  private dest: Writable | OutgoingMessage | undefined;
  /** Set for good once the consumer is anything but one piped response or socket. */
  private unsafe = false;
  private readonly spare: Buffer[] = [];
  /** Pushed buffers, oldest first, with the byte count pushed up to and including each. */
  private readonly lent: { buf: Buffer; through: number }[] = [];
  private pushedBytes = 0;

  constructor(chunkSize: number, opts: ReadableOptions) {
    super(opts);
    this.chunkSize = chunkSize;
    // A listener added once piped (even a one-off peek) may hold a chunk we would overwrite.
    this.on('newListener', (event: string | symbol) => {
      if (this.dest && (event === 'data' || event === 'readable')) this.giveUp();
    });
  }

  override pipe<T extends NodeJS.WritableStream>(dest: T, opts?: { end?: boolean }): T {
    const d = dest as unknown;
    const known = d instanceof OutgoingMessage || (d instanceof Socket && !d.writableObjectMode);
    if (this.dest || this.listenerCount('data') > 0 || this.listenerCount('readable') > 0 || !known) {
      this.giveUp();
      return super.pipe(dest, opts);
    }
    // pipe() adds its own 'data' listener: only after it is in place does the guard above apply.
    const piped = super.pipe(dest, opts);
    this.dest = d;
    return piped;
  }

  /** A buffer of `chunkSize` bytes to read into, then `pushChunk` or `giveBack`. */
  protected takeBuffer(): Buffer {
    this.reclaim();
    return this.spare.pop() ?? Buffer.allocUnsafe(this.chunkSize);
  }

  /** Pushes the first `n` bytes of `buf` (from takeBuffer); push()'s answer. */
  protected pushChunk(buf: Buffer, n: number): boolean {
    this.pushedBytes += n;
    if (this.dest && !this.unsafe) {
      this.lent.push({ buf, through: this.pushedBytes });
      if (this.lent.length > MAX_LENT) this.lent.shift();
    }
    return this.push(n === buf.byteLength ? buf : buf.subarray(0, n));
  }

  /** A buffer from takeBuffer that was never pushed (an empty read, an error). */
  protected giveBack(buf: Buffer): void {
    if (this.spare.length < SPARE_BUFFERS) this.spare.push(buf);
  }

  private giveUp(): void {
    this.unsafe = true;
    this.lent.length = 0;
  }

  private reclaim(): void {
    const dest = this.dest;
    if (this.unsafe || !dest || this.lent.length === 0) return;
    // pipe() listens to 'data' once; another listener, or a read() consumer, may keep a chunk.
    if (this.listenerCount('data') !== 1 || this.listenerCount('readable') !== 0 || dest.destroyed) {
      this.giveUp();
      return;
    }
    const done = this.pushedBytes - this.readableLength - dest.writableLength;
    while (this.lent.length > 0 && (this.lent[0] as { through: number }).through <= done) {
      const { buf } = this.lent.shift() as { buf: Buffer };
      if (this.spare.length < SPARE_BUFFERS) this.spare.push(buf);
    }
  }
}
