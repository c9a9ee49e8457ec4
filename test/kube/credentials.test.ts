/** Pod pull secrets: formats, ServiceAccounts, rotation, namespaces, and the CredentialSource. */
import t from 'tap';
import type { Credential } from '../../src/oci/credentials.js';
import {
  basicAuth,
  dockercfgSecret,
  dockerConfigSecret,
  eventually,
  listsOrWatchesSecrets,
  pod,
  serviceAccount,
  startHarness,
} from './helpers.js';

const WEB = { namespace: 'team-a', name: 'web' };
const secretOf = (c: Credential): string =>
  c.kind === 'basic'
    ? `basic ${c.username}:${c.password}`
    : c.kind === 'identity-token'
      ? `identity ${c.username}:${c.token}`
      : `registry ${c.token}`;

t.test('dockerconfigjson and dockercfg; auth, username/password, identitytoken, registrytoken', async (t) => {
  const { api, kube } = await startHarness(t);
  api.putSecret(
    dockerConfigSecret('team-a', 'json', {
      'private.example.com': basicAuth('alice', 'pw-a'),
      'tokens.example.com': { username: '<token>', identitytoken: 'refresh-1' },
      'bearer.example.com': { registrytoken: 'bearer-1' },
      'plain.example.com': { username: 'bob', password: 'pw-b' },
    }),
  );
  api.putSecret(dockercfgSecret('team-a', 'legacy', { 'https://legacy.example.com': basicAuth('carol', 'pw-c') }));
  api.addPod(
    pod('web', {
      images: [
        'private.example.com/app',
        'tokens.example.com/t',
        'bearer.example.com/b',
        'plain.example.com/p',
        'legacy.example.com/l',
      ],
      pullSecrets: ['json', 'legacy'],
    }),
  );
  await kube.informer.whenSynced();
  const c = kube.credentials;
  const got = async (registry: string, repo: string) => (await c.credentialsFor(WEB, registry, repo)).map(secretOf);
  t.same(await got('private.example.com', 'app'), ['basic alice:pw-a']);
  t.same(await got('tokens.example.com', 't'), ['identity <token>:refresh-1']);
  t.same(await got('bearer.example.com', 'b'), ['registry bearer-1']);
  t.same(await got('plain.example.com', 'p'), ['basic bob:pw-b']);
  t.same(await got('legacy.example.com', 'l'), ['basic carol:pw-c']);
  t.same(await got('other.example.com', 'x'), [], 'no key for that registry');
  const [one] = await c.credentialsFor(WEB, 'private.example.com', 'app');
  t.equal(one?.label, 'secret team-a/json private.example.com');
  t.same(one?.pod, WEB);
});

t.test('kubelet-style matching through a secret: wildcards, path prefixes, ports, Docker Hub aliases', async (t) => {
  const { api, kube } = await startHarness(t);
  api.putSecret(
    dockerConfigSecret('team-a', 'many', {
      '*.corp.example.com': basicAuth('wild', 'w'),
      'reg.example.com/team-a': basicAuth('team', 't'),
      'reg.example.com': basicAuth('host', 'h'),
      'ports.example.com:5000': basicAuth('port', 'p'),
      'https://index.docker.io/v1/': basicAuth('hub', 'd'),
    }),
  );
  api.addPod(pod('web', { pullSecrets: ['many'] }));
  await kube.informer.whenSynced();
  const users = async (registry: string, repo: string) =>
    (await kube.credentials.credentialsFor(WEB, registry, repo)).map((c) => (c.kind === 'basic' ? c.username : c.kind));
  t.same(await users('eu.corp.example.com', 'x/y'), ['wild']);
  t.same(await users('corp.example.com', 'x'), [], '*. needs a label');
  t.same(await users('a.b.corp.example.com', 'x'), [], '* matches one label only');
  t.same(await users('reg.example.com', 'team-a/app'), ['team', 'host'], 'the path prefix first, then the host');
  t.same(await users('reg.example.com', 'team-ab/app'), ['host'], 'a prefix ends at a path component');
  t.same(await users('ports.example.com:5000', 'x'), ['port']);
  t.same(await users('ports.example.com', 'x'), [], 'the port must match');
  for (const hub of ['docker.io', 'index.docker.io', 'registry-1.docker.io'])
    t.same(await users(hub, 'library/nginx'), ['hub'], hub);
});

t.test("a ServiceAccount's imagePullSecrets count, after the pod's own", async (t) => {
  const { api, kube } = await startHarness(t);
  api.putSecret(dockerConfigSecret('team-a', 'own', { 'private.example.com': basicAuth('own', '1') }));
  api.putSecret(dockerConfigSecret('team-a', 'from-sa', { 'private.example.com': basicAuth('sa', '2') }));
  api.putSecret(dockerConfigSecret('team-a', 'default-sa', { 'private.example.com': basicAuth('default', '3') }));
  api.putServiceAccount(serviceAccount('team-a', 'builder', ['from-sa', 'own']));
  api.putServiceAccount(serviceAccount('team-a', 'default', ['default-sa']));
  api.addPod(pod('web', { pullSecrets: ['own'], serviceAccount: 'builder' }));
  api.addPod(pod('plain', {}));
  await kube.informer.whenSynced();
  const users = async (p: { namespace: string; name: string }) =>
    (await kube.credentials.credentialsFor(p, 'private.example.com', 'x')).map((c) =>
      c.kind === 'basic' ? c.username : '',
    );
  t.same(await users(WEB), ['own', 'sa'], 'the pod first, the SA after, each secret once');
  t.same(await users({ namespace: 'team-a', name: 'plain' }), ['default'], 'no serviceAccountName means "default"');
});

t.test('rotation: when the cache expires the new password is used', async (t) => {
  const { api, kube } = await startHarness(t, { cacheTtlSeconds: 0.05 });
  api.putSecret(dockerConfigSecret('team-a', 'regcred', { 'private.example.com': basicAuth('u', 'old-password') }));
  api.addPod(pod('web', { pullSecrets: ['regcred'] }));
  await kube.informer.whenSynced();
  const password = async () => {
    const [c] = await kube.credentials.credentialsFor(WEB, 'private.example.com', 'x');
    return c?.kind === 'basic' ? c.password : undefined;
  };
  t.equal(await password(), 'old-password');
  api.putSecret(dockerConfigSecret('team-a', 'regcred', { 'private.example.com': basicAuth('u', 'new-password') }));
  await eventually(async () => (await password()) === 'new-password', 'rotated password');
  t.pass('rotated');
});

t.test('secrets are cached briefly: reads within the TTL make no request', async (t) => {
  const { api, kube } = await startHarness(t);
  api.putSecret(dockerConfigSecret('team-a', 'regcred', { 'private.example.com': basicAuth('u', 'p') }));
  api.addPod(pod('web', { pullSecrets: ['regcred'] }));
  api.addPod(pod('web2', { pullSecrets: ['regcred'] }));
  await kube.informer.whenSynced();
  await Promise.all([1, 2, 3].map(() => kube.credentials.credentialsFor(WEB, 'private.example.com', 'x')));
  await kube.credentials.credentialsFor({ namespace: 'team-a', name: 'web2' }, 'private.example.com', 'x');
  t.equal(api.count('/api/v1/namespaces/team-a/secrets/regcred'), 1);
  t.equal(api.count('/api/v1/namespaces/team-a/serviceaccounts/default'), 1);
  t.equal(api.count(listsOrWatchesSecrets), 0, 'never a list or watch of secrets, cluster-wide or namespaced');
});

t.test('the list-or-watch filter catches namespaced and cluster-wide lists and watches of secrets', async (t) => {
  const { api } = await startHarness(t);
  api.putSecret(dockerConfigSecret('team-a', 'regcred', { 'private.example.com': basicAuth('u', 'p') }));
  const watches = new AbortController();
  t.teardown(() => watches.abort());
  const get = async (path: string): Promise<void> => {
    const res = await fetch(`${api.url}${path}`, { signal: watches.signal });
    if (!path.includes('watch')) await res.arrayBuffer();
  };
  await get('/api/v1/namespaces/team-a/secrets/regcred');
  t.equal(api.count(listsOrWatchesSecrets), 0, 'reading one named secret is not a list');
  await get('/api/v1/namespaces/team-a/secrets');
  await get('/api/v1/secrets');
  await get('/api/v1/namespaces/team-a/secrets?watch=true');
  await get('/api/v1/secrets?watch=1');
  await get('/api/v1/watch/namespaces/team-a/secrets');
  t.equal(api.count(listsOrWatchesSecrets), 5, 'every list and watch is caught');
  t.equal(
    api.count((r) => r.path.includes('/secrets') && !r.path.includes('/namespaces/')),
    2,
    'a filter on cluster-wide paths alone misses the namespaced three',
  );
});

t.test('cross-namespace isolation: a pod never gets a secret from another namespace', async (t) => {
  const { api, kube } = await startHarness(t);
  api.putSecret(dockerConfigSecret('team-b', 'regcred', { 'private.example.com': basicAuth('b', 'team-b-password') }));
  api.putServiceAccount(serviceAccount('team-b', 'default', ['regcred']));
  api.addPod(pod('web', { namespace: 'team-a', images: ['private.example.com/x'], pullSecrets: ['regcred'] }));
  await kube.informer.whenSynced();
  const lookup = await kube.credentials.lookup(WEB, 'private.example.com', 'x');
  t.same(lookup.credentials, []);
  t.match(lookup.skipped, [
    { source: 'serviceaccount team-a/default', reason: 'NotFound' },
    { source: 'secret team-a/regcred', reason: 'NotFound' },
  ]);
  t.equal(
    api.count((r) => r.path.includes('/namespaces/team-b/')),
    0,
    'team-b was never read',
  );
});

t.test('missing, wrong-type and garbled secrets are skipped with a reason; the rest still works', async (t) => {
  const { api, kube } = await startHarness(t);
  api.putSecret(dockerConfigSecret('team-a', 'good', { 'private.example.com': basicAuth('u', 'p') }));
  api.putSecret({
    metadata: { namespace: 'team-a', name: 'opaque' },
    type: 'Opaque',
    data: { '.dockerconfigjson': 'e30=' },
  });
  api.putSecret({
    metadata: { namespace: 'team-a', name: 'garbled' },
    type: 'kubernetes.io/dockerconfigjson',
    data: { '.dockerconfigjson': Buffer.from('{not json: hunter2').toString('base64') },
  });
  api.putSecret({ metadata: { namespace: 'team-a', name: 'empty' }, type: 'kubernetes.io/dockerconfigjson', data: {} });
  api.addPod(pod('web', { pullSecrets: ['missing', 'opaque', 'garbled', 'empty', 'good'] }));
  await kube.informer.whenSynced();
  const lookup = await kube.credentials.lookup(WEB, 'private.example.com', 'x');
  t.equal(lookup.credentials.length, 1);
  t.same(
    lookup.skipped.filter((s) => s.source.startsWith('secret')),
    [
      { source: 'secret team-a/missing', reason: 'NotFound' },
      { source: 'secret team-a/opaque', reason: 'type Opaque is not an image pull secret type' },
      { source: 'secret team-a/garbled', reason: '.dockerconfigjson is not valid JSON' },
      { source: 'secret team-a/empty', reason: 'no .dockerconfigjson key' },
    ],
  );
  const unknown = await kube.credentials.lookup({ namespace: 'team-a', name: 'nope' }, 'private.example.com', 'x');
  t.equal(unknown.known, false);
});

t.test('the CredentialSource: every pod using the repository, a shared secret once', async (t) => {
  const { api, kube } = await startHarness(t);
  api.putSecret(dockerConfigSecret('team-a', 'shared', { 'private.example.com': basicAuth('shared', 's') }));
  api.putSecret(dockerConfigSecret('team-b', 'shared', { 'private.example.com': basicAuth('shared', 's') }));
  api.putSecret(dockerConfigSecret('team-b', 'own', { 'private.example.com': basicAuth('b', 'b') }));
  api.addPod(pod('a1', { images: ['private.example.com/app:1'], pullSecrets: ['shared'] }));
  api.addPod(
    pod('b1', {
      namespace: 'team-b',
      images: ['private.example.com/app@sha256:' + 'a'.repeat(64)],
      pullSecrets: ['own', 'shared'],
    }),
  );
  api.addPod(pod('other', { images: ['private.example.com/other'], pullSecrets: ['shared'] }));
  await kube.informer.whenSynced();
  const creds = await kube.source.credentialsFor({ registry: 'private.example.com', repository: 'app' });
  t.same(
    creds.map((c) => [c.kind === 'basic' ? c.username : '', c.pods.map((p) => `${p.namespace}/${p.name}`)]),
    [
      ['shared', ['team-a/a1', 'team-b/b1']],
      ['b', ['team-b/b1']],
    ],
  );
  t.same(await kube.source.credentialsFor({ registry: 'private.example.com', repository: 'nobody' }), []);
  // A request for a public image used by no pod costs no API request. The lookup after it, for an
  // image a pod of team-c uses, does reach the API server: the requests counted after it are its.
  api.addPod(pod('c1', { namespace: 'team-c', images: ['marker.example.com/m'], pullSecrets: ['marker'] }));
  await eventually(() => kube.credentials.podsUsing('marker.example.com', 'm').length === 1, 'the marker pod');
  const before = api.requests.length;
  await kube.source.credentialsFor({ registry: 'docker.io', repository: 'library/alpine' });
  await kube.source.credentialsFor({ registry: 'marker.example.com', repository: 'm' });
  // The informer's own list/watch of pods may come at any time: not a credentials request.
  const after = api.requests
    .slice(before)
    .map((r) => r.path)
    .filter((p) => p !== '/api/v1/pods');
  t.ok(after.length > 0, 'the marker lookup reached the API server');
  t.same(
    after.filter((p) => !p.startsWith('/api/v1/namespaces/team-c/')),
    [],
    'and nothing else did: none for the public image',
  );
});

t.test('rewritten images and the original-images annotation are both indexed', async (t) => {
  const { api, kube } = await startHarness(t);
  api.addPod(
    pod('web', {
      images: ['localhost:7439/myreg_5000/team/app:1', 'localhost:7439/docker.io/library/nginx:1.25'],
      annotations: {
        'pullthrough.dev/original-images': JSON.stringify({
          c0: 'myreg:5000/team/app:1',
          c9: 'ghcr.io/acme/sidecar:2',
        }),
      },
    }),
  );
  api.addPod(
    pod('garbled', { images: ['quay.io/x/y'], annotations: { 'pullthrough.dev/original-images': '{"c0": ' } }),
  );
  await kube.informer.whenSynced();
  const c = kube.credentials;
  t.same(
    c.podsUsing('myreg:5000', 'team/app').map((p) => p.name),
    ['web'],
  );
  t.same(
    c.podsUsing('docker.io', 'library/nginx').map((p) => p.name),
    ['web'],
  );
  t.same(
    c.podsUsing('ghcr.io', 'acme/sidecar').map((p) => p.name),
    ['web'],
    'from the annotation',
  );
  t.same(
    c.podsUsing('quay.io', 'x/y').map((p) => p.name),
    ['garbled'],
    'a garbled annotation is ignored, the images still count',
  );
});
