/**
 * The node proxy's blob redirects against real registries: the cache registry (distribution) on
 * the lab's radosgw with redirects on, a private origin, pods from a fake API server.
 *
 * - Warm blob GETs: the registry is asked once, its redirect is handed out again from memory, and
 *   the access check for the private image still runs on every GET (a pod without the secret is
 *   refused, redirect remembered or not).
 * - A blob the registry says it lacks (the redirect question's 404) is not asked about again with
 *   a HEAD before it is fetched from the origin.
 * - A cache registry that hangs costs a blob GET one timeout: the redirect question counts toward
 *   the store's cool-down, so the HEAD after it is skipped.
 * - While the collection Lease's write hold is held, nothing is remembered.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'undici';
import { FakeApiServer } from '../fake-apiserver/index.js';
import { startKubeProxy } from '../helpers/kube.js';
import { Lab, registryRequests, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { eventually } from '../helpers/wait.js';
import { basicAuth, dockerConfigSecret, pod } from '../kube/helpers.js';

/** s3-up.sh takes S3..S3+12. */
const S3 = 15570;
const PRIVATE = 15583;
const CACHE = 15584;
const PUBLIC = 15585;
const HUNG = 15586;
const PROXY = 15587;
const PROXY_HUNG = 15588;
const PROXY_HELD = 15589;
const PW = 'Redirect-pw-1';
const priv = `127.0.0.1:${PRIVATE}`;
const pub = `127.0.0.1:${PUBLIC}`;

const lab = new Lab('blob-redirects');
const proxies: TestProxy[] = [];
let api: FakeApiServer | undefined;
let s3Up = false;
let cacheDir = '';
let privImage: Image;
let pubImage: Image;

t.teardown(async () => {
  for (const p of proxies) await p.stop();
  await api?.close();
  // Started with lab.script, so not in the lab's own list: stopped (after the registry on it)
  // before cleanup removes its directory.
  await lab.down('cache');
  if (s3Up) await lab.down('s3');
  await lab.cleanup();
});

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function vars(out: string): Record<string, string> {
  const v: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^([A-Z_0-9]+)=(.*)$/.exec(line.trim());
    if (m) v[m[1] as string] = m[2] as string;
  }
  return v;
}

async function get(url: string): Promise<{ status: number; location: string | undefined; bytes: Buffer }> {
  const res = await request(url);
  const bytes = Buffer.from(await res.body.arrayBuffer());
  const loc = res.headers.location;
  return { status: res.statusCode, location: typeof loc === 'string' ? loc : undefined, bytes };
}

let marks = 0;
/**
 * The cache registry's requests for a path, once its log holds a request sent after everything
 * asked so far (distribution logs a request when it is answered).
 */
async function registrySaw(path: string): Promise<{ method: string; status: number }[]> {
  const mark = `/v2/mark${++marks}/tags/list`;
  await (await request(`http://127.0.0.1:${CACHE}${mark}`)).body.dump();
  await eventually(async () => registryRequests(cacheDir).some((r) => r.path === mark), 'the mark in the log', 20_000);
  return registryRequests(cacheDir).filter((r) => r.path === path);
}

t.before(async () => {
  const v = vars(await lab.script('s3-up.sh', ['s3', String(S3)]));
  s3Up = true;
  const keys = ['--s3-access-key', v.S3_ACCESS_KEY ?? '', '--s3-secret-key', v.S3_SECRET_KEY ?? ''];
  const [cache] = await Promise.all([
    lab.registry('cache', CACHE, ['--s3', `http://127.0.0.1:${S3}`, '--s3-root', '/cache', ...keys]),
    lab.registry('private', PRIVATE, ['--htpasswd', `bob:${PW}`]),
    lab.registry('public', PUBLIC),
  ]);
  cacheDir = cache.dir;
  privImage = await lab.image(priv, 'team/app', 'v1', ['--layers', '1', '--creds', `bob:${PW}`]);
  pubImage = await lab.image(pub, 'lib/app', 'v1', ['--layers', '1']);
  api = await FakeApiServer.start();
  api.putSecret(dockerConfigSecret('team-a', 'regcred', { [priv]: basicAuth('bob', PW) }));
  api.addPod(pod('a', { images: [`${priv}/team/app:v1`], pullSecrets: ['regcred'] }));
});

t.test('warm blob GETs: the redirect is remembered, the access check runs on each', async (t) => {
  const p = await startKubeProxy(
    api as FakeApiServer,
    [
      '--data-dir',
      lab.tempDir('pt-redirects'),
      '--cache-registry',
      `http://127.0.0.1:${CACHE}`,
      '--insecure-registries',
      `${priv},127.0.0.1:${S3}`,
    ],
    { port: PROXY },
  );
  proxies.push(p);
  const layer = privImage.layers[0] as string;
  const repo = `127.0.0.1_${PRIVATE}/team/app`;
  const path = `/v2/${repo}/blobs/${layer}`;
  const cold = await eventually(async () => {
    const r = await get(`${p.url}${path}`);
    return r.status === 200 ? r : undefined;
  }, 'the proxy sees pod a and serves the layer from the origin');
  t.equal(sha(cold.bytes), layer, 'cold: the layer');
  await p.settle();
  const coldAsks = await registrySaw(path);
  t.same(
    coldAsks.map((r) => `${r.method} ${r.status}`),
    ['GET 404'],
    'cold: the registry was asked once (the redirect question) and not again with a HEAD',
  );
  await eventually(async () => {
    const r = await request(`http://127.0.0.1:${CACHE}${path}`, { method: 'HEAD' });
    await r.body.dump();
    return r.statusCode === 307;
  }, 'the layer stored in the bucket');

  const warm = [await get(`${p.url}${path}`), await get(`${p.url}${path}`), await get(`${p.url}${path}`)];
  t.same(
    warm.map((r) => r.status),
    [307, 307, 307],
  );
  t.ok(warm[0]?.location?.includes('X-Amz-Signature='), 'a presigned URL');
  t.equal(new Set(warm.map((r) => r.location)).size, 1, 'the same URL each time');
  const followed = await get(warm[2]?.location as string);
  t.equal(sha(followed.bytes), layer, 'the URL serves the layer');
  const gets = (await registrySaw(path)).filter((r) => r.method === 'GET');
  t.equal(gets.length, 2, 'the three warm GETs asked the registry once (after the cold GET)');
  t.notOk(p.logText().includes('X-Amz-Signature'), 'the URL is never logged');

  // Pod a goes; pod b, without the secret, uses the image: refused, though the redirect is known.
  (api as FakeApiServer).deletePod('team-a', 'a');
  (api as FakeApiServer).addPod(pod('b', { images: [`${priv}/team/app:v1`] }));
  const refused = await eventually(async () => {
    const r = await get(`${p.url}${path}`);
    return r.status !== 307 ? r : undefined;
  }, 'the proxy sees pod b alone');
  t.ok(refused.status === 401 || refused.status === 403, `refused (${refused.status})`);
  t.equal(refused.location, undefined, 'no redirect handed out');
});

t.test('a cache registry that hangs: one timeout per blob GET, then the cool-down', async (t) => {
  const hung = await lab.logproxy('hung', HUNG, 'http://127.0.0.1:9', ['--hang']);
  const p = await startProxy(
    [
      '--data-dir',
      lab.tempDir('pt-hung'),
      '--cache-registry',
      `http://127.0.0.1:${HUNG}`,
      '--cache-timeout',
      '1s',
      '--cache-cooldown',
      '10m',
      '--insecure-registries',
      pub,
    ],
    { port: PROXY_HUNG },
  );
  proxies.push(p);
  const layer = pubImage.layers[0] as string;
  const path = `/v2/127.0.0.1_${PUBLIC}/lib/app/blobs/${layer}`;
  const r = await get(`${p.url}${path}`);
  t.equal(r.status, 200);
  t.equal(sha(r.bytes), layer, 'served from the origin');
  const asked = readFileSync(hung.log, 'utf8')
    .split('\n')
    .filter((l) => l.includes(layer));
  t.equal(asked.length, 1, `the hung registry was asked once (${asked.join(' | ')})`);
  t.match(asked[0], /GET /, 'the redirect question');
  const failed = p.logs().filter((l) => l.msg === 'cache store failed; serving from the origin without caching');
  t.same(
    failed.map((l) => l.op),
    ['blobLocation'],
    'its failure counted toward the cool-down',
  );
});

t.test('while the collection write hold is held, redirects are asked of the registry each time', async (t) => {
  let held = false;
  const p = await startProxy(
    [
      '--data-dir',
      lab.tempDir('pt-held'),
      '--cache-registry',
      `http://127.0.0.1:${CACHE}`,
      '--insecure-registries',
      `${priv},127.0.0.1:${S3}`,
    ],
    {
      port: PROXY_HELD,
      // The collection Lease's reader as the proxy sees it: writes wait while it is held.
      extraDeps: () => ({
        writeHold: {
          clear: async () => undefined,
          get held() {
            return held;
          },
        },
      }),
    },
  );
  proxies.push(p);
  const layer = privImage.layers[0] as string;
  const path = `/v2/127.0.0.1_${PRIVATE}/team/app/blobs/${layer}`;
  const asked = async () => (await registrySaw(path)).filter((r) => r.method === 'GET').length;
  const before = await asked();
  for (let i = 0; i < 2; i++) t.equal((await get(`${p.url}${path}`)).status, 307);
  t.equal(await asked(), before + 1, 'free: asked once, then remembered');
  held = true;
  for (let i = 0; i < 2; i++) t.equal((await get(`${p.url}${path}`)).status, 307);
  t.equal(await asked(), before + 3, 'held: asked each time');
  held = false;
  for (let i = 0; i < 2; i++) t.equal((await get(`${p.url}${path}`)).status, 307);
  t.equal(await asked(), before + 4, 'free again: asked once, then remembered');
});
