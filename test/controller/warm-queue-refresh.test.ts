/**
 * The warm queue's refresh bounds, on a clock the test moves: a check is due once per interval
 * (from `lastChecked`, and from the queue's own memory when a list lags behind), one check per
 * object at a time, checks share the warms' two slots, a failed check waits out its backoff, and
 * `refresh: Never` or a digest reference is never checked. The warmer here is scripted: what it
 * stands for (the proxy's pull path against real registries) is tested in
 * test/e2e/controller-refresh.test.ts.
 */
import t from 'tap';
import { LAST_CHECKED_EVERY_MS, WarmQueue, type ImageWarmer } from '../../src/controller/warm-queue.js';
import type { CachedImage, CachedImageApi, StatusPatch } from '../../src/kube/cached-images.js';
import { silentLogger } from '../../src/kube/index.js';

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;

function cached(name: string, image: string, refresh: string, lastChecked?: number): CachedImage {
  return {
    metadata: { name, generation: 1 },
    spec: { image, refresh },
    status: {
      phase: 'Cached',
      observedGeneration: 1,
      digest: D1,
      ...(lastChecked !== undefined ? { lastChecked: new Date(lastChecked).toISOString() } : {}),
    },
  };
}

interface Pending {
  image: string;
  resolve: (digest: string) => void;
  reject: (err: Error) => void;
}

function setup() {
  let now = 1_000_000;
  const heads: Pending[] = [];
  const warms: { image: string; digest?: string }[] = [];
  const patches: { name: string; patch: StatusPatch }[] = [];
  const warmer: ImageWarmer = {
    warm: (req) => {
      warms.push({ image: req.image, ...(req.digest !== undefined ? { digest: req.digest } : {}) });
      return Promise.resolve({ digest: req.digest ?? D1, size: 10, platforms: [] });
    },
    upstreamDigest: (req) =>
      new Promise((resolve, reject) => {
        heads.push({ image: req.image, resolve, reject });
      }),
  };
  const api: CachedImageApi = {
    list: () => Promise.resolve([]),
    create: () => Promise.reject(new Error('not used')),
    patchStatus: (name, patch) => {
      patches.push({ name, patch });
      return Promise.resolve({ metadata: { name }, spec: { image: '' } });
    },
  };
  const queue = new WarmQueue({
    api,
    warmer,
    secrets: () => Promise.resolve([]),
    log: silentLogger,
    backoff: { initialMs: 10_000, maxMs: 60_000 },
    now: () => now,
  });
  const leading = new AbortController().signal;
  return {
    queue,
    heads,
    warms,
    patches,
    leading,
    at: () => now,
    advance: (ms: number) => (now += ms),
  };
}

t.test('one check per object at a time, within the two slots', async (t) => {
  const s = setup();
  const objects = ['a', 'b', 'c'].map((n) => cached(n, `reg.example/${n}:v1`, '1m'));
  s.queue.schedule(objects, s.leading);
  t.equal(s.heads.length, 2, 'two checks at once');
  s.queue.schedule(objects, s.leading);
  t.equal(s.heads.length, 2, 'no second check of an object in flight, no third slot');
  for (const h of s.heads.splice(0)) h.resolve(D1);
  await s.queue.idle();
  s.queue.schedule(objects, s.leading);
  t.same(
    s.heads.map((h) => h.image),
    ['reg.example/c:v1'],
    'the one left waiting; the others were checked this interval',
  );
  s.heads[0]?.resolve(D1);
  await s.queue.idle();
  t.same(
    s.patches.map((p) => [p.name, p.patch.upToDate, p.patch.upstreamDigest]),
    [
      ['a', true, D1],
      ['b', true, D1],
      ['c', true, D1],
    ],
  );
  t.equal(s.warms.length, 0, 'nothing fetched while the tag has not moved');
});

t.test('once per interval, from lastChecked and from its own memory', async (t) => {
  const s = setup();
  const listed = cached('a', 'reg.example/a:v1', '1m', s.at() - 30_000);
  s.queue.schedule([listed], s.leading);
  t.equal(s.heads.length, 0, 'checked 30 s ago: not due');
  s.advance(30_000);
  s.queue.schedule([listed], s.leading);
  t.equal(s.heads.length, 1, 'due after the interval');
  s.heads[0]?.resolve(D1);
  await s.queue.idle();
  s.advance(5_000);
  s.queue.schedule([listed], s.leading);
  t.equal(s.heads.length, 1, 'a list from before the check does not make it due again');
  t.equal(s.patches.length, 1, 'the first check wrote upToDate');
});

t.test('a check that finds nothing new writes lastChecked at most every ten minutes', async (t) => {
  const s = setup();
  const said = (at: number): CachedImage => {
    const o = cached('a', 'reg.example/a:v1', '1m', at);
    return { ...o, status: { ...o.status, upstreamDigest: D1, upToDate: true } };
  };
  s.queue.schedule([said(s.at() - 60_000)], s.leading);
  s.heads[0]?.resolve(D1);
  await s.queue.idle();
  t.equal(s.patches.length, 0, 'the status already says it');
  s.advance(LAST_CHECKED_EVERY_MS);
  s.queue.schedule([said(s.at() - LAST_CHECKED_EVERY_MS - 60_000)], s.leading);
  s.heads[1]?.resolve(D1);
  await s.queue.idle();
  t.match(s.patches, [{ name: 'a', patch: { lastChecked: new Date(s.at()).toISOString() } }], 'an old lastChecked');
});

t.test('a moved tag: upToDate false, then the new digest fetched and Cached', async (t) => {
  const s = setup();
  s.queue.schedule([cached('a', 'reg.example/a:v1', '1m')], s.leading);
  s.heads[0]?.resolve(D2);
  await s.queue.idle();
  t.same(s.warms, [{ image: 'reg.example/a:v1', digest: D2 }], 'fetched by its new digest');
  t.match(s.patches, [
    { name: 'a', patch: { upstreamDigest: D2, upToDate: false } },
    { name: 'a', patch: { digest: D2, upstreamDigest: D2, upToDate: true } },
  ]);
});

t.test('a failed check waits out its backoff and keeps what is cached', async (t) => {
  const s = setup();
  const o = cached('a', 'reg.example/a:v1', '1s');
  s.queue.schedule([o], s.leading);
  s.heads[0]?.reject(new Error('origin reg.example unreachable'));
  await s.queue.idle();
  t.match(s.patches, [{ name: 'a', patch: { message: 'refresh failed: origin reg.example unreachable' } }]);
  t.notOk(
    s.patches.some((p) => p.patch.phase !== undefined),
    'the phase stays Cached',
  );
  s.advance(5_000);
  s.queue.schedule([o], s.leading);
  t.equal(s.heads.length, 1, 'not within the backoff, though the interval passed');
  s.advance(5_000);
  s.queue.schedule([o], s.leading);
  t.equal(s.heads.length, 2, 'again after it');
  s.heads[1]?.resolve(D1);
  await s.queue.idle();
});

t.test('Never, a digest reference and an empty refresh are not checked', async (t) => {
  const s = setup();
  s.queue.schedule(
    [
      cached('a', 'reg.example/a:v1', 'Never'),
      cached('b', `reg.example/b@${D1}`, '1m'),
      cached('c', 'reg.example/c:v1', ''),
    ],
    s.leading,
  );
  t.equal(s.heads.length, 0);
});
