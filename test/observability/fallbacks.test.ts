/**
 * pullthrough_fallbacks_total{reason}: each reason provoked by a real fault on a real pull through
 * the proxy (a stopped cache registry, a cluster proxy that does not answer, a spool directory
 * that cannot be written, an origin answering 503 through the lab's fault proxy), read from the
 * proxy's /metrics over HTTP. pullthrough_ready follows what /readyz answers.
 */
import t from 'tap';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { Lab, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { createLogger } from '../../src/observability/logger.js';
import { startMetricsServer } from '../../src/observability/metrics-server.js';
import { FALLBACK_REASONS } from '../../src/observability/metrics.js';

const ORIGIN = 15384;
const CACHE = 15385;
/** Nothing listens here once the test starts: the cluster proxy that does not answer. */
const DEAD_TIER = 15386;
const METRICS = { cache: 15387, cluster: 15388, spool: 15389, stale: 15390 } as const;
const FRONT = 15391;
/** A cache registry for the spool test: the embedded store would share the broken directory. */
const SPOOL_CACHE = 15392;

const lab = new Lab('fallbacks');
const origin = `127.0.0.1:${ORIGIN}`;
const front = `127.0.0.1:${FRONT}`;
let image: Image;
const proxies: TestProxy[] = [];
const servers: { close(): unknown }[] = [];

t.teardown(async () => {
  for (const s of servers) s.close();
  for (const p of proxies) await p.stop();
  await lab.cleanup();
});

t.before(async () => {
  const { url } = await lab.registry('origin', ORIGIN);
  image = await lab.image(origin, 'library/app', 'v1', ['--layers', '1']);
  await lab.logproxy('front', FRONT, url);
});

async function proxyWithMetrics(port: number, flags: string[]): Promise<{ proxy: TestProxy; dataDir: string }> {
  const dataDir = lab.tempDir('pt-fallbacks');
  const proxy = await startProxy(['--data-dir', dataDir, ...flags]);
  proxies.push(proxy);
  servers.push(startMetricsServer(proxy.metrics.registry, { host: '127.0.0.1', port }, createLogger('silent')));
  return { proxy, dataDir };
}

async function get(url: string, headers: Record<string, string> = {}): Promise<number> {
  const res = await request(url, { headers });
  await res.body.dump();
  return res.statusCode;
}

const manifestUrl = (p: TestProxy, registry: string) =>
  `${p.url}/v2/library/app/manifests/v1?ns=${encodeURIComponent(registry)}`;
const blobUrl = (p: TestProxy, registry: string) =>
  `${p.url}/v2/library/app/blobs/${image.layers[0]}?ns=${encodeURIComponent(registry)}`;

/** Every reason a test below provoked. */
const provoked = new Set<string>();

/** The /metrics text and each fallback reason's count in it. */
async function scrape(port: number): Promise<{ text: string; fallbacks: Record<string, number> }> {
  const res = await request(`http://127.0.0.1:${port}/metrics`);
  const text = await res.body.text();
  const fallbacks: Record<string, number> = {};
  for (const m of text.matchAll(/^pullthrough_fallbacks_total\{reason="([^"]+)"\} (\d+)$/gm)) {
    fallbacks[m[1] as string] = Number(m[2]);
    provoked.add(m[1] as string);
  }
  return { text, fallbacks };
}

const counted = (fallbacks: Record<string, number>) => Object.keys(fallbacks).sort();

t.test('a stopped cache registry: cache-failed, then cache-skipped during the cool-down', async (t) => {
  await lab.registry('cache', CACHE);
  await lab.stop('cache');
  const { proxy } = await proxyWithMetrics(METRICS.cache, [
    '--insecure-registries',
    origin,
    '--cache-registry',
    `http://127.0.0.1:${CACHE}`,
    '--cache-cooldown',
    '5m',
  ]);
  t.equal(await get(manifestUrl(proxy, origin), { accept: MANIFEST_ACCEPT }), 200, 'served from the origin');
  t.equal(await get(blobUrl(proxy, origin)), 200);
  await proxy.settle();
  const { text, fallbacks } = await scrape(METRICS.cache);
  t.equal(fallbacks['cache-failed'], 1, 'the first store operation failed; the store is skipped after it');
  t.ok((fallbacks['cache-skipped'] ?? 0) >= 2, `store operations skipped: ${fallbacks['cache-skipped']}`);
  t.same(counted(fallbacks), ['cache-failed', 'cache-skipped'], 'no other reason');
  const readyz = await request(`${proxy.url}/readyz`);
  await readyz.body.dump();
  t.equal(readyz.statusCode, 503, '/readyz: not ready, the cache registry does not answer');
  t.match(text, /^pullthrough_ready 0$/m, 'the gauge says the same');
  t.match(text, /^pullthrough_caching 0$/m, 'not caching');
});

t.test('a cluster proxy that does not answer: cluster-failed, then cluster-skipped during the cool-down', async (t) => {
  const { proxy } = await proxyWithMetrics(METRICS.cluster, [
    '--insecure-registries',
    origin,
    '--cluster-proxy',
    `http://127.0.0.1:${DEAD_TIER}`,
    '--cluster-cooldown',
    '5m',
  ]);
  t.equal(await get(manifestUrl(proxy, origin), { accept: MANIFEST_ACCEPT }), 200, 'served from the origin');
  t.equal(await get(blobUrl(proxy, origin)), 200);
  await proxy.settle();
  const { text, fallbacks } = await scrape(METRICS.cluster);
  t.equal(fallbacks['cluster-failed'], 1, 'one refused connection; the replica cools down after it');
  t.ok((fallbacks['cluster-skipped'] ?? 0) >= 1, `tier requests skipped: ${fallbacks['cluster-skipped']}`);
  t.same(counted(fallbacks), ['cluster-failed', 'cluster-skipped'], 'no other reason');
  t.match(text, /^pullthrough_ready 1$/m, 'ready: the cluster tier is not needed to serve');
  t.match(text, /^pullthrough_caching 1$/m);
});

t.test('a spool directory that cannot be written: each blob streamed from the origin, spool-direct', async (t) => {
  await lab.registry('spool-cache', SPOOL_CACHE);
  const { proxy, dataDir } = await proxyWithMetrics(METRICS.spool, [
    '--insecure-registries',
    origin,
    '--cache-registry',
    `http://127.0.0.1:${SPOOL_CACHE}`,
    '--cache-cooldown',
    '5m',
  ]);
  const spool = join(dataDir, 'tmp');
  rmSync(spool, { recursive: true, force: true });
  writeFileSync(spool, 'not a directory'); // root ignores permissions; a file in the way fails for anyone
  t.teardown(() => {
    rmSync(spool, { force: true });
    mkdirSync(spool);
  });
  t.equal(await get(blobUrl(proxy, origin)), 200, 'the failing fill: served uncached');
  t.equal(await get(blobUrl(proxy, origin)), 200, 'during the cool-down: served uncached');
  await proxy.settle();
  const { text, fallbacks } = await scrape(METRICS.spool);
  t.same(fallbacks, { 'spool-direct': 2 });
  t.match(text, /^pullthrough_caching 0$/m, 'not caching: spool unavailable');
});

t.test('an origin answering 503 (fault proxy) for an expired tag: stale-tag', async (t) => {
  const { proxy } = await proxyWithMetrics(METRICS.stale, ['--insecure-registries', front, '--tag-ttl', '1ms']);
  t.equal(await get(manifestUrl(proxy, front), { accept: MANIFEST_ACCEPT }), 200, 'cached from the origin');
  await proxy.settle();
  t.same((await scrape(METRICS.stale)).fallbacks, {}, 'nothing fell back yet');
  await lab.down('front');
  await lab.logproxy('front', FRONT, `http://${origin}`, ['--status', '503']);
  t.equal(await get(manifestUrl(proxy, front), { accept: MANIFEST_ACCEPT }), 200, 'served stale');
  const { text, fallbacks } = await scrape(METRICS.stale);
  t.same(fallbacks, { 'stale-tag': 1 });
  t.match(text, /^pullthrough_stale_tags_served_total 1$/m, 'the stale-tags counter agrees');
});

t.test('every reason of the fixed set was provoked above', async (t) => {
  t.same([...provoked].sort(), [...FALLBACK_REASONS].sort());
});
