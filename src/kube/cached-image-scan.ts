/**
 * The scan verdict on a CachedImage's status (`status.scan`) and its conversions: from a scan
 * record when the controller writes it, back to a record when the node proxy and the webhook read
 * it. Severities are lower-case keys, as Kubernetes fields are; no credential ever reaches it.
 */
import { SEVERITIES, isSeverity, type Severity } from '../scan/api.js';
import type { ScanErrorCode } from '../scan/errors.js';
import { imageKey } from '../scan/image-key.js';
import { emptyCounts, type ScanRecord } from '../scan/verdict.js';
import type { VerdictEntry } from '../scan/verdict-cache.js';
import type { CachedImage } from './cached-images.js';
import type { ScanStatus, SeverityKey } from './scan-status.js';

const key = (s: Severity): SeverityKey => s.toLowerCase() as SeverityKey;

export function scanStatusOf(record: ScanRecord, digests: readonly string[]): ScanStatus {
  if (record.state === 'failed') {
    return {
      digest: record.digest,
      digests,
      result: 'Error',
      scannedAt: record.at,
      error: { code: record.code, message: record.message },
    };
  }
  const v = record.verdict;
  return {
    digest: v.digest,
    digests,
    result: 'Scanned',
    scannedAt: v.scannedAt,
    scanner: v.scanner,
    counts: Object.fromEntries(SEVERITIES.map((s) => [key(s), v.counts[s]])) as Record<SeverityKey, number>,
    findings: v.findings,
    truncated: v.truncated,
  };
}

export function recordOf(s: ScanStatus): ScanRecord {
  if (s.result === 'Error') {
    return {
      state: 'failed',
      digest: s.digest,
      code: (s.error?.code ?? 'SCANNER_FAILED') as ScanErrorCode,
      message: s.error?.message ?? '',
      at: s.scannedAt,
    };
  }
  const counts = emptyCounts();
  for (const sev of SEVERITIES) counts[sev] = s.counts?.[key(sev)] ?? 0;
  return {
    state: 'scanned',
    verdict: {
      digest: s.digest,
      scanner: s.scanner ?? { name: '', version: '' },
      scannedAt: s.scannedAt,
      counts,
      findings: (s.findings ?? []).filter((f) => isSeverity(f.severity)),
      truncated: s.truncated ?? false,
    },
  };
}

/** What the object says about its image's verdict, for the in-memory cache. */
export function verdictEntryOf(o: CachedImage): VerdictEntry | undefined {
  const image = imageKey(o.spec.image);
  const digest = o.status?.digest;
  if (!image || !digest) return undefined;
  const scan = o.status.scan;
  // A verdict about an earlier digest says nothing about the one cached now.
  if (scan?.digest !== digest) return { images: [image], digests: [digest] };
  return {
    images: [image],
    digests: scan.digests.includes(digest) ? scan.digests : [digest, ...scan.digests],
    record: recordOf(scan),
  };
}
