/**
 * The embedded store's account of what it holds: each content file's size and last access, in
 * least-recently-used order, and the bytes they add up to. In memory only; the store rebuilds it
 * from the files (their modification times) at start.
 */

interface Entry {
  readonly size: number;
  /** When the file's modification time was last moved to an access (ms since epoch). */
  persistedAt: number;
}

export class LruIndex {
  /** Insertion order is access order: the first entry is the least recently used. */
  private readonly entries = new Map<string, Entry>();
  private total = 0;

  get usedBytes(): number {
    return this.total;
  }

  get count(): number {
    return this.entries.size;
  }

  has(digest: string): boolean {
    return this.entries.has(digest);
  }

  sizeOf(digest: string): number | undefined {
    return this.entries.get(digest)?.size;
  }

  /** Adds a file as the most recently used; `at` is when it was last accessed as far as known. */
  add(digest: string, size: number, at: number): void {
    this.remove(digest);
    this.entries.set(digest, { size, persistedAt: at });
    this.total += size;
  }

  /**
   * Moves a file to the most recently used end. True when its modification time is older than
   * `persistEveryMs` and should be moved forward (the caller does, then the order survives a
   * restart to that precision).
   */
  touch(digest: string, now: number, persistEveryMs: number): boolean {
    const e = this.entries.get(digest);
    if (!e) return false;
    this.entries.delete(digest);
    this.entries.set(digest, e);
    if (now - e.persistedAt < persistEveryMs) return false;
    e.persistedAt = now;
    return true;
  }

  remove(digest: string): number {
    const e = this.entries.get(digest);
    if (!e) return 0;
    this.entries.delete(digest);
    this.total -= e.size;
    return e.size;
  }

  /** The least recently used files whose sizes add up to at least `bytes` (all of them if fewer). */
  oldest(bytes: number): { digest: string; size: number }[] {
    const out: { digest: string; size: number }[] = [];
    let sum = 0;
    for (const [digest, e] of this.entries) {
      if (sum >= bytes) break;
      out.push({ digest, size: e.size });
      sum += e.size;
    }
    return out;
  }
}
