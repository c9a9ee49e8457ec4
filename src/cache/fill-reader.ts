/**
 * Reads a fill's spool file from its own offset (or, caught up, the fill's latest chunks in
 * memory), and waits for more as the fill grows: a slow client costs disk, not memory.
 */
import type { EventEmitter } from 'node:events';
import type { FileHandle } from 'node:fs/promises';
import { RecyclingReadable } from './recycling-readable.js';
import { SpoolError } from './spool-writer.js';

/** Per reader: bounded so that many concurrent pullers of many layers stay small in memory. */
export const READ_CHUNK = 256 * 1024;

export type FillState = 'fetching' | 'streaming' | 'verified' | 'failed';

/** What a reader follows of its fill (BlobFill); the fill emits 'change' as it grows or ends. */
export interface FollowedFill extends Pick<EventEmitter, 'once' | 'off'> {
  readonly state: FillState;
  readonly error: Error | undefined;
  readonly written: number;
  /** The spool file, while the fill holds it open. */
  readonly spool: FileHandle | undefined;
  /** Bytes a reader may take: all once verified, all but the last before. */
  readableLimit(): number;
  /** Copies what the latest spool write still holds in memory from `pos` into `target`; how many. */
  copyRecent(pos: number, limit: number, target: Buffer): number;
  /** One reader fewer; the last one may take the origin fetch with it. */
  readerGone(cancelWhenAbandoned: boolean): void;
}

export class FillReader extends RecyclingReadable {
  private readonly fill: FollowedFill;
  private readonly end: number | undefined;
  private readonly cancelWhenAbandoned: boolean;
  private pos: number;
  private reading = false;
  private waiting = false;
  private readonly onChange = () => {
    this.waiting = false;
    void this.pump();
  };

  constructor(fill: FollowedFill, start: number, end: number | undefined, cancelWhenAbandoned: boolean) {
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

  /** Destroyed, maybe while a read was in flight (a call, so that no earlier check narrows it). */
  private isGone(): boolean {
    return this.destroyed;
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
      const gone = this.isGone();
      if (gone || bytesRead === 0) {
        this.giveBack(buf);
        if (!gone) this.destroy(new SpoolError('spool file ended early', undefined));
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
