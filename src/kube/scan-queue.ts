/**
 * The controller's scans: every CachedImage with a cached digest is scanned once per digest, and
 * again after `rescanIntervalMs` (new CVEs appear for old digests); a scan that gave no verdict is
 * retried after `retryMs`. The verdict lands on `status.scan` and in an Event: `Scanned` (Normal),
 * `ScanBlocked` (Warning, when the policy fails it), `ScanFailed` (Warning, with the typed code),
 * each naming what changed since the last verdict. One scan at a time by default: scanners are
 * slow and the pull path never waits on them. Scans stop, writing nothing, when leadership ends.
 */
import { evaluate, type GatePolicy } from '../scan/policy.js';
import { encodeRegistryRepository } from './scan-repository.js';
import { describeCounts } from '../scan/verdict.js';
import type { ScanOutcome } from '../scan/digest-scanner.js';
import { cachedImageRef, type CachedImage, type CachedImageApi } from './cached-images.js';
import { recordOf, scanStatusOf } from './cached-image-scan.js';
import { describeKubeError } from './errors.js';
import type { EventRecorder } from './event-recorder.js';
import type { KubeLogger } from './logger.js';

export interface ScanQueueOptions {
  readonly api: CachedImageApi;
  /** Scans a digest of a cache repository (src/scan/digest-scanner.ts). */
  readonly scan: (repository: string, digest: string, signal: AbortSignal) => Promise<ScanOutcome>;
  readonly rescanIntervalMs: number;
  /** After a scan without a verdict. Default 5 min. */
  readonly retryMs?: number;
  /** Classifies Events (ScanBlocked); without it every verdict is `Scanned`. */
  readonly policy?: GatePolicy;
  readonly events?: EventRecorder;
  readonly log: KubeLogger;
  readonly concurrency?: number;
  readonly now?: () => number;
}

export class ScanQueue {
  private readonly running = new Map<string, Promise<void>>();

  constructor(private readonly o: ScanQueueOptions) {}

  get active(): number {
    return this.running.size;
  }

  /** Starts the scans that are due, up to the concurrency, and returns at once. */
  schedule(objects: readonly CachedImage[], leading: AbortSignal): void {
    for (const o of objects) {
      if (this.running.size >= (this.o.concurrency ?? 1)) break;
      if (!this.due(o)) continue;
      const name = o.metadata.name;
      this.running.set(
        name,
        this.scanOne(o, leading).finally(() => this.running.delete(name)),
      );
    }
  }

  async idle(): Promise<void> {
    await Promise.all([...this.running.values()]);
  }

  private due(o: CachedImage): boolean {
    const digest = o.status?.digest;
    if (!digest || this.running.has(o.metadata.name)) return false;
    const scan = o.status.scan;
    if (scan?.digest !== digest) return true;
    const age = (this.o.now ?? Date.now)() - Date.parse(scan.scannedAt);
    const wait = scan.result === 'Error' ? (this.o.retryMs ?? 300_000) : this.o.rescanIntervalMs;
    return !(age < wait);
  }

  private async scanOne(o: CachedImage, leading: AbortSignal): Promise<void> {
    const name = o.metadata.name;
    const digest = o.status?.digest as string;
    const target = cachedImageRef(o);
    let repository: string;
    try {
      repository = encodeRegistryRepository(o.spec.image);
    } catch (err) {
      this.o.log.warn({ cachedImage: name, reason: (err as Error).message }, 'not scanned: the image does not parse');
      return;
    }
    let outcome: ScanOutcome;
    try {
      outcome = await this.o.scan(repository, digest, leading);
    } catch (err) {
      // The scanner reports failures as records; anything else is a bug, logged, never a crash.
      this.o.log.error({ cachedImage: name, reason: (err as Error).message }, 'scan threw');
      return;
    }
    const { record, digests } = outcome;
    if (leading.aborted) return;
    const status = scanStatusOf(record, digests);
    try {
      await this.o.api.patchStatus(name, { scan: status });
    } catch (err) {
      this.o.log.warn({ cachedImage: name, err: describeKubeError(err) }, 'CachedImage scan status write failed');
      return;
    }
    const before = o.status?.scan;
    const was = before?.digest === digest && before.result === 'Scanned' ? recordOf(before) : undefined;
    const previously =
      was?.state === 'scanned' ? ` (was ${describeCounts(was.verdict.counts)} on ${was.verdict.scannedAt})` : '';
    if (record.state === 'failed') {
      this.o.log.warn({ cachedImage: name, digest, code: record.code, reason: record.message }, 'scan failed');
      void this.o.events?.record(target, 'Warning', 'ScanFailed', `${o.spec.image}: ${record.code}: ${record.message}`);
      return;
    }
    const v = record.verdict;
    const counts = describeCounts(v.counts);
    this.o.log.info({ cachedImage: name, digest, counts: v.counts, scanner: v.scanner }, 'scanned');
    const decision = this.o.policy
      ? evaluate(this.o.policy, o.spec.image, record, (this.o.now ?? Date.now)())
      : undefined;
    if (decision?.blocked) {
      void this.o.events?.record(target, 'Warning', 'ScanBlocked', `${decision.reason}${previously}`);
    } else {
      const by = `${v.scanner.name} ${v.scanner.version}`.trim();
      void this.o.events?.record(target, 'Normal', 'Scanned', `${o.spec.image}: ${counts} (${by})${previously}`);
    }
  }
}
