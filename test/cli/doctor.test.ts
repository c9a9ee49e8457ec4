/**
 * `pullthrough doctor` as an operator runs it, against a real node proxy and cluster proxy (in
 * this process), a lab registry as the cache registry, and temp-dir fixtures: containerd configs
 * as the lab writes them with and without `config_path`, the hosts.toml node-setup writes, a CRI-O
 * drop-in directory, a kubelet CredentialProviderConfig. Each case reads the verdict line of the
 * check it is about and the exit code. Most cases run the command in this process (a child costs
 * a tsx start); a fit node and a failing one run `src/main.ts doctor` as a child, which proves
 * the real entry point's exit codes and output.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Lab } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { parseNodeSetupConfig } from '../../src/config/node-setup.js';
import { runNodeSetup } from '../../src/nodesetup/index.js';
import { runDoctorCommand } from '../../src/cli/doctor.js';

const CACHE = 15393;
const NODE_PROXY = 15394;
const CLUSTER_PROXY = 15395;
/** Nothing listens here: the hostPort that does not answer. */
const DEAD = 15396;

const ROOT = resolve(import.meta.dirname, '../..');
const lab = new Lab('doctor');
const proxies: TestProxy[] = [];
let dir = '';
let hostsDir = '';

t.teardown(async () => {
  for (const p of proxies) await p.stop();
  await lab.cleanup();
});

/** containerd's config as the lab's containerd-up.sh writes it; no registry section without `configPath`. */
function containerdConfig(name: string, configPath?: string): string {
  const lines = [
    'version = 2',
    `root = "${dir}/root"`,
    '[plugins."io.containerd.grpc.v1.cri"]',
    '  stream_server_address = "127.0.0.1"',
    '  [plugins."io.containerd.grpc.v1.cri".containerd]',
    '    snapshotter = "overlayfs"',
    ...(configPath ? ['  [plugins."io.containerd.grpc.v1.cri".registry]', `    config_path = "${configPath}"`] : []),
  ];
  const file = join(dir, name);
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

t.before(async () => {
  dir = lab.tempDir('pt-doctor');
  hostsDir = join(dir, 'certs.d');
  await lab.registry('cache', CACHE);
  proxies.push(
    await startProxy(['--data-dir', join(dir, 'cluster'), '--cache-registry', `http://127.0.0.1:${CACHE}`], {
      port: CLUSTER_PROXY,
    }),
  );
  proxies.push(
    await startProxy(['--data-dir', join(dir, 'node'), '--cache-registry', `http://127.0.0.1:${CACHE}`], {
      port: NODE_PROXY,
    }),
  );
  const setup = parseNodeSetupConfig(
    [
      '--runtime',
      'containerd',
      '--hosts-dir',
      hostsDir,
      '--node-proxy',
      `http://127.0.0.1:${NODE_PROXY}`,
      '--cluster-proxy',
      `http://127.0.0.1:${CLUSTER_PROXY}`,
    ],
    {},
  );
  if (setup.help) throw new Error('help');
  await runNodeSetup(setup.config, { log: () => undefined });
  writeFileSync(
    join(dir, 'credential-provider.yaml'),
    [
      'apiVersion: kubelet.config.k8s.io/v1',
      'kind: CredentialProviderConfig',
      'providers:',
      '  - name: ecr-credential-provider',
      '    matchImages: ["*.dkr.ecr.*.amazonaws.com"]',
      '    defaultCacheDuration: 12h',
      '    apiVersion: credentialprovider.kubelet.k8s.io/v1',
      '',
    ].join('\n'),
  );
});

interface DoctorRun {
  code: number;
  out: string;
  lines: Map<string, string>;
}

/** The flags every case passes: containerd named, node-setup's hosts dir, no CRI-O here. */
const baseArgs = (args: string[]) => [
  '--runtime',
  'containerd',
  '--hosts-dir',
  hostsDir,
  '--crio-dir',
  join(dir, 'no-crio'),
  '--timeout',
  '10s',
  ...args,
];

function read(code: number, out: string): DoctorRun {
  // `verdict  check: why`, by check.
  const lines = new Map<string, string>();
  for (const l of out.split('\n')) {
    const m = /^(ok|warn|fail|skip)\s+([^:]+):/.exec(l);
    if (m) lines.set(m[2] as string, l);
  }
  return { code, out, lines };
}

/** The command in this process, its report written to a string. */
async function doctor(args: string[]): Promise<DoctorRun> {
  let out = '';
  const code = await runDoctorCommand(baseArgs(args), { env: {}, out: { write: (s: string) => (out += s) } });
  return read(code, out);
}

/** The command as an operator starts it: `src/main.ts doctor` in a child process. */
async function doctorChild(args: string[]): Promise<DoctorRun> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', 'doctor', ...baseArgs(args)], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (out += c.toString('utf8')));
  const [code] = (await once(child, 'exit')) as [number];
  return read(code, out);
}

const fitNode = () => [
  '--containerd-config',
  containerdConfig('config.toml', hostsDir),
  '--node-proxy',
  `http://127.0.0.1:${NODE_PROXY}`,
  '--cluster-proxy',
  `http://127.0.0.1:${CLUSTER_PROXY}`,
  '--cache-registry',
  `http://127.0.0.1:${CACHE}`,
  '--image-credential-provider-config',
  join(dir, 'credential-provider.yaml'),
];

t.test('a fit node: every check ok, exit 0', async (t) => {
  const r = await doctorChild(fitNode());
  t.equal(r.code, 0, r.out);
  for (const check of [
    'runtime',
    'containerd config_path',
    'hosts.toml for localhost',
    'node proxy',
    'cache registry',
    'cluster proxy',
    'node identity',
    'clock',
  ]) {
    const line = [...r.lines].find(([name]) => name.startsWith(check))?.[1];
    t.match(line, /^ok /, `${check}: ${line}`);
  }
  t.match(r.lines.get('runtime'), /containerd \(--runtime\); version /);
  t.match(r.lines.get('node identity'), /ecr-credential-provider for \*\.dkr\.ecr\.\*\.amazonaws\.com/);
  t.match(r.out, /^this node is fit/m);
});

t.test('containerd without config_path: fail with the fix, exit 1', async (t) => {
  const r = await doctorChild([...fitNode(), '--containerd-config', containerdConfig('no-path.toml')]);
  t.equal(r.code, 1, r.out);
  t.match(r.lines.get('containerd config_path'), /^fail .*no registry config_path.*; fix: set config_path = /);
  t.match(r.out, /^this node cannot pull through pullthrough: 1 check\(s\) failed/m);
});

t.test('config_path naming another directory: fail', async (t) => {
  const other = join(dir, 'other-certs.d');
  mkdirSync(other, { recursive: true });
  const r = await doctor([...fitNode(), '--containerd-config', containerdConfig('other.toml', other)]);
  t.equal(r.code, 1, r.out);
  t.match(r.lines.get('containerd config_path'), /^fail .*does not include/);
});

t.test('a hostPort that does not answer: the node proxy check fails, exit 1', async (t) => {
  const r = await doctor([...fitNode(), '--node-proxy', `http://127.0.0.1:${DEAD}`]);
  t.equal(r.code, 1, r.out);
  t.match(r.lines.get('node proxy'), /^fail .*unreachable \(ECONNREFUSED\)/);
  t.match(r.lines.get('hosts.toml for localhost'), /^fail .*does not name the node proxy/, 'hosts.toml names another');
});

t.test('CRI-O: the drop-in is checked instead of hosts.toml', async (t) => {
  const crioDir = join(dir, 'crio');
  const confDir = join(dir, 'registries.conf.d');
  mkdirSync(crioDir, { recursive: true });
  mkdirSync(confDir, { recursive: true });
  const args = [...fitNode(), '--runtime', 'auto', '--crio-dir', crioDir, '--registries-conf-dir', confDir];
  const missing = await doctor(args);
  t.equal(missing.code, 1, missing.out);
  t.match(missing.lines.get('runtime'), /^ok +runtime: cri-o \(auto: .* exists\)/);
  t.match(missing.lines.get('CRI-O registries.conf.d'), /^fail .*50-pullthrough\.conf cannot be read \(ENOENT\)/);
  t.notOk(missing.lines.has('containerd config_path'), 'no containerd check on a CRI-O node');
  const setup = parseNodeSetupConfig(
    ['--runtime', 'cri-o', '--registries-conf-dir', confDir, '--node-proxy', `http://127.0.0.1:${NODE_PROXY}`],
    {},
  );
  if (setup.help) throw new Error('help');
  await runNodeSetup(setup.config, { log: () => undefined });
  const written = await doctor(args);
  t.equal(written.code, 0, written.out);
  t.match(written.lines.get('CRI-O registries.conf.d'), /^ok /);
});

t.test('an unreachable cache registry: fail, exit 1', async (t) => {
  await lab.stop('cache');
  const r = await doctor(fitNode());
  t.equal(r.code, 1, r.out);
  t.match(r.lines.get('cache registry'), /^fail .*unreachable \(ECONNREFUSED\)/);
  t.match(r.lines.get('node proxy'), /^fail .*answers 503/, 'and the node proxy, which needs it, is not ready');
});
