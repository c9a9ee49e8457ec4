/**
 * The collection loop's own decisions, with an in-memory CachedImage list and a collector that
 * records what it is asked (the registry side is test/e2e/gc-loop.test.ts): nothing to remove
 * sweeps nothing; a pass that failed makes the next one sweep though it has nothing new; removed
 * images become Evicted with no digest; the flags that turn collection on, and the refusals; usage
 * from the images' blobs (a shared layer once), the budget as a share of the registry's volume,
 * reclaimed bytes and the metrics; the Warnings (budget unusable on S3, smaller than an image,
 * larger than the volume) and that a too-small budget does not churn.
 */
import t from 'tap';
import { parseControllerConfig } from '../../src/config/controller.js';
import { CollectionLoop, type CollectionLoopOptions, type Collector } from '../../src/controller/gc-loop.js';
import type { Removal, RegistryStorage } from '../../src/controller/registry-collector.js';
import type { CachedImage, CachedImageApi, StatusPatch } from '../../src/kube/cached-images.js';
import { EventRecorder, silentLogger, type KubeClient } from '../../src/kube/index.js';
import { ControllerMetrics } from '../../src/observability/metrics.js';

const DAY = 86_400_000;
const NOW = Date.parse('2026-06-01T00:00:00Z');

function world(objects: CachedImage[]) {
  const patches: { name: string; patch: StatusPatch }[] = [];
  const api: CachedImageApi = {
    list: () => Promise.resolve(objects),
    create: () => Promise.reject(new Error('not used')),
    patchStatus: (name, patch) => {
      patches.push({ name, patch });
      return Promise.resolve(objects.find((o) => o.metadata.name === name) as CachedImage);
    },
  };
  const calls: (readonly Removal[])[] = [];
  let fail = false;
  const collector: Collector = {
    checkDeletes: () => Promise.resolve(),
    collect: (removals) => {
      calls.push(removals);
      return fail
        ? Promise.reject(new Error('gc-runner answered 500'))
        : Promise.resolve({ deleted: removals.length, absent: 0 });
    },
  };
  const loop = new CollectionLoop({
    api,
    collector,
    budget: undefined,
    expireAfterMs: 30 * DAY,
    intervalMs: 1000,
    log: { info: () => undefined, warn: () => undefined, error: () => undefined },
    now: () => NOW,
  });
  return { loop, patches, calls, setFail: (v: boolean) => (fail = v) };
}

const image = (name: string, lastUsedDaysAgo: number, inUse = false): CachedImage => ({
  metadata: { name, creationTimestamp: new Date(NOW - 400 * DAY).toISOString() },
  spec: { image: `example.com/${name}:v1` },
  status: {
    phase: 'Cached',
    digest: `sha256:${name.padEnd(64, '0')}`,
    size: 100,
    lastUsed: new Date(NOW - lastUsedDaysAgo * DAY).toISOString(),
    usedBy: { count: inUse ? 1 : 0, pods: [] },
  },
});

t.test('nothing to remove: no sweep', async (t) => {
  const w = world([image('fresh', 1), image('used', 100, true)]);
  t.same(await w.loop.pass(), { removed: [], swept: false });
  t.equal(w.calls.length, 0);
  t.equal(w.loop.totals.succeeded, 1);
});

t.test('a failed pass makes the next one sweep; removed images become Evicted', async (t) => {
  const objects = [image('old', 60), image('used', 100, true)];
  const w = world(objects);
  w.setFail(true);
  await t.rejects(w.loop.pass(), /500/);
  t.equal(w.loop.totals.failed, 1);
  t.equal(w.patches.length, 0, 'nothing is marked Evicted by a pass that failed');
  w.setFail(false);
  // The expired image was removed from the list meanwhile (say, retained): the sweep still runs.
  objects.splice(0, 1);
  t.same(await w.loop.pass(), { removed: [], swept: true }, 'the unfinished sweep is finished');
  objects.unshift(image('old', 60));
  const out = await w.loop.pass();
  t.same(out.removed, ['example.com/old:v1']);
  t.same(w.calls.at(-1), [{ image: 'example.com/old:v1', digest: `sha256:${'old'.padEnd(64, '0')}` }]);
  t.match(w.patches, [{ name: 'old', patch: { phase: 'Evicted', digest: null, size: null, message: /expired/ } }]);
  t.equal(w.loop.totals.imagesRemoved, 1);
});

t.test('a registry that refuses deletes is said at the start', async (t) => {
  const warnings: string[] = [];
  const stop = new AbortController();
  const loop = new CollectionLoop({
    api: {
      list: () => Promise.resolve([]),
      create: () => Promise.reject(new Error()),
      patchStatus: () => Promise.reject(new Error()),
    },
    collector: {
      checkDeletes: () =>
        Promise.reject(Object.assign(new Error('the cache registry refuses deletes'), { code: 'DELETES_DISABLED' })),
      collect: () => Promise.reject(new Error('not reached')),
    },
    budget: undefined,
    expireAfterMs: DAY,
    intervalMs: 3_600_000,
    log: {
      info: () => undefined,
      error: () => undefined,
      warn: (obj) => {
        warnings.push(JSON.stringify(obj));
        stop.abort();
      },
    },
  });
  await loop.run(stop.signal);
  t.match(warnings, [/DELETES_DISABLED.*refuses deletes/]);
});

t.test('the flags that turn collection on', async (t) => {
  const parse = (...argv: string[]) => {
    const p = parseControllerConfig(argv, {});
    if (p.help) throw new Error('help');
    return p.config;
  };
  t.equal(parse().collection, undefined, 'no --gc-runner: off');
  t.equal(
    parse('--cache-registry=http://r:5000', '--gc-runner=http://r:5001', '--gc-interval=0').collection,
    undefined,
    '0: off',
  );
  t.same(parse('--cache-registry=http://r:5000', '--gc-runner=http://r:5001', '--max-cache-size=10GiB').collection, {
    intervalMs: 3_600_000,
    runnerUrl: 'http://r:5001',
    budget: { size: { bytes: 10 * 1024 ** 3 }, lowWater: 0.9 },
    settleMs: 15_000,
  });
  t.throws(() => parse('--gc-runner=http://r:5001'), /--cache-registry/);
  // A share of the volume is resolved each pass from the gc-runner's GET /storage.
  t.same(
    parse('--cache-registry=http://r:5000', '--gc-runner=http://r:5001', '--max-cache-size=50%').collection?.budget,
    { size: { shareOfVolume: 0.5 }, lowWater: 0.9 },
  );
  t.throws(
    () => parse('--cache-registry=http://r:5000', '--gc-runner=http://r:5001', '--max-cache-size=150%'),
    /share of the volume/,
  );
});

/** A loop over a registry whose images' blobs, volume and Events the test sets. */
function registryWorld(opts: {
  objects: CachedImage[];
  blobs: Record<string, [string, number][]>;
  storage: RegistryStorage[];
  budget: CollectionLoopOptions['budget'];
}) {
  const events: { reason: string; type: string; involvedObject: { kind: string; name: string }; message: string }[] =
    [];
  const client = {
    core: {
      createNamespacedEvent: (req: { body: (typeof events)[number] }) => {
        events.push(req.body);
        return Promise.resolve({});
      },
    },
  } as unknown as KubeClient;
  const errors: string[] = [];
  const calls: (readonly Removal[])[] = [];
  let reads = 0;
  const loop = new CollectionLoop({
    api: {
      list: () => Promise.resolve(opts.objects),
      create: () => Promise.reject(new Error('not used')),
      patchStatus: (name) => Promise.resolve(opts.objects.find((o) => o.metadata.name === name) as CachedImage),
    },
    collector: {
      checkDeletes: () => Promise.resolve(),
      collect: (removals) => {
        calls.push(removals);
        return Promise.resolve({ deleted: removals.length, absent: 0 });
      },
      footprint: (image) => {
        const name = image.replace(/^example\.com\/(.*):v1$/, '$1');
        return Promise.resolve(new Map(opts.blobs[name] ?? []));
      },
      storage: () => Promise.resolve(opts.storage[Math.min(reads++, opts.storage.length - 1)] as RegistryStorage),
    },
    budget: opts.budget,
    expireAfterMs: 30 * DAY,
    intervalMs: 1000,
    log: { info: () => undefined, warn: () => undefined, error: (_obj, msg) => errors.push(msg) },
    events: new EventRecorder({ client, namespace: 'pullthrough', component: 'test', log: silentLogger }),
    registryObject: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', name: 'pullthrough-gc', namespace: 'pt' },
    now: () => NOW,
  });
  return { loop, events, errors, calls };
}

// Events are recorded without being awaited by the pass.
const settled = () => new Promise((resolve) => setImmediate(resolve));

t.test('usage counts a shared layer once; a share of the volume; bytes reclaimed on the volume', async (t) => {
  const w = registryWorld({
    objects: [image('a', 10), image('b', 5, true)],
    blobs: {
      a: [
        ['sha256:base', 400],
        ['sha256:a', 300],
      ],
      b: [
        ['sha256:base', 400],
        ['sha256:b', 200],
      ],
    },
    storage: [
      { kind: 'volume', sizeBytes: 1600, freeBytes: 1000 },
      { kind: 'volume', sizeBytes: 1600, freeBytes: 1300 },
    ],
    budget: { size: { shareOfVolume: 0.5 }, lowWater: 0.9 },
  });
  const out = await w.loop.pass();
  t.same(
    out.removed,
    ['example.com/a:v1'],
    '900 distinct bytes (a sum would say 1300), over 50% of 1600: a goes; b is in use',
  );
  t.match(w.loop.totals, {
    usedBytesBefore: 900,
    usedBytesAfter: 600,
    budget: { bytes: 800, given: 'share' },
    volume: { sizeBytes: 1600, freeBytes: 1300 },
    reclaimedBytes: 300,
  });
  let leading = true;
  const controllerMetrics = new ControllerMetrics(
    {
      isLeader: () => leading,
      writes: () => 0,
      backlog: () => 0,
      images: () => 2,
      collections: () => w.loop.totals,
    },
    { defaults: false },
  );
  const metrics = await controllerMetrics.registry.metrics();
  t.match(metrics, 'pullthrough_controller_cache_estimated_bytes{when="before"} 900');
  t.match(metrics, 'pullthrough_controller_cache_budget_bytes{given="share"} 800');
  t.match(metrics, 'pullthrough_registry_volume_size_bytes{storage="filesystem"} 1600');
  t.match(metrics, 'pullthrough_registry_volume_free_bytes{storage="filesystem"} 1300');
  t.match(metrics, 'pullthrough_controller_reclaimed_bytes_total 300');
  leading = false;
  t.notMatch(
    await controllerMetrics.registry.metrics(),
    /^pullthrough_(registry_volume_\w+|controller_cache_budget_bytes)\{/m,
    'a replica not leading says nothing of the volume: its last reading goes stale',
  );
  await settled();
  t.same(
    w.events.map((e) => [e.type, e.reason]),
    [['Normal', 'Evicted']],
    'nothing to warn about',
  );
});

t.test('a share of the volume on object storage is refused: only the expired go', async (t) => {
  const w = registryWorld({
    objects: [image('old', 60), image('recent', 1)],
    blobs: { old: [['sha256:old', 5000]], recent: [['sha256:recent', 5000]] },
    storage: [{ kind: 'no-volume' }],
    budget: { size: { shareOfVolume: 0.8 }, lowWater: 0.9 },
  });
  t.same((await w.loop.pass()).removed, ['example.com/old:v1']);
  await settled();
  t.match(w.errors, [/share of the volume \(80%\).*object storage \(S3\).*set a size/]);
  t.match(w.events, [
    { type: 'Warning', reason: 'CacheBudgetUnusable', involvedObject: { kind: 'Lease', name: 'pullthrough-gc' } },
  ]);
  t.equal(w.loop.totals.budget, undefined);
  t.equal(w.loop.totals.volume, undefined, 'no volume to measure');
});

t.test('a budget smaller than one image: said once, and nothing is removed pass after pass', async (t) => {
  const w = registryWorld({
    objects: [image('big', 10), image('small', 5)],
    blobs: { big: [['sha256:big', 1200]], small: [['sha256:small', 200]] },
    storage: [{ kind: 'volume', sizeBytes: 100_000, freeBytes: 90_000 }],
    budget: { size: { bytes: 1000 }, lowWater: 0.9 },
  });
  for (let pass = 0; pass < 3; pass++) t.same(await w.loop.pass(), { removed: [], swept: false }, `pass ${pass}`);
  await settled();
  t.equal(w.calls.length, 0, 'no sweep');
  t.match(w.errors[0], /example\.com\/big:v1 takes 1200 bytes .* more than the budget's low-water mark \(900/);
  t.match(w.errors[1], /holds 1400 bytes, over --max-cache-size 1000, and 1200 of them stay/);
  t.same(
    w.events.map((e) => [e.reason, e.involvedObject.kind, e.involvedObject.name]),
    [
      ['LargerThanCacheBudget', 'CachedImage', 'big'],
      ['CacheOverBudget', 'Lease', 'pullthrough-gc'],
    ],
    'one Warning each, not one per pass',
  );
});

t.test('a volume with less free space than the budget allows is said', async (t) => {
  const w = registryWorld({
    objects: [image('a', 1)],
    blobs: { a: [['sha256:a', 500]] },
    storage: [{ kind: 'volume', sizeBytes: 4000, freeBytes: 100 }],
    budget: { size: { bytes: 10_000 }, lowWater: 0.9 },
  });
  await w.loop.pass();
  await settled();
  t.match(w.events, [
    {
      type: 'Warning',
      reason: 'CacheVolumeTooSmall',
      message: /100 bytes free of 4000, but the budget allows 9500 more/,
    },
  ]);
});
