/**
 * Origins that misbehave, and clients that go away: hangs and stalls answered with a fast error
 * (containerd then completes the pull from its next host), a connection dropped mid-blob leaves
 * nothing in the cache, a client abort cancels the origin fetch, and 20 concurrent pullers of a
 * cold blob share one origin GET.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer } from 'node:http';
import { request } from 'undici';
import { accessLog, Lab, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const lab = new Lab('faults');
const dataDir = lab.tempDir('pt-faults');
const ORIGIN = 15020;
const HANG = 15021;
const STALL = 15023;
const SLOW = 15024;
const LOGGED = 15025;
const REDIRECTING = 15028;
let proxy: TestProxy;
let image: Image;
let big: Image;

t.teardown(async () => {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await proxy?.stop();
  await lab.cleanup();
});

t.before(async () => {
  const origin = await lab.registry('origin', ORIGIN);
  [image, big] = await Promise.all([
    lab.image(`127.0.0.1:${ORIGIN}`, 'library/app', 'v1', ['--layers', '2']),
    lab.image(`127.0.0.1:${ORIGIN}`, 'library/big', 'v1', ['--layers', '1', '--layer-mb', '6']),
  ]);
  await Promise.all([
    lab.logproxy('hang', HANG, origin.url, ['--hang']),
    lab.logproxy('stall', STALL, origin.url, ['--stall']),
    lab.logproxy('logged', LOGGED, origin.url),
  ]);
  // ORIGIN is where REDIRECTING sends blob downloads: a redirect reaches loopback only on a named port.
  const hosts = [HANG, STALL, SLOW, LOGGED, REDIRECTING, ORIGIN].map((p) => `127.0.0.1:${p}`).join(',');
  proxy = await startProxy([
    '--data-dir',
    dataDir,
    '--insecure-registries',
    hosts,
    '--origin-timeout',
    '2s',
    '--origin-idle-timeout',
    '2s',
  ]);
});

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const spoolFiles = () => readdirSync(join(dataDir, 'tmp'));

for (const [name, port, criPort] of [
  ['hangs', HANG, 15026],
  ['stalls after its headers', STALL, 15027],
] as const) {
  t.test(`an origin that ${name}: a fast error, and containerd completes the pull from its next host`, async (t) => {
    const started = Date.now();
    const res = await request(`${proxy.url}/v2/library/app/manifests/v1?ns=127.0.0.1%3A${port}`);
    const body = (await res.body.json()) as { errors: { code: string }[] };
    t.ok(res.statusCode >= 500 && res.statusCode !== 429, `an error status (${res.statusCode}), never 429`);
    t.equal(body.errors[0]?.code, 'UNAVAILABLE', 'OCI error JSON');
    t.ok(Date.now() - started < 15_000, 'answered within the timeout, not hung');

    const node = await lab.containerd(`node-${port}`, criPort);
    await lab.hostsToml(node.hostsDir, `127.0.0.1:${port}`, `http://127.0.0.1:${ORIGIN}`, [proxy.url]);
    const pulled = await lab.criPull(`node-${port}`, `127.0.0.1:${port}/library/app:v1`, ['--timeout', '60']);
    t.ok(pulled.image_ref, `pull completed through the next host: ${JSON.stringify(pulled)}`);
  });
}

t.test('20 concurrent requests for one cold blob: one origin GET, all get the verified bytes', async (t) => {
  const layer = big.layers[0] as string;
  // A slow link keeps the fill running while all 20 requests arrive.
  await lab.logproxy('slow', SLOW, `http://127.0.0.1:${ORIGIN}`, ['--rate', '4000000']);
  const url = `${proxy.url}/v2/127.0.0.1_${SLOW}/library/big/blobs/${layer}`;
  const bodies = await Promise.all(
    Array.from({ length: 20 }, async () => {
      const res = await request(url);
      const chunks: Buffer[] = [];
      for await (const c of res.body) chunks.push(c as Buffer);
      return { status: res.statusCode, digest: sha(Buffer.concat(chunks)) };
    }),
  );
  t.same(new Set(bodies.map((b) => b.status)), new Set([200]), 'all 200');
  t.same(new Set(bodies.map((b) => b.digest)), new Set([layer]), 'all bytes verified');
  const gets = accessLog(join(lab.dir, 'slow', 'access.log')).filter(
    (e) => e.method === 'GET' && e.uri.includes(layer),
  );
  t.equal(gets.length, 1, 'the origin saw one GET for the blob');
  const sources = proxy
    .logs()
    .filter((l) => l.msg === 'request' && String(l.path).includes(layer))
    .map((l) => l.source);
  t.ok(sources.filter((s) => s === 'shared-fetch').length >= 1, 'later requests joined the running fetch');
  await proxy.settle();
  t.ok(await proxy.store.statBlob(`127.0.0.1_${SLOW}/library/big`, layer), 'and the blob is in the cache');
  await lab.down('slow');
});

t.test(
  'the origin drops the connection mid-blob: the client is cut, nothing partial is cached, the next pull succeeds',
  async (t) => {
    const layer = image.layers[0] as string;
    await lab.logproxy('slow', SLOW, `http://127.0.0.1:${ORIGIN}`, ['--rate', '200000']);
    const url = `${proxy.url}/v2/127.0.0.1_${SLOW}/library/app/blobs/${layer}`;
    const res = await request(url);
    t.equal(res.statusCode, 200, 'the transfer starts');
    let received = 0;
    const outcome = (async () => {
      for await (const c of res.body) received += (c as Buffer).length;
    })().then(
      () => 'clean end',
      (err: unknown) => err,
    );
    await new Promise((r) => setTimeout(r, 1000));
    await lab.down('slow'); // the origin link dies
    t.type(await outcome, Error, 'the client sees the transfer break instead of a clean end');
    t.ok(
      received > 0 && received < Number(res.headers['content-length']),
      `client got a partial body (${received} bytes)`,
    );
    await proxy.settle();
    t.equal(await proxy.store.statBlob(`127.0.0.1_${SLOW}/library/app`, layer), undefined, 'nothing was cached');
    t.same(spoolFiles(), [], 'no spool file is left');

    await lab.logproxy('slow', SLOW, `http://127.0.0.1:${ORIGIN}`);
    const again = await request(url);
    const chunks: Buffer[] = [];
    for await (const c of again.body) chunks.push(c as Buffer);
    t.equal(sha(Buffer.concat(chunks)), layer, 'the next request gets the whole verified blob');
    await proxy.settle();
    t.ok(await proxy.store.statBlob(`127.0.0.1_${SLOW}/library/app`, layer), 'which is now cached');
    await lab.down('slow');
  },
);

t.test('a client that aborts cancels the origin fetch; nothing is committed', async (t) => {
  const layer = image.layers[1] as string;
  await lab.logproxy('slow', SLOW, `http://127.0.0.1:${ORIGIN}`, ['--rate', '100000']);
  const abort = new AbortController();
  const res = await request(`${proxy.url}/v2/127.0.0.1_${SLOW}/library/app/blobs/${layer}`, { signal: abort.signal });
  t.equal(res.statusCode, 200);
  const reading = (async () => {
    for await (const _ of res.body) {
      /* drain until aborted */
    }
  })();
  await new Promise((r) => setTimeout(r, 500));
  abort.abort();
  await reading.catch(() => undefined);
  await proxy.settle(10_000);
  t.equal(proxy.fills.size, 0, 'the fill is gone');
  t.equal(await proxy.store.statBlob(`127.0.0.1_${SLOW}/library/app`, layer), undefined, 'nothing was committed');
  t.same(spoolFiles(), [], 'no spool file is left');
  // nginx writes the line when the transfer ends: at once (499) when the proxy cancels it, after
  // the whole layer at the rate limit when it does not. The line is the event waited for.
  const findEntry = () => accessLog(join(lab.dir, 'slow', 'access.log')).find((e) => e.uri.includes(layer));
  const until = Date.now() + 60_000;
  while (!findEntry() && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  const entry = findEntry();
  t.ok(
    entry && entry.bytes < 1048576,
    `the origin transfer stopped early (${entry?.bytes} bytes sent, status ${entry?.status})`,
  );
  await lab.down('slow');
});

t.test(
  'the spool directory cannot be written (disk full, read-only): blobs are served from the origin, verified, uncached',
  async (t) => {
    const layer = big.layers[0] as string;
    const repo = `127.0.0.1_${LOGGED}/library/big`;
    const spool = join(dataDir, 'tmp');
    rmSync(spool, { recursive: true, force: true });
    writeFileSync(spool, 'not a directory'); // root ignores permissions; a file in the way fails for anyone
    try {
      for (const attempt of ['the failing fill', 'while the spool cools down']) {
        const res = await request(`${proxy.url}/v2/${repo}/blobs/${layer}`);
        t.equal(res.statusCode, 200, `${attempt}: 200`);
        const chunks: Buffer[] = [];
        for await (const c of res.body) chunks.push(c as Buffer);
        t.equal(sha(Buffer.concat(chunks)), layer, `${attempt}: the verified bytes`);
      }
      await proxy.settle();
      t.equal(await proxy.store.statBlob(repo, layer), undefined, 'nothing was cached');
      t.ok(
        proxy.logs().some((l) => typeof l.err === 'string' && l.err.includes('spool')),
        'the log says why',
      );
      t.match(
        await proxy.metrics.registry.getSingleMetricAsString('pullthrough_store_failures_total'),
        /op="spool"\} 1/,
        'and it is counted',
      );
    } finally {
      rmSync(spool, { force: true });
      mkdirSync(spool);
    }
  },
);

t.test(
  'an origin that redirects blob downloads (to a CDN, as Docker Hub, ghcr.io and quay.io do): ' +
    'followed, verified, cached',
  async (t) => {
    // The registry itself stands in for the CDN: another origin, so no Authorization may follow.
    const redirector = createServer((req, res) => {
      const target = `http://127.0.0.1:${ORIGIN}${req.url ?? '/'}`;
      if (req.method === 'GET' && req.url?.includes('/blobs/')) {
        res.writeHead(307, { location: target }).end();
        return;
      }
      void request(target, {
        method: req.method as 'GET' | 'HEAD',
        headers: { accept: req.headers.accept ?? '*/*' },
      }).then(async (up) => {
        res.writeHead(up.statusCode, up.headers as Record<string, string>);
        res.end(Buffer.from(await up.body.arrayBuffer()));
      });
    });
    await new Promise<void>((r) => redirector.listen(REDIRECTING, '127.0.0.1', r));
    t.teardown(() => new Promise<void>((r) => redirector.close(() => r())));
    await lab.containerd('node-redirect', 15029);
    const pulled = await lab.criPull('node-redirect', `${proxy.host}/127.0.0.1_${REDIRECTING}/library/app:v1`);
    t.ok(pulled.image_ref, `pulled through the redirecting origin: ${JSON.stringify(pulled)}`);
    await proxy.settle();
    for (const layer of image.layers)
      t.ok(
        await proxy.store.statBlob(`127.0.0.1_${REDIRECTING}/library/app`, layer),
        `layer ${layer.slice(7, 19)} cached`,
      );
    redirector.closeAllConnections();
  },
);
