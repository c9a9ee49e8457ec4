/**
 * The gate at admission, pure: which images of a request are judged (a new pod's, only the new
 * ephemeral containers of an update, images already rewritten read back to their origin, none in
 * namespaces the webhook leaves alone), and how decisions become a denial or warnings in the
 * AdmissionReview answer.
 */
import t from 'tap';
import { review } from '../../src/webhook/admission-review.js';
import { createRewritePolicy } from '../../src/webhook/policy.js';
import { gatePod, type AdmissionGate } from '../../src/webhook/vulnerability-gate.js';
import { VulnerabilityGate } from '../../src/scan/gate.js';
import { VerdictCache } from '../../src/scan/verdict-cache.js';
import { verdictOf } from '../../src/scan/verdict.js';
import type { GatePolicy } from '../../src/scan/policy.js';
import { admissionReview, containers, pod } from '../webhook/helpers.js';

const policy = createRewritePolicy({ proxyHost: 'localhost:7439', ownNamespace: 'pullthrough' });
const BAD = 'docker.io/library/bad:1';
const GOOD = 'docker.io/library/good:1';
const digest = (c: string) => `sha256:${c.repeat(64)}`;

function gate(mode: GatePolicy['mode']): VulnerabilityGate {
  const cache = new VerdictCache();
  const scanner = { name: 'S', vendor: '', version: '1' };
  const verdict = (d: string, crit: number) =>
    verdictOf(
      {
        digest: d,
        scanner,
        vulnerabilities: Array.from({ length: crit }, (_, i) => ({ id: `CVE-${i}`, severity: 'Critical' as const })),
      },
      scanner,
      new Date(),
    );
  cache.replaceAll([
    { images: [BAD], digests: [digest('b')], record: { state: 'scanned', verdict: verdict(digest('b'), 2) } },
    { images: [GOOD], digests: [digest('a')], record: { state: 'scanned', verdict: verdict(digest('a'), 0) } },
  ]);
  return new VulnerabilityGate(
    {
      mode,
      threshold: 'High',
      unscanned: 'allow-and-scan',
      scannerDown: 'fail-open',
      cveExceptions: [],
      imageExceptions: [],
    },
    cache,
  );
}

t.test('a new pod: every container judged, short names and rewritten images read as their origin', async (t) => {
  const seen: string[] = [];
  const spy: AdmissionGate = {
    admit: (image) => {
      seen.push(image);
      return { action: 'allow', reason: '' };
    },
  };
  const p = pod({
    initContainers: containers('bad:1'),
    containers: containers('localhost:7439/docker.io/library/good:1'),
  });
  gatePod(p, { namespace: 'default' }, policy, spy);
  t.same(seen, ['bad:1', GOOD]);
});

t.test('enforce: a failing image denies the pod with the gate reason; a passing one is admitted', async (t) => {
  const denied = review(admissionReview(pod({ containers: containers(GOOD, 'bad:1') })), policy, gate('enforce'));
  t.equal(denied.status, 200);
  if (denied.status !== 200) return;
  t.equal(denied.body.response.allowed, false);
  t.equal(denied.body.response.status?.code, 403);
  t.match(denied.body.response.status?.message, /vulnerability gate: docker\.io\/library\/bad:1 has 2 Critical/);
  t.equal(denied.body.response.patch, undefined, 'a denial carries no patch');
  const ok = review(admissionReview(pod({ containers: containers(GOOD) })), policy, gate('enforce'));
  t.equal(ok.status === 200 && ok.body.response.allowed, true);
});

t.test('warn: admitted and patched, with the reason as a warning', async (t) => {
  const r = review(admissionReview(pod({ containers: containers('bad:1') })), policy, gate('warn'));
  if (r.status !== 200) return t.fail('not answered');
  t.equal(r.body.response.allowed, true);
  t.ok(r.body.response.patch, 'still rewritten');
  t.match(r.body.response.warnings?.join(), /2 Critical.*policy warn/);
});

t.test('an image never cached: admitted with a notice under allow-and-scan', async (t) => {
  const r = review(admissionReview(pod({ containers: containers('new:1') })), policy, gate('enforce'));
  if (r.status !== 200) return t.fail('not answered');
  t.equal(r.body.response.allowed, true);
  t.match(r.body.response.warnings?.join(), /not scanned yet/);
});

t.test('excluded namespaces are not judged; an ephemeral update judges only the new containers', async (t) => {
  const excluded = review(
    admissionReview(pod({ containers: containers('bad:1') }), { namespace: 'kube-system' }),
    policy,
    gate('enforce'),
  );
  t.equal(excluded.status === 200 && excluded.body.response.allowed, true);
  const oldPod = pod({ containers: containers('bad:1'), ephemeralContainers: [{ name: 'dbg', image: 'bad:1' }] });
  const newPod = pod({
    containers: containers('bad:1'),
    ephemeralContainers: [
      { name: 'dbg', image: 'bad:1' },
      { name: 'dbg2', image: GOOD },
    ],
  });
  const upd = review(
    admissionReview(newPod, { operation: 'UPDATE', subResource: 'ephemeralcontainers', oldObject: oldPod }),
    policy,
    gate('enforce'),
  );
  t.equal(upd.status === 200 && upd.body.response.allowed, true, 'only dbg2 (clean) is judged');
  const bad = pod({ containers: containers(GOOD), ephemeralContainers: [{ name: 'dbg', image: 'bad:1' }] });
  const upd2 = review(
    admissionReview(bad, {
      operation: 'UPDATE',
      subResource: 'ephemeralcontainers',
      oldObject: pod({ containers: containers(GOOD) }),
    }),
    policy,
    gate('enforce'),
  );
  t.equal(upd2.status === 200 && upd2.body.response.allowed, false, 'a new failing debug container is denied');
});

t.test('by digest: a pinned image finds its verdict by digest', async (t) => {
  const g = gate('enforce');
  t.equal(g.admit(`docker.io/library/whatever@${digest('b')}`).action, 'deny');
  t.equal(g.serve('docker.io', 'library/bad', digest('b')).action, 'deny');
  t.equal(g.serve('docker.io', 'library/new', digest('c')).action, 'allow', 'the proxy serves what has no verdict');
});
