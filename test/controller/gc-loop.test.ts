/**
 * The collection loop's own decisions, with an in-memory CachedImage list and a collector that
 * records what it is asked (the registry side is test/e2e/gc-loop.test.ts): nothing to remove
 * sweeps nothing; a pass that failed makes the next one sweep though it has nothing new; removed
 * images become Evicted with no digest; the flags that turn collection on, and the refusals.
 */
import t from 'tap';
import { parseControllerConfig } from '../../src/config/controller.js';
import { CollectionLoop, type Collector } from '../../src/controller/gc-loop.js';
import type { Removal } from '../../src/controller/registry-collector.js';
import type { CachedImage, CachedImageApi, StatusPatch } from '../../src/kube/cached-images.js';

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
    log: { info: () => undefined, warn: () => undefined },
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
    maxBytes: 10 * 1024 ** 3,
    lowWaterBytes: Math.floor(10 * 1024 ** 3 * 0.9),
    settleMs: 15_000,
  });
  t.throws(() => parse('--gc-runner=http://r:5001'), /--cache-registry/);
  t.throws(
    () => parse('--cache-registry=http://r:5000', '--gc-runner=http://r:5001', '--max-cache-size=50%'),
    /not a share/,
  );
});
