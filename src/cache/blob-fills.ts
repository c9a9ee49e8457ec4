/**
 * The registry of fills in progress, by cache repository and digest: a request for a cold blob
 * joins the fill under way or starts one, and each fill runs from the origin through
 * verification to its commit in the store (through the commit gate), then leaves the registry
 * and its spool file is removed. A fill whose bytes came from where they are stored anyway (the
 * cluster tier) is verified and relayed, not committed a second time.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { BlobFill, type FillBounds, type FillEvents, type OriginBlobRequest } from './blob-fill.js';
import { CommitGate, type CommitGateOptions } from './commit-gate.js';
import { FillActivity } from './fill-activity.js';
import type { SpaceGuard } from './space-guard.js';
import { SpoolError } from './spool-writer.js';

/** Where verified blobs go: the store (ResilientStore in the proxy). False: not stored. */
export interface BlobSink {
  putBlobFile(repo: string, digest: string, size: number, file: string): Promise<boolean>;
}

export interface BlobFillsOptions extends CommitGateOptions {
  readonly tmpDir: string;
  readonly store: BlobSink;
  readonly events?: FillEvents;
  /** After a spool failure, how long new fills are not attempted (callers stream straight through). */
  readonly spoolCooldownMs?: number;
  /**
   * Checks, before a fill of known size writes its first byte, that it can be cached (budget and
   * free space); a fill refused streams its blob through, verified, uncached. None: no check.
   */
  readonly space?: SpaceGuard;
  /** Bounds of every fill; defaults below. */
  readonly bounds?: Partial<FillBounds>;
}

/**
 * A blob of unknown size may take 64 GiB; one of known size its size at 256 KiB/s after a minute:
 * a 1 GiB layer gets 69 minutes, a config blob about one (the origin's idle timeout cuts silence
 * sooner).
 */
const DEFAULT_BOUNDS: FillBounds = {
  maxBytes: 64 * 2 ** 30,
  baseMs: 60_000,
  minBytesPerSecond: 256 * 1024,
};

export class BlobFills {
  private readonly opts: BlobFillsOptions;
  private readonly activity = new FillActivity<BlobFill>();
  private readonly gate: CommitGate;
  private readonly bounds: FillBounds;
  private spoolFailedUntil = 0;

  constructor(opts: BlobFillsOptions) {
    this.opts = opts;
    this.gate = new CommitGate(opts, this.activity);
    this.bounds = { ...DEFAULT_BOUNDS, ...opts.bounds };
  }

  /** True while the spool directory is failing: serve blobs straight from the origin, uncached. */
  get spoolUnavailable(): boolean {
    return Date.now() < this.spoolFailedUntil;
  }

  get size(): number {
    return this.activity.active.size;
  }

  /** Verified blobs waiting for their commit hold too much spool: background fetches should wait. */
  get commitBacklogFull(): boolean {
    return this.gate.backlogFull;
  }

  get(repo: string, digest: string): BlobFill | undefined {
    return this.activity.active.get(`${repo}@${digest}`);
  }

  /**
   * Joins the fill in progress or starts one that fetches through `request`; `declaredSize`, when
   * a manifest declares it, bounds the fill even where the origin announces no size.
   */
  getOrStart(
    repo: string,
    digest: string,
    request: OriginBlobRequest,
    declaredSize?: number,
  ): { fill: BlobFill; joined: boolean } {
    const key = `${repo}@${digest}`;
    const existing = this.activity.active.get(key);
    if (existing) return { fill: existing, joined: true };
    const file = join(this.opts.tmpDir, `fill-${randomBytes(8).toString('hex')}`);
    const fill = new BlobFill(key, repo, digest, file, this.activity);
    this.activity.active.set(key, fill);
    void this.complete(fill, request, declaredSize);
    return { fill, joined: false };
  }

  /** Runs the fill, commits it once verified, and removes it and its spool file. Never throws. */
  private async complete(fill: BlobFill, request: OriginBlobRequest, declaredSize?: number): Promise<void> {
    const hold = fill.retain();
    this.activity.fetching++;
    let ok = false;
    try {
      try {
        const space = this.opts.space;
        const room = space && ((size: number) => space.refusal(size, this.unwrittenBytes(fill)));
        await fill.run(request, this.opts.events ?? {}, this.bounds, declaredSize, room);
      } finally {
        this.activity.fetching--;
        this.activity.wake();
      }
      if (fill.error instanceof SpoolError) this.spoolFailedUntil = Date.now() + (this.opts.spoolCooldownMs ?? 10_000);
      if (fill.state === 'verified' && fill.storedElsewhere) {
        ok = true;
      } else if (fill.state === 'verified') {
        ok = await this.gate.commit(fill.written, () =>
          this.opts.store.putBlobFile(fill.repo, fill.digest, fill.written, fill.file),
        );
      }
    } catch {
      ok = false;
    } finally {
      this.activity.active.delete(fill.key);
      hold();
      await unlink(fill.file).catch(() => undefined);
      fill.settleCommit(ok);
    }
  }

  /** Bytes the other fills under way have announced and not yet written. */
  private unwrittenBytes(except: BlobFill): number {
    let sum = 0;
    for (const f of this.activity.active.values()) {
      if (f !== except && f.size !== undefined) sum += Math.max(0, f.size - f.written);
    }
    return sum;
  }

  /**
   * Shutdown, first step: fills still fetching stop (their clients resume elsewhere with Range);
   * verified blobs waiting out their deferral commit now, and this resolves once none is left
   * uncommitted or after `maxMs`. A rolling update of the node proxies then loses no upload.
   */
  async flush(reason: Error, maxMs: number): Promise<void> {
    for (const f of this.activity.active.values()) f.cancel(reason);
    await this.gate.flush(maxMs);
  }

  /** Shutdown: cancels every fill; verified blobs still waiting for their commit are dropped. */
  cancelAll(reason: Error): void {
    this.gate.close();
    for (const f of this.activity.active.values()) f.cancel(reason);
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
