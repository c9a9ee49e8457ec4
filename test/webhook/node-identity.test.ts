/**
 * Safe by default: images of registries the kubelet authenticates with the node identity are left
 * alone with the reason, the list is the flag's, and `none` turns the rule off.
 */
/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-member-access,
  @typescript-eslint/no-unsafe-assignment --
  patched pods are walked as untyped JSON: a wrong path fails its assertion */
import t from 'tap';
import { mutatePod } from '../../src/webhook/mutate-pod.js';
import { createRewritePolicy, SKIPPED_IMAGES_ANNOTATION } from '../../src/webhook/policy.js';
import { DEFAULT_NODE_IDENTITY_REGISTRIES, parseWebhookConfig } from '../../src/config/webhook.js';
import { applyPatch, containers, pod } from './helpers.js';
import { PROXY } from './cases.js';

const ecr = '123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:1';
const nodeIdentityImages = [
  ecr,
  '123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/app:1',
  'europe-west4-docker.pkg.dev/project/repo/app:1',
  'gcr.io/project/app:1',
  'eu.gcr.io/project/app:1',
  'myregistry.azurecr.io/app:1',
];

t.test('by default, node-identity registries are left alone and say why', async (t) => {
  const policy = createRewritePolicy({ proxyHost: PROXY, ownNamespace: 'pullthrough' });
  const original = pod({ containers: containers(...nodeIdentityImages, 'nginx', 'quay.io/org/app:1') });
  const m = mutatePod(original, { namespace: 'default' }, policy);
  const patched = applyPatch<any>(original, m.patch);
  nodeIdentityImages.forEach((image, i) => {
    t.equal(patched.spec.containers[i].image, image, `${image} is unchanged`);
    t.match(m.skipped[`containers/c${i}`], /--node-identity-registries .*node identity/, image);
  });
  const n = nodeIdentityImages.length;
  t.equal(patched.spec.containers[n].image, 'localhost:7439/docker.io/library/nginx:latest');
  t.equal(patched.spec.containers[n + 1].image, 'localhost:7439/quay.io/org/app:1');
  const skipped = JSON.parse(patched.metadata.annotations[SKIPPED_IMAGES_ANNOTATION] as string) as Record<
    string,
    string
  >;
  t.match(skipped['containers/c0'], /registry 123456789012\.dkr\.ecr\.eu-west-1\.amazonaws\.com matches/);
  // Look-alikes outside the patterns are rewritten.
  const lookAlike = mutatePod(
    pod({ containers: containers('gcr.io.evil.example/app', 'azurecr.io/app') }),
    { namespace: 'd' },
    policy,
  );
  t.same(Object.keys(lookAlike.rewritten).sort(), ['containers/c0', 'containers/c1']);
});

t.test('an explicit list replaces the default; an empty one turns the rule off', async (t) => {
  const own = createRewritePolicy({ proxyHost: PROXY, ownNamespace: 'x', nodeIdentityRegistries: ['*.corp.example'] });
  const m = mutatePod(pod({ containers: containers(ecr, 'reg.corp.example/app') }), { namespace: 'd' }, own);
  t.same(Object.keys(m.rewritten), ['containers/c0']);
  t.match(m.skipped['containers/c1'], /\*\.corp\.example/);
  const off = createRewritePolicy({ proxyHost: PROXY, ownNamespace: 'x', nodeIdentityRegistries: [] });
  t.same(Object.keys(mutatePod(pod({ containers: containers(ecr) }), { namespace: 'd' }, off).rewritten), [
    'containers/c0',
  ]);
});

t.test('--node-identity-registries', async (t) => {
  const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
    const r = parseWebhookConfig(argv, env);
    if (r.help) throw new Error('help');
    return r.config.nodeIdentityRegistries;
  };
  t.same(parse([]), DEFAULT_NODE_IDENTITY_REGISTRIES, 'default');
  t.same(parse([], { PULLTHROUGH_NODE_IDENTITY_REGISTRIES: '' }), DEFAULT_NODE_IDENTITY_REGISTRIES, 'empty variable');
  t.same(parse(['--node-identity-registries=none']), []);
  t.same(parse(['--node-identity-registries=']), []);
  t.same(parse(['--node-identity-registries', 'a.example,*.b.example']), ['a.example', '*.b.example']);
  t.throws(() => parse(['--node-identity-registries=*']), /every image/);
});
