/**
 * The verdict feed, against the fake API server: CachedImage statuses become in-memory verdicts by
 * image and digest; a verdict about an older digest is not applied to the one cached now; a
 * malformed status.scan counts as not scanned without hiding the others; an API server that goes
 * away keeps the last verdicts; a verdict written later arrives through the watch (one list in
 * all), also after a watch that ends and after a 410 relist.
 */
import t, { type Test } from 'tap';
import { createKubeClient, silentLogger } from '../../src/kube/index.js';
import { VerdictFeed } from '../../src/kube/verdict-feed.js';
import { VerdictCache } from '../../src/scan/verdict-cache.js';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { eventually } from '../helpers/wait.js';

const PATH = '/apis/pullthrough.dev/v1alpha1/cachedimages';
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
const ci = (name: string, image: string, digest: string, s?: unknown) => ({
  apiVersion: 'pullthrough.dev/v1alpha1',
  kind: 'CachedImage',
  metadata: { name },
  spec: { image },
  status: { phase: 'Cached', digest, ...(s ? { scan: s } : {}) },
});
const critical = (cache: VerdictCache, digest: string) => {
  const r = cache.byDigest(digest);
  return r?.state === 'scanned' ? r.verdict.counts.Critical : undefined;
};

async function start(t: Test) {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  const client = createKubeClient({ kubeconfig: await writeKubeconfig(api) });
  const cache = new VerdictCache();
  const feed = new VerdictFeed({ client, cache, log: silentLogger, backoff: { initialMs: 20, maxMs: 200 } });
  t.teardown(() => feed.stop());
  return { api, cache, feed };
}

t.test('statuses become verdicts', async (t) => {
  const { api, cache, feed } = await start(t);
  api.put('CachedImage', ci('a', 'nginx:1', d('a'), scan(d('a'), 2)));
  api.put('CachedImage', ci('b', 'docker.io/library/b:1', d('b'), scan(d('0'), 0)));
  api.put('CachedImage', ci('c', 'c:1', d('c'), { digest: d('c'), digests: null, result: 'Scanned' }));
  feed.start();
  await feed.whenSynced();
  const a = cache.byImage('docker.io/library/nginx:1');
  t.equal(a?.digest, d('a'));
  t.equal(a?.record?.state === 'scanned' && a.record.verdict.counts.Critical, 2);
  t.equal(cache.byDigest(d('a')), a?.record);
  t.same(cache.byImage('docker.io/library/b:1'), { digest: d('b') }, 'a verdict for an older digest is not applied');
  t.equal(cache.byDigest(d('0')), undefined);
  t.equal(cache.byImage('docker.io/library/c:1'), undefined, 'malformed: not scanned');
  await api.stop();
  await eventually(() => !feed.connected, 'the feed noticing the API server is gone');
  t.ok(cache.byDigest(d('a')), 'a failed list keeps the last verdicts');
  await api.restart();
  await eventually(() => feed.connected, 'the feed back');
  api.remove('CachedImage', undefined, 'a');
  await eventually(() => cache.byDigest(d('a')) === undefined, 'an object gone takes its verdict with it');
  t.pass('an object gone takes its verdict with it');
});

t.test('a verdict written later arrives through the watch, also after the watch ends', async (t) => {
  const { api, cache, feed } = await start(t);
  api.put('CachedImage', ci('x', 'x:1', d('1')));
  feed.start();
  await feed.whenSynced();
  t.same(cache.byImage('docker.io/library/x:1'), { digest: d('1') }, 'cached, not scanned yet');

  api.put('CachedImage', ci('x', 'x:1', d('1'), scan(d('1'), 1)));
  t.equal(await eventually(() => critical(cache, d('1')), 'the first verdict'), 1);
  t.equal(api.lists(PATH), 1, 'one list; the verdict came through the watch');

  api.closeWatches();
  await eventually(() => api.watchRequests(PATH).length >= 2 && api.openWatches > 0, 'the watch resumed');
  api.put('CachedImage', ci('x', 'x:1', d('1'), scan(d('1'), 3)));
  t.equal(await eventually(() => critical(cache, d('1')) === 3 && 3, 'the verdict after a watch ended'), 3);
  t.equal(api.lists(PATH), 1, 'a watch that ends resumes from its resourceVersion, without a list');

  api.put('CachedImage', ci('y', 'y:1', d('2'), scan(d('2'), 0)));
  await eventually(() => critical(cache, d('2')) === 0, 'the second object');
  // A deletion the watch never sees, then a compaction: the resumed watch gets 410 and relists.
  await api.stop();
  api.remove('CachedImage', undefined, 'x');
  api.compact();
  await api.restart();
  await eventually(() => api.lists(PATH) === 2, 'the relist after 410');
  await eventually(() => cache.byDigest(d('1')) === undefined, 'the deleted object dropped by the relist');
  t.equal(critical(cache, d('2')), 0, 'an object the relist still finds is kept');
});
