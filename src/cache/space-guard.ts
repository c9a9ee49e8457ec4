/**
 * Whether a blob of a known size may be cached before its fill writes a byte: it must fit under
 * the embedded store's budget (else CacheBudgetError: too large to cache), and in the free space
 * of the spool's volume less what the fills under way still have to write and a little headroom
 * (else NoSpaceError, a disk-full spool failure that happened before, not during, the write). A
 * fill refused either way streams its blob through, verified, uncached.
 */
import { statfs } from 'node:fs/promises';
import { tooLarge, type StoreBudget } from './store-budget.js';
import { SpoolError } from './spool-writer.js';

/** The spool's volume cannot hold the blob. Its cause has the code ENOSPC: it is disk pressure. */
export class NoSpaceError extends SpoolError {
  constructor(needed: number, free: number) {
    const cause = Object.assign(new Error('not enough free space'), { code: 'ENOSPC' });
    super(`not enough free space to cache: ${needed} bytes needed, ${free} free on the spool's volume`, cause);
    this.name = 'NoSpaceError';
  }
}

export interface Volume {
  readonly size: number;
  /** Bytes this process may still write. */
  readonly free: number;
}

export interface SpaceGuardOptions {
  /** The spool directory (with the embedded store, on the same volume as the store). */
  readonly dir: string;
  /** The embedded store's budget, if any. */
  readonly budget?: StoreBudget;
  /** Reads the volume; statfs by default. */
  readonly volume?: (dir: string) => Promise<Volume>;
}

/** Free space kept back: a full volume would fail manifest and tag writes too. */
const HEADROOM_SHARE = 0.02;
const MAX_HEADROOM = 64 * 2 ** 20;

export class SpaceGuard {
  private readonly opts: SpaceGuardOptions;

  constructor(opts: SpaceGuardOptions) {
    this.opts = opts;
  }

  /**
   * Why a blob of `size` bytes cannot be cached while fills under way still have `pending` bytes
   * to write; undefined when it can (or when the volume cannot be read: the write will tell).
   */
  async refusal(size: number, pending: number): Promise<Error | undefined> {
    const refused = this.opts.budget && tooLarge(this.opts.budget, size);
    if (refused) return refused;
    let v: Volume;
    try {
      v = await (this.opts.volume ?? readVolume)(this.opts.dir);
    } catch {
      return undefined;
    }
    const headroom = Math.min(MAX_HEADROOM, Math.floor(v.size * HEADROOM_SHARE));
    const available = v.free - pending - headroom;
    return size > available ? new NoSpaceError(size, Math.max(0, available)) : undefined;
  }
}

async function readVolume(dir: string): Promise<Volume> {
  const s = await statfs(dir);
  return { size: s.blocks * s.bsize, free: s.bavail * s.bsize };
}
