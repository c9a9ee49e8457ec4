/** What a collection removes: never used or retained images; expired first, then least recently pulled. */
import t from 'tap';
import { candidateOf, selectRemovals, type Candidate } from '../../src/controller/gc-selection.js';

const HOUR = 3_600_000;
const NOW = Date.UTC(2026, 11, 6, 12);

function c(name: string, hoursAgo: number, size: number, extra: Partial<Candidate> = {}): Candidate {
  return {
    name,
    image: `docker.io/library/${name}:1`,
    digest: `sha256:${name.padEnd(64, '0')}`,
    size,
    retained: false,
    inUse: false,
    lastActive: NOW - hoursAgo * HOUR,
    ...extra,
  };
}

const opts = { maxBytes: 1000, lowWaterBytes: 800, expireAfterMs: 48 * HOUR, now: NOW };
const names = (s: ReturnType<typeof selectRemovals>) => s.remove.map((r) => `${r.candidate.name}:${r.why}`);

t.test('under the budget: only the expired go', async (t) => {
  const s = selectRemovals([c('old', 72, 100), c('recent', 1, 100)], opts);
  t.same(names(s), ['old:expired']);
  t.equal(s.afterBytes, 100);
});

t.test('over the budget: expired first, then least recently pulled until under the low-water mark', async (t) => {
  const s = selectRemovals(
    [c('a', 10, 300), c('b', 20, 300), c('expired', 100, 100), c('c', 5, 300), c('d', 1, 300)],
    opts,
  );
  t.same(names(s), ['expired:expired', 'b:least-recently-pulled', 'a:least-recently-pulled']);
  t.equal(s.usedBytes, 1300);
  t.equal(s.afterBytes, 600, 'at or under the low-water mark');
});

t.test('never an image in use, never a retained one, never one with nothing stored', async (t) => {
  const s = selectRemovals(
    [
      c('used', 500, 600, { inUse: true }),
      c('kept', 500, 600, { retained: true }),
      c('pending', 500, 600, { digest: undefined }),
      c('free', 1, 100),
    ],
    opts,
  );
  // Removing `free` could not bring usage under the budget: the next pull would bring it back and
  // the next pass remove it again, so nothing is removed for size and the pass says why.
  t.same(names(s), [], 'nothing is removed when removing all that may go does not suffice');
  t.equal(s.afterBytes, 1900, 'usage stays over: what is used or retained is not touched');
  t.equal(s.stuckBytes, 1800, 'what stays whatever is removed');
});

const blobs = (...entries: [string, number][]) => new Map(entries);

t.test('shared layers count once and are freed only with their last image', async (t) => {
  const base = ['sha256:base', 400] as [string, number];
  const a = c('a', 30, 0, { blobs: blobs(base, ['sha256:a-manifest', 10], ['sha256:a-layer', 200]) });
  const b = c('b', 20, 0, { blobs: blobs(base, ['sha256:b-manifest', 10], ['sha256:b-layer', 300]) });
  const d = c('d', 1, 0, { blobs: blobs(['sha256:d-manifest', 10], ['sha256:d-layer', 100]) });
  const under = selectRemovals([a, b, d], { ...opts, maxBytes: 1100, lowWaterBytes: 1000 });
  t.equal(under.usedBytes, 400 + 210 + 310 + 110, 'the base layer counts once');
  t.same(names(under), [], 'under the budget (a sum of sizes, 1430, would be over it)');

  const s = selectRemovals([a, b, d], { ...opts, maxBytes: 1000, lowWaterBytes: 800 });
  t.same(names(s), ['a:least-recently-pulled', 'b:least-recently-pulled']);
  t.same(
    s.remove.map((r) => r.freedBytes),
    [210, 710],
    'removing a frees only its own bytes; the base goes with b, its last image',
  );
  t.equal(s.afterBytes, 110);

  const used = selectRemovals([a, { ...b, inUse: true }, d], { ...opts, maxBytes: 1000, lowWaterBytes: 800 });
  t.same(names(used), ['a:least-recently-pulled', 'd:least-recently-pulled'], 'b, in use, stays');
  t.same(
    used.remove.map((r) => r.freedBytes),
    [210, 110],
    'a frees only its own bytes: b keeps the base',
  );
  t.equal(used.afterBytes, 400 + 310, 'the shared base stays counted');
});

t.test('an image larger than the low-water mark is kept, said, and not churned', async (t) => {
  const big = c('big', 30, 1100);
  const small = c('small', 20, 200);
  const s = selectRemovals([big, small], opts);
  t.same(
    s.tooLarge.map((x) => [x.candidate.name, x.bytes]),
    [['big', 1100]],
  );
  t.same(names(s), [], 'removing small would not suffice; big is never removed for size');
  t.equal(s.stuckBytes, 1100);
  const expired = selectRemovals([c('big', 100, 1100), small], opts);
  t.same(names(expired), ['big:expired'], 'expiry still removes it');
  t.same(expired.tooLarge, []);
  const fits = selectRemovals([c('mid', 30, 850), c('x', 20, 100), c('y', 10, 100)], opts);
  t.same(
    names(fits),
    ['x:least-recently-pulled', 'y:least-recently-pulled'],
    'larger than the low-water mark but the budget holds it: the others go',
  );
  t.equal(fits.afterBytes, 850);
  t.equal(fits.stuckBytes, undefined);
});

t.test('a CachedImage as a candidate: last used by a pod, else created', async (t) => {
  const obj = {
    metadata: { name: 'nginx-1', creationTimestamp: new Date(NOW - 100 * HOUR).toISOString() },
    spec: { image: 'nginx:1', retain: true },
    status: {
      digest: 'sha256:abc',
      size: 42,
      lastUsed: new Date(NOW - 50 * HOUR).toISOString(),
      usedBy: { count: 2, pods: [] },
    },
  };
  t.same(candidateOf(obj), {
    name: 'nginx-1',
    image: 'nginx:1',
    digest: 'sha256:abc',
    size: 42,
    retained: true,
    inUse: true,
    lastActive: NOW - 50 * HOUR,
  });
  t.equal(candidateOf({ metadata: { name: 'x' }, spec: { image: 'x' } }).lastActive, 0);
});
