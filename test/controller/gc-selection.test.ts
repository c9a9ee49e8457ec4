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
  t.same(names(s), ['free:least-recently-pulled'], 'only the one that may go, though it does not suffice');
  t.equal(s.afterBytes, 1800, 'usage stays over: what is used or retained is not touched');
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
