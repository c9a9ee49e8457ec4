/**
 * The verdict feed: CachedImage statuses become in-memory verdicts by image and digest; a verdict
 * about an older digest is not applied to the one cached now; a malformed status.scan counts as
 * not scanned without hiding the others; a failed list keeps the last verdicts.
 */
import t from 'tap';
import type { CachedImage, CachedImageApi } from '../../src/kube/cached-images.js';
import { silentLogger } from '../../src/kube/index.js';
import { VerdictFeed } from '../../src/kube/verdict-feed.js';
import { VerdictCache } from '../../src/scan/verdict-cache.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;
const scan = (digest: string, critical: number) => ({
  digest,
  digests: [digest],
  result: 'Scanned' as const,
  scannedAt: '2026-12-06T00:00:00Z',
  scanner: { name: 'S', version: '1' },
  counts: { critical, high: 0, medium: 0, low: 0, negligible: 0, unknown: 0 },
  findings: [],
});
const ci = (name: string, image: string, digest: string, s?: unknown): CachedImage =>
  ({
    metadata: { name },
    spec: { image },
    status: { phase: 'Cached', digest, ...(s ? { scan: s } : {}) },
  }) as CachedImage;

t.test('statuses become verdicts', async (t) => {
  let objects: CachedImage[] = [
    ci('a', 'nginx:1', d('a'), scan(d('a'), 2)),
    ci('b', 'docker.io/library/b:1', d('b'), scan(d('0'), 0)),
    ci('c', 'c:1', d('c'), { digest: d('c'), digests: null, result: 'Scanned' }),
  ];
  let fail = false;
  const api = {
    list: () => (fail ? Promise.reject(new Error('down')) : Promise.resolve(objects)),
  } as unknown as CachedImageApi;
  const cache = new VerdictCache();
  const feed = new VerdictFeed({ api, cache, log: silentLogger });
  await feed.refresh();
  const a = cache.byImage('docker.io/library/nginx:1');
  t.equal(a?.digest, d('a'));
  t.equal(a?.record?.state === 'scanned' && a.record.verdict.counts.Critical, 2);
  t.equal(cache.byDigest(d('a')), a?.record);
  t.same(cache.byImage('docker.io/library/b:1'), { digest: d('b') }, 'a verdict for an older digest is not applied');
  t.equal(cache.byDigest(d('0')), undefined);
  t.equal(cache.byImage('docker.io/library/c:1'), undefined, 'malformed: not scanned');
  fail = true;
  await feed.refresh();
  t.ok(cache.byDigest(d('a')), 'a failed list keeps the last verdicts');
  fail = false;
  objects = [];
  await feed.refresh();
  t.equal(cache.byDigest(d('a')), undefined, 'an object gone takes its verdict with it');
});
