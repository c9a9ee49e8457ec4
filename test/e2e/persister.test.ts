/**
 * The persister's background fetches: after a client fetched only an image's manifest, its blobs
 * get into the cache (a real containerd then pulls the whole image with the origin gone); with
 * --platforms linux/amd64, a multi-arch index gets that platform's manifest and blobs fetched in the
 * background and nothing of the other platform (counted in the origin's access log).
 */
import t from 'tap';
import { request } from 'undici';
import { accessLog, Lab, type AccessEntry, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { eventually } from '../helpers/wait.js';

const lab = new Lab('persister');
const ORIGIN = 15181;
const FRONT = 15182;
const CRI = 15183;
const FRONT_MULTI = 15184;
let originUrl: string;
let image: Image;
let multi: Image;
const proxies: TestProxy[] = [];

t.teardown(async () => {
  for (const p of proxies) await p.stop();
  await lab.cleanup();
});

t.before(async () => {
  originUrl = (await lab.registry('origin', ORIGIN)).url;
  [image, multi] = await Promise.all([
    lab.image(`127.0.0.1:${ORIGIN}`, 'library/app', 'v1', ['--layers', '2']),
    lab.image(`127.0.0.1:${ORIGIN}`, 'library/multi', 'v1', ['--layers', '2', '--multiarch']),
  ]);
});

async function proxyWith(name: string, flags: string[]): Promise<TestProxy> {
  const p = await startProxy(['--data-dir', lab.tempDir(`pt-persister-${name}`), ...flags]);
  proxies.push(p);
  return p;
}

async function getJson<T>(url: string, accept: string): Promise<T> {
  const res = await request(url, { headers: { accept } });
  if (res.statusCode !== 200) throw new Error(`${url}: ${res.statusCode}`);
  return (await res.body.json()) as T;
}

interface ImageManifest {
  config: { digest: string };
  layers: { digest: string }[];
}
const blobsOf = (m: ImageManifest) => [m.config.digest, ...m.layers.map((l) => l.digest)];

let markers = 0;
/** An nginx access log up to now: a request it logs after every earlier one has been logged. */
async function logSoFar(url: string, file: string): Promise<AccessEntry[]> {
  const marker = `marker-${++markers}`;
  await (await request(`${url}/v2/?${marker}`)).body.dump();
  return eventually(() => {
    const log = accessLog(file);
    return log.some((e) => e.uri.endsWith(marker)) ? log : undefined;
  }, `the marker ${marker} in ${file}`);
}

t.test(
  'after a manifest GET only, the blobs are cached: containerd pulls the image with the origin gone',
  async (t) => {
    const proxy = await proxyWith('image', ['--insecure-registries', `127.0.0.1:${FRONT}`]);
    const front = await lab.logproxy('front', FRONT, originUrl);
    const res = await request(`${proxy.url}/v2/library/app/manifests/v1?ns=127.0.0.1%3A${FRONT}`, {
      headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
    });
    await res.body.dump();
    t.equal(res.statusCode, 200, 'the client got the manifest, nothing else');
    await proxy.settle();

    const repo = `127.0.0.1_${FRONT}/library/app`;
    const m = await getJson<ImageManifest>(
      `${originUrl}/v2/library/app/manifests/v1`,
      'application/vnd.oci.image.manifest.v1+json',
    );
    for (const d of blobsOf(m)) t.ok(await proxy.store.statBlob(repo, d), `blob ${d.slice(7, 19)} cached`);
    t.ok(await proxy.store.getManifest(repo, image.digest), 'the manifest stored after its blobs');
    const gets = (await logSoFar(front.url, front.log)).filter((e) => e.method === 'GET' && e.uri.includes('/blobs/'));
    t.equal(gets.length, blobsOf(m).length, 'each blob fetched once, in the background');

    await lab.down('front');
    await lab.containerd('node', CRI);
    const seen = proxy.logs().length;
    const pulled = await lab.criPull('node', `${proxy.host}/127.0.0.1_${FRONT}/library/app:v1`, ['--timeout', '60']);
    t.equal(pulled.image_ref, m.config.digest, `containerd pulled the image: ${JSON.stringify(pulled)}`);
    const served = proxy
      .logs()
      .slice(seen)
      .filter((l) => l.msg === 'request');
    t.ok(served.length >= 1 + blobsOf(m).length, 'through the proxy');
    t.same(
      served
        .filter((l) => l.source !== 'cache')
        .map((l) => `${String(l.method)} ${String(l.path)} ${String(l.source)}`),
      [],
      'every answer from the cache',
    );
  },
);

t.test(
  '--platforms linux/amd64: only the amd64 manifest and blobs of an index are fetched in the background',
  async (t) => {
    const proxy = await proxyWith('platforms', [
      '--insecure-registries',
      `127.0.0.1:${FRONT_MULTI}`,
      '--platforms',
      'linux/amd64',
    ]);
    const front = await lab.logproxy('front-multi', FRONT_MULTI, originUrl);
    const index = await getJson<{ manifests: { digest: string; platform: { architecture: string } }[] }>(
      `${originUrl}/v2/library/multi/manifests/v1`,
      'application/vnd.oci.image.index.v1+json',
    );
    const child = async (arch: string) => {
      const digest = index.manifests.find((d) => d.platform.architecture === arch)?.digest as string;
      const m = await getJson<ImageManifest>(
        `${originUrl}/v2/library/multi/manifests/${digest}`,
        'application/vnd.oci.image.manifest.v1+json',
      );
      return { digest, blobs: blobsOf(m) };
    };
    const amd64 = await child('amd64');
    const arm64 = await child('arm64');

    const res = await request(`${proxy.url}/v2/library/multi/manifests/v1?ns=127.0.0.1%3A${FRONT_MULTI}`, {
      headers: { accept: 'application/vnd.oci.image.index.v1+json' },
    });
    await res.body.dump();
    t.equal(res.statusCode, 200, 'the client got the index, nothing else');
    await proxy.settle();

    const log = (await logSoFar(front.url, front.log)).filter((e) => e.method === 'GET');
    const fetched = (d: string) => log.filter((e) => e.uri.includes(d)).length;
    t.equal(fetched(amd64.digest), 1, 'the amd64 manifest was fetched');
    for (const d of amd64.blobs) t.equal(fetched(d), 1, `amd64 blob ${d.slice(7, 19)} fetched once`);
    t.equal(fetched(arm64.digest), 0, 'the arm64 manifest was not');
    for (const d of arm64.blobs) t.equal(fetched(d), 0, `arm64 blob ${d.slice(7, 19)} not fetched`);

    const repo = `127.0.0.1_${FRONT_MULTI}/library/multi`;
    for (const d of amd64.blobs) t.ok(await proxy.store.statBlob(repo, d), `amd64 blob ${d.slice(7, 19)} cached`);
    t.ok(await proxy.store.getManifest(repo, amd64.digest), 'the amd64 manifest stored');
    t.ok(await proxy.store.getManifest(repo, multi.digest), 'and the index');
  },
);
