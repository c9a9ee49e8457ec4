/** The webhook's certificate bootstrap calls, against the fake API server. */
import t from 'tap';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import {
  createKubeClient,
  createOrReplaceSecret,
  getSecret,
  KubeRequestError,
  patchWebhookCABundle,
} from '../../src/kube/index.js';

async function setup(t: { teardown(fn: () => unknown): void }) {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  return { api, client: createKubeClient({ kubeconfig: await writeKubeconfig(api), requestTimeoutMs: 2000 }) };
}

const tls = (crt: string) => ({
  metadata: { namespace: 'pullthrough', name: 'webhook-tls' },
  type: 'kubernetes.io/tls',
  data: { 'tls.crt': crt, 'tls.key': 'a2V5' },
});

t.test('getSecret: the secret, or undefined when missing', async (t) => {
  const { api, client } = await setup(t);
  t.equal(await getSecret(client, 'pullthrough', 'webhook-tls'), undefined);
  api.putSecret(tls('Y3J0'));
  t.equal((await getSecret(client, 'pullthrough', 'webhook-tls'))?.data?.['tls.crt'], 'Y3J0');
});

t.test('createOrReplaceSecret creates, then replaces with the current resourceVersion', async (t) => {
  const { api, client } = await setup(t);
  await createOrReplaceSecret(client, tls('MQ=='));
  t.equal(
    api.object<{ data: Record<string, string> }>('Secret', 'pullthrough', 'webhook-tls')?.data['tls.crt'],
    'MQ==',
  );
  await createOrReplaceSecret(client, tls('Mg=='));
  t.equal(
    api.object<{ data: Record<string, string> }>('Secret', 'pullthrough', 'webhook-tls')?.data['tls.crt'],
    'Mg==',
  );
  t.equal(api.count('/api/v1/namespaces/pullthrough/secrets/webhook-tls', 'PUT'), 1);
});

t.test('patchWebhookCABundle sets every webhook caBundle, and is idempotent', async (t) => {
  const { api, client } = await setup(t);
  api.put('MutatingWebhookConfiguration', {
    metadata: { name: 'pullthrough' },
    webhooks: [
      { name: 'pods.pullthrough.dev', clientConfig: { service: { namespace: 'pullthrough', name: 'webhook' } } },
      {
        name: 'pods2.pullthrough.dev',
        clientConfig: { service: { namespace: 'pullthrough', name: 'webhook' }, caBundle: 'b2xk' },
      },
    ],
  });
  const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
  t.equal(await patchWebhookCABundle(client, 'pullthrough', pem), 2);
  const mwc = api.object<{ webhooks: { clientConfig: { caBundle?: string } }[] }>(
    'MutatingWebhookConfiguration',
    undefined,
    'pullthrough',
  );
  t.same(
    mwc?.webhooks.map((w) => Buffer.from(w.clientConfig.caBundle ?? '', 'base64').toString()),
    [pem, pem],
  );
  t.equal(await patchWebhookCABundle(client, 'pullthrough', pem), 0, 'nothing to do the second time');
  const missing = patchWebhookCABundle(client, 'absent', pem);
  await t.rejects(missing, KubeRequestError);
  await t.rejects(patchWebhookCABundle(client, 'absent', pem), { message: /NotFound \(HTTP 404\)/ });
});
