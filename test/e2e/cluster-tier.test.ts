/**
 * The cluster tier with real parts: six node proxies and two cluster-proxy replicas sharing one
 * distribution registry as the cache registry, the origin behind a logging front whose access
 * log shows every request that reached it. Six concurrent cold pulls of one image (and of another,
 * two of them by real containerds) fetch each blob and the manifest from the origin once; a
 * seventh node then gets everything from the cache registry; a replica killed mid-blob (a slow
 * origin link) leaves the client resuming to a whole blob and nothing partial stored; with the
 * replicas gone, or one that accepts and never answers, a cold image still pulls from the origin.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { request } from 'undici';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { accessLog, Lab, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { eventually } from '../helpers/wait.js';

const ORIGIN = 15280;
const CACHE = 15281;
const FRONT = 15282;
/** The same origin behind a slow link, for a blob still arriving when its replica is killed. */
const SLOW = 15292;
/** A cluster proxy that accepts connections and never answers. */
const HUNG = 15293;
/** CRI ports of the two containerds. */
const CRI = [15294, 15295];
const REPLICAS = [15283, 15284];
const NODES = [15285, 15286, 15287, 15288, 15289, 15290, 15291];

const lab = new Lab('cluster-tier');
const originHost = `127.0.0.1:${FRONT}`;
const enc = `127.0.0.1_${FRONT}`;
const slowEnc = `127.0.0.1_${SLOW}`;
const cacheUrl = `http://127.0.0.1:${CACHE}`;
const replicaUrls = REPLICAS.map((p) => `http://127.0.0.1:${p}`);
const started: TestProxy[] = [];
let app: Image;
let cold: Image;
let big: Image;
let hung: Image;
let ctr: Image;
let frontLog: string;

t.teardown(async () => {
  for (const p of started) await p.stop();
  await lab.cleanup();
});

const common = [
  '--cache-registry',
  cacheUrl,
  '--insecure-registries',
  `${originHost},127.0.0.1:${SLOW}`,
  '--cache-timeout',
  '3s',
];

async function replica(port: number): Promise<TestProxy> {
  const self = `http://127.0.0.1:${port}`;
  const flags = ['--data-dir', lab.tempDir(`pt-cluster-${port}`), ...common];
  const p = await startProxy([...flags, '--cluster-proxy', replicaUrls.join(','), '--cluster-self', self], { port });
  started.push(p);
  return p;
}

async function node(port: number): Promise<TestProxy> {
  const flags = ['--data-dir', lab.tempDir(`pt-node-${port}`), ...common];
  const p = await startProxy([...flags, '--cluster-proxy', replicaUrls.join(','), '--cluster-cooldown', '60s'], {
    port,
  });
  started.push(p);
  return p;
}

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

interface Pulled {
  /** `manifest <source>`, then `<digest prefix> <source>` per blob (the Pullthrough-Source header). */
  readonly sources: string[];
}

/** What a client does: the manifest by tag, then its config and layers, each checked. */
async function pull(p: TestProxy, repo: string, tag: string): Promise<Pulled> {
  const m = await request(`${p.url}/v2/${enc}/${repo}/manifests/${tag}`, { headers: { accept: MANIFEST_ACCEPT } });
  const bytes = Buffer.from(await m.body.arrayBuffer());
  if (m.statusCode !== 200) throw new Error(`manifest ${m.statusCode}: ${bytes.toString().slice(0, 300)}`);
  const manifest = JSON.parse(bytes.toString()) as { config: { digest: string }; layers: { digest: string }[] };
  const sources = [`manifest ${String(m.headers['pullthrough-source'])}`];
  for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
    const b = await request(`${p.url}/v2/${enc}/${repo}/blobs/${d}`);
    const body = Buffer.from(await b.body.arrayBuffer());
    if (b.statusCode !== 200) throw new Error(`blob ${d} ${b.statusCode}: ${body.toString().slice(0, 300)}`);
    if (sha(body) !== d) throw new Error(`blob ${d} arrived corrupt`);
    sources.push(`${d.slice(7, 15)} ${String(b.headers['pullthrough-source'])}`);
  }
  return { sources };
}

/** GETs that reached the origin, by path (manifests and blobs of `repo`). */
function originGets(repo: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const e of accessLog(frontLog)) {
    if (e.method !== 'GET' || !e.uri.startsWith(`/v2/${repo}/`)) continue;
    const path = e.uri.split('?')[0] as string;
    counts.set(path, (counts.get(path) ?? 0) + 1);
  }
  return counts;
}

t.before(async () => {
  const origin = await lab.registry('origin', ORIGIN);
  await lab.registry('cache', CACHE);
  frontLog = (await lab.logproxy('origin-front', FRONT, origin.url)).log;
  await lab.logproxy('origin-slow', SLOW, origin.url, ['--rate', '1000000']);
  await lab.logproxy('hung-replica', HUNG, origin.url, ['--hang']);
  [app, cold, big, hung, ctr] = await Promise.all([
    lab.image(origin.host, 'library/app', 'v1', ['--layers', '3', '--layer-mb', '8']),
    lab.image(origin.host, 'library/cold', 'v1', ['--layers', '2']),
    lab.image(origin.host, 'library/big', 'v1', ['--layers', '1', '--layer-mb', '12']),
    lab.image(origin.host, 'library/hung', 'v1', ['--layers', '1']),
    lab.image(origin.host, 'library/ctr', 'v1', ['--layers', '2', '--layer-mb', '4']),
  ]);
});

t.test('six nodes pull one cold image at once: the origin serves each blob and the manifest once', async (t) => {
  const replicas = await Promise.all(REPLICAS.map((p) => replica(p)));
  const nodes = await Promise.all(NODES.slice(0, 6).map((p) => node(p)));
  const results = await Promise.all(nodes.map((n) => pull(n, 'library/app', 'v1')));
  t.equal(results.length, 6, 'every node pulled the whole image, verified');
  for (const r of replicas) await r.settle(180_000);
  for (const n of nodes) await n.settle(60_000);
  const gets = originGets('library/app');
  const blobs = [...gets].filter(([path]) => path.includes('/blobs/'));
  const manifests = [...gets].filter(([path]) => path.includes('/manifests/'));
  t.equal(blobs.length, app.layers.length + 1, 'the config and every layer came from the origin');
  t.same(
    blobs.filter(([, n]) => n !== 1),
    [],
    'each blob once',
  );
  t.same(manifests, [[`/v2/library/app/manifests/v1`, 1]], 'the manifest once, by its tag');
  const uploads = nodes.flatMap((n) => n.logs().filter((l) => l.msg === 'blob fill failed; nothing was cached'));
  t.same(uploads, [], 'no node fill failed');
});

t.test('two containerds and four clients on six nodes pull one cold image: each object once', async (t) => {
  const nodes = started.slice(2, 8);
  const [n1, n2] = nodes as [TestProxy, TestProxy];
  await Promise.all(CRI.map((port, i) => lab.containerd(`node-${i + 1}`, port)));
  const results = await Promise.all([
    lab.criPull('node-1', `${n1.host}/${enc}/library/ctr:v1`),
    lab.criPull('node-2', `${n2.host}/${enc}/library/ctr:v1`),
    ...nodes.slice(2).map((n) => pull(n, 'library/ctr', 'v1')),
  ]);
  for (const r of results.slice(0, 2)) t.ok('image_ref' in r && r.image_ref, `containerd pulled: ${JSON.stringify(r)}`);
  for (const r of started.slice(0, 2)) await r.settle(180_000);
  const gets = [...originGets('library/ctr')];
  t.equal(gets.filter(([path]) => path.includes('/blobs/')).length, ctr.layers.length + 1, 'every blob at the origin');
  t.same(
    gets.filter(([, n]) => n !== 1),
    [],
    'each blob and the manifest once',
  );
});

t.test('a seventh node then gets everything from the cache registry', async (t) => {
  // The tag is written after the manifest, past what settle() waits for.
  await eventually(async () => {
    const res = await request(`${cacheUrl}/v2/pullthrough-tags/${enc}/library/app/manifests/v1`, {
      headers: { accept: MANIFEST_ACCEPT },
    });
    await res.body.dump();
    return res.statusCode === 200;
  }, 'the tag in the cache registry');
  const before = originGets('library/app');
  const seventh = await node(NODES[6] as number);
  const { sources } = await pull(seventh, 'library/app', 'v1');
  t.same(
    sources.filter((s) => !s.endsWith(' cache')),
    [],
    'the manifest and every blob from the cache',
  );
  t.same(originGets('library/app'), before, 'nothing more from the origin');
});

/** A blob as containerd fetches it: on a cut connection, again from where it stopped (Range). */
async function getResuming(url: string): Promise<{ body: Buffer; attempts: number }> {
  const parts: Buffer[] = [];
  let got = 0;
  let last: unknown;
  for (let attempt = 1; attempt <= 5; attempt++) {
    try {
      const res = await request(url, got > 0 ? { headers: { range: `bytes=${got}-` } } : {});
      if (res.statusCode !== (got > 0 ? 206 : 200)) {
        await res.body.dump();
        throw new Error(`status ${res.statusCode}`);
      }
      for await (const chunk of res.body) {
        parts.push(chunk as Buffer);
        got += (chunk as Buffer).length;
      }
      return { body: Buffer.concat(parts), attempts: attempt };
    } catch (err) {
      last = err;
    }
  }
  throw last;
}

t.test('a cluster proxy killed mid-blob: the pull completes, nothing partial is stored', async (t) => {
  const replicas = started.slice(0, 2);
  const n = started[3] as TestProxy;
  const layer = big.layers[0] as string;
  const repo = `${slowEnc}/library/big`;
  const pulling = getResuming(`${n.url}/v2/${repo}/blobs/${layer}`);
  const owner = await eventually(
    () => replicas.find((r) => (r.fills.get(repo, layer)?.written ?? 0) > 2 * 1024 * 1024),
    'a replica filling the blob',
    60_000,
  );
  await owner.stop(0);
  const { body, attempts } = await pulling;
  t.equal(sha(body), layer, 'the client got the whole blob, verified');
  t.ok(attempts > 1, `it resumed after the cut (${attempts} requests)`);
  const other = replicas.find((r) => r !== owner) as TestProxy;
  await other.settle(120_000);
  await n.settle(120_000);
  const stored = await request(`${cacheUrl}/v2/${repo}/blobs/${layer}`);
  const bytes = Buffer.from(await stored.body.arrayBuffer());
  t.ok(
    stored.statusCode === 404 || sha(bytes) === layer,
    `the cache registry has all of it or none (${stored.statusCode})`,
  );
});

t.test('with the cluster proxies gone, a cold image still pulls from the origin', async (t) => {
  for (const r of started.slice(0, 2)) await r.stop();
  const n = started[2] as TestProxy;
  await pull(n, 'library/cold', 'v1');
  const warned = n.logs().filter((l) => l.msg === 'cluster proxy did not answer; asking the origin directly');
  t.ok(warned.length >= 1, 'the node says it skipped the cluster tier');
  await n.settle(120_000);
  const stored = await request(`${cacheUrl}/v2/${enc}/library/cold/manifests/${cold.digest}`, {
    headers: { accept: MANIFEST_ACCEPT },
  });
  await stored.body.dump();
  t.equal(stored.statusCode, 200, 'the node that went to the origin itself stored the image');
});

t.test('a cluster proxy that never answers: the node fetches from the origin itself', async (t) => {
  const flags = ['--data-dir', lab.tempDir('pt-node-hung'), ...common, '--cluster-timeout', '1s'];
  const n = await startProxy([...flags, '--cluster-proxy', `http://127.0.0.1:${HUNG}`]);
  started.push(n);
  await pull(n, 'library/hung', 'v1');
  const warned = n.logs().filter((l) => l.msg === 'cluster proxy did not answer; asking the origin directly');
  t.equal(warned.length, 1, 'once: then the replica is skipped for the cool-down');
  t.equal(originGets('library/hung').size, hung.layers.length + 2, 'the manifest and every blob from the origin');
});
