/**
 * Pre-warm and refresh against the lab's token-auth registry (Docker-Hub-style Bearer tokens, no
 * anonymous access): a private multi-arch CachedImage with its pullSecretRef and `platforms: [all]`
 * lands in the cache registry byte-identical (digests recomputed), its refresh HEAD gets through
 * with the same secret, and no credential reaches a status or an Event.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { request } from 'undici';
import { prepareSpoolDir } from '../../src/cache/blob-fills.js';
import { readProxyConfig } from '../../src/config/proxy.js';
import { runController } from '../../src/controller/run.js';
import type { CachedImage } from '../../src/kube/cached-images.js';
import { createKubeClient, secretCredentials, silentLogger } from '../../src/kube/index.js';
import { cacheRepositoryName } from '../../src/oci/encoding.js';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { createLogger } from '../../src/observability/logger.js';
import { buildPrewarmer } from '../../src/proxy/build-proxy.js';
import { controllerEvents, fastControllerConfig } from '../controller/config.js';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { Lab, labAvailable } from '../helpers/lab.js';
import { eventually } from '../helpers/wait.js';
import { basicAuth, dockerConfigSecret } from '../kube/helpers.js';

const LOCKED = 15355; // the token server listens on LOCKED + 1
const CACHE = 15357;
const PW = 'T0ken-alice-pw';
const lab = new Lab('controller-token-prewarm');
const locked = `127.0.0.1:${LOCKED}`;
const skip = labAvailable() ? false : 'the oci-lab is not installed';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function fromCache(path: string): Promise<{ status: number; bytes: Buffer }> {
  const res = await request(`http://127.0.0.1:${CACHE}${path}`, { headers: { accept: MANIFEST_ACCEPT } });
  return { status: res.statusCode, bytes: Buffer.from(await res.body.arrayBuffer()) };
}

/** Every manifest and blob of an image (an index: of each child) is in the cache, byte for byte. */
async function cachedVerbatim(registry: string, repo: string, digest: string): Promise<string[]> {
  const base = `/v2/${cacheRepositoryName(registry, repo)}`;
  const m = await fromCache(`${base}/manifests/${digest}`);
  if (m.status !== 200 || sha(m.bytes) !== digest) return [`manifest ${digest.slice(7, 19)}: ${m.status}`];
  const parsed = JSON.parse(m.bytes.toString('utf8')) as {
    manifests?: { digest: string }[];
    config?: { digest: string };
    layers?: { digest: string }[];
  };
  const problems: string[] = [];
  for (const child of parsed.manifests ?? []) problems.push(...(await cachedVerbatim(registry, repo, child.digest)));
  for (const d of [parsed.config?.digest, ...(parsed.layers ?? []).map((l) => l.digest)]) {
    if (d === undefined) continue;
    const b = await fromCache(`${base}/blobs/${d}`);
    if (b.status !== 200 || sha(b.bytes) !== d) problems.push(`blob ${d.slice(7, 19)}: ${b.status}`);
  }
  return problems;
}

t.test('pre-warm of a private image behind token auth', { skip }, async (t) => {
  t.teardown(() => lab.cleanup());
  await Promise.all([
    lab.registry('locked', LOCKED, [
      '--token',
      '--no-anon',
      '--htpasswd',
      `alice:${PW}`,
      '--token-port',
      String(LOCKED + 1),
    ]),
    lab.registry('cache', CACHE),
  ]);
  const image = await lab.image(locked, 'team/multi', 'v1', ['--multiarch', '--creds', `alice:${PW}`]);
  await lab.image(locked, 'team/other', 'v1', ['--layers', '1', '--creds', `alice:${PW}`]);
  const { config: proxyConfig } = readProxyConfig(
    [
      '--cache-registry',
      `http://127.0.0.1:${CACHE}`,
      '--data-dir',
      lab.tempDir('pt-controller-token-prewarm'),
      '--insecure-registries',
      [LOCKED, LOCKED + 1].map((p) => `127.0.0.1:${p}`).join(','),
      '--allowed-registries',
      locked,
      '--metrics-listen',
      '',
    ],
    {},
  );
  await prepareSpoolDir(join(proxyConfig.dataDir, 'tmp'));
  const warming = buildPrewarmer(proxyConfig, { log: createLogger('silent') });
  t.teardown(() => warming.close());
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  const client = createKubeClient({ kubeconfig: await writeKubeconfig(api) });
  api.putSecret(dockerConfigSecret('team-a', 'alice', { [locked]: basicAuth('alice', PW) }));
  const running = runController(fastControllerConfig(), {
    client,
    log: silentLogger,
    events: controllerEvents(client),
    warm: { warmer: warming.prewarmer, secrets: secretCredentials(client) },
  });
  t.teardown(() => running.close());

  const put = (name: string, spec: Record<string, unknown>) =>
    api.put('CachedImage', { apiVersion: 'pullthrough.dev/v1alpha1', kind: 'CachedImage', metadata: { name }, spec });
  const object = (name: string) => api.object('CachedImage', undefined, name) as unknown as CachedImage | undefined;
  put('private', {
    image: `${locked}/team/multi:v1`,
    platforms: ['all'],
    refresh: '1s',
    pullSecretRef: { namespace: 'team-a', name: 'alice' },
  });
  // Another repository, not cached yet.
  put('no-secret', { image: `${locked}/team/other:v1` });

  const o = await eventually(
    () => {
      const x = object('private');
      return x?.status?.phase === 'Cached' || x?.status?.phase === 'Failed' ? x : undefined;
    },
    'private settled',
    120_000,
  );
  t.equal(o.status?.phase, 'Cached', `private: ${String(o.status?.message)}`);
  t.equal(o.status?.digest, image.digest);
  t.same([...(o.status?.platforms ?? [])].sort(), ['linux/amd64', 'linux/arm64/v8']);
  t.same(await cachedVerbatim(locked, 'team/multi', image.digest), [], 'every manifest and blob byte-identical');

  const checked = await eventually(
    () => {
      const x = object('private');
      return x?.status?.upToDate === true ? x : undefined;
    },
    'the refresh check with the pull secret',
    60_000,
  );
  t.equal(checked.status?.upstreamDigest, image.digest, 'the HEAD got through with the token');

  const refused = await eventually(
    () => (object('no-secret')?.status?.phase === 'Failed' ? object('no-secret') : undefined),
    'without a secret: Failed',
    120_000,
  );
  t.match(refused.status?.message, /unauthorized|denied|refused|401/i, String(refused.status?.message));

  // The same private image, already cached, by digest and without a secret: the cache does not
  // stand in for the origin's yes.
  put('cached-no-secret', { image: `${locked}/team/multi@${image.digest}` });
  const cachedRefused = await eventually(
    () => (object('cached-no-secret')?.status?.phase === 'Failed' ? object('cached-no-secret') : undefined),
    'a cached private image without a secret: Failed',
    120_000,
  );
  t.match(cachedRefused.status?.message, /unauthorized|denied|refused|401/i, String(cachedRefused.status?.message));
  t.notOk(cachedRefused.status?.digest, 'and its status shows no digest');

  const events = api.store.list({ resource: 'events', kind: 'Event', apiVersion: 'v1', namespaced: true });
  const everything = JSON.stringify({ events, objects: ['private', 'no-secret', 'cached-no-secret'].map(object) });
  t.notOk(everything.includes(PW), 'no password in a status or an Event');
  t.notOk(everything.includes(Buffer.from(`alice:${PW}`).toString('base64')), 'nor its base64');
});
