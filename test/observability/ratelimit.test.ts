/**
 * The origin's pull allowance as a gauge per registry: a real lab registry behind nginx adding
 * Docker Hub's `ratelimit-limit` / `ratelimit-remaining` headers, a pull through the proxy, and
 * the proxy's /metrics read over HTTP. The header forms and the bound on the registry label are
 * checked on the parser and on ProxyMetrics itself.
 */
import t from 'tap';
import { request } from 'undici';
import { Lab } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { createLogger } from '../../src/observability/logger.js';
import { startMetricsServer } from '../../src/observability/metrics-server.js';
import { ProxyMetrics, RATE_LIMIT_REGISTRIES } from '../../src/observability/metrics.js';
import { parseRateLimit } from '../../src/proxy/origin.js';
import { rateLimitedFront } from './ratelimit-nginx.js';

const ORIGIN = 15380;
const FRONT = 15381;
const METRICS = 15382;

const lab = new Lab('ratelimit');
let proxy: TestProxy | undefined;
let front = '';
const servers: { close(): unknown }[] = [];

t.teardown(async () => {
  for (const s of servers) s.close();
  await proxy?.stop();
  await lab.down('front');
  await lab.cleanup();
});

t.before(async () => {
  await lab.registry('origin', ORIGIN);
  await lab.image(`127.0.0.1:${ORIGIN}`, 'library/app', 'v1', ['--layers', '1']);
  front = await rateLimitedFront(lab, 'front', FRONT, `http://127.0.0.1:${ORIGIN}`, {
    limit: 100,
    remaining: 7,
    windowSeconds: 21600,
  });
  proxy = await startProxy(['--data-dir', lab.tempDir('pt-ratelimit'), '--insecure-registries', front]);
  servers.push(
    startMetricsServer(proxy.metrics.registry, { host: '127.0.0.1', port: METRICS }, createLogger('silent')),
  );
});

async function scrape(): Promise<string> {
  const res = await request(`http://127.0.0.1:${METRICS}/metrics`);
  return res.body.text();
}

t.test("a manifest answer's rate-limit headers become the registry's gauges", async (t) => {
  if (!proxy) throw new Error('no proxy');
  t.notMatch(await scrape(), /^pullthrough_origin_ratelimit_remaining\{/m, 'no sample before any origin answer');
  const res = await request(`${proxy.url}/v2/library/app/manifests/v1?ns=${encodeURIComponent(front)}`, {
    headers: { accept: MANIFEST_ACCEPT },
  });
  await res.body.dump();
  t.equal(res.statusCode, 200);
  const text = await scrape();
  t.match(text, `pullthrough_origin_ratelimit_remaining{registry="${front}"} 7\n`);
  t.match(text, `pullthrough_origin_ratelimit_limit{registry="${front}"} 100\n`);
});

t.test('the header forms read', async (t) => {
  t.same(parseRateLimit({ 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '76;w=21600' }), {
    limit: 100,
    remaining: 76,
    windowSeconds: 21600,
  });
  t.same(parseRateLimit({ 'ratelimit-limit': '5000', 'ratelimit-remaining': '0' }), {
    limit: 5000,
    remaining: 0,
    windowSeconds: undefined,
  });
  t.equal(parseRateLimit({ 'ratelimit-limit': '100;w=21600' }), undefined, 'both headers or nothing');
  t.equal(parseRateLimit({ 'ratelimit-limit': 'x', 'ratelimit-remaining': '1' }), undefined);
  t.equal(parseRateLimit({}), undefined, 'Docker Hub sends none for unlimited accounts');
});

t.test('the registry label is bounded, and an allowance expires with its window', async (t) => {
  const m = new ProxyMetrics({ defaults: false });
  for (let i = 0; i < RATE_LIMIT_REGISTRIES + 5; i++) {
    m.noteRateLimit(`registry-${i}.example`, { limit: 100, remaining: i, windowSeconds: 3600 });
  }
  const { values } = await m.rateLimitRemaining.get();
  t.equal(values.length, RATE_LIMIT_REGISTRIES + 1, 'the first registries by name, then one `other`');
  t.same(
    values.find((v) => v.labels.registry === 'other')?.value,
    RATE_LIMIT_REGISTRIES + 4,
    '`other` holds the latest of the rest',
  );
  m.noteRateLimit('registry-0.example', { limit: 100, remaining: 50, windowSeconds: 3600 });
  t.equal((await m.rateLimitRemaining.get()).values.find((v) => v.labels.registry === 'registry-0.example')?.value, 50);

  const expired = new ProxyMetrics({ defaults: false });
  expired.noteRateLimit('docker.io', { limit: 100, remaining: 1, windowSeconds: 0 });
  t.same((await expired.rateLimitRemaining.get()).values, [], 'a window that has passed leaves no sample');
});
