/**
 * Private images go to the node itself only (issue 22, bug 4): a node proxy listening on every
 * address, and a second host made by the test (a network namespace behind a veth pair) standing in
 * for a pod on the pod network. The namespace's requests are refused the private image, cached or
 * not, by tag and by digest, while a public image is served to it; the node's own requests
 * (127.0.0.1, and the host side of the veth, an address of a local interface) get the private one.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { prepareSpoolDir } from '../../src/cache/blob-fills.js';
import { readProxyConfig } from '../../src/config/proxy.js';
import { createKubeClient, startPodCredentials, type NodeKube } from '../../src/kube/index.js';
import { createLogger } from '../../src/observability/logger.js';
import { buildProxy, type BuiltProxy } from '../../src/proxy/build-proxy.js';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { Lab, type Image } from '../helpers/lab.js';
import { basicAuth, dockerConfigSecret, eventually, NODE, pod } from '../kube/helpers.js';
import { PassThrough } from 'node:stream';

const run = promisify(execFile);
const PRIVATE_PORT = 15130;
const PUBLIC_PORT = 15131;
const PROXY_PORT = 15132;
const priv = `127.0.0.1:${PRIVATE_PORT}`;
const pub = `127.0.0.1:${PUBLIC_PORT}`;
const PW = 'N0de-only-pw';
const NS = `pt-nodeonly-${process.pid}`;
const HOST_IF = `ptn${process.pid % 100000}h`;
const NS_IF = `ptn${process.pid % 100000}n`;
const HOST_ADDR = '10.213.77.1';
const NS_ADDR = '10.213.77.2';
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json';

async function makeNamespace(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'not root: a network namespace cannot be created';
  try {
    await run('ip', ['netns', 'add', NS]);
    await run('ip', ['link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', NS_IF]);
    await run('ip', ['link', 'set', NS_IF, 'netns', NS]);
    await run('ip', ['addr', 'add', `${HOST_ADDR}/30`, 'dev', HOST_IF]);
    await run('ip', ['link', 'set', HOST_IF, 'up']);
    await run('ip', ['netns', 'exec', NS, 'ip', 'addr', 'add', `${NS_ADDR}/30`, 'dev', NS_IF]);
    await run('ip', ['netns', 'exec', NS, 'ip', 'link', 'set', NS_IF, 'up']);
    await run('ip', ['netns', 'exec', NS, 'ip', 'link', 'set', 'lo', 'up']);
    return undefined;
  } catch (err) {
    return `a network namespace cannot be made here: ${(err as Error).message.split('\n')[0] ?? ''}`;
  }
}

async function removeNamespace(): Promise<void> {
  await run('ip', ['link', 'del', HOST_IF]).catch(() => undefined);
  await run('ip', ['netns', 'del', NS]).catch(() => undefined);
}

interface Answer {
  status: number;
  code: string | undefined;
  auth: string | undefined;
}

/** A GET from inside the namespace: curl, whose source address is the namespace's. */
async function fromNamespace(url: string): Promise<Answer> {
  const { stdout } = await run('ip', ['netns', 'exec', NS, 'curl', '-s', '-D', '-', '-H', `Accept: ${ACCEPT}`, url], {
    encoding: 'latin1',
    maxBuffer: 256 * 1024 * 1024,
  });
  const [head = '', body = ''] = stdout.split('\r\n\r\n');
  const status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(head)?.[1] ?? 0);
  const auth = /^www-authenticate: (.*)$/im.exec(head)?.[1];
  return { status, code: errorCode(body), auth };
}

async function fromNode(url: string): Promise<Answer> {
  const res = await fetch(url, { headers: { accept: ACCEPT } });
  const body = await res.text();
  return { status: res.status, code: errorCode(body), auth: res.headers.get('www-authenticate') ?? undefined };
}

function errorCode(body: string): string | undefined {
  try {
    return (JSON.parse(body) as { errors?: { code: string }[] }).errors?.[0]?.code;
  } catch {
    return undefined;
  }
}

t.test('private images to the node itself only', async (t) => {
  const why = await makeNamespace();
  t.teardown(removeNamespace);
  if (why) {
    t.plan(0, why);
    return;
  }
  const lab = new Lab('node-only');
  const dataDir = lab.tempDir('pt-node-only');
  const api = await FakeApiServer.start();
  const running: { proxy?: BuiltProxy; kube?: NodeKube } = {};
  let logText = '';
  t.teardown(async () => {
    await running.proxy?.close(500);
    await running.kube?.stop();
    await api.close();
    await lab.cleanup();
  });

  await Promise.all([
    lab.registry('priv', PRIVATE_PORT, ['--htpasswd', `bob:${PW}`]),
    lab.registry('pub', PUBLIC_PORT),
  ]);
  const [privImg, pubImg]: Image[] = await Promise.all([
    lab.image(priv, 'team/app', 'v1', ['--layers', '1', '--creds', `bob:${PW}`]),
    lab.image(pub, 'library/pub', 'v1', ['--layers', '1']),
  ]);
  if (!privImg || !pubImg) throw new Error('images not made');

  // As `pullthrough proxy --node-name` wires it, listening on every address so that the namespace
  // can reach it (the install listens on 127.0.0.1 only; this is the defence behind that).
  const { config } = readProxyConfig(
    [
      '--node-name',
      NODE,
      '--listen',
      `0.0.0.0:${PROXY_PORT}`,
      '--metrics-listen',
      '',
      '--log-level',
      'debug',
      '--data-dir',
      dataDir,
      '--insecure-registries',
      `${priv},${pub}`,
    ],
    {},
  );
  t.equal(config.privateTo, 'node', 'the default for a node proxy');
  await prepareSpoolDir(join(config.dataDir, 'tmp'));
  const sink = new PassThrough();
  sink.on('data', (c: Buffer) => (logText += c.toString('utf8')));
  const log = createLogger(config.logLevel, sink);
  const k = startPodCredentials({
    client: createKubeClient({ kubeconfig: await writeKubeconfig(api), requestTimeoutMs: 1000 }),
    nodeName: NODE,
    logger: log.child({ component: 'kube' }),
    informer: { backoff: { initialMs: 50, maxMs: 500 }, watch: { timeoutSeconds: 60, connectTimeoutMs: 1000 } },
  });
  running.kube = k;
  const p = buildProxy(config, { log, podCredentials: k.source, pods: k.credentials });
  running.proxy = p;
  await p.app.listen({ host: config.listen.host, port: config.listen.port });

  api.putSecret(dockerConfigSecret('team-a', 'regcred', { [priv]: basicAuth('bob', PW) }));
  api.addPod(pod('a', { namespace: 'team-a', images: [`${priv}/team/app:v1`], pullSecrets: ['regcred'] }));
  await eventually(() => k.credentials.podsUsing(priv, 'team/app').length === 1, 'pod a on the node');

  const path = (host: string, registry: string, repo: string) =>
    `http://${host}:${PROXY_PORT}/v2/${registry.replace(':', '_')}/${repo}`;
  const privObjects = (host: string): [string, string][] => [
    ['the tag', `${path(host, priv, 'team/app')}/manifests/v1`],
    ['the manifest by digest', `${path(host, priv, 'team/app')}/manifests/${privImg.digest}`],
    ['a layer', `${path(host, priv, 'team/app')}/blobs/${privImg.layers[0] ?? ''}`],
  ];

  await t.test('the namespace cannot reach the private image before the node pulled it', async (t) => {
    for (const [what, url] of privObjects(HOST_ADDR)) {
      const r = await fromNamespace(url);
      t.same([r.status, r.code, r.auth], [401, 'UNAUTHORIZED', undefined], `${what}: refused, no challenge`);
    }
  });

  await t.test('the node gets the private image, at 127.0.0.1 and at its veth address', async (t) => {
    for (const host of ['127.0.0.1', HOST_ADDR])
      for (const [what, url] of privObjects(host)) t.equal((await fromNode(url)).status, 200, `${host}: ${what}`);
    await eventually(() => p.pull.persister.pending === 0 && p.fills.size === 0, 'the proxy settles');
  });

  await t.test('the namespace is refused the cached private image, by tag and by digest', async (t) => {
    for (const [what, url] of privObjects(HOST_ADDR)) {
      const r = await fromNamespace(url);
      t.same([r.status, r.code, r.auth], [401, 'UNAUTHORIZED', undefined], `${what}: 401 UNAUTHORIZED, no challenge`);
    }
    const lines = logText
      .split('\n')
      .filter((l) => l.includes('the request does not come from this node'))
      .map((l) => JSON.parse(l) as { peer?: string; reason?: string });
    t.ok(lines.length >= 3, 'each refusal is logged');
    t.ok(
      lines.every((l) => l.peer === NS_ADDR && l.reason === 'not-node'),
      'naming the peer',
    );
  });

  await t.test('the namespace gets a public image', async (t) => {
    const base = path(HOST_ADDR, pub, 'library/pub');
    t.equal((await fromNamespace(`${base}/manifests/v1`)).status, 200, 'the tag');
    t.equal((await fromNamespace(`${base}/manifests/${pubImg.digest}`)).status, 200, 'the manifest by digest');
    t.equal((await fromNamespace(`${base}/blobs/${pubImg.layers[0] ?? ''}`)).status, 200, 'a layer');
  });

  await t.test('the node still gets the private image', async (t) => {
    for (const [what, url] of privObjects('127.0.0.1')) t.equal((await fromNode(url)).status, 200, what);
  });
});
