/**
 * The controller's collection loop end to end: the fake API server, a real distribution registry
 * as the cache registry, the gc-runner sidecar running the lab's docker-registry garbage-collect on
 * that registry's storage, and the controller (its run function with the collector its CLI
 * builds). Two CachedImages: one expired and unused, one a pod uses. After one collection the
 * expired image is gone from the registry (manifest 404, its layer's bytes off the disk), its
 * CachedImage says Evicted (no digest, an Event) and turns Pending once a pod uses it again; the
 * used one still pulls through a proxy with the origin stopped.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { registryCollector } from '../../src/cli/controller.js';
import { startGcRunner } from '../../src/cli/gc-runner.js';
import { runController } from '../../src/controller/run.js';
import type { CachedImage } from '../../src/kube/cached-images.js';
import { createKubeClient, silentLogger } from '../../src/kube/index.js';
import { cachedImageName } from '../../src/controller/object-name.js';
import { createLogger } from '../../src/observability/logger.js';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { controllerEvents, fastControllerConfig } from '../controller/config.js';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { Lab, labAvailable, restartRegistry } from '../helpers/lab.js';
import { clientPull } from '../helpers/client-pull.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { pod } from '../kube/helpers.js';
import { eventually } from '../helpers/wait.js';

const ORIGIN = 15532;
const CACHE = 15533;
const RUNNER = 15534;
const lab = new Lab('gc-loop');
const originHost = `127.0.0.1:${ORIGIN}`;
const enc = `127.0.0.1_${ORIGIN}`;
const skip = labAvailable() ? false : 'the oci-lab is not installed';

/** A client's pull through the proxy, every digest checked; the manifest's digest. */
const pull = async (p: TestProxy, repo: string, tag: string) => (await clientPull(p.url, `${enc}/${repo}`, tag)).digest;

t.test('one collection removes the expired, unused image and keeps the used one', { skip }, async (t) => {
  t.teardown(() => lab.cleanup());
  await lab.registry('origin', ORIGIN);
  const cacheDir = (await lab.registry('cache', CACHE)).dir;
  // As manifests/base/registry.yaml runs it: no blob descriptor cache (docs/garbage-collection.md).
  await lab.stop('cache');
  const registryConfig = join(cacheDir, 'config.yml');
  writeFileSync(
    registryConfig,
    readFileSync(registryConfig, 'utf8').replace(/^\s*cache: \{blobdescriptor: inmemory\}\n/m, ''),
  );
  await restartRegistry(lab, 'cache', CACHE);
  const [old, used] = await Promise.all([
    lab.image(originHost, 'team/old', 'v1', ['--seed', 'gc-loop-old', '--layers', '1', '--layer-mb', '2']),
    lab.image(originHost, 'team/used', 'v1', ['--seed', 'gc-loop-used', '--layers', '1', '--layer-mb', '1']),
  ]);

  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  const kubeconfig = await writeKubeconfig(api);
  const client = createKubeClient({ kubeconfig });
  const proxyFlags = (dir: string) => [
    '--data-dir',
    lab.tempDir(dir),
    '--cache-registry',
    `http://127.0.0.1:${CACHE}`,
    '--insecure-registries',
    originHost,
  ];
  const first = await startProxy(proxyFlags('pt-gc-loop-a'));
  t.teardown(() => first.stop());
  t.equal(await pull(first, 'team/old', 'v1'), old.digest);
  t.equal(await pull(first, 'team/used', 'v1'), used.digest);
  await first.settle();
  const ownLayer = old.layers[0] as string;
  const blobFile = (digest: string) =>
    join(cacheDir, 'data/docker/registry/v2/blobs/sha256', digest.slice(7, 9), digest.slice(7), 'data');
  const storageBytes = () =>
    Number(
      execFileSync('du', ['-sb', join(cacheDir, 'data')])
        .toString()
        .split('\t')[0],
    );
  t.ok(existsSync(blobFile(ownLayer)), "the expired image's layer is in the registry's storage");
  const before = storageBytes();

  const longAgo = '2020-01-01T00:00:00.000Z';
  const oldRef = `${originHost}/team/old:v1`;
  const usedRef = `${originHost}/team/used:v1`;
  const putImage = (image: string, digest: string, status: Record<string, unknown>) =>
    api.put('CachedImage', {
      apiVersion: 'pullthrough.dev/v1alpha1',
      kind: 'CachedImage',
      metadata: { name: cachedImageName(image), creationTimestamp: longAgo },
      spec: { image },
      status: { digest, size: 2_000_000, lastUsed: longAgo, ...status },
    });
  putImage(oldRef, old.digest, { phase: 'Expiring' });
  putImage(usedRef, used.digest, {
    phase: 'Cached',
    usedBy: { count: 1, pods: [{ namespace: 'team-a', name: 'app' }] },
  });
  // As the webhook rewrites it: through the node proxy on loopback.
  api.addPod(pod('app', { images: [`127.0.0.1:7439/${enc}/team/used:v1`] }));

  const runner = await startGcRunner(
    {
      listen: { host: '127.0.0.1', port: RUNNER },
      registryBin: 'docker-registry',
      registryConfig,
      timeoutMs: 120_000,
      storage: 'from-config',
      logLevel: 'silent',
    },
    createLogger('silent'),
  );
  t.teardown(() => runner.close());
  const config = fastControllerConfig('a', {
    expireAfterMs: 60_000,
    cacheRegistry: `http://127.0.0.1:${CACHE}`,
    collection: { intervalMs: 1000, runnerUrl: `http://127.0.0.1:${RUNNER}`, settleMs: 200 },
  });
  const collector = await registryCollector(config, client, createLogger('silent'));
  const running = runController(config, {
    client,
    log: silentLogger,
    events: controllerEvents(client),
    ...(collector ? { collector } : {}),
  });
  let closed = false;
  const close = async () => {
    if (!closed) await running.close();
    closed = true;
  };
  t.teardown(close);

  const object = (image: string) =>
    api.object('CachedImage', undefined, cachedImageName(image)) as unknown as CachedImage;
  await eventually(() => object(oldRef).status?.phase === 'Evicted', 'the expired image to be Evicted', 120_000);
  // The pass counts its removals once every status is written.
  await eventually(() => running.collections()?.imagesRemoved === 1, 'the collection to count one removal', 30_000);
  t.pass('one image removed');
  t.same(running.book.images(), [usedRef], 'the controller sees the pod use the kept image');
  const evicted = await eventually(
    () =>
      api.store
        .list({ resource: 'events', kind: 'Event', apiVersion: 'v1', namespaced: true })
        .map((e) => e as unknown as { reason: string; involvedObject: { name: string }; message: string })
        .find((e) => e.reason === 'Evicted'),
    'the Evicted Event',
    30_000,
  );
  t.equal(evicted.involvedObject.name, cachedImageName(oldRef), 'an Event on the evicted CachedImage');
  t.match(evicted.message, /team\/old:v1 removed from the cache \(expired\)/);
  t.equal(object(oldRef).status?.digest, undefined, 'the evicted CachedImage names no stored digest');
  t.match(object(oldRef).status?.message, /removed from the cache \(expired\)/);
  // Used again: Pending, so the pull (or the pre-warmer) caches it again.
  api.addPod(pod('again', { images: [`127.0.0.1:7439/${enc}/team/old:v1`] }));
  await eventually(
    () => object(oldRef).status?.phase === 'Pending',
    'the evicted image, used again, to be Pending',
    30_000,
  );
  t.pass('an evicted image used again is Pending');
  await close();
  t.equal(object(usedRef).status?.digest, used.digest, 'the used image is still Cached');

  const head = async (repo: string, digest: string) => {
    const r = await request(`http://127.0.0.1:${CACHE}/v2/${enc}/${repo}/manifests/${digest}`, {
      method: 'HEAD',
      headers: { accept: MANIFEST_ACCEPT },
    });
    await r.body.dump();
    return r.statusCode;
  };
  t.equal(await head('team/old', old.digest), 404, "the expired image's manifest is gone from the registry");
  t.equal(await head('team/used', used.digest), 200, "the used image's manifest stays");
  t.notOk(existsSync(blobFile(ownLayer)), "the expired image's layer left the storage");
  const after = storageBytes();
  t.ok(after <= before - 2 * 1024 * 1024, `the registry's storage shrank by the removed layer: ${before} -> ${after}`);

  await lab.stop('origin');
  const second = await startProxy(proxyFlags('pt-gc-loop-b'));
  t.teardown(() => second.stop());
  t.equal(await pull(second, 'team/used', 'v1'), used.digest, 'the used image pulls with the origin stopped');
});
