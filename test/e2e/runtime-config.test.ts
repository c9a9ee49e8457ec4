/**
 * The shipped values and the real startup: `pullthrough proxy` run as a child process (the
 * runProxy path) with --kubeconfig --node-name against the fake API server, a shared cache
 * registry and every other value at its default — it lists its node's pods, serves a private
 * image with a pod's pull secret, uploads the blobs to the cache registry, serves Prometheus text
 * on --metrics-listen that promtool accepts, and exits on SIGTERM. Then the timeouts against real
 * faults: --origin-connect-timeout against a connect nobody answers, --cache-timeout against a
 * cache registry that accepts and never answers.
 * Ports 15200 (public origin), 15202 (Basic origin), 15203 (cache registry), 15204 (hanging
 * cache), 15205 (unanswered connects), 15206/15207 (child proxy and its metrics).
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { resolve } from 'node:path';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { Lab, type Image } from '../helpers/lab.js';
import { startProxy } from '../helpers/proxy.js';
import { basicAuth, dockerConfigSecret, eventually, pod } from '../kube/helpers.js';
import { cacheRepositoryName } from '../../src/oci/encoding.js';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';

const PUBLIC = 15200;
const BASIC = 15202;
const CACHE = 15203;
const HANGING_CACHE = 15204;
const UNANSWERED = 15205;
const CHILD = 15206;
const CHILD_METRICS = 15207;
const pub = `127.0.0.1:${PUBLIC}`;
const basic = `127.0.0.1:${BASIC}`;
const enc = (host: string) => host.replace(':', '_');
const PW = 'Runt1me-pw-bob';
const NODE = 'node-rc';
const ROOT = resolve(import.meta.dirname, '../..');

const lab = new Lab('runtime-config');
let api: FakeApiServer;
let publicImage: Image;
let basicImage: Image;
const children: ChildProcess[] = [];

t.teardown(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await api?.close();
  await lab.cleanup();
});

t.before(async () => {
  api = await FakeApiServer.start();
  await Promise.all([
    lab.registry('public', PUBLIC),
    lab.registry('basic', BASIC, ['--htpasswd', `bob:${PW}`]),
    lab.registry('cache', CACHE),
  ]);
  [publicImage, basicImage] = await Promise.all([
    lab.image(pub, 'library/app', 'v1', ['--layers', '2']),
    lab.image(basic, 'team/app', 'v1', ['--layers', '2', '--creds', `bob:${PW}`]),
  ]);
});

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A whole pull over HTTP: the manifest, then its config and layers, each checked against its digest. */
async function pullOver(base: string, host: string, repo: string, image: Image): Promise<string[]> {
  const problems: string[] = [];
  const m = await fetch(`${base}/v2/${enc(host)}/${repo}/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
  const body = Buffer.from(await m.arrayBuffer());
  if (m.status !== 200) return [`manifest: ${m.status} ${body.toString('utf8')}`];
  if (sha256(body) !== image.digest) problems.push('manifest digest');
  const manifest = JSON.parse(body.toString('utf8')) as { config: { digest: string }; layers: { digest: string }[] };
  for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
    const b = await fetch(`${base}/v2/${enc(host)}/${repo}/blobs/${d}`);
    const bytes = Buffer.from(await b.arrayBuffer());
    if (b.status !== 200 || sha256(bytes) !== d) problems.push(`blob ${d.slice(7, 19)}: ${b.status}`);
  }
  return problems;
}

t.test('pullthrough proxy --kubeconfig --node-name, shipped defaults, /metrics, SIGTERM', async (t) => {
  api.putSecret(dockerConfigSecret('team-a', 'regcred', { [basic]: basicAuth('bob', PW) }));
  api.addPod(pod('a', { node: NODE, namespace: 'team-a', images: [`${basic}/team/app:v1`], pullSecrets: ['regcred'] }));
  const kubeconfig = await writeKubeconfig(api);
  const env = { ...process.env };
  delete env.NODE_NAME;
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      'src/main.ts',
      'proxy',
      '--listen',
      `127.0.0.1:${CHILD}`,
      '--metrics-listen',
      `127.0.0.1:${CHILD_METRICS}`,
      '--data-dir',
      lab.tempDir('pt-runtime-child'),
      '--cache-registry',
      `http://127.0.0.1:${CACHE}`,
      '--insecure-registries',
      `${pub},${basic}`,
      '--kubeconfig',
      kubeconfig,
      '--node-name',
      NODE,
    ],
    { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  children.push(child);
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (err += c.toString('utf8')));
  const exited = once(child, 'exit');
  const lines = () =>
    out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  // Starting through tsx compiles the sources first: most of a minute on a loaded 2-core machine.
  await eventually(
    () => lines().some((l) => l.msg === 'pullthrough proxy ready') || child.exitCode !== null,
    'ready',
    120_000,
  ).catch((e: unknown) => {
    throw new Error(`${String(e)}\nstdout: ${out.slice(-2000)}\nstderr: ${err.slice(-2000)}`);
  });
  t.equal(child.exitCode, null, `it started (${err.slice(0, 500)})`);
  const ready = lines().find((l) => l.msg === 'pullthrough proxy ready');
  t.match(ready?.podCredentials, { node: NODE }, 'with pod credentials for its node');

  await eventually(
    () =>
      api.requests.some(
        (r) => r.path === '/api/v1/pods' && !r.watch && r.query.fieldSelector === `spec.nodeName=${NODE}`,
      ),
    'the pod list',
  );
  t.pass('it listed the pods of its node');

  const base = `http://127.0.0.1:${CHILD}`;
  // The pod's secret is the only credential for the Basic origin: the informer must have it.
  await eventually(
    async () =>
      (
        await fetch(`${base}/v2/${enc(basic)}/team/app/manifests/v1`, {
          method: 'HEAD',
          headers: { accept: MANIFEST_ACCEPT },
        })
      ).status === 200,
    'the private manifest served',
  );
  t.same(await pullOver(base, basic, 'team/app', basicImage), [], 'a private image, with the pod secret');
  t.same(await pullOver(base, pub, 'library/app', publicImage), [], 'a public image');

  // The shipped upload deferral: once nothing else is fetching, every blob reaches the cache registry.
  const repo = cacheRepositoryName(basic, 'team/app');
  for (const d of basicImage.layers) {
    await eventually(
      async () => (await fetch(`http://127.0.0.1:${CACHE}/v2/${repo}/blobs/${d}`, { method: 'HEAD' })).status === 200,
      `layer ${d} in the cache registry`,
    );
  }
  t.pass('every layer was uploaded to the cache registry with the default deferral');

  const scrape = await fetch(`http://127.0.0.1:${CHILD_METRICS}/metrics`);
  t.equal(scrape.status, 200, '/metrics answers on --metrics-listen');
  t.match(scrape.headers.get('content-type'), /^text\/plain; version=0\.0\.4/, 'in the Prometheus text format');
  const text = await scrape.text();
  t.match(
    text,
    /^pullthrough_blob_fills_total\{result="verified"\} [1-9]/m,
    'with the proxy metrics: the fills of the pulls',
  );
  const check = await promtoolCheck(text);
  t.equal(check.code, 0, `promtool check metrics accepts it: ${check.output}`);

  child.kill('SIGTERM');
  const [code] = (await exited) as [number | null];
  t.equal(code, 0, 'exits 0 on SIGTERM');
  t.ok(
    lines().some((l) => l.msg === 'shutting down' && l.signal === 'SIGTERM'),
    'after saying it is shutting down',
  );
  t.notOk(out.includes(PW) || err.includes(PW), 'the password never reaches its output');
});

async function promtoolCheck(text: string): Promise<{ code: number; output: string }> {
  const p = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  p.stdout.on('data', (c: Buffer) => (output += c.toString('utf8')));
  p.stderr.on('data', (c: Buffer) => (output += c.toString('utf8')));
  p.stdin.end(text);
  const [code] = (await once(p, 'exit')) as [number];
  return { code, output };
}

t.test('--origin-connect-timeout: a connect nobody answers fails with an OCI error, no hang', async (t) => {
  // A listener whose accept queue is full: the kernel drops further SYNs, so connects hang.
  const holder = spawn(
    'python3',
    [
      '-c',
      'import socket,sys,time\n' +
        `s=socket.socket(); s.bind(("127.0.0.1",${UNANSWERED})); s.listen(0)\n` +
        `c=socket.create_connection(("127.0.0.1",${UNANSWERED}))\n` +
        'print("ready", flush=True); time.sleep(3600)',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  children.push(holder);
  t.teardown(() => void holder.kill('SIGKILL'));
  await once(holder.stdout as NodeJS.ReadableStream, 'data');
  const proxy = await startProxy([
    '--data-dir',
    lab.tempDir('pt-runtime-connect'),
    '--insecure-registries',
    `127.0.0.1:${UNANSWERED}`,
    '--origin-connect-timeout',
    '1s',
    '--origin-timeout',
    '120s',
  ]);
  t.teardown(() => proxy.stop());
  const started = Date.now();
  const res = await fetch(`${proxy.url}/v2/127.0.0.1_${UNANSWERED}/team/app/manifests/v1`, {
    headers: { accept: MANIFEST_ACCEPT },
    signal: AbortSignal.timeout(60_000),
  });
  const elapsed = Date.now() - started;
  const body = (await res.json()) as { errors: { code: string; message: string }[] };
  t.equal(res.status, 504, '504');
  t.equal(body.errors[0]?.code, 'UNAVAILABLE', 'UNAVAILABLE');
  t.match(
    body.errors[0]?.message,
    /timed out.*(connect|Connect)/i,
    `says the connect timed out: ${body.errors[0]?.message}`,
  );
  // The header timeout is 120 s here: an answer well before it came from the connect timeout.
  t.ok(elapsed < 60_000, `answered after ${elapsed} ms, not the header timeout`);
});

t.test(
  '--cache-timeout: a cache registry that never answers; pulls come from the origin, /readyz says so',
  async (t) => {
    await lab.logproxy('hanging-cache', HANGING_CACHE, `http://127.0.0.1:${CACHE}`, ['--hang']);
    const proxy = await startProxy([
      '--data-dir',
      lab.tempDir('pt-runtime-hang'),
      '--cache-registry',
      `http://127.0.0.1:${HANGING_CACHE}`,
      '--cache-timeout',
      '1s',
      '--insecure-registries',
      pub,
    ]);
    t.teardown(() => proxy.stop(100));
    t.same(await pullOver(proxy.url, pub, 'library/app', publicImage), [], 'the whole image, from the origin');
    const ready = await fetch(`${proxy.url}/readyz`);
    const body = (await ready.json()) as { status: string; reason?: string };
    t.equal(ready.status, 503, '/readyz: 503');
    t.equal(body.status, 'not ready', 'not ready');
    t.match(body.reason, /timeout|timed out/i, `because the cache registry timed out: ${body.reason ?? ''}`);
    t.ok(
      proxy.logs().some((l) => l.msg === 'cache store failed; serving from the origin without caching'),
      'the proxy logged that it serves without caching',
    );
  },
);
