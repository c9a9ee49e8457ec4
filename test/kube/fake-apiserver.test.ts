/** The fake API server speaks the protocol the real client expects. */
import t from 'tap';
import * as k8s from '@kubernetes/client-node';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';

async function client(api: FakeApiServer, token?: string): Promise<k8s.KubeConfig> {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(await writeKubeconfig(api, token !== undefined ? { token } : {}));
  return kc;
}

const pod = (name: string, node: string, ns = 'default') => ({
  metadata: { namespace: ns, name },
  spec: { nodeName: node, containers: [{ name: 'c', image: 'nginx' }] },
});

t.test('list honours field selectors and carries a resourceVersion', async (t) => {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  api.addPod(pod('a', 'n1'));
  api.addPod(pod('b', 'n2'));
  api.addPod(pod('c', 'n1', 'other'));
  const core = (await client(api)).makeApiClient(k8s.CoreV1Api);
  const all = await core.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=n1' });
  t.same(all.items.map((p) => p.metadata?.name).sort(), ['a', 'c']);
  t.match(all.metadata?.resourceVersion, /^\d+$/);
  const ns = await core.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=n1,metadata.namespace=other' });
  t.same(
    ns.items.map((p) => p.metadata?.name),
    ['c'],
  );
  const inNs = await core.listNamespacedPod({ namespace: 'default' });
  t.same(inNs.items.map((p) => p.metadata?.name).sort(), ['a', 'b']);
});

t.test('watch streams events from a resourceVersion, and 410 after compaction', async (t) => {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  api.addPod(pod('a', 'n1'));
  const rv = String(api.store.resourceVersion);
  api.addPod(pod('b', 'n1'));
  api.addPod(pod('x', 'n2'));
  api.deletePod('default', 'a');
  const kc = await client(api);
  const events: string[] = [];
  let done!: (err: unknown) => void;
  const finished = new Promise((r) => (done = r));
  const w = new k8s.Watch(kc);
  const ctl = await w.watch(
    '/api/v1/pods',
    { resourceVersion: rv, fieldSelector: 'spec.nodeName=n1' },
    (type, obj) => {
      events.push(`${type} ${(obj as { metadata: { name: string } }).metadata.name}`);
      if (events.length === 2) api.closeWatches();
    },
    done,
  );
  await finished;
  ctl.abort();
  t.same(events, ['ADDED b', 'DELETED a']);

  api.compact();
  const got: { type: string; code?: number }[] = [];
  const ended = new Promise((r) => (done = r));
  await w.watch(
    '/api/v1/pods',
    { resourceVersion: rv },
    (type, obj) => got.push({ type, code: (obj as { code?: number }).code }),
    done,
  );
  await ended;
  t.same(got, [{ type: 'ERROR', code: 410 }]);

  api.setExpiredWatchMode('http');
  const err = await new Promise<unknown>(
    (r) => void w.watch('/api/v1/pods', { resourceVersion: rv }, () => undefined, r),
  );
  t.equal((err as { statusCode?: number }).statusCode, 410);
});

t.test('secrets: create, get, replace, and 404/409 as Status', async (t) => {
  const api = await FakeApiServer.start({ token: 'sekrit-token' });
  t.teardown(() => api.close());
  const core = (await client(api, 'sekrit-token')).makeApiClient(k8s.CoreV1Api);
  const created = await core.createNamespacedSecret({
    namespace: 'pt',
    body: { metadata: { name: 'tls' }, type: 'kubernetes.io/tls', data: { 'tls.crt': 'YQ==' } },
  });
  t.equal(created.metadata?.namespace, 'pt');
  const again = core.createNamespacedSecret({ namespace: 'pt', body: { metadata: { name: 'tls' } } });
  await t.rejects(again, { code: 409 });
  const got = await core.readNamespacedSecret({ namespace: 'pt', name: 'tls' });
  t.equal(got.data?.['tls.crt'], 'YQ==');
  await core.replaceNamespacedSecret({ namespace: 'pt', name: 'tls', body: { ...got, data: { 'tls.crt': 'Yg==' } } });
  t.equal(api.object<{ data: Record<string, string> }>('Secret', 'pt', 'tls')?.data['tls.crt'], 'Yg==');
  // A stale resourceVersion conflicts.
  await t.rejects(core.replaceNamespacedSecret({ namespace: 'pt', name: 'tls', body: got }), { code: 409 });
  await t.rejects(core.readNamespacedSecret({ namespace: 'pt', name: 'nope' }), { code: 404 });
  const unauth = (await client(api, 'wrong')).makeApiClient(k8s.CoreV1Api);
  await t.rejects(unauth.readNamespacedSecret({ namespace: 'pt', name: 'tls' }), { code: 401 });
});

t.test('mutatingwebhookconfigurations: get, json-patch, merge-patch', async (t) => {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  api.put('MutatingWebhookConfiguration', {
    metadata: { name: 'pullthrough' },
    webhooks: [{ name: 'a.pullthrough.dev', clientConfig: { service: { name: 's', namespace: 'pt' } } }],
  });
  const adm = (await client(api)).makeApiClient(k8s.AdmissionregistrationV1Api);
  const got = await adm.readMutatingWebhookConfiguration({ name: 'pullthrough' });
  t.equal(got.webhooks?.length, 1);
  await adm.patchMutatingWebhookConfiguration({
    name: 'pullthrough',
    body: [{ op: 'add', path: '/webhooks/0/clientConfig/caBundle', value: 'Q0E=' }],
  });
  t.equal(
    (await adm.readMutatingWebhookConfiguration({ name: 'pullthrough' })).webhooks?.[0]?.clientConfig.caBundle,
    'Q0E=',
  );
  await adm.patchMutatingWebhookConfiguration(
    { name: 'pullthrough', body: { metadata: { labels: { a: 'b' } } } },
    k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
  );
  t.same(api.object('MutatingWebhookConfiguration', undefined, 'pullthrough')?.metadata?.labels, { a: 'b' });
  const failed = adm.patchMutatingWebhookConfiguration({
    name: 'pullthrough',
    body: [{ op: 'test', path: '/webhooks/0/name', value: 'other' }],
  });
  await t.rejects(failed, { code: 422 });
  t.equal(api.count('/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/pullthrough', 'PATCH'), 3);
});

t.test('cachedimages: status only through /status, generation counts spec changes, conflicts', async (t) => {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  const co = (await client(api)).makeApiClient(k8s.CustomObjectsApi);
  const ref = { group: 'pullthrough.dev', version: 'v1alpha1', plural: 'cachedimages' };
  const created = (await co.createClusterCustomObject({
    ...ref,
    body: {
      apiVersion: 'pullthrough.dev/v1alpha1',
      kind: 'CachedImage',
      metadata: { name: 'nginx-1' },
      spec: { image: 'docker.io/library/nginx:1' },
      status: { phase: 'Cached' },
    },
  })) as { metadata: { resourceVersion: string; generation: number }; status?: unknown };
  t.equal(created.status, undefined, 'a create drops the status');
  t.equal(created.metadata.generation, 1);

  const statusPatched = (await co.patchClusterCustomObjectStatus(
    { ...ref, name: 'nginx-1', body: { status: { phase: 'Caching' }, spec: { image: 'ignored' } } },
    k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
  )) as { spec: { image: string }; status: { phase: string }; metadata: { generation: number } };
  t.equal(statusPatched.status.phase, 'Caching');
  t.equal(statusPatched.spec.image, 'docker.io/library/nginx:1', '/status leaves the spec alone');
  t.equal(statusPatched.metadata.generation, 1, 'a status write is not a new generation');

  const specPatched = (await co.patchClusterCustomObject(
    { ...ref, name: 'nginx-1', body: { spec: { retain: true }, status: { phase: 'Failed' } } },
    k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
  )) as { spec: { retain: boolean }; status: { phase: string }; metadata: { generation: number } };
  t.equal(specPatched.spec.retain, true);
  t.equal(specPatched.status.phase, 'Caching', 'a write to the object leaves the status alone');
  t.equal(specPatched.metadata.generation, 2);

  const stale = co.replaceClusterCustomObjectStatus({
    ...ref,
    name: 'nginx-1',
    body: { ...specPatched, metadata: { ...specPatched.metadata, resourceVersion: created.metadata.resourceVersion } },
  });
  await t.rejects(stale, { code: 409 }, 'a status write from an old resourceVersion conflicts');

  const listed = (await co.listClusterCustomObject(ref)) as { items: { metadata: { name: string } }[] };
  t.same(
    listed.items.map((i) => i.metadata.name),
    ['nginx-1'],
  );
  t.equal(api.count('/apis/pullthrough.dev/v1alpha1/cachedimages/nginx-1/status', 'PATCH'), 1);
});

t.test('leases: create, optimistic replace, 409 for the loser', async (t) => {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  const coord = (await client(api)).makeApiClient(k8s.CoordinationV1Api);
  const lease = await coord.createNamespacedLease({
    namespace: 'pt',
    body: { metadata: { name: 'controller' }, spec: { holderIdentity: 'a', leaseDurationSeconds: 15 } },
  });
  const b = await coord.replaceNamespacedLease({
    namespace: 'pt',
    name: 'controller',
    body: { metadata: lease.metadata, spec: { leaseDurationSeconds: 15, holderIdentity: 'b' } },
  });
  t.equal(b.spec?.holderIdentity, 'b');
  await t.rejects(
    coord.replaceNamespacedLease({
      namespace: 'pt',
      name: 'controller',
      body: { metadata: lease.metadata, spec: { leaseDurationSeconds: 15, holderIdentity: 'c' } },
    }),
    { code: 409 },
  );
  t.equal((await coord.readNamespacedLease({ namespace: 'pt', name: 'controller' })).spec?.holderIdentity, 'b');
});

t.test('events: core/v1 and events.k8s.io/v1 are created and listed apart', async (t) => {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  const kc = await client(api);
  await kc.makeApiClient(k8s.CoreV1Api).createNamespacedEvent({
    namespace: 'default',
    body: {
      metadata: { name: 'p.1' },
      involvedObject: { kind: 'Pod', namespace: 'default', name: 'p' },
      reason: 'Pulled',
      message: 'served stale',
    },
  });
  await kc.makeApiClient(k8s.EventsV1Api).createNamespacedEvent({
    namespace: 'default',
    body: { metadata: { name: 'ci.1' }, eventTime: new k8s.V1MicroTime(), reason: 'Cached', action: 'Cache' },
  });
  const core = await kc.makeApiClient(k8s.CoreV1Api).listNamespacedEvent({ namespace: 'default' });
  t.same(
    core.items.map((e) => e.reason),
    ['Pulled'],
  );
  const events = await kc.makeApiClient(k8s.EventsV1Api).listNamespacedEvent({ namespace: 'default' });
  t.same(
    events.items.map((e) => e.reason),
    ['Cached'],
  );
});

t.test('stop and restart on the same port keep the state', async (t) => {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  api.putSecret({ metadata: { namespace: 'ns', name: 's' }, data: {} });
  const port = api.port;
  const core = (await client(api)).makeApiClient(k8s.CoreV1Api);
  await api.stop();
  await t.rejects(core.readNamespacedSecret({ namespace: 'ns', name: 's' }));
  await api.restart();
  t.equal(api.port, port);
  t.equal((await core.readNamespacedSecret({ namespace: 'ns', name: 's' })).metadata?.name, 's');
});
