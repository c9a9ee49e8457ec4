/**
 * The vulnerability gate's policy and its one decision function, pure (the clock is an argument):
 * given an image, what is known of its scan and the time, may it run and be served?
 *
 * - `off`: nothing is checked. `warn`: a failing image is allowed with a warning. `enforce`: it is
 *   denied at admission and refused by the node proxy.
 * - An image fails when it has findings at or above the threshold that no unexpired CVE exception
 *   covers; an unexpired image exception passes it whatever its findings.
 * - Not scanned yet: `allow-and-scan` lets it through (it is scanned once cached), `hold` treats it
 *   as failing until a verdict exists.
 * - Scanned without a verdict (the scanner unreachable, timing out, answering garbage):
 *   `fail-open` lets it through, `fail-closed` treats it as failing; the reason says which.
 */
import { severityRank, type Severity } from './api.js';
import { describeCounts, emptyCounts, type ScanRecord } from './verdict.js';

export type GateMode = 'off' | 'warn' | 'enforce';
export type UnscannedAction = 'allow-and-scan' | 'hold';
export type ScannerDownAction = 'fail-open' | 'fail-closed';

export interface CveException {
  readonly id: string;
  /** Epoch ms; the exception no longer applies from then on. */
  readonly until: number;
}

export interface ImageException {
  readonly pattern: RegExp;
  readonly until: number;
}

export interface GatePolicy {
  readonly mode: GateMode;
  readonly threshold: Severity;
  readonly unscanned: UnscannedAction;
  readonly scannerDown: ScannerDownAction;
  readonly cveExceptions: readonly CveException[];
  readonly imageExceptions: readonly ImageException[];
}

export type GateOutcome = 'off' | 'pass' | 'fail' | 'exempt' | 'unscanned' | 'scanner-down';

export interface GateDecision {
  /** What to do: `deny` only in enforce, `warn` only in warn. */
  readonly action: 'allow' | 'warn' | 'deny';
  /** The verdict fails the policy (whatever the mode). */
  readonly blocked: boolean;
  readonly outcome: GateOutcome;
  /** One line naming the image, what was found and the policy; for messages, warnings and logs. */
  readonly reason: string;
  /** Something an allowed image's admission should mention (failed open, not scanned yet). */
  readonly notice?: string;
}

export function policyText(p: GatePolicy): string {
  return `policy ${p.mode}, threshold ${p.threshold}`;
}

export function evaluate(p: GatePolicy, image: string, record: ScanRecord | undefined, now: number): GateDecision {
  if (p.mode === 'off') return { action: 'allow', blocked: false, outcome: 'off', reason: `${image}: scanning is off` };
  const exempt = p.imageExceptions.find((e) => e.until > now && e.pattern.test(image));
  if (exempt) {
    return decide(
      p,
      false,
      'exempt',
      `${image} is exempt (image exception ${exempt.pattern.source} until ${iso(exempt.until)})`,
    );
  }
  if (!record) {
    const hold = p.unscanned === 'hold';
    const what = hold ? 'held until it is' : 'allowed, and scanned once cached';
    const reason = `${image} is not scanned yet (${what}; ${policyText(p)})`;
    return decide(p, hold, 'unscanned', reason);
  }
  if (record.state === 'failed') {
    const closed = p.scannerDown === 'fail-closed';
    const reason =
      `${image}: no verdict, the scan failed (${record.code}: ${record.message}); ` +
      `failing ${closed ? 'closed' : 'open'} (${policyText(p)})`;
    return decide(p, closed, 'scanner-down', reason);
  }
  const v = record.verdict;
  const excepted = new Set(p.cveExceptions.filter((e) => e.until > now).map((e) => e.id));
  const counted = emptyCounts();
  for (const [s, n] of Object.entries(v.counts) as [Severity, number][]) counted[s] = n;
  // Counts cover every finding; only the listed ones can be excepted.
  for (const f of v.findings) if (excepted.has(f.id)) counted[f.severity] = Math.max(0, counted[f.severity] - 1);
  const blocking = (Object.entries(counted) as [Severity, number][])
    .filter(([s]) => severityRank(s) >= severityRank(p.threshold))
    .reduce((n, [, c]) => n + c, 0);
  const scanner = `${v.scanner.name} ${v.scanner.version}`.trim();
  if (blocking > 0) {
    const reason =
      `${image} has ${describeCounts(counted, p.threshold)} vulnerabilities at or above ${p.threshold} ` +
      `(${scanner}, scanned ${v.scannedAt}; ${policyText(p)})`;
    return decide(p, true, 'fail', reason);
  }
  return decide(
    p,
    false,
    'pass',
    `${image}: ${describeCounts(counted)} at or above ${p.threshold} (${scanner}; ${policyText(p)})`,
  );
}

function decide(p: GatePolicy, blocked: boolean, outcome: GateOutcome, reason: string): GateDecision {
  const action = !blocked ? 'allow' : p.mode === 'enforce' ? 'deny' : 'warn';
  const notice = !blocked && (outcome === 'scanner-down' || outcome === 'unscanned') ? reason : undefined;
  return { action, blocked, outcome, reason, ...(notice ? { notice } : {}) };
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
