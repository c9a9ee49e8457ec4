/** No secret, token or Authorization value reaches a log line, an error message or a label. */
import t from 'tap';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { createKubeClient, createOrReplaceSecret, startPodCredentials } from '../../src/kube/index.js';
import { basicAuth, captureLogger, dockerConfigSecret, eventually, NODE, pod } from './helpers.js';

const SECRETS = [
  'S3cret-password-1',
  'S3cret-identity-2',
  'S3cret-registry-3',
  'S3cret-api-token-4',
  'S3cret-garbled-5',
  'S3cret-user-6',
];
const b64 = (s: string): string => Buffer.from(s).toString('base64');

t.test('captured logs and errors hold no secret value, plain or base64', async (t) => {
  const api = await FakeApiServer.start({ token: 'S3cret-api-token-4' });
  t.teardown(() => api.close());
  const { logger, lines } = captureLogger();
  const client = createKubeClient({
    kubeconfig: await writeKubeconfig(api, { token: 'S3cret-api-token-4' }),
    requestTimeoutMs: 200,
  });
  const kube = startPodCredentials({
    client,
    nodeName: NODE,
    logger,
    informer: { backoff: { initialMs: 10, maxMs: 50 }, watch: { timeoutSeconds: 60 } },
    cache: { ttlSeconds: 0.01, unreachableSeconds: 0.01, staleSeconds: 0.01 },
  });
  t.teardown(() => kube.stop());

  api.putSecret(
    dockerConfigSecret('team-a', 'good', {
      'private.example.com': basicAuth('S3cret-user-6', 'S3cret-password-1'),
      'tokens.example.com': { username: 'x', identitytoken: 'S3cret-identity-2' },
      'bearer.example.com': { registrytoken: 'S3cret-registry-3' },
    }),
  );
  api.putSecret({
    metadata: { namespace: 'team-a', name: 'garbled' },
    type: 'kubernetes.io/dockerconfigjson',
    data: { '.dockerconfigjson': b64('{"auths": S3cret-garbled-5') },
  });
  api.putSecret({ metadata: { namespace: 'team-a', name: 'opaque' }, type: 'S3cret-garbled-5', data: {} });
  api.addPod(
    pod('web', {
      images: ['private.example.com/app', 'tokens.example.com/t', 'bearer.example.com/b'],
      pullSecrets: ['good', 'garbled', 'opaque', 'missing'],
    }),
  );
  await kube.informer.whenSynced();

  const labels: string[] = [];
  const errors: string[] = [];
  for (const registry of ['private.example.com', 'tokens.example.com', 'bearer.example.com']) {
    for (const c of await kube.source.credentialsFor({
      registry,
      repository: { 'private.example.com': 'app', 'tokens.example.com': 't', 'bearer.example.com': 'b' }[
        registry
      ] as string,
    }))
      labels.push(c.label);
  }
  t.equal(labels.length, 3);
  // An outage, a hang and a recovery, each logged.
  await api.stop();
  await eventually(() => !kube.informer.connected, 'outage');
  await kube.credentials.lookup({ namespace: 'team-a', name: 'web' }, 'private.example.com', 'app');
  await api.restart();
  await eventually(() => kube.informer.connected, 'recovered');
  api.hang(true);
  await kube.credentials.lookup({ namespace: 'team-a', name: 'web' }, 'private.example.com', 'app');
  api.hang(false);
  // A failed webhook write carries only names and the status.
  await createOrReplaceSecret(client, {
    metadata: { namespace: 'team-a', name: 'good' },
    data: { k: b64('S3cret-password-1') },
  }).catch((e: unknown) => errors.push((e as Error).message));
  await api.stop();
  await createOrReplaceSecret(client, {
    metadata: { namespace: 'team-a', name: 'x' },
    data: { k: b64('S3cret-password-1') },
  }).catch((e: unknown) => errors.push(`${(e as Error).message} ${(e as Error).stack ?? ''}`));
  await api.restart();

  t.ok(lines.length > 3, `captured ${lines.length} log lines`);
  t.ok(
    lines.some((l) => l.includes('secret team-a/garbled')),
    'the garbled secret is named',
  );
  const text = [...lines, ...labels, ...errors].join('\n');
  for (const s of SECRETS) {
    t.notOk(text.includes(s), `${s.slice(0, 6)}... does not appear`);
    t.notOk(text.includes(b64(s)), `${s.slice(0, 6)}... base64 does not appear`);
  }
  t.notOk(/authorization|bearer S3/i.test(text), 'no Authorization header');
  t.notOk(text.includes(b64('S3cret-user-6:S3cret-password-1')), 'no auth field');
});
