/**
 * Real AdmissionReview JSON over real HTTPS (a CA made by the webhook's own certificate code,
 * trusted by the client the way the API server trusts the caBundle).
 */
/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-member-access,
  @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-argument, @typescript-eslint/no-unsafe-call --
  AdmissionReview responses and patched pods are walked as untyped JSON: a wrong path fails its assertion */
import t from 'tap';
import { createWebhookServer } from '../../src/webhook/server.js';
import { createCa, issueServingCert } from '../../src/webhook/certificates.js';
import {
  createRewritePolicy,
  ORIGINAL_IMAGES_ANNOTATION,
  SKIPPED_IMAGES_ANNOTATION,
} from '../../src/webhook/policy.js';
import { admissionReview, applyPatch, containers, decodePatch, httpsPost, pod } from './helpers.js';
import { PROXY, rewriteCases, unencodable } from './cases.js';

const PORT = 15060;
const ca = createCa('pullthrough-test-ca', { validityDays: 1 });
const serving = issueServingCert(ca, ['pullthrough-webhook.pullthrough.svc', 'localhost'], {
  validityDays: 1,
  ipAddresses: ['127.0.0.1'],
});
const policy = createRewritePolicy({
  proxyHost: PROXY,
  ownNamespace: 'pullthrough',
  ignoreImages: ['^docker\\.io/library/ignored'],
  acceptImages: [],
  skipPullPolicies: ['Never'],
});
const server = createWebhookServer({ policy, tls: serving, maxBodyBytes: 64 * 1024 });
await server.app.listen({ host: '127.0.0.1', port: PORT });
t.teardown(() => server.app.close());
const URL = `https://localhost:${PORT}/mutate`;

async function send(review: unknown) {
  const res = await httpsPost(URL, JSON.stringify(review), ca.cert);
  return { status: res.status, json: JSON.parse(res.body) };
}

t.test('every rewrite case over HTTPS, then a re-invocation of the patched pod', async (t) => {
  const spec = {
    initContainers: [{ name: 'init', image: 'busybox:1.36' }],
    containers: rewriteCases.map(([image], i) => ({ name: `c${i}`, image })),
  };
  const review = admissionReview(pod(spec)) as any;
  const { status, json } = await send(review);
  t.equal(status, 200);
  t.equal(json.apiVersion, 'admission.k8s.io/v1');
  t.equal(json.kind, 'AdmissionReview');
  t.equal(json.response.uid, review.request.uid);
  t.equal(json.response.allowed, true);
  t.equal(json.response.patchType, 'JSONPatch');
  const patched = applyPatch<any>(review.request.object, decodePatch(json.response));
  t.equal(patched.spec.initContainers[0].image, 'localhost:7439/docker.io/library/busybox:1.36');
  rewriteCases.forEach(([image, want], i) => t.equal(patched.spec.containers[i].image, want, image));
  const originals = JSON.parse(patched.metadata.annotations[ORIGINAL_IMAGES_ANNOTATION]);
  rewriteCases.forEach(([image], i) => t.equal(originals[`containers/c${i}`], image));

  // reinvocationPolicy: IfNeeded sends the already patched pod back: nothing more to do.
  const second = await send(admissionReview(patched));
  t.equal(second.status, 200);
  t.equal(second.json.response.allowed, true);
  t.notOk(second.json.response.patch, 're-invocation yields no patch');
});

t.test('every skip case is left alone with its reason in the annotation', async (t) => {
  const images: [string, string | undefined, RegExp][] = [
    ...unencodable.map(([i, r]) => [i, undefined, r] as [string, undefined, RegExp]),
    ['ignored:1', undefined, /--ignore-images/],
    ['nginx:1', 'Never', /imagePullPolicy Never/],
  ];
  const spec = {
    containers: images.map(([image, pp], i) => ({ name: `c${i}`, image, ...(pp ? { imagePullPolicy: pp } : {}) })),
  };
  const review = admissionReview(pod(spec, { annotations: { keep: 'me' } })) as any;
  const { json } = await send(review);
  const patched = applyPatch<any>(review.request.object, decodePatch(json.response));
  images.forEach(([image], i) => t.equal(patched.spec.containers[i].image, image, `${image} unchanged`));
  t.equal(patched.metadata.annotations.keep, 'me', 'existing annotations kept');
  const skipped = JSON.parse(patched.metadata.annotations[SKIPPED_IMAGES_ANNOTATION]);
  images.forEach(([image, , reason], i) => t.match(skipped[`containers/c${i}`], reason, image));
  t.notOk(patched.metadata.annotations[ORIGINAL_IMAGES_ANNOTATION]);

  for (const [ns, labels, reason] of [
    ['kube-system', {}, /namespace kube-system is excluded/],
    ['pullthrough', {}, /namespace pullthrough is excluded/],
    [
      'default',
      { 'pullthrough.dev/image-caching-policy': 'ignore' },
      /labelled pullthrough.dev\/image-caching-policy=ignore/,
    ],
  ] as const) {
    const r = admissionReview(pod({ containers: containers('nginx') }, { namespace: ns, labels }), {
      namespace: ns,
    }) as any;
    const res = await send(r);
    const out = applyPatch<any>(r.request.object, decodePatch(res.json.response));
    t.equal(out.spec.containers[0].image, 'nginx', ns);
    t.match(JSON.parse(out.metadata.annotations[SKIPPED_IMAGES_ANNOTATION])['containers/c0'], reason);
  }
});

t.test('ephemeral containers through the pods/ephemeralcontainers subresource', async (t) => {
  const old = pod({
    containers: containers('localhost:7439/docker.io/library/nginx:latest'),
    ephemeralContainers: [{ name: 'old', image: 'busybox' }],
  });
  const updated = structuredClone(old) as any;
  updated.spec.ephemeralContainers.push({ name: 'debugger', image: 'localhost:5000/tools/debug:1' });
  const review = admissionReview(updated, {
    operation: 'UPDATE',
    subResource: 'ephemeralcontainers',
    oldObject: old,
  }) as any;
  const { json } = await send(review);
  const out = applyPatch<any>(updated, decodePatch(json.response));
  t.equal(out.spec.ephemeralContainers[0].image, 'busybox', 'existing ephemeral container is immutable: untouched');
  t.equal(out.spec.ephemeralContainers[1].image, 'localhost:7439/localhost_5000/tools/debug:1');
  t.same(out.metadata, updated.metadata, 'no metadata change on the subresource');

  const plainUpdate = await send(admissionReview(updated, { operation: 'UPDATE', oldObject: old }));
  t.same(plainUpdate.json.response.patch, undefined, 'a plain pod UPDATE is allowed unchanged');
});

t.test('bad AdmissionReviews: 400 or allowed with a warning, never a crash', async (t) => {
  const bad = async (body: string | Buffer, headers?: Record<string, string>) => httpsPost(URL, body, ca.cert, headers);
  for (const [name, body] of [
    ['not JSON', '{nope'],
    ['empty', ''],
    ['array', '[]'],
    ['wrong kind', JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'Pod' })],
    [
      'v1beta1',
      JSON.stringify({ apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview', request: { uid: 'x' } }),
    ],
    ['no request', JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' })],
    ['no uid', JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: {} })],
  ] as const) {
    const res = await bad(body);
    t.equal(res.status, 400, name);
    t.ok(JSON.parse(res.body).error, `${name}: ${res.body}`);
  }
  const huge = await bad(Buffer.alloc(200 * 1024, 'a'));
  t.equal(huge.status, 400, 'huge body');
  t.match(JSON.parse(huge.body).error, /larger than/);
  const odd = await bad(JSON.stringify(admissionReview(pod({ containers: containers('nginx') }))), {
    'content-type': 'text/plain',
  });
  t.equal(odd.status, 200, 'content type is not held against the request');

  const deployment = admissionReview({ spec: {} }) as any;
  deployment.request.kind = { group: 'apps', version: 'v1', kind: 'Deployment' };
  const d = await send(deployment);
  t.equal(d.json.response.allowed, true);
  t.match(d.json.response.warnings, [/not a v1 Pod/]);
  const noObject = admissionReview(null) as any;
  const n = await send(noObject);
  t.equal(n.json.response.allowed, true);
  t.match(n.json.response.warnings, [/not a pod/]);

  // The server is still up and answering after all of that.
  const ok = await send(admissionReview(pod({ containers: containers('nginx') })));
  t.equal(ok.status, 200);
});

t.test('health endpoints and certificate rotation on a running server', async (t) => {
  const h = await server.app.inject({ method: 'GET', url: '/healthz' });
  t.equal(h.statusCode, 200);
  const ca2 = createCa('second-ca', { validityDays: 1 });
  server.updateTls(issueServingCert(ca2, ['localhost'], { validityDays: 1 }));
  await t.rejects(httpsPost(URL, '{}', ca.cert), /certificate|self.signed|verify/i, 'old CA no longer accepted');
  const res = await httpsPost(URL, JSON.stringify(admissionReview(pod({ containers: containers('nginx') }))), ca2.cert);
  t.equal(res.status, 200, 'new CA accepted');
});
