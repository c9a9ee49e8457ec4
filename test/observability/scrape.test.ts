/**
 * The loop an operator relies on, against the real thing: a proxy that served a real pull (twice,
 * the second from its cache) from a registry behind nginx adding Docker Hub's rate-limit headers,
 * a webhook that answered AdmissionReviews and a controller leading against the fake API server,
 * each on its metrics listener; a real Prometheus (the lab's, 2.42) scrapes them and loads the
 * shipped alerts. Every scrape passes `promtool check metrics`; every
 * metric the dashboard and the alerts name is in a live scrape (not in a list kept here); every
 * dashboard query and alert expression evaluates without error, and the dashboard's queries over
 * metrics with samples return series.
 */
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { stringify } from 'yaml';
import { Lab } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { eventually } from '../helpers/wait.js';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { pod } from '../kube/helpers.js';
import { fastControllerConfig } from '../controller/config.js';
import { admissionReview, containers, pod as admissionPod } from '../webhook/helpers.js';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { runController, type RunningController } from '../../src/controller/run.js';
import { createKubeClient, silentLogger } from '../../src/kube/index.js';
import { createLogger } from '../../src/observability/logger.js';
import { startMetricsServer } from '../../src/observability/metrics-server.js';
import { ControllerMetrics, ProxyMetrics, WebhookMetrics } from '../../src/observability/metrics.js';
import { createWebhookServer, type WebhookServer } from '../../src/webhook/server.js';
import { createRewritePolicy } from '../../src/webhook/policy.js';
import { asPromQL, dashboard, metricNames, promtoolAvailable, ruleGroups } from './rules.js';
import { rateLimitedFront } from './ratelimit-nginx.js';

const ORIGIN = 15240;
const PROXY_METRICS = 15241;
const WEBHOOK_METRICS = 15242;
const CONTROLLER_METRICS = 15243;
const PROMETHEUS = 15244;
/** nginx adding the rate-limit headers in front of ORIGIN (ratelimit-nginx.ts). */
const FRONT = 15383;
const targets = {
  'node-proxy': PROXY_METRICS,
  webhook: WEBHOOK_METRICS,
  controller: CONTROLLER_METRICS,
} as const;

const lab = new Lab('scrape');
const log = createLogger('silent');
const promSkip = spawnSync('prometheus', ['--version']).status === 0 ? false : 'prometheus is not installed';
let proxy: TestProxy | undefined;
let webhook: WebhookServer | undefined;
let api: FakeApiServer | undefined;
let controller: RunningController | undefined;
let prometheus: ChildProcess | undefined;
const servers: { close(): unknown }[] = [];

t.teardown(async () => {
  if (prometheus?.exitCode === null) {
    const exited = new Promise((r) => prometheus?.once('exit', r));
    prometheus.kill('SIGTERM');
    await exited;
  }
  for (const s of servers) s.close();
  await controller?.close();
  await api?.close();
  await webhook?.app.close();
  await proxy?.stop();
  await lab.down('front');
  await lab.cleanup();
});

async function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string }> {
  const res = await request(url, { headers });
  return { status: res.statusCode, text: await res.body.text() };
}

/** A manifest and its blobs, through the proxy, as containerd pulls them. */
async function pull(): Promise<void> {
  if (!proxy) throw new Error('no proxy');
  const ns = `ns=127.0.0.1%3A${FRONT}`;
  const manifest = await get(`${proxy.url}/v2/library/app/manifests/v1?${ns}`, { accept: MANIFEST_ACCEPT });
  if (manifest.status !== 200) throw new Error(`manifest: ${manifest.status} ${manifest.text}`);
  const m = JSON.parse(manifest.text) as { config: { digest: string }; layers: { digest: string }[] };
  for (const digest of [m.config.digest, ...m.layers.map((l) => l.digest)]) {
    const blob = await get(`${proxy.url}/v2/library/app/blobs/${digest}?${ns}`);
    if (blob.status !== 200) throw new Error(`blob ${digest}: ${blob.status}`);
  }
  await proxy.settle();
}

const scrapes: Record<string, string> = {};

t.before(async () => {
  await lab.registry('origin', ORIGIN);
  await lab.image(`127.0.0.1:${ORIGIN}`, 'library/app', 'v1', ['--layers', '2']);
  const front = await rateLimitedFront(lab, 'front', FRONT, `http://127.0.0.1:${ORIGIN}`, {
    limit: 100,
    remaining: 76,
    windowSeconds: 21600,
  });
  const dataDir = lab.tempDir('pt-scrape');
  proxy = await startProxy(['--data-dir', dataDir, '--insecure-registries', front]);
  proxy.metrics.trackVolume(dataDir); // as runProxy does
  const nodeSetupStatus = join(dataDir, 'node-setup.json');
  writeFileSync(nodeSetupStatus, JSON.stringify({ ready: true, problems: [], runtime: 'containerd' }));
  proxy.metrics.trackNodeSetup(nodeSetupStatus); // as runProxy does with --node-setup-status
  servers.push(startMetricsServer(proxy.metrics.registry, { host: '127.0.0.1', port: PROXY_METRICS }, log));
  await pull();
  await pull();

  const webhookMetrics = new WebhookMetrics();
  const policy = createRewritePolicy({ proxyHost: 'localhost:7439', ownNamespace: 'pullthrough' });
  webhook = createWebhookServer({ policy, metrics: webhookMetrics });
  const webhookUrl = await webhook.app.listen({ host: '127.0.0.1', port: 0 });
  servers.push(startMetricsServer(webhookMetrics.registry, { host: '127.0.0.1', port: WEBHOOK_METRICS }, log));
  const reviews = [
    admissionReview(admissionPod({ containers: containers('nginx:1.27', 'ghcr.io/org/app:v2') })),
    admissionReview(admissionPod({ containers: containers('nginx:1.27') }), { namespace: 'kube-system' }),
  ];
  for (const body of reviews) {
    const res = await request(`${webhookUrl}/mutate`, { method: 'POST', body: JSON.stringify(body) });
    await res.body.dump();
  }
  await (await request(`${webhookUrl}/mutate`, { method: 'POST', body: '{' })).body.dump();

  api = await FakeApiServer.start();
  api.addPod(pod('web-0', { namespace: 'web', images: ['nginx:1.27'] }));
  const kubeconfig = await writeKubeconfig(api);
  const running = runController(fastControllerConfig(), {
    client: createKubeClient({ kubeconfig }),
    log: silentLogger,
  });
  controller = running;
  const controllerMetrics = new ControllerMetrics({
    isLeader: () => running.isLeader(),
    writes: () => running.writes(),
    backlog: () => running.backlog(),
    images: () => running.book.images().length,
  });
  servers.push(startMetricsServer(controllerMetrics.registry, { host: '127.0.0.1', port: CONTROLLER_METRICS }, log));
  await eventually(() => running.writes() > 0, 'the controller wrote a CachedImage');

  for (const [component, port] of Object.entries(targets)) {
    const res = await get(`http://127.0.0.1:${port}/metrics`);
    if (res.status !== 200) throw new Error(`${component} /metrics: ${res.status}`);
    scrapes[component] = res.text;
  }
});

/** Sample names with at least one sample, and every family the scrape declares (with a histogram's series). */
function exported(text: string): { declared: Set<string>; sampled: Set<string> } {
  const declared = new Set<string>();
  const sampled = new Set<string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)/.exec(line);
    if (type) {
      const [, name, kind] = type as unknown as [string, string, string];
      declared.add(name);
      if (kind === 'histogram') for (const s of ['_bucket', '_sum', '_count']) declared.add(`${name}${s}`);
    } else if (/^[a-z]/.test(line)) {
      sampled.add(line.split(/[{ ]/)[0] as string);
    }
  }
  return { declared, sampled };
}

const promtoolSkip = promtoolAvailable() ? false : 'promtool is not installed';
t.test('each component serves /metrics in a format promtool accepts', { skip: promtoolSkip }, async (t) => {
  for (const [component, text] of Object.entries(scrapes)) {
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    t.equal(check.status, 0, `${component}: ${check.stdout}${check.stderr}`);
    t.match(text, /^pullthrough_build_info\{version="[^"]+",nodejs="v\d+/m, `${component}: build info`);
  }
  t.match(scrapes.webhook, /pullthrough_webhook_admissions_total\{outcome="rewritten"\} 1/);
  t.match(scrapes.webhook, /pullthrough_webhook_admissions_total\{outcome="invalid"\} 1/);
  t.match(scrapes.webhook, /pullthrough_webhook_skipped_images_total\{reason="namespace-excluded"\} 1/);
  t.match(scrapes.webhook, /pullthrough_webhook_rewritten_images_total 2/);
  t.match(
    scrapes['node-proxy'],
    /pullthrough_served_bytes_total\{source="cache"\} [1-9]/,
    'the second pull hit the cache',
  );
  t.match(scrapes['node-proxy'], /^pullthrough_data_volume_free_bytes [1-9]/m, 'free space of the data volume');
  t.match(scrapes['node-proxy'], /^pullthrough_origin_ratelimit_remaining\{registry="127.0.0.1:\d+"\} 76$/m);
  t.match(scrapes['node-proxy'], /^pullthrough_ready 1$/m, 'ready, as /readyz says');
  t.match(scrapes['node-proxy'], /^pullthrough_caching 1$/m);
  t.match(scrapes['node-proxy'], /^pullthrough_node_setup_ok 1$/m, "node-setup's verdict");
  t.match(scrapes['node-proxy'], /^pullthrough_blob_fill_waiters 0$/m, 'no request waits on a fill after the pulls');
  t.match(scrapes.controller, /pullthrough_controller_leader 1/);
  t.match(scrapes.controller, /pullthrough_controller_writes_total [1-9]/);
  t.notMatch(Object.values(scrapes).join('\n'), /app:v2|nginx|library\/app|sha256:/, 'no image names or digests');
});

t.test('the dashboard and the alerts name only metrics the components export', async (t) => {
  const all = Object.values(scrapes).map(exported);
  const declared = new Set(all.flatMap((e) => [...e.declared]));
  const exprs = [
    ...dashboard().queries.map((q) => q.expr),
    ...ruleGroups().groups.flatMap((g) => g.rules.map((r) => r.expr)),
  ];
  const names = new Set(exprs.flatMap(metricNames));
  t.ok(names.size > 15, `${names.size} metric names read`);
  for (const name of names) {
    if (name === 'up') continue; // Prometheus' own, per target
    t.ok(declared.has(name), `${name} is exported`);
  }
});

t.test('the stale-tags counter counts the requests served stale', async (t) => {
  const m = new ProxyMetrics({ defaults: false });
  m.requests.inc({ kind: 'manifest', source: 'stale', status: '200' }, 2);
  m.requests.inc({ kind: 'manifest', source: 'cache', status: '200' });
  t.match(await m.registry.metrics(), /^pullthrough_stale_tags_served_total 2$/m);
});

interface QueryAnswer {
  status: string;
  error?: string;
  data?: { result: unknown[] };
}

t.test('a real Prometheus scrapes them, and every query and alert evaluates', { skip: promSkip }, async (t) => {
  const dir = lab.tempDir('pt-prometheus');
  writeFileSync(join(dir, 'rules.yaml'), stringify(ruleGroups()));
  writeFileSync(
    join(dir, 'prometheus.yml'),
    stringify({
      global: { scrape_interval: '1s', evaluation_interval: '1s' },
      rule_files: ['rules.yaml'],
      scrape_configs: Object.entries(targets).map(([component, port]) => ({
        job_name: component,
        static_configs: [{ targets: [`127.0.0.1:${port}`], labels: { component, node: 'lab' } }],
      })),
    }),
  );
  let output = '';
  prometheus = spawn(
    'prometheus',
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${PROMETHEUS}`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  prometheus.stderr?.on('data', (c: Buffer) => (output += c.toString()));
  const query = async (q: string): Promise<QueryAnswer> => {
    const res = await request(`http://127.0.0.1:${PROMETHEUS}/api/v1/query?query=${encodeURIComponent(q)}`);
    return (await res.body.json()) as QueryAnswer;
  };
  // rate() needs two samples of every target in its window.
  await eventually(
    async () => {
      if (prometheus?.exitCode !== null) throw new Error(`prometheus exited: ${output}`);
      const a = await query('count_over_time(up[1m]) >= 3').catch(() => undefined);
      return a?.data?.result.length === Object.keys(targets).length;
    },
    'three scrapes of every target',
    60_000,
  );
  const up = await query('up == 1');
  t.equal(up.data?.result.length, 3, 'every target is up');

  const sampled = new Set(Object.values(scrapes).flatMap((s) => [...exported(s).sampled]));
  let withSeries = 0;
  for (const { panel, expr } of dashboard().queries) {
    const answer = await query(asPromQL(expr));
    t.equal(answer.status, 'success', `${panel}: ${expr} ${answer.error ?? ''}`);
    // A query over a metric with no sample yet (no store failure happened) has nothing to return.
    const names = metricNames(expr).filter((n) => n !== 'up');
    if (names.every((n) => sampled.has(n) || sampled.has(`${n}_bucket`))) {
      withSeries++;
      t.ok((answer.data?.result.length ?? 0) > 0, `${panel}: ${expr} returns series`);
    }
  }
  t.ok(withSeries >= 15, `${withSeries} dashboard queries checked for series`);

  for (const rule of ruleGroups().groups.flatMap((g) => g.rules)) {
    const answer = await query(rule.expr);
    t.equal(answer.status, 'success', `${rule.alert}: ${answer.error ?? ''}`);
  }
  const rules = await eventually(async () => {
    const res = await request(`http://127.0.0.1:${PROMETHEUS}/api/v1/rules`);
    const body = (await res.body.json()) as {
      data: { groups: { rules: { name: string; health: string; lastError?: string }[] }[] };
    };
    const list = body.data.groups.flatMap((g) => g.rules);
    return list.length > 0 && list.every((r) => r.health !== 'unknown') ? list : undefined;
  }, 'every rule evaluated once');
  for (const r of rules) t.equal(r.health, 'ok', `${r.name} evaluates: ${r.lastError ?? ''}`);
  t.equal(rules.length, ruleGroups().groups.flatMap((g) => g.rules).length, 'Prometheus loaded every alert');
});
