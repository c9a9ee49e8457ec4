/**
 * The single-flight gauges against a real slow origin: a lab registry behind the lab's fault proxy
 * limiting bandwidth, two clients asking the proxy for the same cold blob at once. While the fill
 * streams, /metrics shows one fill in progress and one waiter joined to it; once both clients have
 * the whole blob, none.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { request } from 'undici';
import { Lab, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { eventually } from '../helpers/wait.js';
import { createLogger } from '../../src/observability/logger.js';
import { startMetricsServer } from '../../src/observability/metrics-server.js';

const ORIGIN = 15397;
const SLOW = 15398;
const METRICS = 15399;

const lab = new Lab('waiters');
const slow = `127.0.0.1:${SLOW}`;
let proxy: TestProxy | undefined;
let image: Image;
const servers: { close(): unknown }[] = [];

t.teardown(async () => {
  for (const s of servers) s.close();
  await proxy?.stop();
  await lab.cleanup();
});

t.before(async () => {
  const { url } = await lab.registry('origin', ORIGIN);
  image = await lab.image(`127.0.0.1:${ORIGIN}`, 'library/big', 'v1', ['--layers', '1', '--layer-mb', '2']);
  // About 4 s for the layer: long enough to see both clients on one fill.
  await lab.logproxy('slow', SLOW, url, ['--rate', '500000']);
  proxy = await startProxy(['--data-dir', lab.tempDir('pt-waiters'), '--insecure-registries', slow]);
  servers.push(
    startMetricsServer(proxy.metrics.registry, { host: '127.0.0.1', port: METRICS }, createLogger('silent')),
  );
});

async function gauges(): Promise<{ fills: number; waiters: number }> {
  const text = await (await request(`http://127.0.0.1:${METRICS}/metrics`)).body.text();
  const value = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { fills: value('pullthrough_blob_fills_in_progress'), waiters: value('pullthrough_blob_fill_waiters') };
}

t.test('two clients on one cold blob: one fill, one waiter, then none', async (t) => {
  if (!proxy) throw new Error('no proxy');
  const digest = image.layers[0] as string;
  const url = `${proxy.url}/v2/library/big/blobs/${digest}?ns=${encodeURIComponent(slow)}`;
  const sha = async (res: Awaited<ReturnType<typeof request>>) =>
    `sha256:${createHash('sha256')
      .update(Buffer.from(await res.body.arrayBuffer()))
      .digest('hex')}`;
  const first = await request(url);
  t.equal(first.statusCode, 200);
  const second = await request(url);
  t.equal(second.statusCode, 200);
  t.equal(second.headers['pullthrough-source'], 'shared-fetch', 'the second joined the fill of the first');
  const during = await gauges();
  t.same(during, { fills: 1, waiters: 1 }, 'while the fill streams');
  t.equal(await sha(first), digest);
  t.equal(await sha(second), digest);
  await proxy.settle();
  await eventually(async () => (await gauges()).waiters === 0, 'the waiter gone');
  t.same(await gauges(), { fills: 0, waiters: 0 }, 'after both clients had the whole blob');
});
