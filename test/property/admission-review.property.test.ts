/**
 * AdmissionReview properties: any body text gets a valid AdmissionReview answer or a clear 400,
 * never an exception; a generated pod's patch applies as the API server applies it, changes
 * nothing but container images and pullthrough's annotations, rewrites exactly the images the
 * policy says, and a second review of the patched pod changes nothing.
 */
import t from 'tap';
import fc from 'fast-check';
import { reviewText, type ReviewOutcome } from '../../src/webhook/admission-review.js';
import {
  createRewritePolicy,
  IGNORE_LABEL,
  IGNORE_LABEL_VALUE,
  ORIGINAL_IMAGES_ANNOTATION,
  SKIPPED_IMAGES_ANNOTATION,
} from '../../src/webhook/policy.js';
import { decideImage } from '../../src/webhook/rewrite-image.js';
import { admissionReview, applyPatch, decodePatch } from '../webhook/helpers.js';
import { runs } from './settings.js';

type Json = Record<string, unknown>;
const PROXY = 'localhost:7439';
const policy = createRewritePolicy({
  proxyHost: PROXY,
  ownNamespace: 'pullthrough',
  ignoreImages: ['^docker\\.io/library/busybox'],
  skipPullPolicies: ['Never'],
});
const FIELDS = ['initContainers', 'containers', 'ephemeralContainers'] as const;

/** Throws unless the outcome is a 400 with a message or a well-formed AdmissionReview answer. */
function checkOutcome(out: ReviewOutcome, uid?: string): void {
  if (out.status === 400) {
    if (typeof out.error !== 'string' || out.error === '') throw new Error('400 without an error');
    return;
  }
  const { body } = out;
  // The types say these are constant; this checks what actually comes out at run time.
  const apiVersion: unknown = body.apiVersion;
  const kind: unknown = body.kind;
  if (apiVersion !== 'admission.k8s.io/v1' || kind !== 'AdmissionReview')
    throw new Error(`not an AdmissionReview: ${JSON.stringify(body)}`);
  const r = body.response;
  if (typeof r.uid !== 'string' || r.uid === '' || (uid !== undefined && r.uid !== uid))
    throw new Error(`uid ${JSON.stringify(r.uid)}`);
  const allowed: unknown = r.allowed;
  if (allowed !== true) throw new Error('not allowed');
  if (r.patch !== undefined) {
    if (r.patchType !== 'JSONPatch') throw new Error('patch without patchType');
    const ops = decodePatch(r);
    if (
      !Array.isArray(ops) ||
      ops.length === 0 ||
      !ops.every((o) => typeof o.op === 'string' && typeof o.path === 'string')
    )
      throw new Error(`bad patch ${JSON.stringify(ops)}`);
  }
  // What the API server reads must survive its JSON round trip.
  JSON.parse(JSON.stringify(body));
}

/**
 * Pods as the API server sends them (it decodes into the typed Pod first): metadata an object,
 * labels and annotations string maps, containers objects with a string name; `typed: false`
 * also gives what no API server sends (null, numbers, lists where objects belong).
 */
function podArbitrary(typed: boolean) {
  const image = fc.oneof(
    {
      weight: 6,
      arbitrary: fc.constantFrom(
        'nginx',
        'nginx:1.27',
        'busybox:1.36',
        'quay.io/org/app:v1',
        'myreg:5000/team/app',
        'localhost/foo',
        '[::1]:5000/x',
        'MyReg/app',
        `ghcr.io/o/a@sha256:${'ab'.repeat(32)}`,
        `${PROXY}/docker.io/library/nginx:latest`,
        `${PROXY}/foo`,
        'Not A Ref',
        '',
      ),
    },
    { weight: 2, arbitrary: fc.stringMatching(/^[a-z0-9]{1,8}(\/[a-z0-9]{1,8}){0,2}(:[a-z0-9]{1,5})?$/) },
    { weight: 1, arbitrary: fc.string({ maxLength: 20 }) },
    {
      weight: 1,
      arbitrary: typed
        ? fc.constant(undefined)
        : fc.oneof(fc.integer(), fc.constant(null), fc.constant(undefined), fc.object({ maxDepth: 1 })),
    },
  );
  const name = fc.oneof(
    fc.constantFrom('app', 'side', 'init', 'a/b', '~x', '__proto__'),
    fc.string({ maxLength: 8 }),
    typed ? fc.constant('n') : fc.integer(),
  );
  const container = fc.oneof(
    {
      weight: 9,
      arbitrary: fc.record(
        {
          name,
          image,
          imagePullPolicy: typed
            ? fc.constantFrom('Always', 'IfNotPresent', 'Never')
            : fc.constantFrom('Always', 'IfNotPresent', 'Never', 7),
          ports: fc.constant([{ containerPort: 80 }]),
          env: fc.array(fc.record({ name: fc.string({ maxLength: 5 }), value: fc.string({ maxLength: 5 }) }), {
            maxLength: 2,
          }),
        },
        { requiredKeys: ['name'] },
      ),
    },
    {
      weight: typed ? 0 : 1,
      arbitrary: fc.oneof(fc.constant(null), fc.string({ maxLength: 4 }), fc.integer(), fc.constant([])),
    },
  );
  const annotationText = fc.oneof(
    fc
      .dictionary(
        fc.constantFrom('containers/app', 'containers/side', 'initContainers/init', 'x'),
        fc.string({ maxLength: 12 }),
      )
      .map((d) => JSON.stringify(d)),
    fc.string({ maxLength: 12 }),
  );
  const metadata = fc.record(
    {
      name: fc.constant('p'),
      namespace: fc.constantFrom('default', 'kube-system', 'team-a'),
      labels: fc.oneof(
        fc.dictionary(fc.constantFrom('app', IGNORE_LABEL), fc.constantFrom('web', IGNORE_LABEL_VALUE)),
        typed ? fc.constant({}) : fc.constant(null),
      ),
      annotations: fc.oneof(
        fc.record(
          {
            [ORIGINAL_IMAGES_ANNOTATION]: annotationText,
            [SKIPPED_IMAGES_ANNOTATION]: annotationText,
            'other/x': fc.string({ maxLength: 6 }),
          },
          { requiredKeys: [] },
        ),
        ...(typed ? [] : [fc.constant(null), fc.string({ maxLength: 4 })]),
      ),
    },
    { requiredKeys: [] },
  );
  return fc
    .record(
      {
        metadata: fc.oneof(
          { weight: 9, arbitrary: metadata },
          { weight: typed ? 0 : 1, arbitrary: fc.constantFrom(null, 'x', [] as unknown) },
        ),
        initContainers: fc.array(container, { maxLength: 2 }),
        containers: fc.array(container, { minLength: 1, maxLength: 4 }),
        ephemeralContainers: fc.array(container, { maxLength: 2 }),
        nodeName: fc.string({ maxLength: 6 }),
      },
      { requiredKeys: ['containers'] },
    )
    .map(({ metadata: m, nodeName, ...lists }) => ({
      apiVersion: 'v1',
      kind: 'Pod',
      ...(m !== undefined ? { metadata: m } : {}),
      spec: { ...lists, ...(nodeName !== undefined ? { nodeName } : {}), restartPolicy: 'Always' },
    }));
}
const typedPod = podArbitrary(true);
const pod = podArbitrary(false);

/** The pod with every container image and pullthrough's annotations taken out. */
function withoutImages(p: Json): Json {
  const c = structuredClone(p) as Json & { spec: Json; metadata?: unknown };
  for (const f of FIELDS) {
    const list = c.spec[f];
    if (Array.isArray(list))
      for (const x of list) if (typeof x === 'object' && x !== null && !Array.isArray(x)) delete (x as Json).image;
  }
  const m = c.metadata as Json | undefined;
  if (m && typeof m === 'object' && !Array.isArray(m) && m.annotations && typeof m.annotations === 'object') {
    const a = Object.fromEntries(
      Object.entries(m.annotations).filter(
        ([k]) => k !== ORIGINAL_IMAGES_ANNOTATION && k !== SKIPPED_IMAGES_ANNOTATION,
      ),
    );
    if (Object.keys(a).length === 0) delete m.annotations;
    else m.annotations = a;
  }
  // A pod without metadata gets an empty one to hold the annotations.
  if (m && typeof m === 'object' && !Array.isArray(m) && Object.keys(m).length === 0) delete c.metadata;
  return c;
}

const normal = (v: unknown) =>
  JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === 'object' && !Array.isArray(x)
      ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : 1)))
      : x,
  );

t.test("a generated pod's patch applies and rewrites only images, as the policy decides", async (t) => {
  let rewritten = 0;
  fc.assert(
    fc.property(typedPod, fc.constantFrom('default', 'team-a', 'kube-system', 'pullthrough'), (p0, namespace) => {
      // What the API server sends is JSON: undefined members are gone.
      const p = JSON.parse(JSON.stringify(p0)) as Json & { spec: Json; metadata?: unknown };
      const review = admissionReview(p, { namespace }) as { request: { uid: string } };
      const out = reviewText(JSON.stringify(review), policy);
      checkOutcome(out, review.request.uid);
      if (out.status !== 200) throw new Error('a pod review was refused');
      const patched = applyPatch(p, decodePatch(out.body.response)) as Json & { spec: Json; metadata?: Json };
      if (normal(withoutImages(patched)) !== normal(withoutImages(p)))
        throw new Error(
          `the patch changed more than images:\n${normal(withoutImages(p))}\n${normal(withoutImages(patched))}`,
        );
      const meta = p.metadata as Json | undefined;
      const labels =
        meta && typeof meta === 'object' && !Array.isArray(meta) && meta.labels && typeof meta.labels === 'object'
          ? (meta.labels as Json)
          : {};
      const podSkipped = policy.excludedNamespaces.has(namespace) || labels[IGNORE_LABEL] === IGNORE_LABEL_VALUE;
      for (const f of FIELDS) {
        const before = (p.spec[f] ?? []) as unknown[];
        const after = (patched.spec[f] ?? []) as unknown[];
        before.forEach((c, i) => {
          if (typeof c !== 'object' || c === null || Array.isArray(c)) return;
          const was = (c as Json).image;
          const now = (after[i] as Json).image;
          const d = decideImage(was, (c as Json).imagePullPolicy, policy);
          const want = !podSkipped && d.action === 'rewrite' ? d.image : was;
          if (now !== want)
            throw new Error(
              `${f}[${i}] ${JSON.stringify(was)} became ${JSON.stringify(now)}, want ${JSON.stringify(want)}`,
            );
          if (now !== was) rewritten++;
        });
      }
      // Re-invocation (reinvocationPolicy: IfNeeded) changes nothing more.
      const again = reviewText(JSON.stringify(admissionReview(patched, { namespace })), policy);
      checkOutcome(again);
      if (again.status === 200 && again.body.response.patch !== undefined) {
        throw new Error(`second review patched again: ${JSON.stringify(decodePatch(again.body.response))}`);
      }
    }),
    runs(3000),
  );
  t.ok(rewritten > 1000, `${rewritten} images rewritten in 3000 generated pods`);
});

t.test("an ephemeral-container update patches only the new ephemeral containers' images", async (t) => {
  fc.assert(
    fc.property(typedPod, fc.nat(), (p0, keep) => {
      const p = JSON.parse(JSON.stringify(p0)) as Json & { spec: Json };
      const eph = (p.spec.ephemeralContainers ?? []) as Json[];
      const old = {
        ...p,
        spec: { ...p.spec, ephemeralContainers: eph.slice(0, eph.length === 0 ? 0 : keep % (eph.length + 1)) },
      };
      const oldNames = new Set(old.spec.ephemeralContainers.map((c) => String(c.name)));
      const out = reviewText(
        JSON.stringify(admissionReview(p, { operation: 'UPDATE', subResource: 'ephemeralcontainers', oldObject: old })),
        policy,
      );
      checkOutcome(out);
      if (out.status !== 200) throw new Error('refused');
      for (const op of decodePatch(out.body.response)) {
        const m = /^\/spec\/ephemeralContainers\/(\d+)\/image$/.exec(op.path);
        if (op.op !== 'replace' || !m) throw new Error(`op ${JSON.stringify(op)} outside new ephemeral containers`);
        if (oldNames.has(String(eph[Number(m[1])]?.name)))
          throw new Error(`existing ephemeral container ${Number(m[1])} patched`);
      }
    }),
    runs(2000),
  );
  t.pass('2000 generated updates');
});

t.test('any body gets an AdmissionReview answer or a clear 400, never an exception', async (t) => {
  const anyValue = fc.anything({ maxDepth: 3, withNullPrototype: false });
  const reviewish = fc
    .record(
      {
        apiVersion: fc.oneof(fc.constant('admission.k8s.io/v1'), anyValue),
        kind: fc.oneof(fc.constant('AdmissionReview'), anyValue),
        request: fc.oneof(
          fc.record(
            {
              uid: fc.oneof(fc.uuid(), fc.constant(''), anyValue),
              kind: fc.oneof(fc.constant({ group: '', version: 'v1', kind: 'Pod' }), anyValue),
              operation: fc.oneof(fc.constantFrom('CREATE', 'UPDATE', 'DELETE'), anyValue),
              subResource: fc.oneof(fc.constantFrom('ephemeralcontainers', 'status'), anyValue),
              namespace: fc.oneof(fc.constantFrom('default', 'kube-system'), anyValue),
              object: fc.oneof(pod, anyValue, fc.constant({ spec: { containers: 'x' } })),
              oldObject: fc.oneof(pod, anyValue),
            },
            { requiredKeys: [] },
          ),
          anyValue,
        ),
      },
      { requiredKeys: [] },
    )
    .map((v) => JSON.stringify(v));
  const text = fc.oneof(
    reviewish,
    fc.json({ maxDepth: 3 }),
    fc.string({ maxLength: 40 }),
    fc.string({ unit: 'binary', maxLength: 40 }),
  );
  fc.assert(
    fc.property(text, (body) => {
      checkOutcome(reviewText(body, policy));
    }),
    runs(4000),
  );
  t.pass('4000 generated bodies');
});
