/**
 * Pre-warm through the proxy's own pull path (src/proxy/prewarm.ts) against real registries: a
 * multi-arch image with every platform and a private image with its pull secret land in the cache
 * registry byte-identical (digests recomputed), bad input is refused with its OCI code, and a real
 * containerd then pulls the image through a node proxy with the origins stopped.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { request } from 'undici';
import { prepareSpoolDir } from '../../src/cache/blob-fills.js';
import { readProxyConfig } from '../../src/config/proxy.js';
import { cacheRepositoryName } from '../../src/oci/encoding.js';
import { isOciError } from '../../src/oci/errors.js';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { createLogger } from '../../src/observability/logger.js';
import { buildPrewarmer, type BuiltPrewarmer } from '../../src/proxy/build-proxy.js';
import { Lab, labAvailable, type Image } from '../helpers/lab.js';
import { startProxy } from '../helpers/proxy.js';

const ORIGIN = 15320;
const PRIVATE = 15321;
const CACHE = 15322;
const CRI = 15323;
const PW = 'warm-secret';
const lab = new Lab('prewarm');
const origin = `127.0.0.1:${ORIGIN}`;
const priv = `127.0.0.1:${PRIVATE}`;
let multi: Image;
let app: Image;
let built: BuiltPrewarmer;

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function fromCache(path: string): Promise<{ status: number; bytes: Buffer }> {
  const res = await request(`http://127.0.0.1:${CACHE}${path}`, { headers: { accept: MANIFEST_ACCEPT } });
  return { status: res.statusCode, bytes: Buffer.from(await res.body.arrayBuffer()) };
}

/** Every manifest and blob of an image (an index: of each child) is in the cache, byte for byte. */
async function cachedVerbatim(registry: string, repo: string, digest: string): Promise<string[]> {
  const base = `/v2/${cacheRepositoryName(registry, repo)}`;
  const problems: string[] = [];
  const m = await fromCache(`${base}/manifests/${digest}`);
  if (m.status !== 200 || sha(m.bytes) !== digest) return [`manifest ${digest.slice(7, 19)}: ${m.status}`];
  const parsed = JSON.parse(m.bytes.toString('utf8')) as {
    manifests?: { digest: string }[];
    config?: { digest: string };
    layers?: { digest: string }[];
  };
  for (const child of parsed.manifests ?? []) problems.push(...(await cachedVerbatim(registry, repo, child.digest)));
  for (const d of [parsed.config?.digest, ...(parsed.layers ?? []).map((l) => l.digest)]) {
    if (d === undefined) continue;
    const b = await fromCache(`${base}/blobs/${d}`);
    if (b.status !== 200 || sha(b.bytes) !== d) problems.push(`blob ${d.slice(7, 19)}: ${b.status}`);
  }
  return problems;
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'resolved';
  } catch (err) {
    return isOciError(err) ? err.code : String(err);
  }
}

t.before(async () => {
  if (!labAvailable()) return;
  await Promise.all([
    lab.registry('origin', ORIGIN),
    lab.registry('private', PRIVATE, ['--htpasswd', `bob:${PW}`]),
    lab.registry('cache', CACHE),
  ]);
  multi = await lab.image(origin, 'library/multi', 'v1', ['--multiarch']);
  app = await lab.image(priv, 'team/app', 'v1', ['--creds', `bob:${PW}`]);
  const dataDir = lab.tempDir('pt-prewarm');
  const { config } = readProxyConfig(
    [
      '--data-dir',
      dataDir,
      '--cache-registry',
      `http://127.0.0.1:${CACHE}`,
      '--insecure-registries',
      `${origin},${priv}`,
      '--allowed-registries',
      `${origin},${priv}`,
      '--metrics-listen',
      '',
    ],
    {},
  );
  await prepareSpoolDir(join(config.dataDir, 'tmp'));
  built = buildPrewarmer(config, { log: createLogger('silent') });
});
t.teardown(async () => {
  await built.close();
  await lab.cleanup();
});

const skip = labAvailable() ? false : 'the oci-lab is not installed';

t.test('a multi-arch image with every platform: all of it in the cache registry, verbatim', { skip }, async (t) => {
  const r = await built.prewarmer.warm({ image: `${origin}/library/multi:v1`, platforms: 'all' });
  t.equal(r.digest, multi.digest, 'the tag resolved to the index');
  t.same([...r.platforms].sort(), ['linux/amd64', 'linux/arm64/v8']);
  t.ok(r.size > 0, `${r.size} bytes`);
  t.same(await cachedVerbatim(origin, 'library/multi', multi.digest), [], 'index, children and blobs, byte-identical');
  const tag = await built.store.getTag(cacheRepositoryName(origin, 'library/multi'), 'v1');
  t.equal(tag?.digest, multi.digest, 'the tag is recorded, pointing at the index');
});

t.test('a private image: refused without its secret, stored with it', { skip }, async (t) => {
  t.equal(await code(built.prewarmer.warm({ image: `${priv}/team/app:v1` })), 'UNAUTHORIZED');
  const r = await built.prewarmer.warm({
    image: `${priv}/team/app:v1`,
    credentials: [{ kind: 'basic', username: 'bob', password: PW, label: 'test' }],
  });
  t.equal(r.digest, app.digest);
  t.same(await cachedVerbatim(priv, 'team/app', app.digest), []);
});

t.test('bad input: its OCI code, nothing fetched', { skip }, async (t) => {
  t.equal(await code(built.prewarmer.warm({ image: 'quay.io/org/app:1' })), 'DENIED', 'outside --allowed-registries');
  t.equal(await code(built.prewarmer.warm({ image: 'not a reference' })), 'NAME_INVALID');
  t.equal(await code(built.prewarmer.warm({ image: `${origin}/library/multi:nope` })), 'MANIFEST_UNKNOWN');
});

t.test(
  'with the origins stopped, a real containerd pulls the warmed image through a node proxy',
  { skip },
  async (t) => {
    await lab.stop('origin');
    const proxy = await startProxy([
      '--data-dir',
      lab.tempDir('pt-prewarm-node'),
      '--cache-registry',
      `http://127.0.0.1:${CACHE}`,
      '--insecure-registries',
      origin,
    ]);
    t.teardown(() => proxy.stop());
    await lab.containerd('node', CRI);
    const r = await lab.criPull('node', `${proxy.host}/${origin.replace(':', '_')}/library/multi:v1`, [
      '--timeout',
      '60',
    ]);
    t.ok(r.image_ref, `pulled: ${JSON.stringify(r)}`);
    t.notOk(
      proxy.logs().some((l) => l.source === 'origin'),
      'nothing came from the origin',
    );
  },
);
