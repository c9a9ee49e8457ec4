/**
 * Collection on a cache registry whose storage is S3 (the lab's Ceph radosgw), as
 * manifests/overlays/s3-registry installs it (no redirects, no blob descriptor cache): two images
 * share a base layer, one is removed while a real containerd (CRI pulls, as the kubelet makes them)
 * and ten HTTP clients pull both through a proxy whose writes are held, from before the deletes
 * until after the sweep. Kept pulls never fail and stay byte-identical (in containerd's content
 * store and in the bucket); the removed image's pulls complete (a transfer the sweep cuts is
 * retried, as clients do, and misses to the origin); its own layer leaves the bucket (radosgw's
 * bucket stats shrink by it) while the shared one stays, and its next pull gets it from the
 * origin; the kept image pulls with the origin stopped.
 */
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Agent, request } from 'undici';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { heldCollector, TestWriteHold } from '../helpers/collection.js';
import { Lab, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { checkRaceRecords, PullRace, RaceOrigin, startRaceWorkers } from '../helpers/pull-race.js';
import { eventually } from '../helpers/wait.js';

const S3 = 15470; // and 15471-15482 for Ceph's mon and OSD
const CACHE = 15483;
const ORIGIN = 15484;
const CRI = 15616;
const lab = new Lab('registry-gc-s3');
const originHost = `127.0.0.1:${ORIGIN}`;
const enc = `127.0.0.1_${ORIGIN}`;
const cacheUrl = `http://127.0.0.1:${CACHE}`;
const agent = new Agent({ connect: { timeout: 2000 } });
const proxies: TestProxy[] = [];
let cacheConfig: string;
let origin: RaceOrigin;
let cephConf: string;
let bucket: string;
let kept: Image;
let removed: Image;

t.teardown(async () => {
  for (const p of proxies) await p.stop();
  await agent.close();
  await lab.cleanup();
});

/** docker-registry without AWS_CA_BUNDLE: the s3 driver panics on it (lab README). */
const registryEnv = () => {
  const env = { ...process.env };
  delete env.AWS_CA_BUNDLE;
  return env;
};

const hold = new TestWriteHold();

const proxy = async (dir: string) => {
  const p = await startProxy(['--data-dir', dir, '--cache-registry', cacheUrl, '--insecure-registries', originHost], {
    extraDeps: () => ({ writeHold: hold }),
  });
  proxies.push(p);
  return p;
};

const run = promisify(execFile);
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Blob GETs a pull had to repeat, by repository (a client retries a transfer that was cut). */
const retries = new Map<string, string[]>();

async function pull(p: TestProxy, repo: string, tag: string): Promise<string> {
  const m = await request(`${p.url}/v2/${enc}/${repo}/manifests/${tag}`, { headers: { accept: MANIFEST_ACCEPT } });
  const bytes = Buffer.from(await m.body.arrayBuffer());
  if (m.statusCode !== 200) throw new Error(`manifest ${repo}:${tag}: ${m.statusCode}`);
  const doc = JSON.parse(bytes.toString()) as { config: { digest: string }; layers: { digest: string }[] };
  for (const d of [doc.config.digest, ...doc.layers.map((l) => l.digest)]) {
    for (let attempt = 1; ; attempt++) {
      const got = await request(`${p.url}/v2/${enc}/${repo}/blobs/${d}`).then(
        async (b) => ({ status: b.statusCode, digest: sha(Buffer.from(await b.body.arrayBuffer())) }),
        (err: unknown) => ({ status: 0, digest: (err as Error).message }),
      );
      if (got.status === 200 && got.digest === d) break;
      retries.set(repo, [...(retries.get(repo) ?? []), `${d.slice(0, 19)}: ${got.status} ${got.digest.slice(0, 40)}`]);
      if (attempt === 2) throw new Error(`blob ${d} of ${repo}: ${got.status}`);
    }
  }
  return sha(bytes);
}

/** Whether the cache registry still has the blob's bytes (a swept blob's link answers 404). */
async function inCache(repo: string, digest: string): Promise<boolean> {
  const res = await request(`${cacheUrl}/v2/${enc}/${repo}/blobs/${digest}`, { method: 'HEAD' });
  await res.body.dump();
  return res.statusCode === 200;
}

async function garbageCollect(): Promise<number | null> {
  const child = spawn('docker-registry', ['garbage-collect', cacheConfig], {
    stdio: ['ignore', 'ignore', 'ignore'],
    env: registryEnv(),
  });
  const [code] = (await once(child, 'exit')) as [number | null];
  return code;
}

t.before(async () => {
  const vars = Object.fromEntries(
    (await lab.script('s3-up.sh', ['s3', String(S3)], { timeoutMs: 120_000 }))
      .split('\n')
      .map((l) => /^([A-Z_0-9]+)=(.*)$/.exec(l.trim()))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1], (m[2] as string).replace(/^"|"$/g, '')]),
  ) as Record<string, string>;
  t.teardown(() => lab.down('s3'));
  cephConf = vars.CEPH_CONF ?? '';
  bucket = vars.S3_BUCKET ?? '';
  const s3env = {
    S3_ACCESS_KEY: vars.S3_ACCESS_KEY ?? '',
    S3_SECRET_KEY: vars.S3_SECRET_KEY ?? '',
    S3_BUCKET: vars.S3_BUCKET ?? '',
  };
  Object.assign(process.env, s3env);
  const reg = await lab.script('registry-up.sh', [
    'cache',
    String(CACHE),
    '--s3',
    vars.S3_ENDPOINT ?? '',
    '--no-redirect',
  ]);
  const dir = /^DIR=(.*)$/m.exec(reg)?.[1] ?? '';
  await lab.script('registry-down.sh', ['cache', '--keep']);
  // As the s3-registry overlay must run it: no in-memory blob descriptor cache.
  cacheConfig = join(dir, 'config.yml');
  writeFileSync(
    cacheConfig,
    readFileSync(cacheConfig, 'utf8').replace(/^\s*cache: \{blobdescriptor: inmemory\}\n/m, ''),
  );
  const registry = spawn('docker-registry', ['serve', cacheConfig], { stdio: 'ignore', env: registryEnv() });
  t.teardown(() => registry.kill('SIGKILL'));
  await eventually(
    () =>
      request(`${cacheUrl}/v2/`).then(
        async (r) => (await r.body.dump(), r.statusCode === 200),
        () => false,
      ),
    'the S3 cache registry to answer',
    60_000,
  );
  origin = new RaceOrigin(lab, originHost, (await lab.registry('origin', ORIGIN)).dir);
  [kept, removed] = await Promise.all([
    lab.image(originHost, 'team/kept', 'v1', ['--seed', 'gc-s3', '--layers', '1', '--layer-mb', '2']),
    lab.image(originHost, 'team/removed', 'v1', ['--seed', 'gc-s3', '--layers', '2', '--layer-mb', '2']),
    lab.containerd('node', CRI),
  ]);
});

/** The bytes the bucket holds, as radosgw accounts them (every category: objects, multipart parts). */
async function bucketBytes(): Promise<number> {
  const { stdout } = await run('radosgw-admin', ['-c', cephConf, 'bucket', 'stats', `--bucket=${bucket}`], {
    timeout: 60_000,
  });
  const stats = JSON.parse(stdout) as { usage: Record<string, { size: number }> };
  return Object.values(stats.usage).reduce((sum, u) => sum + u.size, 0);
}

/** The sha256 of what the cache registry (which sends the bytes itself) serves for a blob or manifest. */
async function cachedDigest(repo: string, kind: 'blobs' | 'manifests', digest: string): Promise<string> {
  const res = await request(`${cacheUrl}/v2/${enc}/${repo}/${kind}/${digest}`, {
    headers: { accept: MANIFEST_ACCEPT },
  });
  return sha(Buffer.from(await res.body.arrayBuffer()));
}

t.test('on S3: collection while pulls go on; the shared layer stays, the removed one goes', async (t) => {
  t.equal(kept.layers[0], removed.layers[0], 'the two images share their base layer');
  const p = await proxy(lab.tempDir('pt-gc-s3-a'));
  await pull(p, 'team/kept', 'v1');
  await pull(p, 'team/removed', 'v1');
  await p.settle();
  const own = removed.layers[1] as string;
  t.ok(await inCache('team/removed', own), "the removed image's own layer is in the bucket");
  const want = { 'team/kept': await origin.image('team/kept'), 'team/removed': await origin.image('team/removed') };
  const keptConfigGets = origin.gets('team/kept', want['team/kept'].blobs[0] as string);
  const before = await bucketBytes();

  const race = new PullRace();
  const workers = startRaceWorkers(race, origin, p, want, (repo) => pull(p, repo, 'v1'));
  await race.eachFinishedFrom('before', workers);

  let afterGc = 0;
  let ownGone = false;
  let sharedKept = false;
  let ownGetsAtSweep = 0;
  let ownGetsSwept = 0;
  const collector = heldCollector(
    cacheUrl,
    hold,
    async () => {
      race.enter('held');
      // Every worker has a pull under way (or done) since the hold: the sweep runs under pulls.
      await race.eachStartedIn('held', workers);
      t.equal(await garbageCollect(), 0, 'garbage-collect ran on the bucket');
      ownGetsAtSweep = origin.gets('team/removed', own);
      race.enter('swept');
      // Still held: nothing of the removed image is stored again yet.
      afterGc = await bucketBytes();
      ownGone = !(await inCache('team/removed', own));
      sharedKept = await inCache('team/kept', kept.layers[0] as string);
      // Pulls after the sweep, still under the hold: the removed layer can only come from the origin.
      await race.eachFinishedFrom('swept', workers);
      ownGetsSwept = origin.gets('team/removed', own);
    },
    { dispatcher: agent, timeoutMs: 10_000 },
  );
  await collector.checkDeletes();
  race.enter('deleting');
  t.same(
    await collector.collect([{ image: `${originHost}/team/removed:v1`, digest: removed.digest }]),
    { deleted: 1, absent: 0 },
    "the removed image's manifest was deleted",
  );
  race.enter('after');
  const records = await race.done();
  checkRaceRecords(t, records, p, want);
  t.same(retries.get('team/kept') ?? [], [], 'no transfer of the kept image was ever cut');
  // A removed blob's transfer from the bucket can be cut when the sweep deletes it mid-read; the
  // client's retry (containerd's own, with a Range) then misses the cache and gets it from the origin.
  t.comment(`retried transfers of the removed image: ${JSON.stringify(retries.get('team/removed') ?? [])}`);
  t.same(
    records.filter((r) => r.repo === 'team/removed' && r.failure),
    [],
    'every pull of the removed image racing its deletion completed byte-identical (retried when the sweep cut it)',
  );
  t.ok(
    ownGetsSwept > ownGetsAtSweep,
    `after the sweep, removed pulls got its own layer from the origin: ${ownGetsAtSweep} -> ${ownGetsSwept} GETs`,
  );
  t.equal(
    origin.gets('team/kept', want['team/kept'].blobs[0] as string),
    keptConfigGets,
    "the kept image's blobs came from the cache throughout",
  );
  t.ok(afterGc <= before - 2 * 1024 * 1024, `the bucket shrank by the removed layer: ${before} -> ${afterGc} bytes`);
  t.ok(ownGone, "the removed image's own layer left the bucket");
  t.ok(sharedKept, 'the shared base layer stayed');
  await p.settle();
  const keptDigest = want['team/kept'].digest;
  t.equal(await cachedDigest('team/kept', 'manifests', keptDigest), keptDigest, "the bucket's kept manifest is intact");
  for (const d of want['team/kept'].blobs) {
    t.equal(
      await cachedDigest('team/kept', 'blobs', d),
      d,
      `the bucket's copy of the kept blob ${d.slice(7, 19)} is intact`,
    );
  }

  // After the collection, with nothing pulled meanwhile: the next pull of the removed image gets
  // its own layer from the origin.
  const quiet = heldCollector(cacheUrl, hold, async () => t.equal(await garbageCollect(), 0), {
    dispatcher: agent,
    timeoutMs: 10_000,
  });
  await quiet.collect([{ image: `${originHost}/team/removed:v1`, digest: removed.digest }]);
  t.notOk(await inCache('team/removed', own), "the removed image's own layer left the bucket again");
  const ownGets = origin.gets('team/removed', own);
  await t.resolves(origin.criPull(p, 'team/removed', want['team/removed']), 'containerd pulls the removed image');
  t.equal(origin.gets('team/removed', own), ownGets + 1, "containerd's pull fetched the removed layer from the origin");
  await p.settle();

  await lab.stop('origin');
  const fresh = await proxy(lab.tempDir('pt-gc-s3-b'));
  t.equal(await pull(fresh, 'team/kept', 'v1'), kept.digest, 'the kept image pulls with the origin stopped');
  await t.resolves(
    origin.criPull(fresh, 'team/kept', want['team/kept']),
    'containerd pulls it whole with the origin stopped',
  );
});
