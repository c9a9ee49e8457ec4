/**
 * The request log's `bytes` is what reached the client's connection, against a real registry: a
 * complete transfer logs exactly the body's length (cold and warm, whole and ranged), a HEAD
 * logs 0, and a client that aborts a blob GET partway logs less than the Content-Length and no
 * less than what it received.
 */
import t from 'tap';
import { get as httpGet } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { Lab, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const ORIGIN = 15160;
const originHost = `127.0.0.1:${ORIGIN}`;
const lab = new Lab('request-log');
const dataDir = lab.tempDir('pt-request-log');
let proxy: TestProxy;
let image: Image;
let layer: string;
let layerSize: number;

t.teardown(async () => {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await proxy?.stop();
  await lab.cleanup();
});

t.before(async () => {
  await lab.registry('origin', ORIGIN);
  // Larger than every socket buffer between the proxy and a client on loopback, many times over.
  image = await lab.image(originHost, 'library/big', 'v1', ['--layers', '1', '--layer-mb', '48']);
  layer = image.layers[0] as string;
  proxy = await startProxy(['--data-dir', dataDir, '--insecure-registries', originHost]);
});

const blobPath = (digest: string) => `/v2/library/big/blobs/${digest}?ns=${encodeURIComponent(originHost)}`;

/** The request log lines for `path` so far. */
function lines(path: string): Record<string, unknown>[] {
  return proxy.logs().filter((l) => l.msg === 'request' && l.path === path);
}

/** Waits for the `n`th request log line for `path` (it is written when the connection closes). */
async function nthLine(path: string, n: number): Promise<Record<string, unknown>> {
  const until = Date.now() + 60_000;
  for (;;) {
    const found = lines(path)[n - 1];
    if (found) return found;
    if (Date.now() > until) throw new Error(`no request log line #${n} for ${path} within 60 s`);
    await sleep(20);
  }
}

t.test('a complete transfer logs exactly the body length, cold and warm, whole and ranged', async (t) => {
  const path = blobPath(layer);
  const cold = await request(`${proxy.url}${path}`);
  const coldBody = Buffer.from(await cold.body.arrayBuffer());
  t.equal(cold.statusCode, 200);
  layerSize = coldBody.byteLength;
  t.equal(Number(cold.headers['content-length']), layerSize);
  const coldLine = await nthLine(path, 1);
  t.equal(coldLine.source, 'origin');
  t.equal(coldLine.bytes, layerSize, 'cold: the whole body');
  t.notOk(coldLine.aborted);
  await proxy.settle();

  const warm = await request(`${proxy.url}${path}`);
  t.equal((await warm.body.arrayBuffer()).byteLength, layerSize);
  const warmLine = await nthLine(path, 2);
  t.equal(warmLine.source, 'cache');
  t.equal(warmLine.bytes, layerSize, 'warm: the whole body');

  const ranged = await request(`${proxy.url}${path}`, { headers: { range: 'bytes=1000-' } });
  t.equal(ranged.statusCode, 206);
  t.equal((await ranged.body.arrayBuffer()).byteLength, layerSize - 1000);
  t.equal((await nthLine(path, 3)).bytes, layerSize - 1000, 'a range: its own length');

  const manifestPath = `/v2/library/big/manifests/v1?ns=${encodeURIComponent(originHost)}`;
  const manifest = await request(`${proxy.url}${manifestPath}`);
  const manifestBytes = (await manifest.body.arrayBuffer()).byteLength;
  t.equal((await nthLine(manifestPath, 1)).bytes, manifestBytes, 'a manifest: its length');
});

t.test('a HEAD logs 0 bytes', async (t) => {
  const path = blobPath(layer);
  const before = lines(path).length;
  const head = await request(`${proxy.url}${path}`, { method: 'HEAD' });
  await head.body.dump();
  t.equal(head.statusCode, 200);
  t.equal(Number(head.headers['content-length']), layerSize, 'announces the length');
  const line = await nthLine(path, before + 1);
  t.equal(line.method, 'HEAD');
  t.equal(line.bytes, 0);
});

t.test('a client that aborts a blob GET: less than the Content-Length, no less than it received', async (t) => {
  const path = blobPath(layer);
  const before = lines(path).length;
  const received = await new Promise<number>((resolve, reject) => {
    const req = httpGet(`${proxy.url}${path}`, (res) => {
      let got = 0;
      res.on('data', (c: Buffer) => {
        got += c.byteLength;
        if (got >= 1024 * 1024) {
          // Stops reading and closes the connection: what was not read yet is lost.
          req.destroy();
          resolve(got);
        }
      });
      res.on('error', () => undefined);
    });
    req.on('error', (err) => {
      if (!req.destroyed) reject(err);
    });
  });
  const line = await nthLine(path, before + 1);
  t.equal(line.source, 'cache');
  t.equal(line.aborted, true);
  const bytes = line.bytes as number;
  t.ok(bytes < layerSize, `logged ${bytes} < Content-Length ${layerSize}`);
  t.ok(bytes >= received, `logged ${bytes} >= received ${received}`);
});
