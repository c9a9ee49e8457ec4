/**
 * A private image across the cluster tier: two node proxies whose pods come from a fake API
 * server ask two cluster-proxy replicas (which hold no credential for the origin) before the
 * origin. The tier refuses the private image asked without a credential; node A then passes it
 * the credential its pod's secret proved at the origin, for that request, and serves the image;
 * node B, whose pod lacks the secret, is refused, by the tier, the origin and the cache alike.
 * (cluster-tier-hop.test.ts counts the origin's fetches.)
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { request } from 'undici';
import { createKubeClient, startPodCredentials, type NodeKube } from '../../src/kube/index.js';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { Lab, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { basicAuth, dockerConfigSecret, eventually, pod } from '../kube/helpers.js';

const PRIVATE = 15300;
const CACHE = 15301;
const REPLICAS = [15302, 15303];
const NODES = { 'node-a': 15304, 'node-b': 15305 } as const;
const PW = 'T1er-private-pw';
const priv = `127.0.0.1:${PRIVATE}`;
const enc = `127.0.0.1_${PRIVATE}`;
const replicaUrls = REPLICAS.map((p) => `http://127.0.0.1:${p}`);
const common = ['--cache-registry', `http://127.0.0.1:${CACHE}`, '--insecure-registries', priv];

const lab = new Lab('cluster-tier-private');
const started: TestProxy[] = [];
const kubes: NodeKube[] = [];
let api: FakeApiServer;
let image: Image;

t.teardown(async () => {
  for (const p of started) await p.stop();
  for (const k of kubes) await k.stop();
  await api.close();
  await lab.cleanup();
});

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function replica(port: number): Promise<TestProxy> {
  const flags = ['--data-dir', lab.tempDir(`pt-cprivate-${port}`), ...common, '--node-name=', '--private-images'];
  const p = await startProxy(
    [
      ...flags,
      'node-credentials',
      '--cluster-proxy',
      replicaUrls.join(','),
      '--cluster-self',
      `http://127.0.0.1:${port}`,
    ],
    { port },
  );
  started.push(p);
  return p;
}

async function node(name: keyof typeof NODES): Promise<TestProxy> {
  const kubeconfig = await writeKubeconfig(api);
  const flags = ['--data-dir', lab.tempDir(`pt-nprivate-${name}`), ...common, '--node-name', name];
  const p = await startProxy([...flags, '--cluster-proxy', replicaUrls.join(',')], {
    port: NODES[name],
    extraDeps: (_config, log) => {
      const k = startPodCredentials({
        client: createKubeClient({ kubeconfig, requestTimeoutMs: 1000 }),
        nodeName: name,
        logger: log.child({ component: 'kube' }),
        informer: { backoff: { initialMs: 50, maxMs: 500 }, watch: { timeoutSeconds: 60, connectTimeoutMs: 1000 } },
      });
      kubes.push(k);
      return { podCredentials: k.source, pods: k.credentials };
    },
  });
  started.push(p);
  return p;
}

async function get(p: TestProxy, path: string): Promise<{ status: number; bytes: Buffer }> {
  const res = await request(`${p.url}/v2/${enc}/team/app/${path}`, { headers: { accept: MANIFEST_ACCEPT } });
  return { status: res.statusCode, bytes: Buffer.from(await res.body.arrayBuffer()) };
}

t.before(async () => {
  api = await FakeApiServer.start();
  await Promise.all([lab.registry('priv', PRIVATE, ['--htpasswd', `bob:${PW}`]), lab.registry('cache', CACHE)]);
  image = await lab.image(priv, 'team/app', 'v1', ['--layers', '1', '--creds', `bob:${PW}`]);
  api.putSecret(dockerConfigSecret('team-a', 'regcred', { [priv]: basicAuth('bob', PW) }));
  api.addPod(pod('a', { node: 'node-a', images: [`${priv}/team/app:v1`], pullSecrets: ['regcred'] }));
  api.addPod(pod('b', { node: 'node-b', images: [`${priv}/team/app:v1`] }));
});

t.test('node A pulls the private image itself; node B, whose pod lacks the secret, is refused', async (t) => {
  const replicas = await Promise.all(REPLICAS.map((p) => replica(p)));
  const [a, b] = [await node('node-a'), await node('node-b')];
  const layer = image.layers[0] as string;
  const tag = await eventually(async () => {
    const r = await get(a, 'manifests/v1');
    return r.status === 200 ? r : undefined;
  }, 'node A sees its pod and gets the manifest');
  t.equal(sha(tag.bytes), image.digest, 'node A: the manifest');
  const blob = await get(a, `blobs/${layer}`);
  t.equal(sha(blob.bytes), layer, 'node A: the layer');
  const tierAnswers = replicas.flatMap((r) => r.logs().filter((l) => l.msg === 'request' && l.status === 401));
  t.ok(tierAnswers.length >= 1, 'the tier refused the private image asked without a credential');
  await a.settle();
  for (const what of ['manifests/v1', `manifests/${image.digest}`, `blobs/${layer}`]) {
    const r = await get(b, what);
    t.ok(r.status === 401 || r.status === 403, `node B: ${what} refused (${r.status})`);
  }
});
