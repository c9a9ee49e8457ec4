/**
 * Collection on a real distribution registry as the cache registry (filesystem storage, deletes
 * enabled): two images share a base layer; one is removed while a real containerd (CRI pulls, as
 * the kubelet makes them) and ten HTTP clients pull both through a proxy whose writes are held
 * during the collection, from before the deletes until after the sweep. Kept pulls never fail and
 * stay byte-identical (in containerd's content store and in the registry's storage); the removed
 * image's pulls complete, and it is fetched from the origin again (the origin's access log); the
 * removed image's own layer leaves the registry's storage and its bytes shrink, the shared layer
 * stays, and the kept image pulls with the origin stopped. A garbage-collect killed mid-run and run again leaves the
 * registry consistent. A registry with deletes disabled is detected.
 */
import t from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadAllYaml } from '@kubernetes/client-node';
import { Agent, request } from 'undici';
import { RegistryStore } from '../../src/cache/registry-store.js';
import { RegistryCollector } from '../../src/controller/registry-collector.js';
import { heldCollector, TestWriteHold } from '../helpers/collection.js';
import { Lab, restartRegistry, type Image } from '../helpers/lab.js';
import { clientPull } from '../helpers/client-pull.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { checkRaceRecords, PullRace, RaceOrigin, startRaceWorkers } from '../helpers/pull-race.js';
import { testRegistryClient } from '../helpers/registry-client.js';
import { eventually } from '../helpers/wait.js';

const ORIGIN = 15463;
const CACHE = 15464;
const NO_DELETES = 15465;
const CRI = 15615;
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const lab = new Lab('registry-gc');
const originHost = `127.0.0.1:${ORIGIN}`;
const enc = `127.0.0.1_${ORIGIN}`;
const agent = new Agent({ connect: { timeout: 2000 } });
const proxies: TestProxy[] = [];
let cacheDir: string;
let origin: RaceOrigin;
let kept: Image;
let removed: Image;

t.teardown(async () => {
  for (const p of proxies) await p.stop();
  await agent.close();
  await lab.cleanup();
});

/** A write hold the collection closes and opens, as the Lease does in a cluster. */
const hold = new TestWriteHold();

const proxy = async (dir: string) => {
  const p = await startProxy(
    ['--data-dir', dir, '--cache-registry', `http://127.0.0.1:${CACHE}`, '--insecure-registries', originHost],
    { extraDeps: () => ({ writeHold: hold }) },
  );
  proxies.push(p);
  return p;
};

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A client's pull through the proxy, every digest checked. */
const pull = (p: TestProxy, repo: string, tag: string) => clientPull(p.url, `${enc}/${repo}`, tag);

const blobFile = (digest: string) =>
  join(cacheDir, 'data/docker/registry/v2/blobs/sha256', digest.slice(7, 9), digest.slice(7), 'data');
const storageBytes = () =>
  Number(
    execFileSync('du', ['-sb', join(cacheDir, 'data')])
      .toString()
      .split('\t')[0],
  );

function garbageCollect(opts: { killAtFirstDeletion?: boolean } = {}): Promise<number | null> {
  const child = spawn('docker-registry', ['garbage-collect', join(cacheDir, 'config.yml')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.resume();
  child.stderr.on('data', (c: Buffer) => {
    if (opts.killAtFirstDeletion && c.toString().includes('Deleting blob')) child.kill('SIGKILL');
  });
  return once(child, 'exit').then(([code]) => code as number | null);
}

function collector(gc: () => Promise<void>): RegistryCollector {
  return heldCollector(`http://127.0.0.1:${CACHE}`, hold, gc, { dispatcher: agent, timeoutMs: 5000 });
}

t.before(async () => {
  origin = new RaceOrigin(lab, originHost, (await lab.registry('origin', ORIGIN)).dir);
  cacheDir = (await lab.registry('cache', CACHE)).dir;
  // As manifests/base/registry.yaml runs it: no in-memory blob descriptor cache, which would go on
  // answering for blobs garbage-collect deleted.
  await lab.stop('cache');
  const config = join(cacheDir, 'config.yml');
  writeFileSync(config, readFileSync(config, 'utf8').replace(/^\s*cache: \{blobdescriptor: inmemory\}\n/m, ''));
  await restartRegistry(lab, 'cache', CACHE);
  // Same seed: the first layer of both is the same blob (the shared base); `removed` has one more.
  [kept, removed] = await Promise.all([
    lab.image(originHost, 'team/kept', 'v1', ['--seed', 'gc-base', '--layers', '1', '--layer-mb', '2']),
    lab.image(originHost, 'team/removed', 'v1', ['--seed', 'gc-base', '--layers', '2', '--layer-mb', '2']),
    lab.containerd('node', CRI),
  ]);
});

/** Whether the registry's stored files of an image (manifest, config, layers) hash to their digests. */
const storedIntact = (want: { digest: string; blobs: string[] }) =>
  [want.digest, ...want.blobs].every((d) => existsSync(blobFile(d)) && sha(readFileSync(blobFile(d))) === d);

t.test('collection while pulls go on: kept images intact, removed ones refetched, space reclaimed', async (t) => {
  t.equal(kept.layers[0], removed.layers[0], 'the two images share their base layer');
  const p = await proxy(lab.tempDir('pt-gc-a'));
  const keptPull = await pull(p, 'team/kept', 'v1');
  const removedPull = await pull(p, 'team/removed', 'v1');
  await p.settle();
  const own = removed.layers[1] as string;
  t.ok(existsSync(blobFile(own)), "the removed image's own layer is in the registry's storage");
  const before = storageBytes();
  const keptConfigGets = origin.gets('team/kept', keptPull.blobs[0] as string);

  const race = new PullRace();
  const want = { 'team/kept': keptPull, 'team/removed': removedPull };
  const workers = startRaceWorkers(race, origin, p, want, async (repo) => (await pull(p, repo, 'v1')).digest);
  await race.eachFinishedFrom('before', workers);

  let afterGc = 0;
  let ownGone = false;
  let sharedKept = false;
  let ownGetsAtSweep = 0;
  let ownGetsSwept = 0;
  const gc = collector(async () => {
    race.enter('held');
    // Every worker has a pull under way (or done) since the hold: the sweep runs under pulls.
    await race.eachStartedIn('held', workers);
    t.equal(await garbageCollect(), 0, 'garbage-collect ran');
    ownGetsAtSweep = origin.gets('team/removed', own);
    race.enter('swept');
    // Still held: the removed image's pulls are not stored again yet.
    afterGc = storageBytes();
    ownGone = !existsSync(blobFile(own));
    sharedKept = existsSync(blobFile(kept.layers[0] as string));
    // Pulls after the sweep, still under the hold: the removed layer can only come from the origin.
    await race.eachFinishedFrom('swept', workers);
    ownGetsSwept = origin.gets('team/removed', own);
  });
  race.enter('deleting');
  const result = await gc.collect([{ image: `${originHost}/team/removed:v1`, digest: removed.digest }]);
  race.enter('after');
  t.same(result, { deleted: 1, absent: 0 }, "the removed image's manifest was deleted");
  const records = await race.done();
  checkRaceRecords(t, records, p, want);
  t.same(
    records.filter((r) => r.repo === 'team/removed' && r.failure),
    [],
    'every pull of the removed image racing its deletion completed byte-identical',
  );
  t.ok(
    ownGetsSwept > ownGetsAtSweep,
    `after the sweep, removed pulls got its own layer from the origin: ${ownGetsAtSweep} -> ${ownGetsSwept} GETs`,
  );
  t.equal(
    origin.gets('team/kept', keptPull.blobs[0] as string),
    keptConfigGets,
    "the kept image's blobs came from the cache throughout",
  );
  await p.settle();

  t.ok(
    afterGc <= before - 2 * 1024 * 1024,
    `the registry's storage shrank by the removed layer: ${before} -> ${afterGc} bytes`,
  );
  t.ok(ownGone, "the removed image's own layer left the storage");
  t.ok(sharedKept, 'the shared base layer stayed');
  t.ok(storedIntact(keptPull), "the kept image's stored manifest, config and layers hash to their digests");
  t.equal(keptPull.digest, kept.digest);
  t.equal(removedPull.digest, removed.digest);
});
t.test('a removed image is refetched from the origin; with the origin stopped the kept one still pulls', async (t) => {
  const p = await proxy(lab.tempDir('pt-gc-b'));
  // The previous test's pulls of the removed image stored it again: remove and collect once more.
  await collector(async () => {
    t.equal(await garbageCollect(), 0);
  }).collect([{ image: `${originHost}/team/removed:v1`, digest: removed.digest }]);
  t.notOk(existsSync(blobFile(removed.layers[1] as string)), "the removed image's own layer left the storage");
  t.ok(existsSync(blobFile(kept.layers[0] as string)), 'the shared base layer stayed');
  const ownGets = origin.gets('team/removed', removed.layers[1] as string);
  await t.resolves(
    origin.criPull(p, 'team/removed', await origin.image('team/removed')),
    'containerd pulls the removed image',
  );
  t.equal(
    origin.gets('team/removed', removed.layers[1] as string),
    ownGets + 1,
    "containerd's pull fetched the removed layer from the origin",
  );
  t.equal((await pull(p, 'team/removed', 'v1')).digest, removed.digest, 'the removed image pulls again');
  await p.settle();
  // The registry no longer had its own layer: those bytes came from the origin, and are cached again.
  t.ok(existsSync(blobFile(removed.layers[1] as string)), 'refetched from the origin, the layer is cached again');

  await collector(async () => {
    t.equal(await garbageCollect(), 0);
  }).collect([{ image: `${originHost}/team/removed:v1`, digest: removed.digest }]);
  const keptBlobs = await origin.image('team/kept');
  await lab.stop('origin');
  const fresh = await proxy(lab.tempDir('pt-gc-c'));
  t.equal((await pull(fresh, 'team/kept', 'v1')).digest, kept.digest, 'the kept image pulls with the origin stopped');
  await t.resolves(origin.criPull(fresh, 'team/kept', keptBlobs), 'containerd pulls it whole with the origin stopped');
});

t.test('a garbage-collect killed mid-run, run again: consistent and finished', async (t) => {
  // Garbage to sweep: blobs no manifest names (as a removed image's layers are).
  const store = new RegistryStore(
    testRegistryClient(`http://127.0.0.1:${CACHE}`, { name: 'cache', dispatcher: agent, timeoutMs: 5000 }),
    'cache',
  );
  const garbage: string[] = [];
  const dir = lab.tempDir('garbage');
  for (let i = 0; i < 150; i++) {
    const blob = randomBytes(1024);
    const file = join(dir, `g${i}`);
    writeFileSync(file, blob);
    await store.putBlobFile('garbage/blobs', sha(blob), blob.length, file);
    garbage.push(sha(blob));
  }
  const left = () => garbage.filter((d) => existsSync(blobFile(d))).length;
  t.equal(left(), 150, 'the garbage is in the storage');
  t.equal(await garbageCollect({ killAtFirstDeletion: true }), null, 'garbage-collect was killed');
  const afterKill = left();
  t.ok(afterKill > 0, `killed before the sweep finished: ${150 - afterKill} of 150 blobs deleted`);
  const mid = await proxy(lab.tempDir('pt-gc-mid'));
  t.equal((await pull(mid, 'team/kept', 'v1')).digest, kept.digest, 'the kept image pulls whole in between');
  t.equal(await garbageCollect(), 0, 'the next run finishes');
  t.equal(left(), 0, 'and sweeps the rest');
  const p = await proxy(lab.tempDir('pt-gc-d'));
  t.equal((await pull(p, 'team/kept', 'v1')).digest, kept.digest, 'the kept image still pulls whole (origin stopped)');
});

t.test('the shipped cache registry runs without a blob descriptor cache', async (t) => {
  const docs = loadAllYaml(readFileSync(join(ROOT, 'manifests/base/registry.yaml'), 'utf8')) as {
    kind?: string;
    spec?: { template?: { spec?: { containers?: { name: string; env?: { name: string; value?: string }[] }[] } } };
  }[];
  const registry = docs
    .find((d) => d.kind === 'Deployment')
    ?.spec?.template?.spec?.containers?.find((c) => c.name === 'registry');
  const env = Object.fromEntries((registry?.env ?? []).map((e) => [e.name, e.value]));
  t.equal(env.REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR, '', 'the in-memory cache of the image default is turned off');
  t.equal(env.REGISTRY_STORAGE_DELETE_ENABLED, 'true', 'deletes are enabled');
});

t.test('a registry with deletes disabled is detected at start', async (t) => {
  // The cache registry's configuration with deletes off, on its own port and storage.
  const dir = lab.tempDir('no-deletes');
  const config = join(dir, 'config.yml');
  writeFileSync(
    config,
    readFileSync(join(cacheDir, 'config.yml'), 'utf8')
      .replace('delete: {enabled: true}', 'delete: {enabled: false}')
      .replace(`127.0.0.1:${CACHE}`, `127.0.0.1:${NO_DELETES}`)
      .replace(join(cacheDir, 'data'), join(dir, 'data')),
  );
  const registry = spawn('docker-registry', ['serve', config], { stdio: 'ignore' });
  t.teardown(() => registry.kill('SIGKILL'));
  await eventually(
    () =>
      request(`http://127.0.0.1:${NO_DELETES}/v2/`).then(
        (r) => (r.body.dump(), r.statusCode === 200),
        () => false,
      ),
    'the registry with deletes disabled to answer',
  );
  const disabled = new RegistryCollector({
    client: testRegistryClient(`http://127.0.0.1:${NO_DELETES}`, { name: 'x', dispatcher: agent, timeoutMs: 5000 }),
    host: 'x',
    holdWriters: (work) => work(new AbortController().signal),
    settleMs: 0,
    garbageCollect: async () => undefined,
    log: { info: () => undefined, warn: () => undefined },
  });
  await t.resolves(collector(async () => undefined).checkDeletes(), 'the cache registry deletes');
  await t.rejects(
    disabled.checkDeletes(),
    { code: 'DELETES_DISABLED', message: /storage\.delete\.enabled: true/ },
    'deletes disabled: said clearly, with the setting to change',
  );
});
