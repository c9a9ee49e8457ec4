/**
 * The cluster tier on object storage, and the S3 overlay's rolling update, with real parts: two
 * cache registry replicas as manifests/overlays/s3-registry runs them on one radosgw bucket,
 * behind a TCP balancer standing in for their Service (test/helpers/s3-lab.ts); a cluster proxy
 * and two node proxies on that registry; a real containerd.
 *
 * - Two nodes pull one cold image at once: the origin serves each blob once, the blobs land in
 *   the bucket; a warm pull through a node proxy is answered with the registry's redirects (no
 *   blob bytes through the node proxy); with the origin stopped the image still pulls.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { Agent, request } from 'undici';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { accessLog, Lab, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { s3StoreFor, startBalancer, startReplica, startS3, type Balancer, type S3Keys } from '../helpers/s3-lab.js';

/** s3-up.sh takes S3..S3+12. */
const S3 = 15590;
const ORIGIN = 15603;
const FRONT = 15604;
const S3_FRONT = 15605;
const BALANCER = 15606;
const R1 = 15607;
const R2 = 15608;
const TIER = 15611;
const NODE1 = 15612;
const NODE2 = 15613;
const CRI = 15614;

const lab = new Lab('s3-cluster-tier');
const agent = new Agent({ connect: { timeout: 2000 } });
const s3Front = `127.0.0.1:${S3_FRONT}`;
const originHost = `127.0.0.1:${FRONT}`;
const enc = `127.0.0.1_${FRONT}`;
const cacheUrl = `http://127.0.0.1:${BALANCER}`;
const tierUrl = `http://127.0.0.1:${TIER}`;
const replicas: string[] = [];
const started: TestProxy[] = [];
let s3Up = false;
let keys: S3Keys;
let balancer: Balancer | undefined;
let originFront = '';
let app: Image;

t.teardown(async () => {
  for (const p of started) await p.stop();
  await balancer?.close();
  await agent.close();
  for (const r of replicas) await lab.down(r);
  // Started with lab.script, so not in the lab's own list: stopped before cleanup removes its directory.
  if (s3Up) await lab.down('s3');
  await lab.cleanup();
});

async function replica(name: string, port: number): Promise<void> {
  replicas.push(name);
  await startReplica(lab, name, port, `http://${s3Front}`, keys);
}

const common = () => [
  '--cache-registry',
  cacheUrl,
  // The origin, and the object store the cache registry redirects to: both on loopback.
  '--insecure-registries',
  `${originHost},${s3Front}`,
  '--cache-timeout',
  '5s',
  '--cluster-proxy',
  tierUrl,
];

async function proxyOn(port: number, name: string, more: string[] = []): Promise<TestProxy> {
  const p = await startProxy(['--data-dir', lab.tempDir(`pt-${name}`), ...common(), ...more], { port });
  started.push(p);
  return p;
}

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/**
 * What a client that follows redirects does: the manifest by tag, then its config and layers,
 * each checked. Returns the status the proxy gave each blob GET.
 */
async function pull(p: TestProxy, repo: string, tag: string): Promise<number[]> {
  const m = await request(`${p.url}/v2/${enc}/${repo}/manifests/${tag}`, {
    headers: { accept: MANIFEST_ACCEPT },
    dispatcher: agent,
  });
  const bytes = Buffer.from(await m.body.arrayBuffer());
  if (m.statusCode !== 200) throw new Error(`manifest ${m.statusCode}: ${bytes.toString().slice(0, 300)}`);
  const manifest = JSON.parse(bytes.toString()) as { config: { digest: string }; layers: { digest: string }[] };
  const statuses: number[] = [];
  for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
    const b = await request(`${p.url}/v2/${enc}/${repo}/blobs/${d}`, { dispatcher: agent });
    statuses.push(b.statusCode);
    let body: Buffer;
    if (b.statusCode === 307) {
      await b.body.dump();
      const to = await request(String(b.headers.location), { dispatcher: agent });
      body = Buffer.from(await to.body.arrayBuffer());
      if (to.statusCode !== 200) throw new Error(`blob ${d}: the redirect target answered ${to.statusCode}`);
    } else {
      body = Buffer.from(await b.body.arrayBuffer());
      if (b.statusCode !== 200) throw new Error(`blob ${d} ${b.statusCode}: ${body.toString().slice(0, 300)}`);
    }
    if (sha(body) !== d) throw new Error(`blob ${d} arrived corrupt`);
  }
  return statuses;
}

/** GETs that reached the origin, by path (manifests and blobs of `repo`). */
function originGets(repo: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const e of accessLog(originFront)) {
    if (e.method !== 'GET' || !e.uri.startsWith(`/v2/${repo}/`)) continue;
    const path = e.uri.split('?')[0] as string;
    counts.set(path, (counts.get(path) ?? 0) + 1);
  }
  return counts;
}

async function servedBytes(p: TestProxy): Promise<number> {
  return (await p.metrics.bytesServed.get()).values.reduce((sum, v) => sum + v.value, 0);
}

t.before(async () => {
  keys = await startS3(lab, S3);
  s3Up = true;
  await lab.logproxy('s3-front', S3_FRONT, `http://127.0.0.1:${S3}`);
  const origin = await lab.registry('origin', ORIGIN);
  originFront = (await lab.logproxy('origin-front', FRONT, origin.url)).log;
  app = await lab.image(origin.host, 'library/app', 'v1', ['--layers', '4', '--layer-mb', '4']);
  await replica('r1', R1);
  await replica('r2', R2);
  balancer = await startBalancer(BALANCER, [R1, R2]);
});

t.test('the cluster tier on object storage', async (t) => {
  const tier = await proxyOn(TIER, 'tier', ['--cluster-self', tierUrl]);
  const n1 = await proxyOn(NODE1, 'node1');
  const n2 = await proxyOn(NODE2, 'node2');
  await lab.containerd('node', CRI);
  const ref = `${n1.host}/${enc}/library/app:v1`;

  t.test('two nodes pull a cold image at once: one origin fetch of each blob, stored in the bucket', async (t) => {
    const [cri, http] = await Promise.all([lab.criPull('node', ref), pull(n2, 'library/app', 'v1')]);
    t.notOk(cri.error, `containerd pulled through node 1: ${cri.error ?? ''} ${cri.details ?? ''}`);
    t.equal(http.length, app.layers.length + 1, 'a client pulled the whole image through node 2, verified');
    await tier.settle(180_000);
    for (const n of [n1, n2]) await n.settle(180_000);
    const blobs = [...originGets('library/app')].filter(([path]) => path.includes('/blobs/'));
    t.equal(blobs.length, app.layers.length + 1, 'the config and every layer came from the origin');
    t.same(
      blobs.filter(([, n]) => n !== 1),
      [],
      'each blob once',
    );
    const bucket = s3StoreFor(`http://127.0.0.1:${R2}`, agent);
    for (const l of app.layers) {
      t.ok(await bucket.statBlob(`${enc}/library/app`, l), `layer ${l.slice(7, 19)} is in the bucket`);
    }
    const stored = await request(`http://127.0.0.1:${R1}/v2/${enc}/library/app/manifests/${app.digest}`, {
      headers: { accept: MANIFEST_ACCEPT },
      dispatcher: agent,
    });
    await stored.body.dump();
    t.equal(stored.statusCode, 200, 'the manifest is stored');
    const failed = [tier, n1, n2].flatMap((p) =>
      p.logs().filter((l) => /could not persist|not stored|fill failed/.test(String(l.msg))),
    );
    t.same(failed, [], 'no proxy failed to store anything');
  });

  t.test('a warm pull through a node proxy is answered with redirects', async (t) => {
    await lab.removeImage('node', ref);
    const servedBefore = await servedBytes(n1);
    const linesBefore = n1.logs().length;
    const r = await lab.criPull('node', ref);
    t.notOk(r.error, `warm pull: ${r.error ?? ''} ${r.details ?? ''}`);
    const gets = n1
      .logs()
      .slice(linesBefore)
      .filter((l) => l.msg === 'request' && l.method === 'GET' && String(l.path).includes('/blobs/'));
    t.equal(gets.length, app.layers.length + 1, 'containerd asked node 1 for the config and every layer');
    t.ok(
      gets.every((l) => l.status === 307 && l.source === 'cache' && l.bytes === 0),
      'each answered with the registry redirect',
    );
    const served = (await servedBytes(n1)) - servedBefore;
    t.ok(served < 64 * 1024, `node 1 served ${served} bytes: manifests only`);
    const n2Before = await servedBytes(n2);
    const statuses = await pull(n2, 'library/app', 'v1');
    t.same(
      statuses.filter((s) => s !== 307),
      [],
      'node 2 redirects every blob too',
    );
    t.ok((await servedBytes(n2)) - n2Before < 64 * 1024, 'and serves no blob bytes');
  });

  t.test('the origin stopped: the image still pulls', async (t) => {
    await lab.down('origin-front');
    await lab.removeImage('node', ref);
    const r = await lab.criPull('node', ref);
    t.notOk(r.error, `pull with the origin stopped: ${r.error ?? ''} ${r.details ?? ''}`);
    const statuses = await pull(n2, 'library/app', 'v1');
    t.equal(statuses.length, app.layers.length + 1, 'a client pulls it through node 2, verified');
  });
});
