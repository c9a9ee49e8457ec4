/**
 * The pull path on the shared store: a real distribution registry as the cluster's cache registry.
 * What one node pulls lands there verbatim (a multi-arch index pulled for one platform included),
 * another node then pulls it with the origin stopped, and with the cache registry stopped pulls go
 * on from the origin. The proxies reach the origin through a logging front (127.0.0.1:15222, in
 * this file's second range), whose access log shows every request that came to the origin, or
 * tried to while it was stopped.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { accessLog, Lab, restartRegistry, type Image } from '../helpers/lab.js';
import { startProxy, type StartOptions, type TestProxy } from '../helpers/proxy.js';

const ORIGIN = 15030;
const CACHE = 15031;
const FRONT = 15222;
const lab = new Lab('pull-shared');
const dirs = [
  lab.tempDir('pt-shared-a'),
  lab.tempDir('pt-shared-b'),
  lab.tempDir('pt-shared-gc'),
  lab.tempDir('pt-shared-stop'),
];
/** The origin as the proxies know it: its logging front. */
const originHost = `127.0.0.1:${FRONT}`;
const enc = `127.0.0.1_${FRONT}`;
const cacheUrl = `http://127.0.0.1:${CACHE}`;
const proxies: TestProxy[] = [];
let app: Image;
let multi: Image;
let big: Image;
let leaving: Image;
let frontLog: string;

t.teardown(async () => {
  for (const p of proxies) await p.stop();
  await lab.cleanup();
});

const proxyFor = async (dataDir: string, extraDeps?: StartOptions['extraDeps']) => {
  const p = await startProxy(
    [
      '--data-dir',
      dataDir,
      '--cache-registry',
      cacheUrl,
      '--insecure-registries',
      originHost,
      '--cache-timeout',
      '2s',
      '--cache-cooldown',
      '3s',
    ],
    extraDeps ? { extraDeps } : {},
  );
  proxies.push(p);
  return p;
};

t.before(async () => {
  const origin = await lab.registry('origin', ORIGIN);
  await lab.registry('cache', CACHE);
  frontLog = (await lab.logproxy('origin-front', FRONT, origin.url)).log;
  [app, multi, big, leaving] = await Promise.all([
    lab.image(origin.host, 'library/app', 'v1', ['--layers', '3']),
    lab.image(origin.host, 'library/multi', 'v1', ['--multiarch', '--docker']),
    lab.image(origin.host, 'library/big', 'v1', ['--layers', '1', '--layer-mb', '20']),
    lab.image(origin.host, 'library/leaving', 'v1', ['--layers', '1']),
    lab.image(origin.host, 'library/other', 'v1', ['--layers', '2']),
  ]);
});

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function fromCache(path: string): Promise<{ status: number; bytes: Buffer }> {
  const res = await request(`${cacheUrl}${path}`, {
    headers: {
      accept:
        'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, ' +
        'application/vnd.docker.distribution.manifest.v2+json, ' +
        'application/vnd.docker.distribution.manifest.list.v2+json',
    },
  });
  const bytes = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, bytes };
}

t.test('node A pulls; the cache registry receives every pulled byte verbatim', async (t) => {
  const a = await proxyFor(dirs[0] as string);
  await lab.containerd('node-a', 15032);
  for (const ref of [`${a.host}/${enc}/library/app:v1`, `${a.host}/${enc}/library/multi:v1`]) {
    const r = await lab.criPull('node-a', ref);
    t.ok(r.image_ref, `pulled ${ref}: ${JSON.stringify(r)}`);
  }
  await a.settle();
  const m = await fromCache(`/v2/${enc}/library/app/manifests/${app.digest}`);
  t.equal(m.status, 200, 'the manifest is in the cache registry');
  t.equal(sha(m.bytes), app.digest, 'byte-identical');
  for (const layer of app.layers) {
    const b = await fromCache(`/v2/${enc}/library/app/blobs/${layer}`);
    t.equal(sha(b.bytes), layer, `layer ${layer.slice(7, 19)} is in the cache registry`);
  }
  // The index was pulled for amd64 only: distribution 2.8 refuses it as a manifest (arm64 child
  // missing), so it is kept as a blob of the same digest.
  const index = await fromCache(`/v2/${enc}/library/multi/blobs/${multi.digest}`);
  t.equal(sha(index.bytes), multi.digest, 'the multi-arch index bytes are kept verbatim');
  const amd = await fromCache(`/v2/${enc}/library/multi/manifests/${multi.children[0]}`);
  t.equal(sha(amd.bytes), multi.children[0], 'and the pulled platform as a real manifest');
  const pointer = await fromCache(`/v2/pullthrough-tags/${enc}/library/multi/manifests/v1`);
  t.equal(pointer.status, 200, 'the tag is recorded in the cache registry');
  t.match(pointer.bytes.toString(), multi.digest, 'pointing at the index digest');
});

t.test('bytes received from the origin and from the cache registry pace young-generation collections', async (t) => {
  let collections = 0;
  const p = await proxyFor(dirs[2] as string, () => ({ collectYoung: () => collections++ }));
  const layer = big.layers[0] as string;
  const get = async () => {
    const res = await request(`${p.url}/v2/${enc}/library/big/blobs/${layer}`);
    const body = Buffer.from(await res.body.arrayBuffer());
    t.equal(res.statusCode, 200);
    t.equal(sha(body), layer, 'the blob arrives whole');
  };
  await get();
  await p.settle();
  const cold = collections;
  // 20 MiB from the origin, one collection per 8 MiB.
  t.ok(cold >= 2 && cold <= 3, `the cold pull ran ${cold} collections`);
  t.equal((await fromCache(`/v2/${enc}/library/big/blobs/${layer}`)).status, 200, 'the blob is in the cache registry');
  await get();
  t.ok(collections - cold >= 2, `relaying it from the cache registry ran ${collections - cold} more`);
  await p.stop();
});

t.test('a proxy told to stop uploads the blob still waiting for its client first', async (t) => {
  const p = await proxyFor(dirs[3] as string);
  const layer = leaving.layers[0] as string;
  // A client that took the headers and reads no further: the upload waits for it.
  const res = await request(`${p.url}/v2/${enc}/library/leaving/blobs/${layer}`, { highWaterMark: 1024 });
  t.equal(res.statusCode, 200);
  const fill = p.fills.get(`${enc}/library/leaving`, layer);
  t.equal(await fill?.fetched, true, 'the proxy has the whole blob, verified');
  t.equal(
    (await fromCache(`/v2/${enc}/library/leaving/blobs/${layer}`)).status,
    404,
    'not uploaded while its client reads',
  );
  const stopping = p.stop(4_000);
  const until = Date.now() + 2_000;
  let status = 404;
  // Polled, not hammered: the upload being waited for runs on the same cores.
  while (status !== 200 && Date.now() < until) {
    status = (await fromCache(`/v2/${enc}/library/leaving/blobs/${layer}`)).status;
    if (status !== 200) await sleep(20);
  }
  t.equal(status, 200, 'stopping uploaded it before closing');
  res.body.destroy();
  await stopping;
});

t.test('the cache registry stopped: pulls go on from the origin, promptly', async (t) => {
  const a = proxies[0] as TestProxy;
  await lab.stop('cache');
  // Whatever happens here, node B below needs the cache registry back.
  t.teardown(() => restartRegistry(lab, 'cache', CACHE));
  await lab.containerd('node-a2', 15033);
  const cold = await lab.criPull('node-a2', `${a.host}/${enc}/library/other:v1`, ['--timeout', '60']);
  t.ok(cold.image_ref, `a cold image: ${JSON.stringify(cold)}`);
  const warm = await lab.criPull('node-a2', `${a.host}/${enc}/library/app:v1`, ['--timeout', '60']);
  t.ok(warm.image_ref, `an image cached before: ${JSON.stringify(warm)}`);
  t.ok(cold.seconds < 30 && warm.seconds < 30, 'no pull waited out its deadline');
  t.ok(
    a.logs().some((l) => String(l.msg).startsWith('cache store failed')),
    'the log says the cache failed',
  );
  const ready = await request(`${a.url}/readyz`);
  await ready.body.dump();
  t.equal(ready.statusCode, 503, '/readyz says the store is unreachable');
  const alive = await request(`${a.url}/healthz`);
  await alive.body.dump();
  t.equal(alive.statusCode, 200, '/healthz still says the proxy is alive');
  const metrics = await a.metrics.registry.getSingleMetricAsString('pullthrough_store_failures_total');
  t.match(metrics, /pullthrough_store_failures_total\{op="[a-zA-Z]+"\} [1-9]/, 'and a metric counts it');
  await a.settle();
});

t.test('node B pulls from the cache registry with the origin stopped, by tag and by digest', async (t) => {
  await lab.stop('origin');
  const b = await proxyFor(dirs[1] as string);
  await lab.containerd('node-b', 15034);
  // Read before and after the pulls: each request the proxy sent toward the origin is a line
  // (a 502 from the front while the origin is stopped).
  const before = accessLog(frontLog).length;
  t.ok(before > 0, `the front logged the earlier pulls' ${before} requests to the origin`);
  for (const ref of [
    `${b.host}/${enc}/library/app:v1`,
    `${b.host}/${enc}/library/multi:v1`,
    `${b.host}/${enc}/library/multi@${multi.digest}`,
    `${b.host}/${enc}/library/app@${app.digest}`,
  ]) {
    const r = await lab.criPull('node-b', ref, ['--timeout', '60']);
    t.ok(r.image_ref, `pulled ${ref}: ${JSON.stringify(r)}`);
  }
  t.same(
    accessLog(frontLog)
      .slice(before)
      .map((e) => `${e.method} ${e.uri}`),
    [],
    'nothing came from the origin: no request reached it during the pulls',
  );
  t.notOk(
    b.logs().some((l) => l.msg === 'request' && l.source === 'origin'),
    'and the proxy served nothing as from the origin',
  );
});
