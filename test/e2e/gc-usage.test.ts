/**
 * What the collection counts and frees, against a real distribution registry on its own 64 MiB
 * tmpfs (so its volume's size and free space are the registry's alone), the gc-runner sidecar and
 * the collector the controller's CLI builds. Three images, two of them sharing a base layer: the
 * usage the controller figures is the distinct bytes the images' blobs and manifests take on
 * disk, not the sum of their sizes, so a budget the sum would exceed (9% of the volume, as a
 * share) removes nothing. A fourth image takes it over: the least recently pulled go until usage
 * is under the low-water mark; the shared base stays for the image in use, which still pulls with
 * the origin stopped; the removed image's own layer leaves the disk, and the reclaimed bytes are
 * the volume's free space after minus before.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statfsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { registryCollector } from '../../src/cli/controller.js';
import { startGcRunner } from '../../src/cli/gc-runner.js';
import { CollectionLoop } from '../../src/controller/gc-loop.js';
import { cachedImageName } from '../../src/controller/object-name.js';
import { createCachedImageApi } from '../../src/kube/cached-images.js';
import { createKubeClient, EventRecorder, silentLogger } from '../../src/kube/index.js';
import { createLogger } from '../../src/observability/logger.js';
import { fastControllerConfig } from '../controller/config.js';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { Lab, labAvailable, restartRegistry, type Image } from '../helpers/lab.js';
import { clientPull } from '../helpers/client-pull.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const ORIGIN = 15650;
const CACHE = 15651;
const RUNNER = 15652;
const VOLUME = 64 * 1024 * 1024;
const DAY = 86_400_000;
const lab = new Lab('gc-usage');
const originHost = `127.0.0.1:${ORIGIN}`;
const enc = `127.0.0.1_${ORIGIN}`;

/** A client's pull through the proxy, every digest checked; the manifest's digest. */
const pull = async (p: TestProxy, repo: string, tag: string) => (await clientPull(p.url, `${enc}/${repo}`, tag)).digest;

/** Mounts a tmpfs on `dir`; the reason it could not, if it could not. */
function mountVolume(dir: string): string | undefined {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${VOLUME}`, 'tmpfs', dir], { stdio: 'pipe' });
    return undefined;
  } catch (err) {
    return `mounting a tmpfs is not permitted here: ${(err as Error).message.split('\n')[0]}`;
  }
}

const skip = labAvailable() ? false : 'the oci-lab is not installed';

t.test('usage counts shared layers once; removals free only what no kept image names', { skip }, async (t) => {
  t.teardown(() => lab.cleanup());
  await lab.registry('origin', ORIGIN);
  const cacheDir = (await lab.registry('cache', CACHE)).dir;
  await lab.stop('cache');
  const dataDir = join(cacheDir, 'data');
  const cannot = mountVolume(dataDir);
  if (cannot) {
    t.plan(0, cannot);
    return;
  }
  t.teardown(async () => {
    await lab.stop('cache').catch(() => undefined);
    // Lazily: the registry may still hold a file open.
    execFileSync('umount', ['-l', dataDir]);
  });
  // As manifests/base/registry.yaml runs it: no blob descriptor cache (docs/garbage-collection.md).
  const registryConfig = join(cacheDir, 'config.yml');
  writeFileSync(
    registryConfig,
    readFileSync(registryConfig, 'utf8').replace(/^\s*cache: \{blobdescriptor: inmemory\}\n/m, ''),
  );
  await restartRegistry(lab, 'cache', CACHE);

  // Same seed: `one`'s only layer is `two`'s first (the shared base).
  const [one, two, three] = await Promise.all([
    lab.image(originHost, 'team/one', 'v1', ['--seed', 'gc-usage-base', '--layers', '1', '--layer-mb', '2']),
    lab.image(originHost, 'team/two', 'v1', ['--seed', 'gc-usage-base', '--layers', '2', '--layer-mb', '2']),
    lab.image(originHost, 'team/three', 'v1', ['--seed', 'gc-usage-three', '--layers', '1', '--layer-mb', '1']),
  ]);
  t.equal(one.layers[0], two.layers[0], 'one and two share their base layer');

  const proxyFlags = (dir: string) => [
    '--data-dir',
    lab.tempDir(dir),
    '--cache-registry',
    `http://127.0.0.1:${CACHE}`,
    '--insecure-registries',
    originHost,
  ];
  const first = await startProxy(proxyFlags('pt-gc-usage-a'));
  t.teardown(() => first.stop());
  for (const [repo, image] of [
    ['team/one', one],
    ['team/two', two],
    ['team/three', three],
  ] as const) {
    t.equal(await pull(first, repo, 'v1'), image.digest, `${repo} pulled into the cache`);
  }
  await first.settle();

  const blobFile = (digest: string) =>
    join(dataDir, 'docker/registry/v2/blobs/sha256', digest.slice(7, 9), digest.slice(7), 'data');
  /** The image's manifest, config and layers as stored: digest -> bytes on disk. */
  const onDisk = (image: Image): Map<string, number> => {
    const manifest = JSON.parse(readFileSync(blobFile(image.digest), 'utf8')) as { config: { digest: string } };
    const digests = [image.digest, manifest.config.digest, ...image.layers];
    return new Map(digests.map((d) => [d, statSync(blobFile(d)).size]));
  };
  const distinct = (...maps: Map<string, number>[]) => {
    const all = new Map<string, number>();
    for (const m of maps) for (const [d, s] of m) all.set(d, s);
    return [...all.values()].reduce((a, b) => a + b, 0);
  };
  const own = { one: onDisk(one), two: onDisk(two), three: onDisk(three) };
  const ownBytes = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  const client = createKubeClient({ kubeconfig: await writeKubeconfig(api) });
  const now = Date.now();
  const putImage = (image: Image, footprint: Map<string, number>, daysAgo: number, inUse = false) =>
    api.put('CachedImage', {
      apiVersion: 'pullthrough.dev/v1alpha1',
      kind: 'CachedImage',
      metadata: { name: cachedImageName(image.ref), creationTimestamp: new Date(now - 100 * DAY).toISOString() },
      spec: { image: image.ref },
      status: {
        phase: 'Cached',
        digest: image.digest,
        // What the image takes on its own, shared base included: their sum over-counts.
        size: ownBytes(footprint),
        lastUsed: new Date(now - daysAgo * DAY).toISOString(),
        ...(inUse ? { usedBy: { count: 1, pods: [{ namespace: 'team', name: 'app' }] } } : {}),
      },
    });
  putImage(one, own.one, 10);
  putImage(two, own.two, 0, true);
  putImage(three, own.three, 5);

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
  const budget = { size: { shareOfVolume: 0.09 }, lowWater: 0.9 };
  const config = fastControllerConfig('a', {
    cacheRegistry: `http://127.0.0.1:${CACHE}`,
    collection: { intervalMs: 3_600_000, runnerUrl: `http://127.0.0.1:${RUNNER}`, settleMs: 200, budget },
  });
  const collector = await registryCollector(config, client, createLogger('silent'));
  if (!collector) throw new Error('no collector');
  const events = new EventRecorder({ client, namespace: 'pullthrough', component: 'test', log: silentLogger });
  const loop = new CollectionLoop({
    api: createCachedImageApi(client),
    collector,
    budget,
    expireAfterMs: 30 * DAY,
    intervalMs: 3_600_000,
    log: createLogger('silent'),
    events,
    registryObject: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', name: 'pullthrough-gc', namespace: 'pt' },
  });
  const budgetBytes = Math.floor(VOLUME * 0.09);

  t.same(await loop.pass(), { removed: [], swept: false }, 'under the budget: nothing removed');
  const used = distinct(own.one, own.two, own.three);
  t.equal(loop.totals.usedBytesBefore, used, `usage is the distinct bytes on disk: ${used}`);
  const summed = ownBytes(own.one) + ownBytes(own.two) + ownBytes(own.three);
  t.ok(used < budgetBytes && summed > budgetBytes, `the sum of sizes (${summed}) would be over ${budgetBytes}`);
  t.same(loop.totals.budget, { bytes: budgetBytes, given: 'share' }, '9% of the volume');
  t.equal(loop.totals.volume?.sizeBytes, VOLUME, "the registry's volume as the gc-runner measures it");

  const four = await lab.image(originHost, 'team/four', 'v1', [
    '--seed',
    'gc-usage-four',
    '--layers',
    '1',
    '--layer-mb',
    '1',
  ]);
  t.equal(await pull(first, 'team/four', 'v1'), four.digest);
  await first.settle();
  const ownFour = onDisk(four);
  putImage(four, ownFour, 0);
  const before = distinct(own.one, own.two, own.three, ownFour);
  t.ok(before > budgetBytes, `a fourth image takes usage over the budget: ${before}`);

  const statfsFree = () => {
    const s = statfsSync(dataDir);
    return s.bavail * s.bsize;
  };
  const freeBefore = statfsFree();
  const out = await loop.pass();
  const freeAfter = statfsFree();
  t.same(out.removed, [one.ref, three.ref], 'the least recently pulled, until under the low-water mark');
  t.equal(loop.totals.usedBytesBefore, before);
  t.equal(loop.totals.usedBytesAfter, distinct(own.two, ownFour), 'what the kept images hold, counted once');
  t.ok(loop.totals.usedBytesAfter <= Math.floor(budgetBytes * 0.9), 'under the low-water mark');

  t.ok(existsSync(blobFile(one.layers[0] as string)), 'the shared base stays: two, in use, names it');
  t.notOk(existsSync(blobFile(three.layers[0] as string)), "three's own layer left the disk");
  t.notOk(existsSync(blobFile(one.digest)), "one's manifest left the disk");
  t.equal(loop.totals.reclaimedBytes, freeAfter - freeBefore, "reclaimed: the volume's free space after minus before");
  t.ok(
    loop.totals.reclaimedBytes >= (own.three.get(three.layers[0] as string) ?? 0),
    `at least three's layer reclaimed: ${loop.totals.reclaimedBytes}`,
  );
  const warnings = api.store
    .list({ resource: 'events', kind: 'Event', apiVersion: 'v1', namespaced: true })
    .map((e) => e as unknown as { type: string; reason: string })
    .filter((e) => e.type === 'Warning');
  t.same(warnings, [], 'nothing to warn about');

  await lab.stop('origin');
  const second = await startProxy(proxyFlags('pt-gc-usage-b'));
  t.teardown(() => second.stop());
  t.equal(await pull(second, 'team/two', 'v1'), two.digest, 'two (the shared base) pulls with the origin stopped');
  t.equal(await pull(second, 'team/four', 'v1'), four.digest, 'four pulls with the origin stopped');
});
