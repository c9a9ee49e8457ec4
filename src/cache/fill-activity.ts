/**
 * The fills in progress and what they are doing: how many still fetch from the origin, how many
 * clients read them. Fills read it to size their spool writes, the commit gate to wait for quiet
 * times; both wait on `changed()`, which every start, end and departing reader wakes.
 */

/** Spool writes may be large only while at most this many clients read fills (see BlobFill). */
const FEW_READERS = 2;

/** What the activity needs of a fill in progress. */
export interface ActiveFill {
  readonly readerCount: number;
}

export class FillActivity<F extends ActiveFill = ActiveFill> {
  /** By cache repository and digest. */
  readonly active = new Map<string, F>();
  /** Fills still talking to the origin. */
  fetching = 0;
  private readonly waiters: (() => void)[] = [];

  /** One fill fetching, read by at most a few clients: its spool may be written in large batches. */
  streamingLittle(): boolean {
    if (this.fetching > 1) return false;
    let readers = 0;
    for (const f of this.active.values()) readers += f.readerCount;
    return readers <= FEW_READERS;
  }

  /** A fill still fetching, or a client still reading one. */
  busy(): boolean {
    if (this.fetching > 0) return true;
    for (const f of this.active.values()) if (f.readerCount > 0) return true;
    return false;
  }

  /** Resolves at the next change, or after `timeoutMs`. */
  changed(timeoutMs?: number): Promise<void> {
    return new Promise((resolve) => {
      const waiter = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(
              () => {
                const i = this.waiters.indexOf(waiter);
                if (i >= 0) this.waiters.splice(i, 1);
                resolve();
              },
              Math.min(timeoutMs, 2 ** 31 - 1), // longer would fire at once
            );
      this.waiters.push(waiter);
    });
  }

  wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}
