/**
 * Who keeps an origin fetch alive, and what an unverified blob costs: the last client leaving a
 * cold blob cancels its origin fetch (nothing stored), one client leaving while another reads does
 * not (the other gets the whole verified blob, and it is stored); an origin serving wrong bytes for
 * a digest (a real registry whose blob file was altered on disk) never gets a complete body to the
 * client, and nothing of it reaches the cache.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { accessLog, Lab, type AccessEntry, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { drain } from '../helpers/streams.js';
import { eventually } from '../helpers/wait.js';

const lab = new Lab('cancel');
const dataDir = lab.tempDir('pt-cancel');
const ORIGIN = 15178;
const SLOW = 15179;
let proxy: TestProxy;
let image: Image;
let bad: Image;
let origin: { url: string; dir: string };

t.teardown(async () => {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await proxy?.stop();
  await lab.cleanup();
});

t.before(async () => {
  origin = await lab.registry('origin', ORIGIN);
  [image, bad] = await Promise.all([
    lab.image(`127.0.0.1:${ORIGIN}`, 'library/app', 'v1', ['--layers', '2', '--layer-mb', '2']),
    lab.image(`127.0.0.1:${ORIGIN}`, 'library/bad', 'v1', ['--layers', '1', '--layer-mb', '2']),
  ]);
  await lab.logproxy('slow', SLOW, origin.url, ['--rate', '300000']);
  proxy = await startProxy([
    '--data-dir',
    dataDir,
    '--insecure-registries',
    [ORIGIN, SLOW].map((p) => `127.0.0.1:${p}`).join(','),
  ]);
});

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const slowRepo = `127.0.0.1_${SLOW}/library/app`;
const slowUrl = (digest: string) => `${proxy.url}/v2/library/app/blobs/${digest}?ns=127.0.0.1%3A${SLOW}`;
const spoolFiles = () => readdirSync(join(dataDir, 'tmp'));

/** The origin's access log line of a blob GET: nginx writes it once the transfer is over. */
function originGet(digest: string): Promise<AccessEntry> {
  return eventually(
    () => accessLog(join(lab.dir, 'slow', 'access.log')).find((e) => e.method === 'GET' && e.uri.includes(digest)),
    `the origin's log line for ${digest}`,
    60_000,
  );
}

/** A client reading a blob until it has `atLeast` bytes, then aborting. */
async function leaveAfter(url: string, atLeast: number): Promise<number> {
  const abort = new AbortController();
  const res = await request(url, { signal: abort.signal });
  let received = 0;
  try {
    for await (const c of res.body) {
      received += (c as Buffer).length;
      if (received >= atLeast) abort.abort();
    }
  } catch {
    // the abort
  }
  return received;
}

t.test('the last client leaving cancels the origin fetch; nothing is stored', async (t) => {
  const layer = image.layers[0] as string;
  const received = await leaveAfter(slowUrl(layer), 100_000);
  t.ok(received >= 100_000, `the client read part of the blob (${received} bytes)`);
  const entry = await originGet(layer);
  const size = (await proxy.store.statBlob(`127.0.0.1_${ORIGIN}/library/app`, layer))?.size;
  t.equal(size, undefined, 'the blob is not cached under any name');
  const failed = await eventually(
    () => proxy.logs().find((l) => l.msg === 'blob fill failed; nothing was cached' && l.digest === layer),
    'the fill to end',
  );
  t.match(failed.err, /every client of this blob went away/, 'the fill was cancelled because its client left');
  const whole = (await request(`${origin.url}/v2/library/app/blobs/${layer}`)).body;
  const length = (await drain(whole)).bytes.length;
  t.ok(entry.bytes < length, `the origin connection closed before the blob's end (${entry.bytes} of ${length} bytes)`);
  await proxy.settle();
  t.equal(await proxy.store.statBlob(slowRepo, layer), undefined, 'nothing was stored');
  t.same(spoolFiles(), [], 'no spool file is left');
});

t.test('a client leaving while another reads: the other gets the whole verified blob, and it is stored', async (t) => {
  const layer = image.layers[1] as string;
  const staying = await request(slowUrl(layer));
  t.equal(staying.statusCode, 200);
  const stayingBody = drain(staying.body);
  await eventually(() => proxy.fills.get(slowRepo, layer), 'the fill to start');
  const received = await leaveAfter(slowUrl(layer), 100_000);
  t.ok(received >= 100_000, `the leaving client read part of the blob (${received} bytes)`);
  const joined = await eventually(
    () => proxy.logs().find((l) => l.msg === 'request' && l.source === 'shared-fetch' && l.aborted === true),
    'the leaving client to be logged',
  );
  t.ok(String(joined.path).includes(layer), 'it had joined the same fetch');

  const { bytes, err } = await stayingBody;
  t.notOk(err, 'the staying client reads to a clean end');
  t.equal(sha(bytes), layer, 'the whole verified blob');
  await proxy.settle();
  t.ok(await proxy.store.statBlob(slowRepo, layer), 'the blob is stored');
  const entry = await originGet(layer);
  t.equal(entry.bytes, bytes.length, 'the one origin transfer ran to its end');
});

t.test(
  'an origin serving wrong bytes for a digest: no complete body reaches the client, nothing is stored',
  async (t) => {
    const layer = bad.layers[0] as string;
    const hex = layer.slice('sha256:'.length);
    const file = join(origin.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
    const altered = readFileSync(file);
    // Same size, another digest: distribution serves it as is.
    altered.writeUInt8(altered.readUInt8(altered.length - 1) ^ 0xff, altered.length - 1);
    writeFileSync(file, altered);

    const url = `${proxy.url}/v2/library/bad/blobs/${layer}?ns=127.0.0.1%3A${ORIGIN}`;
    const res = await request(url);
    t.equal(res.statusCode, 200, 'the transfer starts');
    t.equal(res.headers['content-length'], String(altered.length), 'announcing the whole size');
    const { bytes, err } = await drain(res.body);
    t.ok(err, `the client sees the transfer break (${err?.message})`);
    t.ok(bytes.length < altered.length, `and never the complete body (${bytes.length} of ${altered.length} bytes)`);
    const failed = await eventually(
      () => proxy.logs().find((l) => l.msg === 'blob fill failed; nothing was cached' && l.digest === layer),
      'the fill to fail',
    );
    t.match(failed.err, /digest/, `the log says why (${String(failed.err)})`);
    await proxy.settle();
    const repo = `127.0.0.1_${ORIGIN}/library/bad`;
    t.equal(await proxy.store.statBlob(repo, layer), undefined, 'nothing was stored');
    t.same(spoolFiles(), [], 'no spool file is left');

    await lab.stop('origin');
    const again = await request(url);
    await again.body.dump();
    t.not(again.statusCode, 200, `with the origin stopped the blob is not served (${again.statusCode}): not cached`);
    const line = await eventually(
      () => proxy.logs().filter((l) => l.msg === 'request' && String(l.path).includes(hex))[1],
      'the second request to be logged',
    );
    t.not(line.source, 'cache', 'the proxy did not find it in the cache');
  },
);
