/**
 * A token bucket: up to `perSecond` operations in a burst, refilled continuously at `perSecond`.
 * Bounds the controller's writes to the API server (status patches, Events).
 */
export class TokenBucket {
  private tokens: number;
  private refilledAt: number;

  constructor(
    private readonly perSecond: number,
    private readonly now: () => number,
  ) {
    this.tokens = perSecond;
    this.refilledAt = now();
  }

  /** Whether one operation may go now (nothing is taken). */
  available(): boolean {
    const now = this.now();
    this.tokens = Math.min(this.perSecond, this.tokens + ((now - this.refilledAt) / 1000) * this.perSecond);
    this.refilledAt = now;
    return this.tokens >= 1;
  }

  /** Takes one token (after `available`, or for an operation that must go anyway). */
  take(): void {
    this.tokens -= 1;
  }

  /** Takes one token when one is available. */
  tryTake(): boolean {
    if (!this.available()) return false;
    this.take();
    return true;
  }
}
