import t from 'tap';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { parseWebhookConfig, WEBHOOK_HELP, type WebhookConfig } from '../../src/config/webhook.js';
import { runWebhook } from '../../src/webhook/index.js';
import { createCa, issueServingCert } from '../../src/webhook/certificates.js';
import { MemoryKubeApi } from './memory-kube-api.js';
import { admissionReview, containers, decodePatch, httpsPost, pod } from './helpers.js';

const quiet = pino({ level: 'silent' });

function config(argv: string[], env: NodeJS.ProcessEnv = {}): WebhookConfig {
  const p = parseWebhookConfig(argv, env);
  if (p.help) throw new Error('help');
  return p.config;
}

t.test('configuration: defaults, flags, env, errors', async (t) => {
  const d = config([]);
  t.match(d, {
    listenHost: '0.0.0.0',
    listenPort: 8443,
    proxyHost: 'localhost:7439',
    namespace: 'pullthrough',
    serviceName: 'pullthrough-webhook',
  });
  t.same(parseWebhookConfig(['--help']), { help: true });
  t.match(WEBHOOK_HELP, /--ignore-images/);
  const c = config(
    [
      '--listen',
      '127.0.0.1:9443',
      '--ignore-images',
      '^a',
      '--ignore-images=^b',
      '--skip-pull-policies',
      'Always,Never',
    ],
    {
      PULLTHROUGH_IGNORE_IMAGES: '^ignored-by-flag',
      PULLTHROUGH_ACCEPT_IMAGES: '^docker\\.io/\n^quay\\.io/',
      PULLTHROUGH_EXCLUDE_NAMESPACES: 'a, b',
      POD_NAMESPACE: 'cache',
    },
  );
  t.match(c, { listenHost: '127.0.0.1', listenPort: 9443, namespace: 'cache', excludeNamespaces: ['a', 'b'] });
  t.same(c.ignoreImages, ['^a', '^b'], 'flags win over the variable');
  t.same(c.acceptImages, ['^docker\\.io/', '^quay\\.io/']);
  t.same(c.skipPullPolicies, ['Always', 'Never']);
  t.throws(() => parseWebhookConfig(['--tls-cert', 'x']), /go together/);
  t.throws(() => parseWebhookConfig(['--listen', 'nope']), /HOST:PORT/);
  t.throws(() => parseWebhookConfig(['--bogus', '1']), /unknown flag/);
  t.throws(() => parseWebhookConfig(['--skip-pull-policies', 'Sometimes']), /unknown policy/);
  t.throws(() => parseWebhookConfig(['--renew-before-days', '400']), /less than/);
});

t.test('outside a cluster: --tls-cert/--tls-key files, no API server, reloaded when they change', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pullthrough-webhook-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const ca = createCa('files-ca', { validityDays: 2 });
  const s = issueServingCert(ca, ['localhost'], { validityDays: 2 });
  await writeFile(join(dir, 'tls.crt'), s.cert);
  await writeFile(join(dir, 'tls.key'), s.key);
  const run = await runWebhook(
    config([
      '--listen',
      '127.0.0.1:15070',
      '--tls-cert',
      join(dir, 'tls.crt'),
      '--tls-key',
      join(dir, 'tls.key'),
      '--cert-check-interval',
      '1',
    ]),
    { logger: quiet },
  );
  t.teardown(() => run.close());
  const review = JSON.stringify(admissionReview(pod({ containers: containers('nginx') })));
  const res = await httpsPost('https://localhost:15070/mutate', review, ca.cert);
  t.equal(res.status, 200);
  t.match(decodePatch((JSON.parse(res.body) as { response: { patch?: string } }).response), [
    { op: 'replace', value: 'localhost:7439/docker.io/library/nginx:latest' },
  ]);

  const ca2 = createCa('files-ca-2', { validityDays: 2 });
  const s2 = issueServingCert(ca2, ['localhost'], { validityDays: 2 });
  await writeFile(join(dir, 'tls.key'), s2.key);
  await writeFile(join(dir, 'tls.crt'), s2.cert);
  // Poll until the reload happened (the interval is 1 s); the assertion is on the outcome, not the time.
  let status = 0;
  for (let i = 0; i < 100 && status !== 200; i++) {
    status = await httpsPost('https://localhost:15070/mutate', review, ca2.cert).then(
      (r) => r.status,
      () => 0,
    );
    if (status !== 200) await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(status, 200, 'new certificate served after the files changed');
});

t.test('in a cluster: bootstraps certificates through the API, then serves with them', async (t) => {
  const api = new MemoryKubeApi();
  let failures = 1;
  const realRead = api.readMutatingWebhookConfiguration.bind(api);
  api.readMutatingWebhookConfiguration = async (name) => {
    if (failures-- > 0) throw Object.assign(new Error('apiserver not reachable'), { code: 503 });
    return realRead(name);
  };
  api.configs.set('pullthrough', {
    metadata: { name: 'pullthrough' },
    webhooks: [{ name: 'pods.pullthrough.dev', clientConfig: {} }],
  });
  const run = await runWebhook(
    config(['--listen', '127.0.0.1:15071', '--service-name', 'localhost', '--namespace', 'pullthrough']),
    { kubeApi: api, logger: quiet, retryDelayMs: 10 },
  );
  t.teardown(() => run.close());
  const bundle = Buffer.from(
    api.configs.get('pullthrough')!.webhooks![0]!.clientConfig!.caBundle!,
    'base64',
  ).toString();
  const res = await httpsPost(
    'https://localhost:15071/mutate',
    JSON.stringify(admissionReview(pod({ containers: containers('nginx') }))),
    bundle,
  );
  t.equal(res.status, 200, 'served with the bootstrapped certificate, trusted through the caBundle');
  await t.rejects(runWebhook(config(['--listen', '127.0.0.1:15072']), { logger: quiet }), /Kubernetes API client/);
});
