/**
 * node-setup tells the cluster whether its node can be served: `pullthrough node-setup
 * --node-name` against the fake API server and temp-dir containerd configurations. A node whose
 * containerd has no config_path naming the hosts dir (or no containerd config at all) gets the
 * label pullthrough.dev/node-ready=false and a Warning Event; a good node the label `true` and no
 * Event. The command exits 0 either way, and the status file holds the verdict, which the node
 * proxy exports as pullthrough_node_setup_ok.
 */
import t, { type Test } from 'tap';
import { mkdir, mkdtemp, readFile, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeApiServer, writeKubeconfig, type KubeObject } from '../fake-apiserver/index.js';
import { runNodeSetupCommand } from '../../src/cli/node-setup.js';
import { readProxyConfig } from '../../src/config/proxy.js';
import { ProxyMetrics } from '../../src/observability/metrics.js';
import { NODE_NOT_READY_REASON, NODE_READY_LABEL, NODE_SETUP_ANNOTATION } from '../../src/kube/index.js';
import { resourceByKind } from '../fake-apiserver/resources.js';

interface NodeObject extends KubeObject {
  metadata: { name: string; uid?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
}
interface EventObject extends KubeObject {
  type?: string;
  reason?: string;
  message?: string;
  involvedObject?: { kind?: string; name?: string; uid?: string };
}

const GOOD = '[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n';
const BAD = '[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "registry.k8s.io/pause:3.9"\n';

async function setup(t: Test, api: FakeApiServer, node: string, containerdConfig: string | undefined) {
  const root = await mkdtemp(join(tmpdir(), 'pt-node-ready-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const configFile = join(root, 'etc/containerd/config.toml');
  await mkdir(join(root, 'etc/containerd'), { recursive: true });
  if (containerdConfig !== undefined) await writeFile(configFile, containerdConfig);
  api.put('Node', { apiVersion: 'v1', kind: 'Node', metadata: { name: node, uid: `uid-${node}` } });
  const statusFile = join(root, 'status/node-setup.json');
  const code = await runNodeSetupCommand([
    '--runtime=containerd',
    `--host-root=${root}`,
    `--hosts-dir=${join(root, 'etc/containerd/certs.d')}`,
    `--containerd-config=${configFile}`,
    `--node-name=${node}`,
    `--kubeconfig=${await writeKubeconfig(api, { dir: root })}`,
    `--status-file=${statusFile}`,
  ]);
  const status = JSON.parse(await readFile(statusFile, 'utf8')) as { ready: boolean; problems: string[] };
  const stored = api.object<NodeObject>('Node', undefined, node);
  const events = api.store
    .list(resourceByKind('Event')!, 'default')
    .map((e) => e as EventObject)
    .filter((e) => e.involvedObject?.kind === 'Node' && e.involvedObject.name === node);
  return { code, status, stored, events, root };
}

t.test('node readiness reported to the cluster', async (t) => {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());

  await t.test(
    'containerd without config_path: label false, annotation and a Warning Event naming the fix',
    async (t) => {
      const r = await setup(t, api, 'node-bad', BAD);
      t.equal(r.code, 0, 'exits 0: the node proxy still starts');
      t.equal(r.stored?.metadata.labels?.[NODE_READY_LABEL], 'false');
      t.match(r.stored?.metadata.annotations?.[NODE_SETUP_ANNOTATION], /no registry config_path/);
      t.equal(r.events.length, 1, 'one Event on the Node');
      t.match(r.events[0], {
        type: 'Warning',
        reason: NODE_NOT_READY_REASON,
        message: /config_path = "\/etc\/containerd\/certs.d"/,
        involvedObject: { kind: 'Node', name: 'node-bad', uid: 'uid-node-bad' },
      });
      t.match(r.status, { ready: false, problems: [/no registry config_path/] });
    },
  );

  await t.test('no containerd config at all (no supported runtime): not ready', async (t) => {
    const r = await setup(t, api, 'node-none', undefined);
    t.equal(r.code, 0);
    t.equal(r.stored?.metadata.labels?.[NODE_READY_LABEL], 'false');
    t.equal(r.events.length, 1);
    t.match(r.events[0]?.message, /cannot read containerd config .*ENOENT.*no supported runtime/);
  });

  await t.test('a good node: label true, no Event', async (t) => {
    const r = await setup(t, api, 'node-good', GOOD);
    t.equal(r.code, 0);
    t.equal(r.stored?.metadata.labels?.[NODE_READY_LABEL], 'true');
    t.equal(r.stored?.metadata.annotations?.[NODE_SETUP_ANNOTATION], 'ready');
    t.same(r.events, []);
    t.match(r.status, { ready: true, problems: [] });
  });

  await t.test('a node that was bad and is fixed is relabelled true', async (t) => {
    await setup(t, api, 'node-fixed', BAD);
    const r = await setup(t, api, 'node-fixed', GOOD);
    t.equal(r.stored?.metadata.labels?.[NODE_READY_LABEL], 'true');
  });
});

t.test('a hosts dir that cannot be written: not ready, still exit 0, status says why', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'pt-node-ready-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  // A file where the hosts directory should be: mkdir fails whatever the user (root in CI too).
  await writeFile(join(root, 'certs.d'), 'not a directory');
  await writeFile(join(root, 'config.toml'), GOOD.replace('/etc/containerd/certs.d', join(root, 'certs.d')));
  const statusFile = join(root, 'status.json');
  const code = await runNodeSetupCommand([
    '--runtime=containerd',
    `--hosts-dir=${join(root, 'certs.d')}`,
    `--containerd-config=${join(root, 'config.toml')}`,
    `--status-file=${statusFile}`,
  ]);
  t.equal(code, 0);
  t.match(JSON.parse(await readFile(statusFile, 'utf8')), {
    ready: false,
    problems: [/registry configuration not written/],
  });
});

t.test("the node proxy exports node-setup's verdict as pullthrough_node_setup_ok", async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'pt-node-ready-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const statusFile = join(root, 'node-setup.json');
  const proxyConfig = readProxyConfig(['--node-setup-status', statusFile], {}).config;
  t.equal(proxyConfig.nodeSetupStatus, statusFile, '--node-setup-status');

  const untracked = new ProxyMetrics({ defaults: false });
  t.notMatch(await untracked.registry.metrics(), /pullthrough_node_setup_ok/, 'no series without a node-setup');

  const metrics = new ProxyMetrics({ defaults: false });
  metrics.trackNodeSetup(statusFile);
  const value = async () => /^pullthrough_node_setup_ok (\d)$/m.exec(await metrics.registry.metrics())?.[1];
  t.equal(await value(), '0', 'no status file yet: 0');
  const setup = async (config: string) => {
    await writeFile(join(root, 'config.toml'), config.replace('/etc/containerd/certs.d', join(root, 'certs.d')));
    await runNodeSetupCommand([
      '--runtime=containerd',
      `--hosts-dir=${join(root, 'certs.d')}`,
      `--containerd-config=${join(root, 'config.toml')}`,
      `--status-file=${statusFile}`,
    ]);
  };
  await setup(BAD);
  t.equal(await value(), '0', 'a node node-setup cannot serve: 0');
  await setup(GOOD);
  t.equal(await value(), '1', 'a good node: 1');
});
