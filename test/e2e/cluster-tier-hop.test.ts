/**
 * Credentials across the cluster tier (docs/credentials.md, "Across the cluster tier"): three
 * node proxies whose pods come from a fake API server ask two cluster-proxy replicas (which hold
 * no credential for the origins) before the origin. Nodes A and B have pods with the secret,
 * node C a pod without it. Against a token-auth origin and a Basic one: A and B pulling the same
 * cold private image at once make one origin GET of each blob (each node passes the tier its own
 * credential for the request); C is refused and never gets a byte; a replica asked without a
 * credential, or with one the origin refuses, refuses too, though the blobs are in its store;
 * a fill in progress at the replica (the token origin behind a slow link) is not joined by a
 * request without a credential or with a refused one; no token or password reaches any log line.
 * Ports 15400-15409: the token origin (token server 15401), the Basic origin, the cache registry,
 * the replicas, the nodes, the slow link.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { request } from 'undici';
import { createKubeClient, startPodCredentials, type NodeKube } from '../../src/kube/index.js';
import { HOP_AUTHORIZATION_HEADER } from '../../src/proxy/cluster-tier.js';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { Lab, registryRequests } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { basicAuth, dockerConfigSecret, eventually, pod } from '../kube/helpers.js';

const LOCKED = 15400;
const BASIC = 15402;
const CACHE = 15403;
const REPLICAS = [15404, 15405];
const NODES = { 'node-a': 15406, 'node-b': 15407, 'node-c': 15408 } as const;
/** The token origin behind a slow link: a blob still arriving while others ask for it. */
const SLOW = 15409;
const TOKEN_PW = 'H0p-alice-pw';
const BASIC_PW = 'H0p-bob-pw';
const locked = `127.0.0.1:${LOCKED}`;
const basic = `127.0.0.1:${BASIC}`;
const slow = `127.0.0.1:${SLOW}`;
const replicaUrls = REPLICAS.map((p) => `http://127.0.0.1:${p}`);
const common = [
  '--cache-registry',
  `http://127.0.0.1:${CACHE}`,
  '--insecure-registries',
  `${locked},127.0.0.1:${LOCKED + 1},${basic},${slow}`,
];

const lab = new Lab('cluster-tier-hop');
const started: TestProxy[] = [];
const kubes: NodeKube[] = [];
const replicas: TestProxy[] = [];
const nodes: Partial<Record<keyof typeof NODES, TestProxy>> = {};
let api: FakeApiServer;
let lockedDir: string;
let basicDir: string;

t.teardown(async () => {
  for (const p of started) await p.stop();
  for (const k of kubes) await k.stop();
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await api?.close();
  await lab.cleanup();
});

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const enc = (host: string) => host.replace(':', '_');

async function replica(port: number): Promise<TestProxy> {
  const flags = ['--data-dir', lab.tempDir(`pt-hop-r${port}`), ...common, '--node-name=', '--private-images'];
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
  const flags = ['--data-dir', lab.tempDir(`pt-hop-${name}`), ...common, '--node-name', name];
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

async function get(
  base: string,
  host: string,
  path: string,
  headers: Record<string, string> = {},
  repo = 'team/app',
): Promise<{ status: number; bytes: Buffer }> {
  const res = await request(`${base}/v2/${enc(host)}/${repo}/${path}`, {
    headers: { accept: MANIFEST_ACCEPT, ...headers },
  });
  return { status: res.statusCode, bytes: Buffer.from(await res.body.arrayBuffer()) };
}

/** A node's pull of team/app:v1: the manifest (once its pod is seen), then every blob at once. */
async function pull(p: TestProxy, host: string): Promise<string[]> {
  const m = await eventually(async () => {
    const r = await get(p.url, host, 'manifests/v1');
    return r.status === 200 ? r : undefined;
  }, `${p.host} sees its pod and gets the manifest`);
  const manifest = JSON.parse(m.bytes.toString('utf8')) as { config: { digest: string }; layers: { digest: string }[] };
  const blobs = [manifest.config.digest, ...manifest.layers.map((l) => l.digest)];
  await Promise.all(
    blobs.map(async (d) => {
      const b = await get(p.url, host, `blobs/${d}`);
      if (b.status !== 200 || sha(b.bytes) !== d) throw new Error(`${p.host}: blob ${d} answered ${b.status}`);
    }),
  );
  return blobs;
}

/** The origin's successful GETs of each blob of team/app (distribution's own access log). */
function blobGets(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const r of registryRequests(dir)) {
    const m = /^\/v2\/team\/app\/blobs\/(sha256:[0-9a-f]{64})/.exec(r.path);
    if (r.method === 'GET' && r.status === 200 && m) out.set(m[1] as string, (out.get(m[1] as string) ?? 0) + 1);
  }
  return out;
}

t.before(async () => {
  api = await FakeApiServer.start();
  lockedDir = (
    await lab.registry('locked', LOCKED, [
      '--token',
      '--no-anon',
      '--htpasswd',
      `alice:${TOKEN_PW}`,
      '--token-port',
      String(LOCKED + 1),
    ])
  ).dir;
  basicDir = (await lab.registry('basic', BASIC, ['--htpasswd', `bob:${BASIC_PW}`])).dir;
  await lab.registry('cache', CACHE);
  await lab.image(locked, 'team/app', 'v1', ['--layers', '3', '--creds', `alice:${TOKEN_PW}`]);
  await lab.image(basic, 'team/app', 'v1', ['--layers', '3', '--creds', `bob:${BASIC_PW}`]);
  await lab.image(locked, 'team/big', 'v1', ['--layers', '1', '--layer-mb', '4', '--creds', `alice:${TOKEN_PW}`]);
  await lab.logproxy('slow', SLOW, `http://${locked}`, ['--rate', String(256 * 1024)]);
  api.putSecret(
    dockerConfigSecret('team-a', 'regcred', {
      [locked]: basicAuth('alice', TOKEN_PW),
      [basic]: basicAuth('bob', BASIC_PW),
      [slow]: basicAuth('alice', TOKEN_PW),
    }),
  );
  const images = [`${locked}/team/app:v1`, `${basic}/team/app:v1`, `${slow}/team/big:v1`];
  api.addPod(pod('a', { node: 'node-a', images, pullSecrets: ['regcred'] }));
  api.addPod(pod('b', { node: 'node-b', images, pullSecrets: ['regcred'] }));
  api.addPod(pod('c', { node: 'node-c', images }));
  replicas.push(...(await Promise.all(REPLICAS.map((p) => replica(p)))));
  for (const name of Object.keys(NODES) as (keyof typeof NODES)[]) nodes[name] = await node(name);
});

for (const [origin, host, dir] of [
  ['token', locked, () => lockedDir],
  ['Basic', basic, () => basicDir],
] as const) {
  t.test(`${origin} origin: two nodes with credentials, one origin GET of each blob`, async (t) => {
    const [a, b] = [nodes['node-a'], nodes['node-b']] as [TestProxy, TestProxy];
    const [fromA, fromB] = await Promise.all([pull(a, host), pull(b, host)]);
    t.same(fromA, fromB, 'both nodes pulled the same blobs');
    const gets = blobGets(dir());
    for (const d of fromA) t.equal(gets.get(d), 1, `the origin served ${d.slice(7, 19)} once`);
    // The replicas served each node its blobs: the credential crossed the hop.
    const served = replicas.flatMap((r) =>
      r.logs().filter((l) => l.msg === 'request' && l.status === 200 && String(l.path).includes('/blobs/')),
    );
    for (const d of fromA) {
      const n = served.filter((l) => String(l.path).includes(`/team/app/blobs/${d}?ns=${encodeURIComponent(host)}`));
      t.ok(n.length >= 2, `the tier answered both nodes for ${d.slice(7, 19)} (${n.length})`);
    }
    for (const p of [a, b]) await p.settle();
    for (const r of replicas) await r.settle();
  });

  t.test(`${origin} origin: node C, whose pod lacks the secret, is refused and gets no byte`, async (t) => {
    const c = nodes['node-c'] as TestProxy;
    const manifest = await get(c.url, host, 'manifests/v1');
    t.ok(manifest.status === 401 || manifest.status === 403, `manifest refused (${manifest.status})`);
    const stored = blobGets(dir());
    for (const d of stored.keys()) {
      const r = await get(c.url, host, `blobs/${d}`);
      t.ok(r.status === 401 || r.status === 403, `blob ${d.slice(7, 19)} refused (${r.status})`);
    }
    const answered = c.logs().filter((l) => l.msg === 'request' && String(l.path).includes(enc(host)));
    t.ok(answered.length > 0, 'node C answered requests for the image');
    // An error answer's body is its OCI error JSON, never the image's.
    t.same(
      answered.filter((l) => Number(l.status) < 400),
      [],
      'node C answered no request for the image with its bytes',
    );
    t.equal(c.fills.size, 0, 'and holds no fill of it');
    // Straight to the replicas, as a node without a credential or with one the origin refuses.
    for (const d of stored.keys()) {
      for (const r of replicaUrls) {
        const none = await get(r, host, `blobs/${d}`);
        t.equal(none.status, 401, `${r}: no credential, blob ${d.slice(7, 19)} refused`);
        const wrong = await get(r, host, `blobs/${d}`, {
          [HOP_AUTHORIZATION_HEADER]:
            origin === 'token' ? 'Bearer not-a-token' : `Basic ${Buffer.from('bob:wrong').toString('base64')}`,
        });
        t.equal(wrong.status, 401, `${r}: a credential the origin refuses, blob ${d.slice(7, 19)} refused`);
      }
    }
  });
}

t.test('a fill in progress at the replica is joined only with a credential the origin accepts', async (t) => {
  const [a, c] = [nodes['node-a'], nodes['node-c']] as [TestProxy, TestProxy];
  const m = await get(a.url, slow, 'manifests/v1', {}, 'team/big');
  t.equal(m.status, 200, 'node A: the manifest');
  const layer = (JSON.parse(m.bytes.toString('utf8')) as { layers: { digest: string }[] }).layers[0]?.digest ?? '';
  const pulling = get(a.url, slow, `blobs/${layer}`, {}, 'team/big');
  const owner = await eventually(
    () => replicas.find((r) => r.fills.size > 0),
    'a replica fetching the layer for node A',
  );
  const none = await get(owner.url, slow, `blobs/${layer}`, {}, 'team/big');
  t.equal(none.status, 401, 'no credential: refused');
  const wrong = await get(
    owner.url,
    slow,
    `blobs/${layer}`,
    { [HOP_AUTHORIZATION_HEADER]: 'Bearer not-a-token' },
    'team/big',
  );
  t.equal(wrong.status, 401, 'a credential the origin refuses: refused');
  const fromC = await get(c.url, slow, `blobs/${layer}`, {}, 'team/big');
  t.ok(fromC.status === 401 || fromC.status === 403, `node C: refused (${fromC.status})`);
  t.ok(owner.fills.size > 0, "all of this while node A's fill was still running");
  const done = await pulling;
  t.equal(done.status, 200, 'node A: the layer');
  t.equal(sha(done.bytes), layer, 'whole and verified');
  const gets = registryRequests(lockedDir).filter(
    (r) => r.method === 'GET' && r.path.startsWith(`/v2/team/big/blobs/${layer}`) && r.status === 200,
  );
  t.equal(gets.length, 1, 'the origin sent the layer once');
});

t.test('no token, password or Authorization value in any log line', async (t) => {
  const text = started.map((p) => p.logText()).join('\n');
  t.ok(text.length > 0, 'the proxies logged');
  t.notOk(/eyJ[A-Za-z0-9_-]{8,}/.test(text), 'no JWT');
  t.notOk(/bearer\s+\S/i.test(text), 'no Bearer value');
  t.notOk(/basic\s+[A-Za-z0-9+/=]{8,}/i.test(text), 'no Basic value');
  for (const pw of [TOKEN_PW, BASIC_PW]) {
    t.notOk(text.includes(pw), 'no password');
    t.notOk(text.includes(Buffer.from(`alice:${pw}`).toString('base64')), 'no encoded credential');
    t.notOk(text.includes(Buffer.from(`bob:${pw}`).toString('base64')), 'no encoded credential');
  }
  await Promise.resolve();
});
