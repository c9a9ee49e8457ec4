/**
 * A pod already bound to a node (spec.nodeName set at admission: static and DaemonSet pods) whose
 * Node node-setup labelled pullthrough.dev/node-ready=false is not rewritten (skip reason
 * `node-not-ready`, counted), read from a real node watch against the fake API server; unscheduled
 * pods and pods bound to other nodes are rewritten as before; a node relabelled true is served
 * again. Ports 15550-15559.
 */
import t from 'tap';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { parseWebhookConfig } from '../../src/config/webhook.js';
import { createKubeClient, NotReadyNodes } from '../../src/kube/index.js';
import { WebhookMetrics } from '../../src/observability/metrics.js';
import { createCa, issueServingCert } from '../../src/webhook/certificates.js';
import { runWebhook } from '../../src/webhook/index.js';
import { NODE_READY_LABEL, SKIPPED_IMAGES_ANNOTATION } from '../../src/webhook/policy.js';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { eventually } from '../helpers/wait.js';
import { testTempDir } from '../helpers/temp.js';
import { admissionReview, containers, decodePatch, httpsPost, pod } from './helpers.js';

const quiet = pino({ level: 'silent' });
const node = (name: string, ready: string) => ({
  apiVersion: 'v1',
  kind: 'Node',
  metadata: { name, labels: { [NODE_READY_LABEL]: ready } },
});

t.test('pods bound to a node labelled not ready are left alone', async (t) => {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  api.put('Node', node('node-bad', 'false'));
  api.put('Node', node('node-good', 'true'));
  const client = createKubeClient({ kubeconfig: await writeKubeconfig(api) });
  const nodes = new NotReadyNodes({ client, logger: quiet, backoff: { initialMs: 20, maxMs: 200 } });
  nodes.start();
  t.teardown(() => nodes.stop());
  await nodes.whenSynced();
  t.equal(nodes.isNotReady('node-bad'), true);
  t.equal(nodes.isNotReady('node-good'), false, 'the label selector leaves ready nodes out');

  const dir = testTempDir('node-not-ready-');
  const ca = createCa('node-not-ready-ca', { validityDays: 2 });
  const s = issueServingCert(ca, ['localhost'], { validityDays: 2 });
  await writeFile(join(dir, 'tls.crt'), s.cert);
  await writeFile(join(dir, 'tls.key'), s.key);
  const parsed = parseWebhookConfig([
    '--listen=127.0.0.1:15550',
    `--tls-cert=${join(dir, 'tls.crt')}`,
    `--tls-key=${join(dir, 'tls.key')}`,
  ]);
  if (parsed.help) throw new Error('help');
  const metrics = new WebhookMetrics({ defaults: false });
  const run = await runWebhook(parsed.config, { logger: quiet, nodes, metrics });
  t.teardown(() => run.close());

  const review = async (nodeName?: string) => {
    const spec = { containers: containers('nginx'), ...(nodeName ? { nodeName } : {}) };
    const res = await httpsPost('https://localhost:15550/mutate', JSON.stringify(admissionReview(pod(spec))), ca.cert);
    t.equal(res.status, 200);
    const ops = decodePatch((JSON.parse(res.body) as { response: { patch?: string } }).response);
    const add = ops.find((o) => o.path === '/metadata/annotations')?.value as Record<string, string> | undefined;
    return {
      image: ops.find((o) => o.path === '/spec/containers/0/image')?.value,
      skipped: add?.[SKIPPED_IMAGES_ANNOTATION]
        ? (JSON.parse(add[SKIPPED_IMAGES_ANNOTATION]) as Record<string, string>)
        : {},
    };
  };
  const REWRITTEN = 'localhost:7439/docker.io/library/nginx:latest';

  const bad = await review('node-bad');
  t.equal(bad.image, undefined, 'bound to the not-ready node: left alone');
  t.match(bad.skipped['containers/c0'], /node node-bad is labelled pullthrough\.dev\/node-ready=false/);
  t.equal((await review('node-good')).image, REWRITTEN, 'bound to a ready node: rewritten');
  t.equal((await review('node-unlabelled')).image, REWRITTEN, 'a node node-setup never labelled: rewritten');
  t.equal((await review()).image, REWRITTEN, 'unscheduled (the usual case): rewritten');

  const counted = (await metrics.registry.getSingleMetric('pullthrough_webhook_skipped_images_total')!.get()).values;
  t.equal(counted.find((v) => v.labels.reason === 'node-not-ready')?.value, 1, 'counted as node-not-ready');

  api.put('Node', node('node-bad', 'true'));
  await eventually(async () => (await review('node-bad')).image === REWRITTEN, 'the fixed node to be served again');
});
