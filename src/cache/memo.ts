/**
 * A small in-process LRU, bounded by entry count and by a weight (bytes). Manifests are immutable
 * by digest, so once verified they can be answered from memory; this is what keeps warm manifest
 * and tag lookups off the disk and off the cache registry.
 */
export class Memo<V> {
  private readonly map = new Map<string, { value: V; weight: number; expiresAt: number }>();
  private total = 0;
  private readonly maxEntries: number;
  private readonly maxWeight: number;

  constructor(opts: { maxEntries: number; maxWeight?: number }) {
    this.maxEntries = opts.maxEntries;
    this.maxWeight = opts.maxWeight ?? Infinity;
  }

  get(key: string, now = Date.now()): V | undefined {
    const e = this.map.get(key);
    if (!e) return undefined;
    if (e.expiresAt <= now) {
      this.delete(key);
      return undefined;
    }
    this.map.delete(key);
    this.map.set(key, e);
    return e.value;
  }

  set(key: string, value: V, opts: { weight?: number; ttlMs?: number } = {}): void {
    this.delete(key);
    const weight = opts.weight ?? 0;
    if (weight > this.maxWeight) return;
    this.map.set(key, { value, weight, expiresAt: opts.ttlMs === undefined ? Infinity : Date.now() + opts.ttlMs });
    this.total += weight;
    while (this.map.size > this.maxEntries || this.total > this.maxWeight) {
      const oldest = this.map.keys().next().value as string;
      this.delete(oldest);
    }
  }

  delete(key: string): void {
    const e = this.map.get(key);
    if (!e) return;
    this.total -= e.weight;
    this.map.delete(key);
  }
}
