/**
 * The gate's policy, pure: properties over generated verdicts and policies (mode, threshold,
 * exceptions that expire, unscanned and failed scans), examples of the messages, verdicts built
 * from reports, and the flags that set the policy.
 */
import t from 'tap';
import fc from 'fast-check';
import { SEVERITIES, severityRank, type VulnerabilityReport } from '../../src/scan/api.js';
import { evaluate, type GatePolicy } from '../../src/scan/policy.js';
import { MAX_FINDINGS, verdictOf, type ScanRecord } from '../../src/scan/verdict.js';
import { VerdictCache } from '../../src/scan/verdict-cache.js';
import { parseScanPolicy, scanPolicyFlags } from '../../src/config/scan.js';
import { parseFlags, ConfigError } from '../../src/config/flags.js';
import { runs } from '../property/settings.js';

const NOW = Date.parse('2026-12-06T12:00:00Z');
const DAY = 86_400_000;
const IMAGE = 'docker.io/library/app:v1';
const DIGEST = `sha256:${'a'.repeat(64)}`;
const severity = fc.constantFrom(...SEVERITIES);
const cveId = fc.integer({ min: 1, max: 40 }).map((n) => `CVE-2024-${String(n).padStart(4, '0')}`);
const report = fc
  .array(fc.record({ id: cveId, severity }), { maxLength: 30 })
  .map((vulnerabilities): VulnerabilityReport => ({
    digest: DIGEST,
    scanner: { name: 'S', vendor: 'V', version: '1' },
    vulnerabilities,
  }));
const scanned = report.map((r): ScanRecord => ({
  state: 'scanned',
  verdict: verdictOf(r, r.scanner, new Date(NOW - DAY)),
}));
const failed: fc.Arbitrary<ScanRecord> = fc.constant({
  state: 'failed',
  digest: DIGEST,
  code: 'SCANNER_UNREACHABLE',
  message: 'ECONNREFUSED',
  at: new Date(NOW).toISOString(),
});
const record = fc.option(fc.oneof(scanned, failed), { nil: undefined });
const until = fc
  .integer({ min: -10, max: 10 })
  .filter((d) => d !== 0)
  .map((d) => NOW + d * DAY);
const policy = fc.record({
  mode: fc.constantFrom('off' as const, 'warn' as const, 'enforce' as const),
  threshold: severity,
  unscanned: fc.constantFrom('allow-and-scan' as const, 'hold' as const),
  scannerDown: fc.constantFrom('fail-open' as const, 'fail-closed' as const),
  cveExceptions: fc.array(fc.record({ id: cveId, until }), { maxLength: 5 }),
  imageExceptions: fc.array(fc.record({ pattern: fc.constantFrom(/app/, /other/, /^docker\.io\//), until }), {
    maxLength: 2,
  }),
});

t.test('properties', async (t) => {
  t.test('the action follows from blocked and the mode; off blocks nothing', async () => {
    fc.assert(
      fc.property(policy, record, (p, r) => {
        const d = evaluate(p, IMAGE, r, NOW);
        if (p.mode === 'off') return !d.blocked && d.action === 'allow';
        const expected = !d.blocked ? 'allow' : p.mode === 'enforce' ? 'deny' : 'warn';
        return d.action === expected && d.reason.includes(IMAGE);
      }),
      runs(500),
    );
  });

  t.test('expired exceptions change nothing', async () => {
    fc.assert(
      fc.property(policy, record, (p, r) => {
        const live: GatePolicy = {
          ...p,
          cveExceptions: p.cveExceptions.filter((e) => e.until > NOW),
          imageExceptions: p.imageExceptions.filter((e) => e.until > NOW),
        };
        const a = evaluate(p, IMAGE, r, NOW);
        const b = evaluate(live, IMAGE, r, NOW);
        return a.blocked === b.blocked && a.action === b.action && a.outcome === b.outcome;
      }),
      runs(500),
    );
  });

  t.test('a lower threshold never unblocks a scanned image', async () => {
    fc.assert(
      fc.property(policy, scanned, severity, (p, r, lower) => {
        fc.pre(severityRank(lower) <= severityRank(p.threshold));
        return !evaluate(p, IMAGE, r, NOW).blocked || evaluate({ ...p, threshold: lower }, IMAGE, r, NOW).blocked;
      }),
      runs(500),
    );
  });

  t.test('blocked iff an unexcepted finding is at or above the threshold (scanned, no image exception)', async () => {
    fc.assert(
      fc.property(policy, report, (p0, rep) => {
        const p: GatePolicy = { ...p0, mode: 'enforce', imageExceptions: [] };
        const r: ScanRecord = { state: 'scanned', verdict: verdictOf(rep, rep.scanner, new Date(NOW)) };
        const excepted = new Set(p.cveExceptions.filter((e) => e.until > NOW).map((e) => e.id));
        const model = rep.vulnerabilities.some(
          (v) => !excepted.has(v.id) && severityRank(v.severity) >= severityRank(p.threshold),
        );
        return evaluate(p, IMAGE, r, NOW).blocked === model;
      }),
      runs(500),
    );
  });

  t.test('unscanned blocks iff hold; a failed scan blocks iff fail-closed', async () => {
    fc.assert(
      fc.property(policy, failed, (p0, f) => {
        const p: GatePolicy = { ...p0, mode: 'enforce', imageExceptions: [] };
        return (
          evaluate(p, IMAGE, undefined, NOW).blocked === (p.unscanned === 'hold') &&
          evaluate(p, IMAGE, f, NOW).blocked === (p.scannerDown === 'fail-closed')
        );
      }),
      runs(200),
    );
  });

  t.test('verdicts: one count per distinct id at its worst severity, findings worst first', async () => {
    fc.assert(
      fc.property(report, (rep) => {
        const v = verdictOf(rep, rep.scanner, new Date(NOW));
        const ids = new Set(rep.vulnerabilities.map((x) => x.id));
        const total = Object.values(v.counts).reduce((a, b) => a + b, 0);
        const ranks = v.findings.map((f) => severityRank(f.severity));
        return total === ids.size && ranks.every((r, i) => i === 0 || (ranks[i - 1] as number) >= r);
      }),
      runs(300),
    );
  });
});

const base: GatePolicy = {
  mode: 'enforce',
  threshold: 'High',
  unscanned: 'allow-and-scan',
  scannerDown: 'fail-open',
  cveExceptions: [],
  imageExceptions: [],
};
const vulnerable: ScanRecord = {
  state: 'scanned',
  verdict: verdictOf(
    {
      digest: DIGEST,
      scanner: { name: 'Trivy', vendor: 'Aqua', version: '0.50.0' },
      vulnerabilities: [
        { id: 'CVE-2024-1', severity: 'Critical' },
        { id: 'CVE-2024-2', severity: 'High' },
        { id: 'CVE-2024-3', severity: 'Low' },
      ],
    },
    { name: 'Trivy', vendor: 'Aqua', version: '0.50.0' },
    new Date(NOW),
  ),
};

t.test('messages name the image, the counts and the policy', async (t) => {
  const d = evaluate(base, IMAGE, vulnerable, NOW);
  t.equal(d.action, 'deny');
  t.match(d.reason, IMAGE);
  t.match(d.reason, '1 Critical, 1 High vulnerabilities at or above High');
  t.match(d.reason, 'Trivy 0.50.0');
  t.match(d.reason, 'policy enforce, threshold High');
  t.equal(evaluate({ ...base, mode: 'warn' }, IMAGE, vulnerable, NOW).action, 'warn');
  t.equal(evaluate({ ...base, threshold: 'Critical' }, IMAGE, vulnerable, NOW).reason.includes('1 High'), false);
});

t.test('a CVE exception applies until it expires', async (t) => {
  const p: GatePolicy = {
    ...base,
    cveExceptions: [
      { id: 'CVE-2024-1', until: NOW + DAY },
      { id: 'CVE-2024-2', until: NOW + DAY },
    ],
  };
  t.equal(evaluate(p, IMAGE, vulnerable, NOW).action, 'allow');
  t.equal(evaluate(p, IMAGE, vulnerable, NOW + 2 * DAY).action, 'deny', 'expired: denied again');
});

t.test('an image exception applies until it expires', async (t) => {
  const p: GatePolicy = { ...base, imageExceptions: [{ pattern: /library\/app/, until: NOW + DAY }] };
  t.equal(evaluate(p, IMAGE, vulnerable, NOW).outcome, 'exempt');
  t.equal(evaluate(p, IMAGE, vulnerable, NOW + DAY).action, 'deny');
});

t.test('fail-open and fail-closed say which they did', async (t) => {
  const f: ScanRecord = { state: 'failed', digest: DIGEST, code: 'SCANNER_TIMEOUT', message: 'slow', at: '' };
  const open = evaluate(base, IMAGE, f, NOW);
  t.equal(open.action, 'allow');
  t.match(open.notice, 'failing open');
  const closed = evaluate({ ...base, scannerDown: 'fail-closed' }, IMAGE, f, NOW);
  t.equal(closed.action, 'deny');
  t.match(closed.reason, 'failing closed');
  t.match(closed.reason, 'SCANNER_TIMEOUT');
});

t.test('findings beyond the bound are counted but not listed', async (t) => {
  const many = Array.from({ length: MAX_FINDINGS + 10 }, (_, i) => ({ id: `CVE-1-${i}`, severity: 'Low' as const }));
  const v = verdictOf(
    { digest: DIGEST, scanner: { name: 's', vendor: '', version: '' }, vulnerabilities: many },
    { name: 's', vendor: '', version: '' },
    new Date(NOW),
  );
  t.equal(v.findings.length, MAX_FINDINGS);
  t.equal(v.counts.Low, MAX_FINDINGS + 10);
  t.equal(v.truncated, true);
});

t.test('the verdict cache answers by digest (an index and its children) and by image', async (t) => {
  const c = new VerdictCache();
  const child = `sha256:${'b'.repeat(64)}`;
  c.replaceAll([{ images: [IMAGE], digests: [DIGEST, child], record: vulnerable }]);
  t.equal(c.byDigest(child), vulnerable);
  t.equal(c.byImage(IMAGE)?.digest, DIGEST);
  c.replaceAll([]);
  t.equal(c.byDigest(DIGEST), undefined);
});

t.test('flags', async (t) => {
  const parse = (argv: string[]) => parseScanPolicy(parseFlags(scanPolicyFlags, argv, {}));
  const p = parse([
    '--scan-policy', 'enforce',
    '--scan-threshold', 'Medium',
    '--scan-cve-exception', 'CVE-2024-1@2026-12-31',
    '--scan-image-exception', 'docker\\.io/library/app@sha256:.*@2027-01-01T00:00:00Z',
  ]); // prettier-ignore
  t.equal(p.mode, 'enforce');
  t.equal(p.threshold, 'Medium');
  t.same(p.cveExceptions, [{ id: 'CVE-2024-1', until: Date.parse('2026-12-31') }]);
  t.ok(p.imageExceptions[0]?.pattern.test('docker.io/library/app@sha256:abc'), 'split at the last @');
  t.equal(parse([]).mode, 'off', 'off by default');
  const refused = (argv: string[], message: RegExp) => {
    try {
      parse(argv);
      t.fail(`${argv.join(' ')} was accepted`);
    } catch (err) {
      t.ok(err instanceof ConfigError, `${argv.join(' ')}: a ConfigError`);
      t.match((err as Error).message, message);
    }
  };
  refused(['--scan-cve-exception', 'CVE-2024-1'], /is not VALUE@EXPIRY/);
  refused(['--scan-threshold', 'Severe'], /not a severity/);
  refused(['--scan-policy', 'block'], /not one of off, warn, enforce/);
  refused(['--scan-image-exception', '(@2026-01-01'], /invalid regular expression/);
});
