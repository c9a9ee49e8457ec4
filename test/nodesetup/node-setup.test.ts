import t from 'tap';
import { mkdtemp, mkdir, readFile, writeFile, rm, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseNodeSetupConfig, type NodeSetupConfig } from '../../src/config/node-setup.js';
import { checkContainerdConfig, renderHostsFiles, runNodeSetup } from '../../src/nodesetup/index.js';

const quiet = () => undefined;
function config(argv: string[], env: NodeJS.ProcessEnv = {}): NodeSetupConfig {
  const p = parseNodeSetupConfig(argv, env);
  if (p.help) throw new Error('help');
  return p.config;
}

t.test('rendered hosts.toml: node proxy first, cluster proxy as server; _default mirrors with no server', async (t) => {
  const [own, def] = renderHostsFiles({
    proxyHost: 'localhost:7439',
    nodeProxyUrl: 'http://127.0.0.1:7439',
    clusterProxyUrl: 'http://10.96.0.20:7439',
    mirrorAll: true,
  });
  t.equal(own!.dir, 'localhost:7439');
  t.match(own!.content, /^server = "http:\/\/10\.96\.0\.20:7439"$/m);
  t.match(own!.content, /\[host\."http:\/\/127\.0\.0\.1:7439"\]\n {2}capabilities = \["pull", "resolve"\]/);
  t.equal(def!.dir, '_default');
  t.notMatch(def!.content, /^server\s*=/m);
  t.ok(
    def!.content.indexOf('127.0.0.1:7439') < def!.content.indexOf('10.96.0.20:7439'),
    'node proxy before cluster proxy',
  );
  t.equal(
    renderHostsFiles({ proxyHost: 'localhost:7439', nodeProxyUrl: 'http://127.0.0.1:7439', mirrorAll: false }).length,
    1,
  );
});

t.test('configuration', async (t) => {
  t.match(config([]), {
    hostsDir: '/etc/containerd/certs.d',
    proxyHost: 'localhost:7439',
    nodeProxyUrl: 'http://127.0.0.1:7439',
    mirrorAll: false,
    remove: false,
  });
  t.match(config(['--mirror-all', '--cluster-proxy', 'http://svc.ns.svc:7439/'], { PULLTHROUGH_HOSTS_DIR: '/x' }), {
    hostsDir: '/x',
    mirrorAll: true,
    clusterProxyUrl: 'http://svc.ns.svc:7439',
  });
  t.match(config([], { PULLTHROUGH_MIRROR_ALL: 'true' }), { mirrorAll: true });
  t.throws(() => parseNodeSetupConfig(['--cluster-proxy', 'http://x:1/v2']), /without a path/);
  t.throws(() => parseNodeSetupConfig(['--nope']), /unknown argument/);
  t.same(parseNodeSetupConfig(['--help']), { help: true });
});

t.test('containerd config check', async (t) => {
  t.match(
    checkContainerdConfig(
      '[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n',
      '/etc/containerd/certs.d',
    ),
    { ok: true },
  );
  t.match(checkContainerdConfig('version = 2\n', '/etc/containerd/certs.d'), {
    ok: false,
    message: /no registry config_path/,
  });
  t.match(checkContainerdConfig('config_path = "/other"', '/etc/containerd/certs.d'), { ok: false });
});

t.test('writes, backs up a foreign file once, is idempotent, and undoes itself', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pullthrough-nodesetup-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const foreign = 'server = "https://mirror.example"\n';
  await mkdir(join(dir, '_default'));
  await writeFile(join(dir, '_default', 'hosts.toml'), foreign);
  const lookups: string[] = [];
  const deps = { log: quiet, lookup: async (h: string) => (lookups.push(h), '10.96.0.20') };
  const cfg = config([
    '--hosts-dir',
    dir,
    '--mirror-all',
    '--cluster-proxy',
    'http://pullthrough-cluster-proxy.pullthrough.svc.cluster.local:7439',
  ]);
  const first = await runNodeSetup(cfg, deps);
  t.same(lookups, ['pullthrough-cluster-proxy.pullthrough.svc.cluster.local'], 'Service name resolved in the pod');
  t.equal(first.clusterProxyUrl, 'http://10.96.0.20:7439');
  t.same(first.files, { 'localhost:7439': 'written', _default: 'replaced-with-backup' });
  t.equal(await readFile(join(dir, '_default', 'hosts.toml.pullthrough-backup'), 'utf8'), foreign);
  t.match(await readFile(join(dir, 'localhost:7439', 'hosts.toml'), 'utf8'), /server = "http:\/\/10\.96\.0\.20:7439"/);

  const again = await runNodeSetup(cfg, deps);
  t.same(again.files, { 'localhost:7439': 'unchanged', _default: 'unchanged' });
  const moved = await runNodeSetup(cfg, { ...deps, lookup: async () => '10.96.0.99' });
  t.same(
    moved.files,
    { 'localhost:7439': 'written', _default: 'written' },
    'our own files are replaced without a second backup',
  );
  t.equal(
    await readFile(join(dir, '_default', 'hosts.toml.pullthrough-backup'), 'utf8'),
    foreign,
    'the original backup survives',
  );

  const removed = await runNodeSetup({ ...cfg, remove: true }, deps);
  t.same(removed.files, { 'localhost:7439': 'removed', _default: 'restored' });
  t.equal(await readFile(join(dir, '_default', 'hosts.toml'), 'utf8'), foreign);
  t.same((await readdir(dir)).sort(), ['_default']);
});

t.test('an unresolvable cluster proxy is a warning; the node proxy entry is still written', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pullthrough-nodesetup-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const r = await runNodeSetup(
    config([
      '--hosts-dir',
      dir,
      '--cluster-proxy',
      'http://nowhere.invalid:7439',
      '--containerd-config',
      join(dir, 'missing.toml'),
    ]),
    {
      log: quiet,
      lookup: async () => {
        throw new Error('ENOTFOUND');
      },
    },
  );
  t.match(r.warnings, [/cannot read/, /not resolvable/]);
  t.match(await readFile(join(dir, 'localhost:7439', 'hosts.toml'), 'utf8'), /server = "http:\/\/127\.0\.0\.1:7439"/);
});

t.test('containerd config check reads TOML literal strings (containerd 2.x config dump)', async (t) => {
  const v3 = [
    'version = 3',
    "[plugins.'io.containerd.cri.v1.images'.registry]",
    "  config_path = '/etc/containerd/certs.d:/etc/docker/certs.d'",
  ].join('\n');
  t.match(checkContainerdConfig(v3, '/etc/containerd/certs.d'), { ok: true });
  t.match(checkContainerdConfig(v3, '/var/lib/rancher/k3s/agent/etc/containerd/certs.d'), {
    ok: false,
    message: /does not include/,
  });
});

t.test("a containerd 2.x config without config_path runs with 2.x's default, which includes certs.d", async (t) => {
  const v3 = ['version = 3', "[plugins.'io.containerd.cri.v1.images']", "  snapshotter = 'overlayfs'"].join('\n');
  t.match(checkContainerdConfig(v3, '/etc/containerd/certs.d'), { ok: true, message: /default config_path/ });
  t.match(checkContainerdConfig(v3, '/etc/docker/certs.d'), { ok: true });
  t.match(checkContainerdConfig(v3, '/var/lib/rancher/k3s/agent/etc/containerd/certs.d'), {
    ok: false,
    message: /default config_path .* does not include/,
  });
  t.match(checkContainerdConfig('version = 2\n', '/etc/containerd/certs.d'), {
    ok: false,
    message: /no registry config_path/,
  });
});
