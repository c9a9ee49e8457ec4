/**
 * The cache registry on object storage: distribution replicas on one bucket of a real S3 store
 * (the lab's radosgw), which answer blob reads with a 307 to a presigned object URL.
 *
 * - The store conformance suite on such a registry (the store follows the redirects).
 * - A node proxy and a real containerd: a cold pull fills the bucket; a warm pull is answered
 *   with the registry's redirects, so the blob bytes go from the object store to containerd and
 *   never through the proxy (its served-bytes metric, and the object store's front log: every
 *   layer fetched by containerd itself); a replica killed mid-pull; the origin stopped.
 *
 * The replicas run with the config and environment manifests/overlays/s3-registry renders
 * (test/manifests/s3-overlay.ts). The registries reach radosgw through a logging front
 * (S3_FRONT), so the presigned URLs name the front and every object read is in its log with its
 * user agent. The two replicas sit behind
 * a TCP balancer standing in for their Service: it connects to a replica that accepts, as a
 * Service's endpoints hold only ready pods.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Agent, request } from 'undici';
import { RegistryStore } from '../../src/cache/registry-store.js';
import { accessLog, Lab, registryRequests, restartRegistry } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import {
  onS3Flags,
  s3StoreFor,
  startBalancer,
  startReplica as startOverlayReplica,
  startS3,
  type Balancer,
  type S3Keys,
} from '../helpers/s3-lab.js';
import { testTempDir } from '../helpers/temp.js';
import { eventually } from '../helpers/wait.js';
import { storeConformance } from '../cache/store-conformance.js';

/** s3-up.sh takes S3..S3+12. */
const S3 = 15420;
const ORIGIN = 15433;
const R1 = 15434;
const R2 = 15435;
const BALANCER = 15436;
const S3_FRONT = 15437;
const CRI = 15438;
const CONF_ANON = 15439;
const CONF_TOKEN = 15440;
const CONF_TOKEN_REALM = 15441;
const NO_REDIRECT = 15442;

const run = promisify(execFile);
const lab = new Lab('s3-registry');
const agent = new Agent({ connect: { timeout: 2000 } });
const dataDir = lab.tempDir('pt-s3');
const s3Front = `127.0.0.1:${S3_FRONT}`;
const originHost = `127.0.0.1:${ORIGIN}`;
/** The rewritten form of the origin's library/app, as the proxy serves it without ?ns=. */
const CACHE_REPO_OF_APP = `127.0.0.1_${ORIGIN}/library/app`;
let s3Up = false;
let keys: S3Keys = { accessKey: '', secretKey: '' };
let frontLog = '';
let balancer: Balancer | undefined;
let proxy: TestProxy | undefined;

t.teardown(async () => {
  await proxy?.stop();
  await balancer?.close();
  await agent.close();
  for (const r of replicas) await lab.down(r);
  // Started with lab.script, so not in the lab's own list: stopped before cleanup removes its directory.
  if (s3Up) await lab.down('s3');
  await lab.cleanup();
});

const replicas: string[] = [];
/** The overlay's registry on this bucket; the Secret's keys and the operator's settings filled in. */
async function startReplica(name: string, port: number): Promise<void> {
  replicas.push(name);
  await startOverlayReplica(lab, name, port, `http://${s3Front}`, keys);
}

/** registry-up.sh flags for the bucket, through the front, under `root`. */
const onS3 = (root: string, ...more: string[]) => onS3Flags(`http://${s3Front}`, keys, root, ...more);

const storeFor = (url: string, creds?: { username: string; password: string }): RegistryStore =>
  s3StoreFor(url, agent, creds);

t.before(async () => {
  keys = await startS3(lab, S3);
  s3Up = true;
  frontLog = (await lab.logproxy('s3-front', S3_FRONT, `http://127.0.0.1:${S3}`)).log;
});

// Blob GETs and HEADs are 307s to presigned URLs: the store follows them.
storeConformance(t, 'registry store (distribution on S3, redirects on)', async () =>
  storeFor((await lab.registry('conf-anon', CONF_ANON, onS3('/conf-anon'))).url),
);
storeConformance(t, 'registry store (distribution on S3, token auth, redirects on)', async () =>
  storeFor(
    (
      await lab.registry(
        'conf-token',
        CONF_TOKEN,
        onS3('/conf-token', '--token', '--htpasswd', 'pt:secret', '--token-port', String(CONF_TOKEN_REALM)),
      )
    ).url,
    { username: 'pt', password: 'secret' },
  ),
);

t.test('blobLocation: the registry redirect, or that the registry serves the bytes itself', async (t) => {
  const blob = randomBytes(200_000);
  const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
  const file = join(testTempDir('location-'), 'blob');
  writeFileSync(file, blob);
  const repo = `loc.example/team/app${randomBytes(3).toString('hex')}`;
  const redirecting = storeFor(`http://127.0.0.1:${CONF_ANON}`);
  t.same(await redirecting.blobLocation(repo, digest), { kind: 'missing' }, 'an unknown blob is missing');
  await redirecting.putBlobFile(repo, digest, blob.length, file);
  const loc = await redirecting.blobLocation(repo, digest);
  t.equal(loc.kind, 'redirect', 'on S3 the registry redirects');
  if (loc.kind === 'redirect') {
    t.match(loc.url, new RegExp(`^http://${s3Front}/registry/conf-anon/docker/registry/v2/blobs/.*X-Amz-Signature=`));
    const part = await request(loc.url, { headers: { range: 'bytes=100-199' }, dispatcher: agent });
    t.equal(part.statusCode, 206, 'the presigned URL answers a Range');
    t.ok(Buffer.from(await part.body.arrayBuffer()).equals(blob.subarray(100, 200)), 'with those bytes');
  }
  const plain = storeFor((await lab.registry('no-redirect', NO_REDIRECT, onS3('/conf-anon', '--no-redirect'))).url);
  t.same(await plain.blobLocation(repo, digest), { kind: 'served' }, 'with redirects off it serves the bytes');
});

interface FrontEntry {
  method: string;
  uri: string;
  status: number;
  bytes: number;
  ua: string;
}

const frontEntries = () => accessLog(frontLog) as unknown as FrontEntry[];
const layerDigest = (uri: string) => /\/blobs\/sha256\/[0-9a-f]{2}\/([0-9a-f]{64})\/data/.exec(uri)?.[1];

async function servedBytes(p: TestProxy): Promise<number> {
  return (await p.metrics.bytesServed.get()).values.reduce((sum, v) => sum + v.value, 0);
}

t.test('a node proxy hands containerd the registry redirects', async (t) => {
  const origin = await lab.registry('origin', ORIGIN);
  // Two replicas on one bucket and root, each run as manifests/overlays/s3-registry runs it.
  await startReplica('r1', R1);
  await startReplica('r2', R2);
  balancer = await startBalancer(BALANCER, [R1, R2]);
  const [app, other] = await Promise.all([
    lab.image(origin.host, 'library/app', 'v1', ['--layers', '6', '--layer-mb', '4']),
    lab.image(origin.host, 'library/other', 'v1', ['--layers', '3', '--layer-mb', '2']),
  ]);
  const { hostsDir } = await lab.containerd('node', CRI);
  proxy = await startProxy([
    '--data-dir',
    dataDir,
    '--cache-registry',
    `http://127.0.0.1:${BALANCER}`,
    // The origin, and the object store the cache registry redirects to: both on loopback.
    '--insecure-registries',
    `${originHost},${s3Front}`,
    '--cache-timeout',
    '5s',
    '--cache-cooldown',
    '10s',
  ]);
  const p = proxy;
  await lab.hostsToml(hostsDir, originHost, origin.url, [p.url]);
  const ref = `${originHost}/library/app:v1`;

  const cold = await lab.criPull('node', ref);
  t.notOk(cold.error, `cold pull through the proxy: ${cold.error ?? ''} ${cold.details ?? ''}`);
  await p.settle(120_000);
  const warmStore = storeFor(`http://127.0.0.1:${R2}`);
  for (const l of app.layers) {
    t.ok(await warmStore.statBlob(`127.0.0.1_${ORIGIN}/library/app`, l), `layer ${l.slice(7, 19)} is in the bucket`);
  }

  await lab.removeImage('node', ref);
  const frontBefore = frontEntries().length;
  const servedBefore = await servedBytes(p);
  const linesBefore = p.logs().length;
  const warm = await lab.criPull('node', ref);
  t.notOk(warm.error, `warm pull: ${warm.error ?? ''} ${warm.details ?? ''}`);
  const lines = p.logs().slice(linesBefore);
  const blobGets = lines.filter((l) => l.msg === 'request' && l.method === 'GET' && String(l.path).includes('/blobs/'));
  t.equal(blobGets.length, app.layers.length + 1, 'containerd asked the proxy for the config and every layer');
  t.ok(
    blobGets.every((l) => l.status === 307 && l.source === 'cache' && l.bytes === 0),
    'each blob GET was answered with a redirect, no bytes',
  );
  const manifests = lines.filter((l) => l.msg === 'request' && String(l.path).includes('/manifests/'));
  t.ok(manifests.length > 0 && manifests.every((l) => l.status === 200), 'manifests are served by the proxy');
  const served = (await servedBytes(p)) - servedBefore;
  t.ok(served < 64 * 1024, `the proxy served ${served} bytes: manifests only, no blob bytes`);
  const fetched = frontEntries()
    .slice(frontBefore)
    .filter((e) => e.method === 'GET' && e.ua.startsWith('containerd') && e.uri.includes('X-Amz-Signature'));
  for (const l of app.layers) {
    const got = fetched.find((e) => layerDigest(e.uri) === l.slice(7));
    t.ok(
      got?.status === 200 && got.bytes > 4_000_000,
      `containerd fetched layer ${l.slice(7, 19)} from the object store`,
    );
  }

  t.test('--blob-redirect=off: the proxy relays the cached bytes', async (t) => {
    const relay = await startProxy([
      '--data-dir',
      lab.tempDir('pt-s3-off'),
      '--cache-registry',
      `http://127.0.0.1:${BALANCER}`,
      '--insecure-registries',
      `${originHost},${s3Front}`,
      '--blob-redirect',
      'off',
    ]);
    t.teardown(() => relay.stop());
    const layer = app.layers[0] as string;
    const res = await request(`${relay.url}/v2/${CACHE_REPO_OF_APP}/blobs/${layer}`, { dispatcher: agent });
    const bytes = Buffer.from(await res.body.arrayBuffer());
    t.equal(res.statusCode, 200, 'a 200, not a redirect');
    t.equal(res.headers['pullthrough-source'], 'cache', 'from the cache');
    t.equal(`sha256:${createHash('sha256').update(bytes).digest('hex')}`, layer, 'with the blob');
  });

  t.test('a redirect target that fails: containerd goes on to the next host', async (t) => {
    // The object store refuses the presigned object reads (only those: the registries list and
    // stat through other paths), as a store unreachable from the node would fail them.
    await lab.down('s3-front');
    frontLog = (
      await lab.logproxy('s3-front', S3_FRONT, `http://127.0.0.1:${S3}`, [
        '--status',
        '503',
        '--match',
        '/docker/registry/v2/blobs/sha256/.*/data$',
      ])
    ).log;
    await lab.removeImage('node', ref);
    const originBefore = registryRequests(origin.dir).length;
    const r = await lab.criPull('node', ref);
    t.notOk(r.error, `the pull succeeds: ${r.error ?? ''} ${r.details ?? ''}`);
    const refused = frontEntries().filter((e) => e.ua.startsWith('containerd') && e.status === 503);
    t.ok(refused.length > 0, 'containerd followed a redirect and the object store refused it');
    const fromOrigin = registryRequests(origin.dir)
      .slice(originBefore)
      .filter((q) => q.method === 'GET' && q.path.includes('/blobs/') && q.status === 200);
    t.ok(fromOrigin.length >= refused.length, 'each refused blob was then fetched from the next host, the origin');
    await lab.down('s3-front');
    frontLog = (await lab.logproxy('s3-front', S3_FRONT, `http://127.0.0.1:${S3}`)).log;
  });

  t.test('the object store down: pulls go to the origin, and back to the cache when it returns', async (t) => {
    await lab.down('s3-front');
    await lab.removeImage('node', ref);
    const before = p.logs().length;
    const r = await lab.criPull('node', ref);
    t.notOk(r.error, `a cached image pulls with the object store down: ${r.error ?? ''} ${r.details ?? ''}`);
    const o = await lab.criPull('node', `${originHost}/library/other:v1`);
    t.notOk(o.error, `so does an image not cached: ${o.error ?? ''} ${o.details ?? ''}`);
    const lines = p.logs().slice(before);
    const failures = lines.filter((l) => l.msg === 'cache store failed; serving from the origin without caching');
    const failure = failures[0];
    t.comment(
      `pulls with the object store down: ${r.seconds} s and ${o.seconds} s; first failure: ${String(failure?.err)}`,
    );
    t.ok(failure, 'the proxy says the store failed');
    // A registry that answers 500 is skipped for the cool-down like one that does not answer, so
    // the pulls do not wait for it once per request.
    t.ok(failures.length <= 3, `the store is skipped after its first failures (${failures.length} failed operations)`);
    // The cached image's blobs are still redirected (the registry answers from its in-memory
    // blob descriptors); containerd cannot reach the store and takes them from the origin itself.
    // The image not cached comes from the origin through the proxy.
    const otherBlobs = lines.filter((l) => l.method === 'GET' && String(l.path).includes('/library/other/blobs/'));
    t.ok(
      otherBlobs.length > 0 && otherBlobs.every((l) => l.status === 200 && l.source !== 'cache'),
      'the uncached image came from the origin through the proxy',
    );
    await p.settle(120_000);

    frontLog = (await lab.logproxy('s3-front', S3_FRONT, `http://127.0.0.1:${S3}`)).log;
    const bucket = storeFor(`http://127.0.0.1:${R2}`);
    for (const l of other.layers) {
      const opened = await bucket.openBlob(`127.0.0.1_${ORIGIN}/library/other`, l);
      if (!opened) continue;
      const hash = createHash('sha256');
      for await (const c of opened.stream) hash.update(c as Buffer);
      t.equal(`sha256:${hash.digest('hex')}`, l, `layer ${l.slice(7, 19)}, stored during the outage, is whole`);
    }
    t.pass('nothing partial is in the bucket');

    await eventually(() => !p.store.degraded, 'the cool-down after the failure passes', 30_000);
    await lab.removeImage('node', ref);
    const back = p.logs().length;
    const again = await lab.criPull('node', ref);
    t.notOk(again.error, `pull after the object store returned: ${again.error ?? ''}`);
    const gets = p
      .logs()
      .slice(back)
      .filter((l) => l.method === 'GET' && String(l.path).includes('/blobs/'));
    t.ok(gets.length > 0 && gets.every((l) => l.status === 307), 'blobs are redirected to the object store again');
  });

  t.test('a replica killed mid-pull: the pull completes', async (t) => {
    // Object reads slowed down, so that the pull is still fetching when the replica dies.
    await lab.down('s3-front');
    frontLog = (await lab.logproxy('s3-front', S3_FRONT, `http://127.0.0.1:${S3}`, ['--rate', '4000000'])).log;
    await lab.removeImage('node', ref);
    const before = p.logs().length;
    const pulling = lab.criPull('node', ref);
    await eventually(
      () =>
        p
          .logs()
          .slice(before)
          .some((l) => l.status === 307),
      'the first redirect is handed out',
      60_000,
    );
    await lab.down('r1');
    const r = await pulling;
    t.notOk(r.error, `pull with replica 1 gone: ${r.error ?? ''} ${r.details ?? ''}`);
    const during = p
      .logs()
      .slice(before)
      .filter((l) => l.method === 'GET' && String(l.path).includes('/blobs/'));
    t.comment(during.map((l) => `${String(l.status)} ${String(l.source)}`).join(', '));
    // A blob whose redirect was asked of the dying replica is relayed from the cache instead (the
    // proxy's ask for a redirect does not retry; its store read does): never the origin.
    t.ok(
      during.length > 0 && during.every((l) => l.source === 'cache' && (l.status === 307 || l.status === 200)),
      'every blob of that pull came from the cache: redirected, or relayed across the kill',
    );
    t.ok(
      during.some((l) => l.status === 307),
      'and redirects went on across the kill',
    );
    await lab.down('s3-front');
    frontLog = (await lab.logproxy('s3-front', S3_FRONT, `http://127.0.0.1:${S3}`)).log;
    // The next pull finds only replica 2 behind the balancer, and is still served from the bucket.
    await lab.removeImage('node', ref);
    const again = p.logs().length;
    const r2 = await lab.criPull('node', ref);
    t.notOk(r2.error, `pull on replica 2 alone: ${r2.error ?? ''}`);
    const gets = p
      .logs()
      .slice(again)
      .filter((l) => l.method === 'GET' && String(l.path).includes('/blobs/'));
    t.ok(gets.length > 0 && gets.every((l) => l.status === 307), 'replica 2 alone redirects every blob');
  });

  t.test('the origin stopped: the pull is served from the bucket', async (t) => {
    await lab.stop('origin');
    await lab.removeImage('node', ref);
    const r = await lab.criPull('node', ref);
    t.notOk(r.error, `pull with the origin stopped: ${r.error ?? ''} ${r.details ?? ''}`);
  });

  t.test('a redirect to a blob since removed from the bucket: containerd takes it from the next host', async (t) => {
    // What a collection leaves behind for a redirect the proxy remembers (at most a minute): the
    // blob's object gone from the bucket, the presigned URL answering 404.
    await restartRegistry(lab, 'origin', ORIGIN);
    const layer = app.layers[0] as string;
    const res = await request(`${p.url}/v2/${CACHE_REPO_OF_APP}/blobs/${layer}`, { dispatcher: agent });
    await res.body.dump();
    t.equal(res.statusCode, 307, 'the proxy redirects the layer');
    const object = new URL(String(res.headers.location));
    const { accessKey, secretKey } = keys;
    await run('curl', [
      '-sS',
      '-f',
      '-X',
      'DELETE',
      '--aws-sigv4',
      'aws:amz:us-east-1:s3',
      '--user',
      `${accessKey}:${secretKey}`,
      '-H',
      'x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
      `http://127.0.0.1:${S3}${object.pathname}`,
    ]);
    const gone = await request(object.toString(), { dispatcher: agent });
    await gone.body.dump();
    t.equal(gone.statusCode, 404, 'the presigned URL now answers 404');

    await lab.removeImage('node', ref);
    const frontBefore = frontEntries().length;
    const originBefore = registryRequests(origin.dir).length;
    const r = await lab.criPull('node', ref);
    t.notOk(r.error, `the pull succeeds: ${r.error ?? ''} ${r.details ?? ''}`);
    const missing = frontEntries()
      .slice(frontBefore)
      .filter((e) => e.ua.startsWith('containerd') && layerDigest(e.uri) === layer.slice(7));
    t.ok(
      missing.length > 0 && missing.every((e) => e.status === 404),
      'containerd followed the redirect and the object store answered 404',
    );
    const fromOrigin = registryRequests(origin.dir)
      .slice(originBefore)
      .filter((q) => q.method === 'GET' && q.path.endsWith(`/blobs/${layer}`) && q.status === 200);
    t.ok(fromOrigin.length > 0, 'containerd then fetched the layer from the next host, the origin');
  });
});
