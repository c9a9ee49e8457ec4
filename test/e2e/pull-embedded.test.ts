/**
 * The pull path end to end on the embedded store, with a real registry as origin and a real
 * containerd pulling through the proxy the way the kubelet does: rewritten references by tag and
 * by digest, mirror mode via hosts.toml; OCI, multi-arch and Docker schema 2 images. Then: the
 * cache holds the bytes verbatim, each blob came from the origin once, a fresh node pulls with no
 * origin blob request, and with the origin stopped pulls by tag and digest still succeed.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { Lab, registryRequests, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import type { Store } from '../../src/cache/store.js';
import { parseManifest } from '../../src/oci/media-types.js';

const ORIGIN_PORT = 15000;
const lab = new Lab('pull-embedded');
const dataDir = lab.tempDir('pt-embedded');
const originHost = `127.0.0.1:${ORIGIN_PORT}`;
const enc = `127.0.0.1_${ORIGIN_PORT}`;
let proxy: TestProxy;
let originDir: string;
let app: Image;
let multi: Image;
let dock: Image;

t.teardown(async () => {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await proxy?.stop();
  await lab.cleanup();
});

t.before(async () => {
  originDir = (await lab.registry('origin', ORIGIN_PORT)).dir;
  [app, multi, dock] = await Promise.all([
    lab.image(originHost, 'library/app', 'v1', ['--layers', '2', '--layer-mb', '2']),
    lab.image(originHost, 'team/multi', 'v1', ['--layers', '2', '--multiarch']),
    lab.image(originHost, 'library/dock', 'v1', ['--layers', '2', '--multiarch', '--docker']),
  ]);
  proxy = await startProxy(['--data-dir', dataDir, '--insecure-registries', originHost, '--tag-ttl', '1s']);
});

const originBlobGets = () =>
  registryRequests(originDir).filter((r) => r.method === 'GET' && r.path.includes('/blobs/'));

async function storedBytes(store: Store, repo: string, digest: string): Promise<Buffer | undefined> {
  const m = await store.getManifest(repo, digest);
  if (m) return m.bytes;
  const b = await store.openBlob(repo, digest);
  if (!b) return undefined;
  const chunks: Buffer[] = [];
  for await (const c of b.stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Every digest of the amd64 platform of an image, index included. */
async function platformDigests(image: Image): Promise<{ manifests: string[]; blobs: string[] }> {
  const store = proxy.store.inner;
  const repo = `${enc}/${image.ref.split('/').slice(1).join('/').replace(/:v1$/, '')}`;
  const manifests = [image.digest];
  let top = await store.getManifest(repo, image.digest);
  if (!top) throw new Error(`manifest ${image.digest} not cached in ${repo}`);
  let parsed = parseManifest(top.bytes, top.mediaType);
  if (parsed.kind === 'index') {
    const amd = parsed.manifests.find((d) => d.platform?.architecture === 'amd64');
    if (!amd) throw new Error('no amd64 child');
    manifests.push(amd.digest);
    top = await store.getManifest(repo, amd.digest);
    if (!top) throw new Error(`child ${amd.digest} not cached`);
    parsed = parseManifest(top.bytes, top.mediaType);
  }
  if (parsed.kind !== 'image') throw new Error('not an image');
  return { manifests, blobs: [parsed.config.digest, ...parsed.layers.map((l) => l.digest)] };
}

t.test('a real containerd pulls through the proxy', async (t) => {
  const node = await lab.containerd('node1', 15001);
  const byTag = await lab.criPull('node1', `${proxy.host}/${enc}/library/app:v1`);
  t.ok(byTag.image_ref, `rewritten reference by tag: ${JSON.stringify(byTag)}`);
  const byDigest = await lab.criPull('node1', `${proxy.host}/${enc}/team/multi@${multi.digest}`);
  t.ok(byDigest.image_ref, `rewritten multi-arch index by digest: ${JSON.stringify(byDigest)}`);
  await lab.hostsToml(node.hostsDir, originHost, `http://${originHost}`, [proxy.url]);
  const mirror = await lab.criPull('node1', `${originHost}/library/dock:v1`);
  t.ok(mirror.image_ref, `mirror mode, Docker manifest list: ${JSON.stringify(mirror)}`);
  const served = proxy.logs().filter((l) => l.msg === 'request' && String(l.path).includes('?ns='));
  t.ok(served.length > 0, 'the mirror requests (with ?ns=) reached the proxy');
  await proxy.settle();
});

t.test('the cache holds each pulled platform byte-identical, each blob fetched once', async (t) => {
  const store = proxy.store.inner;
  for (const image of [app, multi, dock]) {
    const { manifests, blobs } = await platformDigests(image);
    const repo = `${enc}/${image.ref.split('/').slice(1).join('/').replace(/:v1$/, '')}`;
    for (const d of [...manifests, ...blobs]) {
      const bytes = await storedBytes(store, repo, d);
      t.ok(bytes, `${repo} holds ${d}`);
      if (bytes) t.equal(sha(bytes), d, `${d} is stored verbatim`);
    }
  }
  const counts = new Map<string, number>();
  for (const r of originBlobGets()) counts.set(r.path, (counts.get(r.path) ?? 0) + 1);
  t.ok(counts.size > 0, 'the origin served blobs');
  t.same(
    [...counts.entries()].filter(([, n]) => n !== 1),
    [],
    'no blob was fetched from the origin twice',
  );
});

t.test('a fresh node pulls from the cache with no origin blob request', async (t) => {
  const before = originBlobGets().length;
  const node = await lab.containerd('node2', 15002);
  await lab.hostsToml(node.hostsDir, originHost, `http://${originHost}`, [proxy.url]);
  for (const ref of [
    `${proxy.host}/${enc}/library/app:v1`,
    `${proxy.host}/${enc}/team/multi@${multi.digest}`,
    `${originHost}/library/dock:v1`,
  ]) {
    const r = await lab.criPull('node2', ref);
    t.ok(r.image_ref, `pulled ${ref}`);
  }
  t.equal(originBlobGets().length, before, 'the origin saw no blob request');
});

t.test('with the origin stopped, pulls by tag and by digest still succeed', async (t) => {
  await lab.stop('origin');
  // The tag TTL (1s) has passed: the proxy tries to revalidate, fails, and serves the cached tag.
  await new Promise((r) => setTimeout(r, 1100));
  await lab.containerd('node3', 15003);
  const byTag = await lab.criPull('node3', `${proxy.host}/${enc}/library/app:v1`);
  t.ok(byTag.image_ref, `by tag: ${JSON.stringify(byTag)}`);
  const byDigest = await lab.criPull('node3', `${proxy.host}/${enc}/team/multi@${multi.digest}`);
  t.ok(byDigest.image_ref, `by digest: ${JSON.stringify(byDigest)}`);
  const dockByTag = await lab.criPull('node3', `${proxy.host}/${enc}/library/dock:v1`);
  t.ok(dockByTag.image_ref, `multi-arch by tag: ${JSON.stringify(dockByTag)}`);
  const stale = proxy.logs().filter((l) => l.msg === 'request' && l.source === 'stale');
  t.ok(stale.length >= 1, 'the log says the tag was served stale');
  t.ok(
    proxy.logs().some((l) => String(l.msg).includes('stale-if-error')),
    'and why',
  );
});
