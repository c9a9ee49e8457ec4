/**
 * A scan's outcome for one digest, as kept in memory and written on the CachedImage status:
 * counts per severity, the findings (ids and severities, worst first, bounded, so CVE exceptions
 * can be applied where the verdict is read), the scanner's name and version, and when. A scan
 * that gave no verdict is a failure record with its typed code, so the gate can fail open or
 * closed and say which.
 */
import {
  SEVERITIES,
  severityRank,
  type Finding,
  type ScannerInfo,
  type Severity,
  type VulnerabilityReport,
} from './api.js';
import type { ScanErrorCode } from './errors.js';

export type SeverityCounts = Readonly<Record<Severity, number>>;

/** Findings kept per verdict; the counts always cover every finding. */
export const MAX_FINDINGS = 500;

export interface Verdict {
  readonly digest: string;
  readonly scanner: { readonly name: string; readonly version: string };
  /** ISO 8601. */
  readonly scannedAt: string;
  readonly counts: SeverityCounts;
  readonly findings: readonly { readonly id: string; readonly severity: Severity }[];
  /** True when more distinct findings existed than MAX_FINDINGS. */
  readonly truncated: boolean;
}

export type ScanRecord =
  | { readonly state: 'scanned'; readonly verdict: Verdict }
  | {
      readonly state: 'failed';
      readonly digest: string;
      readonly code: ScanErrorCode;
      readonly message: string;
      readonly at: string;
    };

export function emptyCounts(): Record<Severity, number> {
  return Object.fromEntries(SEVERITIES.map((s) => [s, 0])) as Record<Severity, number>;
}

/**
 * One entry per vulnerability id (its worst severity: a CVE found in two packages counts once),
 * worst first, so a truncated list drops the least severe.
 */
export function verdictOf(report: VulnerabilityReport, scanner: ScannerInfo, scannedAt: Date): Verdict {
  const worst = new Map<string, Severity>();
  for (const f of report.vulnerabilities) {
    const seen = worst.get(f.id);
    if (seen === undefined || severityRank(f.severity) > severityRank(seen)) worst.set(f.id, f.severity);
  }
  const counts = emptyCounts();
  for (const s of worst.values()) counts[s]++;
  const findings = [...worst.entries()]
    .map(([id, severity]) => ({ id, severity }))
    .sort((a, b) => severityRank(b.severity) - severityRank(a.severity) || a.id.localeCompare(b.id));
  return {
    digest: report.digest,
    scanner: { name: scanner.name, version: scanner.version },
    scannedAt: scannedAt.toISOString(),
    counts,
    findings: findings.slice(0, MAX_FINDINGS),
    truncated: findings.length > MAX_FINDINGS,
  };
}

/** `2 Critical, 1 High` (what is non-zero, worst first); `no vulnerabilities` when none. */
export function describeCounts(counts: SeverityCounts, atLeast: Severity = 'Unknown'): string {
  const parts = [...SEVERITIES]
    .reverse()
    .filter((s) => severityRank(s) >= severityRank(atLeast) && counts[s] > 0)
    .map((s) => `${counts[s]} ${s}`);
  return parts.length > 0 ? parts.join(', ') : 'no vulnerabilities';
}

export type { Finding };
