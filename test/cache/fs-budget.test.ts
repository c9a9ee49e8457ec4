/**
 * The embedded store under --max-cache-size: least-recently-used eviction to the low-water mark,
 * coherent manifests and tags, readers of an evicted blob unharmed, too-large content refused,
 * the budget applied at start, and the store conformance suite with a budget.
 */
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FsStore } from '../../src/cache/fs-store.js';
import { budgetRefusal, CacheBudgetError, tooLarge, type StoreBudget } from '../../src/cache/store-budget.js';
import type { StoredManifest } from '../../src/cache/store.js';
import { runProxy } from '../../src/cli/proxy.js';
import { ConfigError } from '../../src/config/flags.js';
import { parseCacheSize } from '../../src/config/proxy.js';
import { MediaType } from '../../src/oci/media-types.js';
import { testTempDir } from '../helpers/temp.js';
import { storeConformance } from './store-conformance.js';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const KB = 1000;
const REPO = 'docker.io/team/app';

function spoolFile(content: Buffer): string {
  const f = join(testTempDir('spool-'), 'blob');
  writeFileSync(f, content);
  return f;
}

async function put(store: FsStore, blob: Buffer, repo = REPO): Promise<void> {
  await store.putBlobFile(repo, sha(blob), blob.length, spoolFile(blob));
}

function imageManifest(config: Buffer, layers: Buffer[]): StoredManifest {
  const bytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: layers.map((l) => ({
        mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
        digest: sha(l),
        size: l.length,
      })),
    }),
  );
  return { bytes, digest: sha(bytes), mediaType: MediaType.OciManifest };
}

const budget = (maxBytes: number, lowWaterBytes: number): StoreBudget => ({ maxBytes, lowWaterBytes });

storeConformance(
  t,
  'embedded store with a budget',
  async () => new FsStore(testTempDir('conformance-budget-'), { budget: budget(64 * 2 ** 20, 60 * 2 ** 20) }),
);

t.test('the least recently used content is evicted, down to the low-water mark', async (t) => {
  const evicted: string[] = [];
  const store = new FsStore(testTempDir('lru-'), {
    budget: budget(1000 * KB, 800 * KB),
    onEvicted: (digest) => evicted.push(digest),
  });
  const [a, b, c, d] = [0, 1, 2, 3].map(() => randomBytes(300 * KB)) as [Buffer, Buffer, Buffer, Buffer];
  await put(store, a);
  await put(store, b);
  await put(store, c);
  t.equal(store.usedBytes, 900 * KB, 'three blobs fit under the budget');
  const read = await store.openBlob(REPO, sha(a));
  read?.stream.destroy();
  await put(store, d);
  t.same(evicted, [sha(b), sha(c)], 'the two least recently used go (a was read since), in that order');
  t.equal(store.usedBytes, 600 * KB, 'usage is under the low-water mark with the new blob');
  t.ok(await store.statBlob(REPO, sha(a)), 'the blob read recently stays');
  t.ok(await store.statBlob(REPO, sha(d)), 'the new blob is stored');
  t.equal(await store.statBlob(REPO, sha(b)), undefined, 'an evicted blob is a miss');
  t.equal(await store.openBlob(REPO, sha(c)), undefined, 'and cannot be opened');
  await put(store, b);
  t.ok(await store.statBlob(REPO, sha(b)), 'an evicted blob can be stored again (refilled from the origin)');
});

t.test('a manifest or tag whose content was evicted is a miss, never a pointer to nothing', async (t) => {
  const store = new FsStore(testTempDir('coherent-'), { budget: budget(1000 * KB, 850 * KB) });
  const config = Buffer.from(`{"architecture":"amd64","os":"linux","r":"${randomBytes(4).toString('hex')}"}`);
  const shared = randomBytes(200 * KB);
  const onlyA = randomBytes(200 * KB);
  await put(store, config);
  await put(store, shared);
  await put(store, onlyA);
  const a = imageManifest(config, [shared, onlyA]);
  const b = imageManifest(config, [shared]);
  await store.putManifest(REPO, a);
  await store.putManifest(REPO, b);
  await store.putTag(REPO, 'a', a, 1);
  await store.putTag(REPO, 'b', b, 1);
  // The config and the shared layer are read (image b's pull): a's own layer is now the oldest
  // file, older than a's manifest.
  for (const blob of [config, shared]) (await store.openBlob(REPO, sha(blob)))?.stream.destroy();
  await put(store, randomBytes(620 * KB));
  t.equal(await store.statBlob(REPO, sha(onlyA)), undefined, "a's own layer was evicted");
  t.equal(await store.getManifest(REPO, a.digest), undefined, 'so image a misses: its manifest is not served');
  t.equal(await store.getTag(REPO, 'a'), undefined, 'and neither is its tag');
  t.ok(await store.getManifest(REPO, b.digest), 'image b, sharing the base layer, is still served whole');
  t.equal((await store.getTag(REPO, 'b'))?.digest, b.digest, 'with its tag');
  t.ok(await store.statBlob(REPO, sha(shared)), 'the shared layer stays');
});

t.test('a reader of a blob evicted mid-read gets every byte', async (t) => {
  const store = new FsStore(testTempDir('reader-'), { budget: budget(6 * 2 ** 20, 5 * 2 ** 20) });
  const blob = randomBytes(4 * 2 ** 20 + 17);
  await put(store, blob);
  const opened = await store.openBlob(REPO, sha(blob));
  if (!opened) throw new Error('the blob did not open');
  const hash = createHash('sha256');
  let bytes = 0;
  let evictedMidRead = false;
  for await (const chunk of opened.stream) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
    if (!evictedMidRead) {
      // The first chunk is read: another blob now needs the room this one takes.
      await put(store, randomBytes(3 * 2 ** 20));
      t.equal(await store.statBlob(REPO, sha(blob)), undefined, 'the blob is evicted while its reader reads');
      evictedMidRead = true;
    }
  }
  t.ok(evictedMidRead && bytes > 2 ** 20, 'the eviction came after the first chunk and before the last');
  t.equal(bytes, blob.length, 'the reader got every byte');
  t.equal(`sha256:${hash.digest('hex')}`, sha(blob), 'and the digest verifies');
});

t.test('content larger than the low-water mark is refused, nothing evicted for it', async (t) => {
  const evicted: string[] = [];
  const store = new FsStore(testTempDir('too-large-'), {
    budget: budget(1000 * KB, 800 * KB),
    onEvicted: (digest) => evicted.push(digest),
  });
  const small = randomBytes(300 * KB);
  await put(store, small);
  await t.rejects(put(store, randomBytes(900 * KB)), CacheBudgetError, 'a blob over the low-water mark is refused');
  const config = Buffer.from('{"os":"linux"}');
  const big = imageManifest(config, [randomBytes(10), randomBytes(10)]);
  const doc = JSON.parse(big.bytes.toString()) as { layers: { size: number }[] };
  (doc.layers[0] as { size: number }).size = 900 * KB;
  const bytes = Buffer.from(JSON.stringify(doc));
  await t.rejects(
    store.putManifest(REPO, { bytes, digest: sha(bytes), mediaType: MediaType.OciManifest }),
    CacheBudgetError,
    'an image whose layers add up to more than the low-water mark is refused',
  );
  t.same(evicted, [], 'nothing was evicted for either');
  t.ok(await store.statBlob(REPO, sha(small)), 'what was stored stays');
});

t.test('one refusal for content too large for the budget: a file, or an image with its layers', async (t) => {
  const b = budget(1000 * KB, 800 * KB);
  t.equal(tooLarge(b, 800 * KB), undefined, 'the low-water mark itself fits');
  const file = tooLarge(b, 800 * KB + 1);
  t.ok(file instanceof CacheBudgetError);
  t.equal(file?.bytes, 800 * KB + 1);
  t.equal(file?.message, "800001 bytes is larger than the cache budget's low-water mark (800000 bytes)");
  t.equal(
    tooLarge(b, 900 * KB, 'image')?.message,
    "an image of 900000 bytes is larger than the cache budget's low-water mark (800000 bytes)",
  );
});

t.test("a tag's manifest, read by the tag's check, is still checked whole when it is asked for", async (t) => {
  const store = new FsStore(testTempDir('tag-then-manifest-'), { budget: budget(1000 * KB, 850 * KB) });
  const config = Buffer.from(`{"os":"linux","r":"${randomBytes(4).toString('hex')}"}`);
  const layer = randomBytes(400 * KB);
  await put(store, config);
  await put(store, layer);
  const m = imageManifest(config, [layer]);
  await store.putManifest(REPO, m);
  await store.putTag(REPO, 'v1', m, 1);
  t.equal((await store.getTag(REPO, 'v1'))?.digest, m.digest, 'the tag is served: its image is whole');
  t.same((await store.getManifest(REPO, m.digest))?.bytes, m.bytes, 'and its manifest, the bytes stored');
  t.equal((await store.getTag(REPO, 'v1'))?.digest, m.digest, 'the tag again');
  // Between the tag and its manifest, another blob needs the room the image's config and layer take.
  await put(store, randomBytes(700 * KB));
  t.equal(await store.statBlob(REPO, sha(layer)), undefined, 'the layer was evicted');
  t.equal(await store.getManifest(REPO, m.digest), undefined, 'so the manifest the tag named misses');
  t.equal(await store.getTag(REPO, 'v1'), undefined, 'and so does the tag');
});

t.test('at start: the store is counted, the oldest evicted past the budget, too small a budget refused', async (t) => {
  const dir = testTempDir('restart-');
  const first = new FsStore(dir);
  const config = Buffer.from('{"os":"linux","architecture":"amd64"}');
  const layers = [randomBytes(400 * KB), randomBytes(400 * KB)];
  await put(first, config);
  for (const l of layers) await put(first, l);
  const m = imageManifest(config, layers);
  await first.putManifest(REPO, m);

  const refusal = await budgetRefusal(dir, budget(1000 * KB, 700 * KB));
  t.match(refusal, /smaller than an image already in the store/, 'a budget below the largest stored image is refused');
  t.match(refusal, new RegExp(m.digest), 'naming that image');
  t.equal(await budgetRefusal(dir, budget(1000 * KB, 900 * KB)), undefined, 'a budget that holds it is accepted');

  const bounded = new FsStore(dir, { budget: budget(1000 * KB, 900 * KB) });
  await bounded.ping();
  t.ok((bounded.usedBytes ?? 0) > 800 * KB, 'what is on disk is counted at start');
  t.ok(await bounded.getManifest(REPO, m.digest), 'and served');

  const smaller = new FsStore(dir, { budget: budget(500 * KB, 450 * KB) });
  await smaller.ping();
  t.ok((smaller.usedBytes ?? Infinity) <= 450 * KB, 'a store over budget at start is evicted to the low-water mark');
  t.equal(await smaller.getManifest(REPO, m.digest), undefined, 'the image that no longer fits whole is a miss');
});

t.test('--max-cache-size: sizes, shares of the volume, and nonsense', async (t) => {
  t.same(parseCacheSize('max-cache-size', '20GiB'), { bytes: 20 * 2 ** 30 });
  t.same(parseCacheSize('max-cache-size', '500MB'), { bytes: 500e6 });
  t.same(parseCacheSize('max-cache-size', '1048576'), { bytes: 2 ** 20 });
  t.same(parseCacheSize('max-cache-size', '80%'), { shareOfVolume: 0.8 });
  t.throws(() => parseCacheSize('max-cache-size', 'lots'), { message: /--max-cache-size: not a size/ });
  t.throws(() => parseCacheSize('max-cache-size', '150%'), { message: /at most 100%/ });
  t.throws(() => parseCacheSize('max-cache-size', '0'), { message: /--max-cache-size: not a size/ });
});

t.test('pullthrough proxy refuses at start a budget smaller than an image in its store', async (t) => {
  const dir = testTempDir('cli-refusal-');
  const store = new FsStore(dir);
  const config = Buffer.from('{"os":"linux"}');
  const layer = randomBytes(600 * KB);
  await put(store, config);
  await put(store, layer);
  await store.putManifest(REPO, imageManifest(config, [layer]));
  // The command's own run function, in this process: its ConfigError is what main() prints to
  // standard error with exit code 2.
  await t.rejects(
    runProxy(['--data-dir', dir, '--max-cache-size', '500KB', '--listen', '127.0.0.1:0']),
    {
      constructor: ConfigError,
      message: /--max-cache-size: the cache budget .* is smaller than an image already in the store/,
    },
    'the proxy does not start',
  );
});
