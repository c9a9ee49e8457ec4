/** Client construction: no request, no waiting, clear errors for missing configuration. */
import t from 'tap';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { createKubeClient, resolveNodeName } from '../../src/kube/index.js';

t.test('building a client makes no request', async (t) => {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  const client = createKubeClient({ kubeconfig: await writeKubeconfig(api) });
  t.equal(client.server, api.url);
  t.equal(api.requests.length, 0);
});

t.test('a kubeconfig for a stopped server still builds', async (t) => {
  const api = await FakeApiServer.start();
  const path = await writeKubeconfig(api);
  await api.close();
  t.ok(createKubeClient({ kubeconfig: path }));
});

t.test('bearer tokens from the kubeconfig are sent', async (t) => {
  const api = await FakeApiServer.start({ token: 'tok' });
  t.teardown(() => api.close());
  api.putSecret({ metadata: { namespace: 'ns', name: 's' }, type: 'Opaque' });
  const client = createKubeClient({ kubeconfig: await writeKubeconfig(api, { token: 'tok' }) });
  t.equal((await client.core.readNamespacedSecret({ namespace: 'ns', name: 's' })).metadata?.name, 's');
});

t.test('configuration errors are clear and carry no file content', async (t) => {
  t.throws(() => createKubeClient({ env: {} }), { name: 'KubeConfigError', message: /KUBERNETES_SERVICE_HOST/ });
  t.throws(() => createKubeClient({ kubeconfig: '/nonexistent/kubeconfig' }), {
    name: 'KubeConfigError',
    message: /cannot load kubeconfig \/nonexistent\/kubeconfig: ENOENT/,
  });
});

t.test('node name from the flag, else NODE_NAME', async (t) => {
  t.equal(resolveNodeName('flag-node', { NODE_NAME: 'env-node' }), 'flag-node');
  t.equal(resolveNodeName(undefined, { NODE_NAME: 'env-node' }), 'env-node');
  t.equal(resolveNodeName(undefined, {}), undefined);
  t.equal(resolveNodeName(' ', {}), undefined);
});
