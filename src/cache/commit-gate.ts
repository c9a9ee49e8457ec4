/**
 * When a verified blob may be committed to the store. For a store that commits by uploading (the
 * cache registry), uploads yield to the pulls in progress: a verified blob waits, at most
 * `commitDeferMs`, until no fill is still fetching and no client is still reading one (its own
 * included: on loopback the origin often finishes well before the client), and at most
 * `commitConcurrency` commits run at once. Meanwhile the blob is served from its spool file like
 * any fill in progress. A rename into the embedded store costs nothing: no deferral there.
 */
import type { FillActivity } from './fill-activity.js';

export interface CommitGateOptions {
  /** 0 (the default) commits at once. */
  readonly commitDeferMs?: number;
  readonly commitConcurrency?: number;
  /**
   * At most this many bytes of verified blobs wait out the deferral (the next ones commit at
   * once): each keeps its spool file, and a big image pulled faster than it uploads must not fill
   * the disk. Default 1 GiB.
   */
  readonly maxDeferredBytes?: number;
}

export class CommitGate {
  private readonly opts: CommitGateOptions;
  private readonly activity: FillActivity;
  private committing = 0;
  /** Bytes of verified blobs waiting out the deferral. */
  private deferredBytes = 0;
  /** Bytes of verified blobs not committed yet, deferred or not. */
  private uncommittedBytes = 0;
  private closing = false;
  /** Shutting down: verified blobs commit now instead of waiting out their deferral. */
  private flushing = false;

  constructor(opts: CommitGateOptions, activity: FillActivity) {
    this.opts = opts;
    this.activity = activity;
  }

  /**
   * Verified blobs not yet committed (deferred, queued for a commit slot, or being uploaded) hold
   * `maxDeferredBytes` or more of spool files: a background fetch should wait for its own to be
   * stored.
   */
  get backlogFull(): boolean {
    return this.uncommittedBytes >= this.maxDeferredBytes;
  }

  private get maxDeferredBytes(): number {
    return this.opts.maxDeferredBytes ?? 1 << 30;
  }

  /**
   * Runs `commit` for a verified blob of `bytes` once the deferral and a slot allow it; false
   * without running it once shutting down (the commit would only meet a closed store).
   */
  async commit(bytes: number, commit: () => Promise<boolean>): Promise<boolean> {
    this.uncommittedBytes += bytes;
    try {
      if (!(await this.slot(bytes))) return false;
      try {
        return await commit();
      } finally {
        this.committing--;
        this.activity.wake();
      }
    } finally {
      this.uncommittedBytes -= bytes;
    }
  }

  /**
   * Until the fills still fetching are done and their clients served (or `commitDeferMs` passed;
   * unless `maxDeferredBytes` wait already) and a commit slot is free.
   */
  private async slot(bytes: number): Promise<boolean> {
    const deferMs = this.opts.commitDeferMs ?? 0;
    const max = this.opts.commitConcurrency ?? Infinity;
    if (deferMs > 0 && this.deferredBytes + bytes <= this.maxDeferredBytes) {
      this.deferredBytes += bytes;
      try {
        const until = Date.now() + deferMs;
        while (!this.closing && !this.flushing && this.activity.busy() && Date.now() < until) {
          await this.activity.changed(until - Date.now());
        }
      } finally {
        this.deferredBytes -= bytes;
      }
    }
    while (!this.closing && this.committing >= max) await this.activity.changed();
    if (this.closing) return false;
    this.committing++;
    return true;
  }

  /** Shutdown, first step: deferred commits run now; resolves once none is left, or after `maxMs`. */
  async flush(maxMs: number): Promise<void> {
    this.flushing = true;
    this.activity.wake();
    const until = Date.now() + maxMs;
    while (this.uncommittedBytes > 0 && Date.now() < until) await this.activity.changed(until - Date.now());
  }

  /** Shutdown: commits not started are dropped. */
  close(): void {
    this.closing = true;
    this.activity.wake();
  }
}
