/**
 * node-setup on CRI-O nodes: the registries.conf.d drop-in (rendered, written atomically and
 * idempotently, a foreign file left alone, --remove), runtime detection, and the chain it gives read
 * by containers/image itself (podman, CRI-O's pull library): a rewritten reference pulls through the
 * node proxy; with the node proxy stopped, through the cluster proxy.
 * Ports 15262 (node proxy), 15263 (cluster proxy), 15264 (origin).
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseNodeSetupConfig, type NodeSetupConfig } from '../../src/config/node-setup.js';
import { DROP_IN_NAME, renderRegistriesConf, runNodeSetup } from '../../src/nodesetup/index.js';
import { Lab } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const run = promisify(execFile);
const NODE = 15262;
const CLUSTER = 15263;
const ORIGIN = 15264;
const lab = new Lab('crio');
const quiet = () => undefined;
let nodeProxy: TestProxy | undefined;
let clusterProxy: TestProxy | undefined;

t.teardown(async () => {
  await nodeProxy?.stop();
  await clusterProxy?.stop();
  await lab.cleanup();
});

function config(argv: string[]): NodeSetupConfig {
  const p = parseNodeSetupConfig(argv, {});
  if (p.help) throw new Error('help');
  return p.config;
}

t.test('the drop-in: node proxy, then cluster proxy, as mirrors of the proxy host', async (t) => {
  const text = renderRegistriesConf({
    proxyHost: 'localhost:7439',
    nodeProxyUrl: 'http://127.0.0.1:7439',
    clusterProxyUrl: 'http://10.96.0.20:7439',
  });
  t.match(text, /\[\[registry\]\]\nprefix = "localhost:7439"\nlocation = "localhost:7439"\ninsecure = true/);
  t.ok(text.indexOf('location = "127.0.0.1:7439"') < text.indexOf('location = "10.96.0.20:7439"'), 'node first');
  t.equal(text.match(/\[\[registry\.mirror\]\]/g)?.length, 2);
});

t.test('detection, writing, idempotence, a foreign file, --remove', async (t) => {
  const root = lab.tempDir('pt-crio-setup');
  const crioDir = join(root, 'etc-crio');
  const confDir = join(root, 'registries.conf.d');
  const hostsDir = join(root, 'certs.d');
  const flags = ['--crio-dir', crioDir, '--registries-conf-dir', confDir, '--hosts-dir', hostsDir];
  const containerd = await runNodeSetup(config(flags), { log: quiet });
  t.equal(containerd.runtime, 'containerd', 'no CRI-O directory: containerd');
  mkdirSync(crioDir);
  const first = await runNodeSetup(config([...flags, '--cluster-proxy', 'http://10.96.0.20:7439']), { log: quiet });
  t.equal(first.runtime, 'cri-o', 'with the CRI-O directory: CRI-O');
  t.same(first.files, { [DROP_IN_NAME]: 'written' });
  t.match(readFileSync(join(confDir, DROP_IN_NAME), 'utf8'), /location = "10\.96\.0\.20:7439"/);
  const again = await runNodeSetup(config([...flags, '--cluster-proxy', 'http://10.96.0.20:7439']), { log: quiet });
  t.same(again.files, { [DROP_IN_NAME]: 'unchanged' });
  t.same(readdirSync(confDir), [DROP_IN_NAME], 'no temporary file left');
  const mirrorAll = await runNodeSetup(config([...flags, '--mirror-all']), { log: quiet });
  t.match(mirrorAll.warnings, [/--mirror-all is not available on CRI-O/]);
  const removed = await runNodeSetup(config([...flags, '--remove']), { log: quiet });
  t.same(removed.files, { [DROP_IN_NAME]: 'removed' });
  t.same(readdirSync(confDir), []);
  writeFileSync(join(confDir, DROP_IN_NAME), '# mine\n');
  const foreign = await runNodeSetup(config(flags), { log: quiet });
  t.same(foreign.files, { [DROP_IN_NAME]: 'foreign' });
  t.equal(readFileSync(join(confDir, DROP_IN_NAME), 'utf8'), '# mine\n', 'left alone');
  t.same((await runNodeSetup(config([...flags, '--remove']), { log: quiet })).files, { [DROP_IN_NAME]: 'foreign' });
  t.throws(() => config(['--runtime', 'docker']), /--runtime/);
});

/** podman with its storage, state and temp files in `dir`, reading `conf` as its registries.conf. */
async function podmanPull(dir: string, conf: string, ref: string): Promise<string> {
  for (const d of ['tmp', 'net']) mkdirSync(join(dir, d), { recursive: true });
  const { stdout } = await run(
    'podman',
    [
      '--root',
      join(dir, 'root'),
      '--runroot',
      join(dir, 'runroot'),
      '--storage-driver',
      'vfs',
      '--tmpdir',
      join(dir, 'tmp'),
      '--events-backend',
      'none',
      '--network-config-dir',
      join(dir, 'net'),
      'pull',
      '--quiet',
      ref,
    ],
    { env: { ...process.env, CONTAINERS_REGISTRIES_CONF: conf, TMPDIR: join(dir, 'tmp') }, timeout: 180_000 },
  );
  return stdout.trim();
}

t.test('containers/image pulls through the drop-in; with the node proxy down, through the cluster proxy', async (t) => {
  await lab.registry('origin', ORIGIN);
  await lab.image(`127.0.0.1:${ORIGIN}`, 'lab/app', 'v1', ['--layers', '1']);
  const flags = ['--insecure-registries', `127.0.0.1:${ORIGIN}`];
  const nodeData = lab.tempDir('pt-crio-node');
  const clusterData = lab.tempDir('pt-crio-cluster');
  nodeProxy = await startProxy(['--data-dir', nodeData, ...flags], { port: NODE });
  clusterProxy = await startProxy(['--data-dir', clusterData, ...flags], { port: CLUSTER });
  const root = lab.tempDir('pt-crio-pull');
  const confDir = join(root, 'registries.conf.d');
  // The test's node proxy address stands in for localhost:7439.
  await runNodeSetup(
    config([
      '--runtime',
      'cri-o',
      '--registries-conf-dir',
      confDir,
      '--proxy-host',
      `127.0.0.1:${NODE}`,
      '--node-proxy',
      `http://127.0.0.1:${NODE}`,
      '--cluster-proxy',
      `http://127.0.0.1:${CLUSTER}`,
    ]),
    { log: quiet },
  );
  // podman reads the drop-in as its registries.conf: the same format, and the file CRI-O would merge.
  const conf = join(confDir, DROP_IN_NAME);
  const ref = `127.0.0.1:${NODE}/127.0.0.1_${ORIGIN}/lab/app:v1`;
  const viaNode = await podmanPull(join(root, 'first'), conf, ref);
  t.match(viaNode, /^[0-9a-f]{64}$/, 'pulled through the node proxy');
  await nodeProxy.settle();
  t.ok(
    readdirSync(nodeData, { recursive: true })
      .map(String)
      .some((p) => p.includes('lab')),
    'the node proxy cached it',
  );
  t.notOk(
    readdirSync(clusterData, { recursive: true })
      .map(String)
      .some((p) => p.includes('lab')),
    'the cluster proxy was not asked',
  );
  await nodeProxy.stop();
  const viaCluster = await podmanPull(join(root, 'second'), conf, ref);
  t.equal(viaCluster, viaNode, 'the same image, with the node proxy down');
  await clusterProxy.settle();
  t.ok(
    readdirSync(clusterData, { recursive: true })
      .map(String)
      .some((p) => p.includes('lab')),
    'served by the cluster proxy',
  );
});
