import t from 'tap';
import { X509Certificate } from 'node:crypto';
import { ensureCertificates, serviceDnsNames, type CertBootstrapOptions } from '../../src/webhook/cert-bootstrap.js';
import { createRewritePolicy } from '../../src/webhook/policy.js';
import { namespaceSelector, objectSelector } from '../../src/webhook/selectors.js';
import { MemoryKubeApi } from './memory-kube-api.js';
import { restKubeApi } from './fake-apiserver-kube-api.js';
import { FakeApiServer, type KubeObject } from '../fake-apiserver/index.js';

/** The parts of stored objects these tests read back. */
interface StoredSecret extends KubeObject {
  type?: string;
  data: Record<string, string>;
}
interface StoredWebhookConfiguration extends KubeObject {
  webhooks: { clientConfig: { caBundle?: string; service: { name: string } } }[];
}

const DAY = 86_400_000;
const policy = createRewritePolicy({ proxyHost: 'localhost:7439', ownNamespace: 'pullthrough' });
const webhookConfig = () => ({
  apiVersion: 'admissionregistration.k8s.io/v1',
  kind: 'MutatingWebhookConfiguration',
  metadata: { name: 'pullthrough' },
  webhooks: [
    {
      name: 'pods.pullthrough.dev',
      clientConfig: { service: { name: 'pullthrough-webhook', namespace: 'pullthrough', path: '/mutate' } },
    },
  ],
});
function options(now: Date, extra: Partial<CertBootstrapOptions> = {}): CertBootstrapOptions {
  return {
    namespace: 'pullthrough',
    secretName: 'pullthrough-webhook-tls',
    webhookConfigurationName: 'pullthrough',
    dnsNames: serviceDnsNames('pullthrough-webhook', 'pullthrough'),
    caValidityDays: 3650,
    certValidityDays: 365,
    renewBeforeDays: 30,
    selectors: { namespaceSelector: namespaceSelector(policy), objectSelector: objectSelector() },
    now: () => now,
    ...extra,
  };
}
const pem = (b64: string | undefined) => Buffer.from(b64 ?? '', 'base64').toString();

t.test('creates, reuses, renews the certificate, then the CA (in memory)', async (t) => {
  const api = new MemoryKubeApi();
  api.configs.set('pullthrough', webhookConfig());
  const t0 = new Date('2030-01-01T00:00:00Z');
  const first = await ensureCertificates(api, options(t0));
  t.equal(first.secret, 'created');
  t.equal(first.webhookPatched, true);
  const cert = new X509Certificate(first.serving.cert);
  t.match(cert.subjectAltName, /DNS:pullthrough-webhook\.pullthrough\.svc/);
  const ca = pem(api.secrets.get('pullthrough/pullthrough-webhook-tls')?.data?.['ca.crt']);
  t.ok(cert.verify(new X509Certificate(ca).publicKey), 'serving cert signed by the stored CA');
  const wh = api.configs.get('pullthrough')!.webhooks![0]!;
  t.equal(pem(wh.clientConfig?.caBundle), ca, 'caBundle is the CA');
  t.same(wh.namespaceSelector, namespaceSelector(policy));
  t.same(wh.objectSelector, objectSelector());

  api.calls = [];
  const again = await ensureCertificates(api, options(new Date(t0.getTime() + 10 * DAY)));
  t.equal(again.secret, 'kept');
  t.equal(again.webhookPatched, false);
  t.equal(again.serving.cert, first.serving.cert);
  t.same(api.calls, ['readSecret'], 'a restart only reads');

  const late = await ensureCertificates(api, options(new Date(t0.getTime() + 340 * DAY)));
  t.equal(late.secret, 'renewed-cert', '25 days left < 30: renewed');
  t.not(late.serving.cert, first.serving.cert);
  t.equal(late.caBundle, ca, 'same CA, caBundle unchanged');
  t.equal(late.webhookPatched, false);

  const caEnd = await ensureCertificates(api, options(new Date(t0.getTime() + 3630 * DAY)));
  t.equal(caEnd.secret, 'renewed-ca');
  t.equal(caEnd.webhookPatched, true);
  const bundle = pem(api.configs.get('pullthrough')!.webhooks![0]!.clientConfig?.caBundle);
  t.equal((bundle.match(/BEGIN CERTIFICATE/g) ?? []).length, 2, 'new CA plus the still valid old one');
  t.ok(bundle.includes(ca), 'old CA still trusted during the change');
  t.ok(
    new X509Certificate(caEnd.serving.cert).verify(
      new X509Certificate(`${bundle.split('-----END CERTIFICATE-----')[0] ?? ''}-----END CERTIFICATE-----\n`).publicKey,
    ),
  );
});

t.test('a new DNS name or a foreign certificate gets a fresh certificate', async (t) => {
  const api = new MemoryKubeApi();
  api.configs.set('pullthrough', webhookConfig());
  const now = new Date('2030-01-01T00:00:00Z');
  await ensureCertificates(api, options(now));
  const moved = await ensureCertificates(api, options(now, { dnsNames: serviceDnsNames('other', 'pullthrough') }));
  t.equal(moved.secret, 'renewed-cert');
  const s = api.secrets.get('pullthrough/pullthrough-webhook-tls')!;
  s.data!['tls.key'] = s.data!['ca.key']!; // key no longer matches the certificate
  const fixed = await ensureCertificates(api, options(now, { dnsNames: serviceDnsNames('other', 'pullthrough') }));
  t.equal(fixed.secret, 'renewed-cert');
});

t.test("two replicas racing: the loser adopts the winner's certificates", async (t) => {
  const api = new MemoryKubeApi();
  api.configs.set('pullthrough', webhookConfig());
  const now = new Date('2030-01-01T00:00:00Z');
  const other = new MemoryKubeApi();
  other.configs.set('pullthrough', webhookConfig());
  const winner = await ensureCertificates(other, options(now));
  api.beforeWrite = () => api.putSecret('pullthrough', other.secrets.get('pullthrough/pullthrough-webhook-tls')!);
  const loser = await ensureCertificates(api, options(now));
  t.equal(loser.secret, 'adopted');
  t.equal(loser.serving.cert, winner.serving.cert);
});

t.test('missing webhook configuration is an error the caller retries', async (t) => {
  const api = new MemoryKubeApi();
  await t.rejects(ensureCertificates(api, options(new Date())), /MutatingWebhookConfiguration pullthrough not found/);
});

t.test('against the fake API server over REST', async (t) => {
  const server = await FakeApiServer.start();
  t.teardown(() => server.close());
  server.put('MutatingWebhookConfiguration', webhookConfig());
  const api = restKubeApi(server.url);
  const now = new Date();
  const first = await ensureCertificates(api, options(now));
  t.equal(first.secret, 'created');
  const stored = server.object<StoredSecret>('Secret', 'pullthrough', 'pullthrough-webhook-tls')!;
  t.equal(stored.type, 'kubernetes.io/tls');
  t.equal(pem(stored.data['tls.crt']), first.serving.cert);
  const cfg = server.object<StoredWebhookConfiguration>('MutatingWebhookConfiguration', undefined, 'pullthrough')!;
  t.equal(pem(cfg.webhooks[0]!.clientConfig.caBundle), first.caBundle);
  t.equal(cfg.webhooks[0]!.clientConfig.service.name, 'pullthrough-webhook', 'rest of clientConfig untouched');
  const second = await ensureCertificates(api, options(now));
  t.equal(second.secret, 'kept');
  t.equal(second.serving.cert, first.serving.cert);
  // A stale resourceVersion is refused by the server with 409; the bootstrap re-reads and adopts.
  const later = new Date(now.getTime() + 340 * DAY);
  const racing = restKubeApi(server.url);
  const origReplace = racing.replaceSecret.bind(racing);
  let raced = false;
  racing.replaceSecret = async (ns, name, s) => {
    if (!raced) {
      raced = true;
      await ensureCertificates(api, options(later)); // another replica renews first
    }
    return origReplace(ns, name, s);
  };
  const r = await ensureCertificates(racing, options(later));
  t.equal(r.secret, 'adopted');
  t.equal(
    pem(server.object<StoredSecret>('Secret', 'pullthrough', 'pullthrough-webhook-tls')!.data['tls.crt']),
    r.serving.cert,
  );
});
