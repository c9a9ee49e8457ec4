/** The image rewrite decisions and the pod mutation (JSON patch and annotations), without HTTP. */
/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-member-access,
  @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-call --
  patched pods are walked as untyped JSON: a wrong path fails its assertion */
import t from 'tap';
import { decideImage } from '../../src/webhook/rewrite-image.js';
import { mutatePod } from '../../src/webhook/mutate-pod.js';
import {
  createRewritePolicy,
  ORIGINAL_IMAGES_ANNOTATION,
  SKIPPED_IMAGES_ANNOTATION,
} from '../../src/webhook/policy.js';
import { applyPatch, containers, pod } from './helpers.js';
import { PROXY, rewriteCases, unencodable } from './cases.js';

const policy = createRewritePolicy({ proxyHost: PROXY, ownNamespace: 'pullthrough' });

t.test('rewrites every encodable image, idempotently', async (t) => {
  for (const [image, want] of rewriteCases) {
    t.same(decideImage(image, 'IfNotPresent', policy), { action: 'rewrite', image: want }, image);
    t.same(decideImage(want, 'IfNotPresent', policy), { action: 'already-rewritten' }, `${want} again`);
  }
});

t.test('keeps what the encoding cannot express', async (t) => {
  for (const [image, reason] of unencodable) {
    const d = decideImage(image, undefined, policy);
    t.equal(d.action, 'keep', image);
    if (d.action === 'keep') t.match(d.reason, reason, image);
  }
  t.same(decideImage(undefined, undefined, policy), { action: 'keep', reason: 'no image given', kind: 'no-image' });
});

t.test('ignore, accept and pull-policy settings', async (t) => {
  const p = createRewritePolicy({
    proxyHost: PROXY,
    ownNamespace: 'pullthrough',
    ignoreImages: ['^docker\\.io/library/busybox'],
    acceptImages: ['^docker\\.io/', '^quay\\.io/'],
    skipPullPolicies: ['Never'],
  });
  t.match(decideImage('busybox:1', 'IfNotPresent', p), { action: 'keep', reason: /--ignore-images/ });
  t.match(decideImage('ghcr.io/o/a:1', 'IfNotPresent', p), { action: 'keep', reason: /--accept-images/ });
  t.match(decideImage('nginx', 'Never', p), { action: 'keep', reason: /imagePullPolicy Never/ });
  t.match(decideImage('nginx', 'Always', p), { action: 'rewrite' });
  t.match(decideImage('quay.io/a/b', undefined, p), { action: 'rewrite' });
  t.throws(() => createRewritePolicy({ proxyHost: PROXY, ownNamespace: 'x', ignoreImages: ['('] }), /--ignore-images/);
});

t.test('pod mutation: patch gives the expected spec and annotations; re-invocation changes nothing', async (t) => {
  const original = pod({
    initContainers: containers('busybox:1.36'),
    containers: [...containers('nginx', '[::1]:5000/x'), { name: 'side', image: 'myreg:5000/team/app:1' }],
  });
  const m = mutatePod(original, { namespace: 'default' }, policy);
  const patched = applyPatch<any>(original, m.patch);
  t.equal(patched.spec.initContainers[0].image, 'localhost:7439/docker.io/library/busybox:1.36');
  t.equal(patched.spec.containers[0].image, 'localhost:7439/docker.io/library/nginx:latest');
  t.equal(patched.spec.containers[1].image, '[::1]:5000/x');
  t.equal(patched.spec.containers[2].image, 'localhost:7439/myreg_5000/team/app:1');
  t.same(JSON.parse(patched.metadata.annotations[ORIGINAL_IMAGES_ANNOTATION]), {
    'initContainers/c0': 'busybox:1.36',
    'containers/c0': 'nginx',
    'containers/side': 'myreg:5000/team/app:1',
  });
  t.match(JSON.parse(patched.metadata.annotations[SKIPPED_IMAGES_ANNOTATION]), { 'containers/c1': /IPv6/ });
  const again = mutatePod(patched, { namespace: 'default' }, policy);
  t.same(again.patch, [], 'second invocation is a no-op');

  // Another webhook added a container between the two invocations: only it changes, originals merge.
  patched.spec.containers.push({ name: 'added', image: 'redis:7' });
  const third = mutatePod(patched, { namespace: 'default' }, policy);
  const after = applyPatch<any>(patched, third.patch);
  t.equal(after.spec.containers[3].image, 'localhost:7439/docker.io/library/redis:7');
  t.same(Object.keys(JSON.parse(after.metadata.annotations[ORIGINAL_IMAGES_ANNOTATION])).sort(), [
    'containers/added',
    'containers/c0',
    'containers/side',
    'initContainers/c0',
  ]);
});

t.test('pod-level skips', async (t) => {
  for (const [ns, labels, reason] of [
    ['kube-system', {}, /namespace kube-system is excluded/],
    ['pullthrough', {}, /namespace pullthrough is excluded/],
    ['default', { 'pullthrough.dev/image-caching-policy': 'ignore' }, /labelled/],
  ] as const) {
    const p = pod({ containers: containers('nginx') }, { namespace: ns, labels });
    const m = mutatePod(p, { namespace: ns }, policy);
    t.same(m.rewritten, {});
    t.match(m.skipped, { 'containers/c0': reason });
    const out = applyPatch<any>(p, m.patch);
    t.equal(out.spec.containers[0].image, 'nginx');
    t.match(out.metadata.annotations[SKIPPED_IMAGES_ANNOTATION], reason);
  }
});

t.test('ephemeral containers subresource: only new ephemeral containers, no metadata change', async (t) => {
  const old = pod({
    containers: containers('localhost:7439/docker.io/library/nginx:latest'),
    ephemeralContainers: [{ name: 'e0', image: 'busybox' }],
  });
  const updated = structuredClone(old) as any;
  updated.spec.ephemeralContainers.push({ name: 'debugger', image: 'alpine:3' });
  const m = mutatePod(updated, { namespace: 'default', subresource: 'ephemeralcontainers', oldPod: old }, policy);
  t.same(m.patch, [
    { op: 'replace', path: '/spec/ephemeralContainers/1/image', value: 'localhost:7439/docker.io/library/alpine:3' },
  ]);
});

t.test('malformed pods do not throw', async (t) => {
  for (const p of [
    null,
    1,
    'x',
    {},
    { spec: null },
    { spec: { containers: 'x' } },
    { spec: { containers: [null, 1, { name: 'a' }] } },
    { metadata: { annotations: { [ORIGINAL_IMAGES_ANNOTATION]: '{bad' } }, spec: { containers: containers('nginx') } },
  ]) {
    t.doesNotThrow(() => {
      const m = mutatePod(p, { namespace: 'default' }, policy);
      applyPatch(p, m.patch);
    }, JSON.stringify(p));
  }
});
