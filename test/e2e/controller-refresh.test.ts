/**
 * Refresh of a CachedImage tag against a real registry behind a logging front: the controller's
 * checks are HEADs; after the origin's tag moves, `upToDate` turns false, the new digest is
 * fetched into the cache registry and the stored tag moved, with a `Refreshed` Event; a node proxy
 * that starts afterwards serves the new digest and its blobs without one blob request to the
 * origin. A `refresh: Never` tag is HEADed only by its warm's access check, never refreshed.
 */
import t from 'tap';
import { join } from 'node:path';
import { request } from 'undici';
import { prepareSpoolDir } from '../../src/cache/blob-fills.js';
import { readProxyConfig } from '../../src/config/proxy.js';
import { runController } from '../../src/controller/run.js';
import {
  createCachedImageApi,
  type CachedImage,
  type CachedImageApi,
  type StatusPatch,
} from '../../src/kube/cached-images.js';
import { createKubeClient, secretCredentials, silentLogger } from '../../src/kube/index.js';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { createLogger } from '../../src/observability/logger.js';
import { buildPrewarmer } from '../../src/proxy/build-proxy.js';
import { controllerEvents, fastControllerConfig } from '../controller/config.js';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { accessLog, Lab, labAvailable } from '../helpers/lab.js';
import { startProxy } from '../helpers/proxy.js';
import { eventually } from '../helpers/wait.js';

const ORIGIN = 15340;
const FRONT = 15341;
const CACHE = 15342;
const NODE_PROXY = 15343;
const lab = new Lab('controller-refresh');
const front = `127.0.0.1:${FRONT}`;
const skip = labAvailable() ? false : 'the oci-lab is not installed';

interface ImageManifest {
  config: { digest: string };
  layers: { digest: string }[];
}

t.test('refresh of a moved tag', { skip }, async (t) => {
  t.teardown(() => lab.cleanup());
  const origin = await lab.registry('origin', ORIGIN);
  await lab.registry('cache', CACHE);
  const { log: frontLog } = await lab.logproxy('front', FRONT, origin.url);
  const v1 = await lab.image(origin.host, 'library/app', 'v1', ['--layers', '2']);
  await lab.image(origin.host, 'library/still', 'v1', ['--layers', '1']);

  const { config: proxyConfig } = readProxyConfig(
    [
      '--cache-registry',
      `http://127.0.0.1:${CACHE}`,
      '--data-dir',
      lab.tempDir('pt-controller-refresh'),
      '--insecure-registries',
      front,
      '--allowed-registries',
      front,
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
  // Every status write the controller makes, in order: the intermediate `upToDate: false` is one.
  const patches: { name: string; patch: StatusPatch }[] = [];
  const real = createCachedImageApi(client);
  const recording: CachedImageApi = {
    list: () => real.list(),
    create: (name, spec, labels) => real.create(name, spec, labels),
    patchStatus: (name, patch) => {
      patches.push({ name, patch });
      return real.patchStatus(name, patch);
    },
  };
  const running = runController(fastControllerConfig(), {
    client,
    log: silentLogger,
    cachedImages: recording,
    events: controllerEvents(client),
    warm: { warmer: warming.prewarmer, secrets: secretCredentials(client) },
  });
  t.teardown(() => running.close());

  const put = (name: string, spec: Record<string, unknown>) =>
    api.put('CachedImage', { apiVersion: 'pullthrough.dev/v1alpha1', kind: 'CachedImage', metadata: { name }, spec });
  const object = (name: string) => api.object('CachedImage', undefined, name) as unknown as CachedImage | undefined;
  const requests = (what: (e: { method: string; uri: string }) => boolean) => accessLog(frontLog).filter(what);

  put('app', { image: `${front}/library/app:v1`, refresh: '1s' });
  put('still', { image: `${front}/library/still:v1`, refresh: 'Never' });

  const checked = await eventually(
    () => {
      const o = object('app');
      return o?.status?.upToDate === true ? o : undefined;
    },
    'the first check of app',
    120_000,
  );
  t.equal(checked.status?.phase, 'Cached');
  t.equal(checked.status?.digest, v1.digest);
  t.equal(checked.status?.upstreamDigest, v1.digest, 'the origin names the cached digest');
  t.ok(checked.status?.lastChecked, 'when it was checked');
  await eventually(() => object('still')?.status?.phase === 'Cached', 'still cached', 120_000);

  // The origin's tag moves.
  const v2 = await lab.image(origin.host, 'library/app', 'v1', ['--layers', '2']);
  t.not(v2.digest, v1.digest);
  const refreshed = await eventually(
    () => {
      const o = object('app');
      return o?.status?.digest === v2.digest ? o : undefined;
    },
    'the new digest cached',
    120_000,
  );
  t.equal(refreshed.status?.upToDate, true, 'up to date again');
  t.equal(refreshed.status?.upstreamDigest, v2.digest);
  t.equal(refreshed.status?.phase, 'Cached');
  const ofApp = patches.filter((p) => p.name === 'app').map((p) => p.patch);
  const behind = ofApp.findIndex((p) => p.upToDate === false && p.upstreamDigest === v2.digest);
  const caught = ofApp.findIndex((p) => p.digest === v2.digest && p.upToDate === true);
  t.ok(behind >= 0, 'upToDate turned false with the origin digest');
  t.ok(caught > behind, 'then the new digest was cached');
  const stored = await warming.store.getTag(`127.0.0.1_${FRONT}/library/app`, 'v1');
  t.equal(stored?.digest, v2.digest, 'the stored tag moved');
  const events = await eventually(() => {
    const list = api.store
      .list({ resource: 'events', kind: 'Event', apiVersion: 'v1', namespaced: true })
      .map((e) => e as unknown as { reason: string; involvedObject: { name: string }; message: string });
    return list.some((e) => e.reason === 'Refreshed') ? list : undefined;
  }, 'the Refreshed Event');
  const event = events.find((e) => e.reason === 'Refreshed');
  t.equal(event?.involvedObject.name, 'app');
  t.match(event?.message, v2.digest);

  // The checks were HEADs: one GET of the tag (the first warm), the new digest fetched by digest.
  const tagGets = requests((e) => e.method === 'GET' && e.uri.startsWith('/v2/library/app/manifests/v1'));
  t.equal(tagGets.length, 1, 'the tag was GET once, by the first warm');
  t.ok(
    requests((e) => e.method === 'HEAD' && e.uri.startsWith('/v2/library/app/manifests/v1')).length >= 2,
    'the checks were HEADs of the tag',
  );
  // Counted after app's checks above, which came after still was Cached: the one HEAD is the
  // warm's access check (src/proxy/prewarm.ts), none is a refresh.
  t.equal(
    requests((e) => e.method === 'HEAD' && e.uri.startsWith('/v2/library/still/')).length,
    1,
    'refresh: Never makes no HEAD after the warm',
  );

  // A node proxy started now pulls the new digest from the cache registry alone.
  const before = requests((e) => e.uri.includes('/blobs/')).length;
  const proxy = await startProxy(
    [
      '--cache-registry',
      `http://127.0.0.1:${CACHE}`,
      '--data-dir',
      lab.tempDir('pt-refresh-node'),
      '--insecure-registries',
      front,
    ],
    { port: NODE_PROXY },
  );
  t.teardown(() => proxy.stop());
  const ns = `ns=${encodeURIComponent(front)}`;
  const res = await request(`${proxy.url}/v2/library/app/manifests/v1?${ns}`, { headers: { accept: MANIFEST_ACCEPT } });
  const manifest = (await res.body.json()) as ImageManifest;
  t.equal(res.statusCode, 200);
  t.equal(res.headers['docker-content-digest'], v2.digest, 'the node proxy serves the new digest');
  for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
    const blob = await request(`${proxy.url}/v2/library/app/blobs/${d}?${ns}`);
    await blob.body.dump();
    t.equal(blob.statusCode, 200, `blob ${d}`);
  }
  t.equal(requests((e) => e.uri.includes('/blobs/')).length, before, 'zero blob requests to the origin');
});
