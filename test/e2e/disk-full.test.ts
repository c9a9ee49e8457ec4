/**
 * Disk full, with a real full filesystem: a 1 MiB tmpfs is the proxy's data dir (store and
 * spool), and a blob four times its size is pulled through the proxy from a real registry. The
 * client gets the whole, correct blob; the fill says "disk full" once, counts it once, stores
 * nothing; /readyz stays 200 and says the node caches nothing; later pulls keep working. A store
 * write on the full disk is said and counted as such too, and a write that succeeds clears it.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { Lab } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const ORIGIN = 15161;
const originHost = `127.0.0.1:${ORIGIN}`;
const dataDir = mkdtempSync(join(tmpdir(), 'pt-disk-full-'));

/** Mounts the small filesystem; the reason it could not, if it could not. */
function mountSmallDisk(): string | undefined {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dataDir], { stdio: 'pipe' });
    return undefined;
  } catch (err) {
    rmdirSync(dataDir);
    return `mounting a tmpfs is not permitted here: ${(err as Error).message.split('\n')[0]}`;
  }
}
const cannotMount = mountSmallDisk();

const lab = new Lab('disk-full');
let proxy: TestProxy;
let layer: string;

t.teardown(async () => {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await proxy?.stop();
  await lab.cleanup();
  if (!cannotMount) {
    // Lazily: a spool file a failed test left open would keep the mount busy.
    execFileSync('umount', ['-l', dataDir]);
    rmdirSync(dataDir);
  }
});

t.before(async () => {
  if (cannotMount) return;
  await lab.registry('origin', ORIGIN);
  const image = await lab.image(originHost, 'library/big', 'v1', ['--layers', '1', '--layer-mb', '4']);
  layer = image.layers[0] as string;
  // A long cool-down: readiness is asked after the fill, and must still say why.
  proxy = await startProxy(['--data-dir', dataDir, '--insecure-registries', originHost, '--cache-cooldown', '5m']);
});

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const blobUrl = (digest: string) => `${proxy.url}/v2/library/big/blobs/${digest}?ns=${encodeURIComponent(originHost)}`;
const diskFullLines = () => proxy.logs().filter((l) => String(l.msg).includes('disk full'));

async function diskFullCount(where: string): Promise<number> {
  const metric = await proxy.metrics.registry.getSingleMetric('pullthrough_disk_full_total')?.get();
  return metric?.values.find((v) => v.labels.where === where)?.value ?? 0;
}

const skip = cannotMount ?? false;

t.test('a blob larger than the disk: whole and correct to the client, "disk full" said once', { skip }, async (t) => {
  const res = await request(blobUrl(layer));
  const body = Buffer.from(await res.body.arrayBuffer());
  t.equal(res.statusCode, 200);
  t.ok(body.byteLength > 2 * 1024 * 1024, `larger than the 1 MiB disk (${body.byteLength} bytes)`);
  t.equal(sha(body), layer, 'the whole, correct blob');
  await proxy.settle();

  const lines = diskFullLines();
  t.equal(lines.length, 1, 'one disk-full line for the fill');
  t.equal(lines[0]?.digest, layer);
  t.equal(lines[0]?.code, 'ENOSPC');
  t.equal(
    proxy.logs().filter((l) => JSON.stringify(l).includes('ENOSPC')).length,
    1,
    'and no other line repeats ENOSPC',
  );
  t.equal(await diskFullCount('spool'), 1, 'pullthrough_disk_full_total{where="spool"} counts 1');
  t.equal(await proxy.store.statBlob(`${originHost}/library/big`, layer), undefined, 'nothing stored');

  const ready = await request(`${proxy.url}/readyz`);
  t.equal(ready.statusCode, 200, '/readyz keeps the proxy in the chain');
  t.same(await ready.body.json(), { status: 'ready', caching: false, reason: 'not caching: disk full' });
});

t.test('while the disk is full, pulls keep working without caching and without more lines', { skip }, async (t) => {
  const res = await request(blobUrl(layer));
  t.equal(res.statusCode, 200);
  t.equal(sha(Buffer.from(await res.body.arrayBuffer())), layer, 'the whole, correct blob again');
  await proxy.settle();
  t.equal(await diskFullCount('spool'), 1, 'no fill was attempted during the cool-down');
  t.equal(diskFullLines().filter((l) => l.digest === layer).length, 1, 'still one line for that blob');
});

t.test(
  'a store write on the full disk: said and counted as disk full; a later write clears it',
  { skip },
  async (t) => {
    const filler = join(dataDir, 'filler');
    try {
      writeFileSync(filler, Buffer.alloc(2 * 1024 * 1024));
    } catch (err) {
      t.equal((err as NodeJS.ErrnoException).code, 'ENOSPC', 'the disk is full now');
    }
    const bytes = Buffer.from(
      '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}',
    );
    const manifest = { bytes, mediaType: 'application/vnd.oci.image.index.v1+json', digest: sha(bytes) };
    t.equal(await proxy.store.putManifest(`${originHost}/library/other`, manifest), false, 'the write fails');
    const line = proxy.logs().find((l) => l.where === 'store');
    t.match(line, { op: 'putManifest', msg: /^disk full/ }, 'said as disk full');
    t.equal(await diskFullCount('store'), 1, 'pullthrough_disk_full_total{where="store"} counts 1');
    const full = await request(`${proxy.url}/readyz`);
    t.same(await full.body.json(), { status: 'ready', caching: false, reason: 'not caching: disk full' });

    rmSync(filler);
    t.equal(await proxy.store.putManifest(`${originHost}/library/other`, manifest), true, 'a write that succeeds');
    const after = (await (await request(`${proxy.url}/readyz`)).body.json()) as { reason?: string };
    // New fills still wait out the spool's cool-down (5 minutes here).
    t.equal(after.reason, 'not caching: spool unavailable', 'no longer disk full');
  },
);
