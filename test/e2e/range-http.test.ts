/**
 * Range over HTTP, as clients resume a blob: `Range: bytes=N-` on a cached blob (undici and curl)
 * and on a fill still in progress (a slow link keeps it so) answers 206 with the right bytes,
 * Content-Range and Content-Length; and a real containerd whose link to the proxy drops mid-blob
 * (the nginx worker between them killed) resumes with a Range request and ends with the image.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { request } from 'undici';
import { accessLog, Lab, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { drain } from '../helpers/streams.js';
import { eventually } from '../helpers/wait.js';

const run = promisify(execFile);
const lab = new Lab('range-http');
const dataDir = lab.tempDir('pt-range-http');
const ORIGIN = 15174;
const SLOW = 15175;
const LINK = 15176;
const CRI = 15177;
let proxy: TestProxy;
let image: Image;
let resumed: Image;
let originUrl: string;

t.teardown(async () => {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await proxy?.stop();
  await lab.cleanup();
});

t.before(async () => {
  originUrl = (await lab.registry('origin', ORIGIN)).url;
  image = await lab.image(`127.0.0.1:${ORIGIN}`, 'library/app', 'v1', ['--layers', '1', '--layer-mb', '4']);
  resumed = await lab.image(`127.0.0.1:${ORIGIN}`, 'library/resumed', 'v1', ['--layers', '1', '--layer-mb', '4']);
  proxy = await startProxy([
    '--data-dir',
    dataDir,
    '--insecure-registries',
    [ORIGIN, SLOW].map((p) => `127.0.0.1:${p}`).join(','),
  ]);
});

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** The whole layer as the origin has it. */
async function originBlob(repo: string, digest: string): Promise<Buffer> {
  const res = await request(`${originUrl}/v2/${repo}/blobs/${digest}`);
  const { bytes } = await drain(res.body);
  if (sha(bytes) !== digest) throw new Error(`origin blob ${digest} does not match`);
  return bytes;
}

t.test('bytes=N- on a cached blob: 206, the tail, its Content-Range and Content-Length', async (t) => {
  const layer = image.layers[0] as string;
  const whole = await originBlob('library/app', layer);
  const url = `${proxy.url}/v2/library/app/blobs/${layer}?ns=127.0.0.1%3A${ORIGIN}`;
  const first = await request(url);
  t.equal(sha((await drain(first.body)).bytes), layer, 'the blob is fetched whole first');
  await proxy.settle();
  t.ok(await proxy.store.statBlob(`127.0.0.1_${ORIGIN}/library/app`, layer), 'and cached');

  const n = 1_000_003;
  const res = await request(url, { headers: { range: `bytes=${n}-` } });
  const { bytes, err } = await drain(res.body);
  t.equal(res.statusCode, 206);
  t.equal(res.headers['content-range'], `bytes ${n}-${whole.length - 1}/${whole.length}`);
  t.equal(res.headers['content-length'], String(whole.length - n));
  t.notOk(err, 'the body ends cleanly');
  t.ok(bytes.equals(whole.subarray(n)), 'the bytes from N to the end');
  const line = await eventually(
    () => proxy.logs().find((l) => l.msg === 'request' && l.status === 206),
    'the request log line of the range',
  );
  t.equal(line.source, 'cache', 'served from the cache');

  // And as curl asks for it.
  const { stdout } = await run('curl', ['-sS', '-r', `${n}-`, '-D', '-', '-o', join(lab.dir, 'curl.out'), url]);
  t.match(stdout, /^HTTP\/1\.1 206 /, 'curl: 206');
  t.match(stdout, new RegExp(`\\r\\ncontent-range: bytes ${n}-${whole.length - 1}/${whole.length}\\r\\n`, 'i'));
  t.match(stdout, new RegExp(`\\r\\ncontent-length: ${whole.length - n}\\r\\n`, 'i'));
  t.ok(readFileSync(join(lab.dir, 'curl.out')).equals(whole.subarray(n)), 'curl: the bytes from N to the end');
});

t.test('bytes=N- on a fill in progress: 206 from the shared fetch, the tail once it arrives', async (t) => {
  const layer = image.layers[0] as string;
  const whole = await originBlob('library/app', layer);
  await lab.logproxy('slow', SLOW, originUrl, ['--rate', '1000000']);
  t.teardown(() => lab.down('slow'));
  const repo = `127.0.0.1_${SLOW}/library/app`;
  const url = `${proxy.url}/v2/library/app/blobs/${layer}?ns=127.0.0.1%3A${SLOW}`;
  const full = await request(url);
  t.equal(full.statusCode, 200, 'a first client starts the fill');
  const fullBody = drain(full.body);
  const fill = await eventually(() => proxy.fills.get(repo, layer), 'the fill to start');
  const n = Math.floor(whole.length / 2) + 7;
  t.ok(fill.written < n, `the fill has not reached N yet (${fill.written} of ${whole.length} bytes)`);

  const res = await request(url, { headers: { range: `bytes=${n}-` } });
  t.equal(res.statusCode, 206);
  t.equal(res.headers['content-range'], `bytes ${n}-${whole.length - 1}/${whole.length}`);
  t.equal(res.headers['content-length'], String(whole.length - n));
  const { bytes, err } = await drain(res.body);
  t.notOk(err, 'the body ends cleanly');
  t.ok(bytes.equals(whole.subarray(n)), 'the bytes from N to the end');
  t.equal(sha((await fullBody).bytes), layer, 'the first client gets the whole blob');
  const line = await eventually(
    () => proxy.logs().find((l) => l.msg === 'request' && l.status === 206 && String(l.path).includes(`${SLOW}`)),
    'the request log line of the range',
  );
  t.equal(line.source, 'shared-fetch', 'served from the fill in progress');
  await proxy.settle();
  t.ok(await proxy.store.statBlob(repo, layer), 'the blob is cached');
  const gets = accessLog(join(lab.dir, 'slow', 'access.log')).filter((e) => e.uri.includes(layer));
  t.equal(gets.length, 1, 'one origin GET served both clients');
});

/** Bytes containerd has written of a blob it is downloading (its content store's ingest files). */
function ingested(node: string): number {
  const dir = join(lab.dir, node, 'root', 'io.containerd.content.v1.content', 'ingest');
  let most = 0;
  try {
    for (const d of readdirSync(dir)) most = Math.max(most, statSync(join(dir, d, 'data')).size);
  } catch {
    return 0;
  }
  return most;
}

t.test('containerd whose link drops mid-blob resumes with Range through the proxy and gets the image', async (t) => {
  const layer = resumed.layers[0] as string;
  const node = await lab.containerd('node', CRI);
  // containerd -> nginx (slow link) -> proxy -> origin; the origin is the server if the mirror fails.
  await lab.logproxy('link', LINK, proxy.url, ['--rate', '500000']);
  await lab.hostsToml(node.hostsDir, `127.0.0.1:${ORIGIN}`, originUrl, [`http://127.0.0.1:${LINK}`]);
  const pulling = lab.criPull('node', `127.0.0.1:${ORIGIN}/library/resumed:v1`, ['--timeout', '120']);

  await eventually(() => ingested('node') > 512 * 1024, 'containerd to be half a MiB into the layer', 60_000);
  const master = Number(readFileSync(join(lab.dir, 'link', 'nginx.pid'), 'utf8'));
  const workers = readFileSync(`/proc/${master}/task/${master}/children`, 'utf8').trim().split(/\s+/).map(Number);
  t.equal(workers.length, 1, 'one nginx worker carries the link');
  process.kill(workers[0] as number, 'SIGKILL'); // nginx's master starts another one

  const pulled = await pulling;
  t.ok(pulled.image_ref, `the pull completed: ${JSON.stringify(pulled)}`);
  const manifest = JSON.parse(
    await (
      await request(`${originUrl}/v2/library/resumed/manifests/v1`, {
        headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
      })
    ).body.text(),
  ) as { config: { digest: string } };
  t.equal(pulled.image_ref, manifest.config.digest, 'the image is the one at the origin');

  const resumes = accessLog(join(lab.dir, 'link', 'access.log')).filter(
    (e) => e.uri.includes(layer) && e.range.startsWith('bytes='),
  );
  t.ok(resumes.length >= 1, 'containerd asked the mirror again for the rest of the layer with Range');
  t.ok(
    resumes.every((e) => e.status === 206),
    `answered 206 (${resumes.map((e) => `${e.range} -> ${e.status}`).join(', ')})`,
  );
  t.ok(
    proxy.logs().some((l) => l.msg === 'request' && l.status === 206 && String(l.path).includes(layer)),
    'the proxy served the range',
  );
});
