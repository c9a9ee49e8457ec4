/**
 * How much the persister may fetch in the background at once, node-wide: at most `maxFetches`
 * blobs and `maxBytes` of declared size (one larger blob still runs, alone). Pulls in progress
 * are never held back by it: only the blobs no client asked for wait their turn, first come first
 * served.
 */
export interface BackgroundBudgetOptions {
  readonly maxFetches: number;
  readonly maxBytes: number;
}

export class BackgroundBudget {
  private readonly o: BackgroundBudgetOptions;
  private fetches = 0;
  private bytes = 0;
  private readonly queue: { size: number; go: () => void }[] = [];

  constructor(opts: BackgroundBudgetOptions) {
    this.o = opts;
  }

  /** Blobs fetching in the background now. */
  get inFlight(): number {
    return this.fetches;
  }

  /** Resolves with a release once a blob of `size` bytes fits the budget. */
  async acquire(size: number): Promise<() => void> {
    if (this.queue.length > 0 || !this.fits(size)) {
      await new Promise<void>((go) => this.queue.push({ size, go }));
    } else {
      this.take(size);
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.fetches--;
      this.bytes -= size;
      this.next();
    };
  }

  private fits(size: number): boolean {
    if (this.fetches >= this.o.maxFetches) return false;
    return this.fetches === 0 || this.bytes + size <= this.o.maxBytes;
  }

  private take(size: number): void {
    this.fetches++;
    this.bytes += size;
  }

  private next(): void {
    for (let head = this.queue[0]; head && this.fits(head.size); head = this.queue[0]) {
      this.queue.shift();
      this.take(head.size);
      head.go();
    }
  }
}
