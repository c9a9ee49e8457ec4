/**
 * The fallback chain with a real containerd (CRI pulls, as kubelet makes them) and the hosts.toml
 * files node-setup writes:
 *   node proxy killed          -> a rewritten reference pulls through the cluster proxy (second host)
 *   both proxies down          -> a plain reference pulls from the origin (`_default` mirror mode)
 *   origin stopped             -> a cached image still pulls through the node proxy
 * Ports 15064-15068, OCI_LAB_DIR=/tmp/lab-webhook-chain.
 */
import t from 'tap';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeImage } from '../../src/oci/encoding.js';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { runNodeSetup } from '../../src/nodesetup/index.js';

const LAB = process.env.OCI_LAB_SCRIPTS ?? fileURLToPath(new URL('../../../shared/oci-lab/', import.meta.url));
const LAB_DIR = '/tmp/lab-webhook-chain';
const ORIGIN = 15064,
  CACHE = 15065,
  NODE_PROXY = 15066,
  CLUSTER_PROXY = 15067,
  CRI_PORT = 15068;
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function missing(): string | undefined {
  if (!existsSync(join(LAB, 'containerd-up.sh'))) return `oci-lab scripts not found at ${LAB}`;
  if (process.getuid?.() !== 0) return 'needs root (containerd)';
  for (const bin of ['containerd', 'docker-registry', 'skopeo']) {
    try {
      execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' });
    } catch {
      return `${bin} is not installed`;
    }
  }
  return undefined;
}
const skip = missing();

const env = { ...process.env, OCI_LAB_DIR: LAB_DIR };
function lab(script: string, ...args: string[]): Record<string, string> {
  const out = execFileSync(join(LAB, script), args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return Object.fromEntries(
    out
      .split('\n')
      .filter((l) => /^[A-Z_]+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).replace(/^"|"$/g, '')]),
  );
}
/** containerd-up.sh's plugin check can lose a race with the daemon's start: try again from scratch. */
function containerdUp(): Record<string, string> {
  for (let attempt = 1; ; attempt++) {
    try {
      return lab('containerd-up.sh', 'node', '--cri-port', String(CRI_PORT));
    } catch (err) {
      try {
        lab('containerd-down.sh', 'node');
      } catch {
        // nothing was left running
      }
      if (attempt === 4) throw err;
    }
  }
}
function criPull(ref: string): { ok: boolean; line: string } {
  try {
    const line = execFileSync(join(LAB, 'cri-pull.sh'), ['node', ref, '--fresh', '--timeout', '60'], {
      env,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return { ok: true, line: line.trim() };
  } catch (err) {
    return { ok: false, line: String((err as { stdout?: string }).stdout ?? err) };
  }
}

function startProxy(name: string, port: number): ChildProcess {
  const dir = join(LAB_DIR, name);
  mkdirSync(dir, { recursive: true });
  const log = openSync(join(dir, 'proxy.log'), 'a');
  return spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(ROOT, 'src/main.ts'),
      'proxy',
      '--listen',
      `127.0.0.1:${port}`,
      '--data-dir',
      join(dir, 'data'),
      '--cache-registry',
      `http://127.0.0.1:${CACHE}`,
      '--insecure-registries',
      `127.0.0.1:${ORIGIN},127.0.0.1:${CACHE}`,
      '--allowed-registries',
      `127.0.0.1:${ORIGIN},127.0.0.1:${CACHE}`,
      // What the webhook's --proxy-host would be; the cluster proxy sees it as ?ns= on fallback.
      '--proxy-hosts',
      `127.0.0.1:${NODE_PROXY}`,
    ],
    { cwd: ROOT, stdio: ['ignore', log, log] },
  );
}

async function ready(port: number, child: ChildProcess): Promise<void> {
  // Generous: tsx compiles the proxy on start, and the machine may be busy with other suites.
  for (let i = 0; i < 900; i++) {
    if (child.exitCode !== null) throw new Error(`proxy on ${port} exited with ${child.exitCode}`);
    const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`proxy on ${port} never became ready`);
}

async function kill(child: ChildProcess | undefined): Promise<void> {
  if (child?.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await gone;
}

/**
 * Until the cache registry holds the image: its manifest, every blob it names and the tag's
 * pointer (src/cache/registry-store.ts). A proxy uploads its copy once the pull is served, and this
 * test is about the fallbacks, not about a proxy killed during an upload (that copy would be lost,
 * and the next pull would go to the origin again).
 */
async function uploaded(repo: string, tag: string, digest: string): Promise<void> {
  const registry = `http://127.0.0.1:${CACHE}/v2`;
  const ok = (url: string) =>
    fetch(url, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } }).then(
      (r) => r.ok,
      () => false,
    );
  for (let i = 0; i < 600; i++) {
    const m = await fetch(`${registry}/${repo}/manifests/${digest}`, { headers: { accept: MANIFEST_ACCEPT } }).catch(
      () => undefined,
    );
    if (m?.ok) {
      const doc = (await m.json()) as { config?: { digest: string }; layers?: { digest: string }[] };
      const blobs = [doc.config, ...(doc.layers ?? [])].filter((b): b is { digest: string } => b !== undefined);
      const present = await Promise.all([
        ...blobs.map((b) => ok(`${registry}/${repo}/blobs/${b.digest}`)),
        ok(`${registry}/pullthrough-tags/${repo}/manifests/${tag}`),
      ]);
      if (present.every(Boolean)) return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${repo}:${tag} never reached the cache registry`);
}

t.test('fallback chain with a real containerd', { skip: skip ?? false, timeout: 240_000 }, async (t) => {
  rmSync(LAB_DIR, { recursive: true, force: true });
  const procs: ChildProcess[] = [];
  t.teardown(async () => {
    for (const p of procs) await kill(p);
    for (const [s, n] of [
      ['containerd-down.sh', 'node'],
      ['registry-down.sh', 'origin'],
      ['registry-down.sh', 'cache'],
    ] as const) {
      try {
        execFileSync(join(LAB, s), [n], { env, stdio: 'ignore' });
      } catch {
        /* already down */
      }
    }
    // The proxies' data directories; the lab removed its own.
    rmSync(LAB_DIR, { recursive: true, force: true });
  });

  lab('registry-up.sh', 'origin', String(ORIGIN));
  lab('registry-up.sh', 'cache', String(CACHE));
  const one = lab('make-image.sh', `127.0.0.1:${ORIGIN}`, 'team/one', 'v1', '--layers', '2', '--layer-mb', '1');
  const two = lab('make-image.sh', `127.0.0.1:${ORIGIN}`, 'team/two', 'v1', '--layers', '1', '--layer-mb', '1');
  t.ok(one.DIGEST && two.DIGEST, 'origin images built');
  const node = containerdUp();
  const hostsDir = node.HOSTS_DIR as string;

  // The init container's work, with the test's addresses standing in for localhost:7439 and the Service IP.
  const setup = await runNodeSetup(
    {
      runtime: 'containerd',
      crioDir: '/nonexistent',
      registriesConfDir: '/nonexistent',
      hostsDir,
      proxyHost: `127.0.0.1:${NODE_PROXY}`,
      nodeProxyUrl: `http://127.0.0.1:${NODE_PROXY}`,
      clusterProxyUrl: `http://127.0.0.1:${CLUSTER_PROXY}`,
      mirrorAll: true,
      remove: false,
    },
    { log: () => undefined },
  );
  t.same(setup.files, { [`127.0.0.1:${NODE_PROXY}`]: 'written', _default: 'written' });
  t.comment(readFileSync(join(hostsDir, `127.0.0.1:${NODE_PROXY}`, 'hosts.toml'), 'utf8'));

  const rewritten = encodeImage(`127.0.0.1:${ORIGIN}/team/one:v1`, `127.0.0.1:${NODE_PROXY}`);
  if (!rewritten.ok) throw new Error(rewritten.reason);
  t.equal(rewritten.value, `127.0.0.1:${NODE_PROXY}/127.0.0.1_${ORIGIN}/team/one:v1`);

  const nodeProxy = startProxy('node-proxy', NODE_PROXY);
  const clusterProxy = startProxy('cluster-proxy', CLUSTER_PROXY);
  procs.push(nodeProxy, clusterProxy);
  await ready(NODE_PROXY, nodeProxy);
  await ready(CLUSTER_PROXY, clusterProxy);

  const warm = criPull(rewritten.value);
  t.ok(warm.ok, `rewritten reference pulls through the node proxy: ${warm.line}`);
  await uploaded(`127.0.0.1_${ORIGIN}/team/one`, 'v1', one.DIGEST as string);

  await kill(nodeProxy);
  const second = criPull(rewritten.value);
  // containerd adds `?ns=<host of the reference>` for every host other than the reference's own,
  // so the cluster proxy sees `?ns=127.0.0.1:15066` (in a cluster: `?ns=localhost:7439`) on an
  // already encoded path, which --proxy-hosts tells it to read as the rewritten form.
  t.ok(second.ok, `node proxy killed: pulled through the cluster proxy: ${second.line}`);

  await kill(clusterProxy);
  const plain = criPull(`127.0.0.1:${ORIGIN}/team/two:v1`);
  t.ok(plain.ok, `both proxies down: mirror-mode pull reaches the origin: ${plain.line}`);

  const nodeProxyAgain = startProxy('node-proxy', NODE_PROXY);
  procs.push(nodeProxyAgain);
  await ready(NODE_PROXY, nodeProxyAgain);
  execFileSync(join(LAB, 'registry-down.sh'), ['origin'], { env, stdio: 'ignore' });
  const cached = criPull(rewritten.value);
  t.ok(cached.ok, `origin stopped: the cached image pulls through the node proxy: ${cached.line}`);
});
