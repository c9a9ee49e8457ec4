/**
 * Gradual rollout (--namespaces=labelled): only pods of namespaces labelled
 * pullthrough.dev/enabled=true are rewritten, read from a real namespace watch against the fake API
 * server; a label added later takes effect; a namespace the webhook cannot look up is left alone
 * with its reason; the MutatingWebhookConfiguration's namespaceSelector follows the mode.
 * Ports 15360-15379.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { parseWebhookConfig, type WebhookConfig } from '../../src/config/webhook.js';
import { createKubeClient, NamespaceInformer } from '../../src/kube/index.js';
import { WebhookMetrics } from '../../src/observability/metrics.js';
import { createCa, issueServingCert } from '../../src/webhook/certificates.js';
import { runWebhook } from '../../src/webhook/index.js';
import { mutatePod } from '../../src/webhook/mutate-pod.js';
import {
  createRewritePolicy,
  ENABLED_NAMESPACE_LABEL,
  SKIPPED_IMAGES_ANNOTATION,
  type NamespaceDirectory,
} from '../../src/webhook/policy.js';
import { namespaceSelector } from '../../src/webhook/selectors.js';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { eventually } from '../helpers/wait.js';
import { testTempDir } from '../helpers/temp.js';
import { admissionReview, containers, decodePatch, httpsPost, pod } from './helpers.js';
import { MemoryKubeApi } from './memory-kube-api.js';
import { PROXY } from './cases.js';

const quiet = pino({ level: 'silent' });
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function config(argv: string[], env: NodeJS.ProcessEnv = {}): WebhookConfig {
  const p = parseWebhookConfig(argv, env);
  if (p.help) throw new Error('help');
  return p.config;
}

const directory = (labels: Record<string, Record<string, string>>): NamespaceDirectory => ({
  lookup: (name) =>
    labels[name] ? { known: true, labels: labels[name] } : { known: false, reason: 'not seen in the namespace watch' },
});

t.test('--namespaces: all by default, labelled, nothing else', async (t) => {
  t.equal(config([]).namespaces, 'all');
  t.equal(config(['--namespaces=labelled']).namespaces, 'labelled');
  t.equal(config([], { PULLTHROUGH_NAMESPACES: 'labelled' }).namespaces, 'labelled', 'or its variable');
  t.throws(() => config(['--namespaces=some']), /--namespaces: expected all or labelled/);
  t.throws(
    () => createRewritePolicy({ proxyHost: PROXY, ownNamespace: 'pullthrough', namespaces: 'labelled' }),
    /needs a view of the namespaces/,
  );
});

t.test('the policy: opted-in rewritten, others and unknown ones left alone with the reason', async (t) => {
  const policy = createRewritePolicy({
    proxyHost: PROXY,
    ownNamespace: 'pullthrough',
    namespaces: 'labelled',
    namespaceDirectory: directory({
      'team-a': { [ENABLED_NAMESPACE_LABEL]: 'true' },
      'team-b': {},
      'team-c': { [ENABLED_NAMESPACE_LABEL]: 'false' },
      'kube-system': { [ENABLED_NAMESPACE_LABEL]: 'true' },
    }),
  });
  const p = pod({ containers: containers('nginx') });
  t.same(mutatePod(p, { namespace: 'team-a' }, policy).rewritten, { 'containers/c0': 'nginx' });
  for (const ns of ['team-b', 'team-c']) {
    const m = mutatePod(p, { namespace: ns }, policy);
    t.same(m.rewritten, {}, `${ns} is not rewritten`);
    t.equal(m.skipKinds['containers/c0'], 'namespace-not-enabled');
    t.match(m.skipped['containers/c0'], `namespace ${ns} is not labelled pullthrough.dev/enabled=true`);
    t.match(m.patch, [{ path: '/metadata/annotations' }], 'the reason is annotated');
  }
  const unknown = mutatePod(p, { namespace: 'new-team' }, policy);
  t.same(unknown.rewritten, {});
  t.equal(unknown.skipKinds['containers/c0'], 'namespace-unknown');
  t.match(unknown.skipped['containers/c0'], /namespace new-team cannot be looked up: not seen/);
  t.equal(
    mutatePod(p, { namespace: 'kube-system' }, policy).skipKinds['containers/c0'],
    'namespace-excluded',
    'an excluded namespace stays excluded, labelled or not',
  );

  t.same(namespaceSelector(policy).matchExpressions.at(-1), {
    key: 'pullthrough.dev/enabled',
    operator: 'In',
    values: ['true'],
  });
  const all = createRewritePolicy({ proxyHost: PROXY, ownNamespace: 'pullthrough' });
  t.notOk(
    namespaceSelector(all).matchExpressions.some((e) => e.key === ENABLED_NAMESPACE_LABEL),
    'no label rule without the mode',
  );
  t.same(mutatePod(p, { namespace: 'team-b' }, all).rewritten, { 'containers/c0': 'nginx' });
});

async function tlsFiles(): Promise<{ argv: string[]; ca: string }> {
  const dir = testTempDir('gradual-rollout-');
  const ca = createCa('rollout-ca', { validityDays: 2 });
  const s = issueServingCert(ca, ['localhost'], { validityDays: 2 });
  await writeFile(join(dir, 'tls.crt'), s.cert);
  await writeFile(join(dir, 'tls.key'), s.key);
  return { argv: ['--tls-cert', join(dir, 'tls.crt'), '--tls-key', join(dir, 'tls.key')], ca: ca.cert };
}

t.test('over HTTPS with a real namespace watch: a label added later takes effect', async (t) => {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  api.put('Namespace', { metadata: { name: 'team-a', labels: { [ENABLED_NAMESPACE_LABEL]: 'true' } } });
  api.put('Namespace', { metadata: { name: 'team-b', labels: { team: 'b' } } });
  const client = createKubeClient({ kubeconfig: await writeKubeconfig(api) });
  const informer = new NamespaceInformer({ client, backoff: { initialMs: 20, maxMs: 200 } });
  t.equal(informer.lookup('team-a').known, false, 'unknown before the first list');
  informer.start();
  t.teardown(() => informer.stop());
  await informer.whenSynced();

  const tls = await tlsFiles();
  const metrics = new WebhookMetrics({ defaults: false });
  const run = await runWebhook(config(['--listen', '127.0.0.1:15360', '--namespaces', 'labelled', ...tls.argv]), {
    logger: quiet,
    namespaces: informer,
    metrics,
  });
  t.teardown(() => run.close());
  const review = async (namespace: string) => {
    const res = await httpsPost(
      'https://localhost:15360/mutate',
      JSON.stringify(admissionReview(pod({ containers: containers('nginx') }, { namespace }), { namespace })),
      tls.ca,
    );
    t.equal(res.status, 200);
    const body = JSON.parse(res.body) as { response: { patch?: string } };
    return decodePatch(body.response);
  };
  const imageOf = (ops: { path: string; value?: unknown }[]) =>
    ops.find((o) => o.path === '/spec/containers/0/image')?.value;
  const skippedOf = (ops: { path: string; value?: unknown }[]) => {
    const add = ops.find((o) => o.path === '/metadata/annotations')?.value as Record<string, string> | undefined;
    return add ? (JSON.parse(add[SKIPPED_IMAGES_ANNOTATION]!) as Record<string, string>) : {};
  };

  t.equal(imageOf(await review('team-a')), 'localhost:7439/docker.io/library/nginx:latest', 'opted in: rewritten');
  const b = await review('team-b');
  t.equal(imageOf(b), undefined, 'not opted in: left alone');
  t.match(skippedOf(b)['containers/c0'], /not labelled pullthrough\.dev\/enabled=true/, 'with its reason');
  const unseen = await review('team-z');
  t.match(skippedOf(unseen)['containers/c0'], /cannot be looked up/, 'a namespace never seen is left alone');

  api.put('Namespace', { metadata: { name: 'team-b', labels: { team: 'b', [ENABLED_NAMESPACE_LABEL]: 'true' } } });
  await eventually(async () => imageOf(await review('team-b')), 'the label added to team-b to take effect');
  api.put('Namespace', { metadata: { name: 'team-a', labels: {} } });
  await eventually(async () => imageOf(await review('team-a')) === undefined, 'the label removed from team-a');

  const counted = (await metrics.registry.getSingleMetric('pullthrough_webhook_skipped_images_total')!.get()).values;
  const count = (reason: string) => counted.find((v) => v.labels.reason === reason)?.value ?? 0;
  t.ok(count('namespace-not-enabled') >= 2, 'counted as namespace-not-enabled');
  t.equal(count('namespace-unknown'), 1, 'counted as namespace-unknown');
});

t.test('an API server that cannot be reached: every namespace is left alone', async (t) => {
  // Nothing listens on 15361.
  const client = createKubeClient({ kubeconfig: await writeKubeconfig('http://127.0.0.1:15361') });
  const lines: string[] = [];
  const logger = {
    debug: () => undefined,
    info: () => undefined,
    error: () => undefined,
    warn: (_o: object, msg: string) => void lines.push(msg),
  };
  const informer = new NamespaceInformer({ client, logger, backoff: { initialMs: 20, maxMs: 100 } });
  informer.start();
  t.teardown(() => informer.stop());
  await eventually(() => lines.length > 0, 'the list failure to be logged');
  const policy = createRewritePolicy({
    proxyHost: PROXY,
    ownNamespace: 'pullthrough',
    namespaces: 'labelled',
    namespaceDirectory: informer,
  });
  const m = mutatePod(pod({ containers: containers('nginx') }), { namespace: 'team-a' }, policy);
  t.same(m.rewritten, {});
  t.match(m.skipped['containers/c0'], /cannot be looked up: the namespaces have not been listed/);
  t.equal(lines.length, 1, 'one warning for the outage, not one per retry');
});

t.test('the webhook applies the label rule to its MutatingWebhookConfiguration on start', async (t) => {
  const api = new MemoryKubeApi();
  api.configs.set('pullthrough', {
    metadata: { name: 'pullthrough' },
    webhooks: [{ name: 'pods.pullthrough.dev', clientConfig: {} }],
  });
  const run = await runWebhook(
    config(['--listen', '127.0.0.1:15362', '--service-name', 'localhost', '--namespaces=labelled']),
    { kubeApi: api, logger: quiet, namespaces: directory({}) },
  );
  t.teardown(() => run.close());
  t.match(api.configs.get('pullthrough')!.webhooks![0]!.namespaceSelector, {
    matchExpressions: [
      { key: 'kubernetes.io/metadata.name', operator: 'NotIn' },
      { key: 'pullthrough.dev/enabled', operator: 'In', values: ['true'] },
    ],
  });
});

t.test('pullthrough webhook --namespaces=labelled: the command watches namespaces itself', async (t) => {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  api.put('Namespace', { metadata: { name: 'team-a', labels: { [ENABLED_NAMESPACE_LABEL]: 'true' } } });
  api.put('Namespace', { metadata: { name: 'team-b' } });
  const tls = await tlsFiles();
  const args = ['--listen=127.0.0.1:15368', '--metrics-listen=', '--namespaces=labelled', ...tls.argv];
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'src/main.ts', 'webhook', ...args, '--kubeconfig', await writeKubeconfig(api)],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (out += c.toString('utf8')));
  const exited = once(child, 'exit') as Promise<[number | null]>;
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  await eventually(() => out.includes('webhook listening'), 'the webhook to listen', 60_000);
  const imageIn = async (namespace: string) => {
    const res = await httpsPost(
      'https://localhost:15368/mutate',
      JSON.stringify(admissionReview(pod({ containers: containers('nginx') }, { namespace }), { namespace })),
      tls.ca,
    );
    const body = JSON.parse(res.body) as { response: { patch?: string } };
    return decodePatch(body.response).find((o) => o.path === '/spec/containers/0/image')?.value;
  };
  await eventually(imageIn.bind(null, 'team-a'), 'team-a to be rewritten once the namespaces are listed');
  t.pass('the opted-in namespace is rewritten');
  t.equal(await imageIn('team-b'), undefined, 'the other is not');
  t.ok(
    api.requests.some((r) => r.path === '/api/v1/namespaces' && r.watch),
    'it watches namespaces through --kubeconfig',
  );
  child.kill('SIGTERM');
  const [code] = await exited;
  t.equal(code, 0, `stops cleanly on SIGTERM: ${out.slice(-500)}`);
});
