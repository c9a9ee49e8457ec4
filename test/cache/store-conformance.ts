/**
 * The contract every Store implementation keeps, run against each of them
 * (fs-store.test.ts, registry-store.test.ts).
 */
import type { Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Store, StoredManifest } from '../../src/cache/store.js';
import { MediaType } from '../../src/oci/media-types.js';
import { testTempDir } from '../helpers/temp.js';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function read(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function blobFile(content: Buffer): string {
  const dir = testTempDir('conformance-');
  const f = join(dir, 'blob');
  writeFileSync(f, content);
  return f;
}

function manifestFor(config: Buffer, layers: Buffer[], mediaType: string = MediaType.OciManifest): StoredManifest {
  const doc = {
    schemaVersion: 2,
    mediaType,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
    layers: layers.map((l) => ({
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      digest: sha(l),
      size: l.length,
    })),
  };
  // Odd spacing on purpose: stores must keep bytes, not re-serialise JSON.
  const bytes = Buffer.from(JSON.stringify(doc, null, 3) + '\n');
  return { bytes, digest: sha(bytes), mediaType };
}

export function storeConformance(t: Test, name: string, make: () => Promise<Store>): void {
  t.test(`${name}: store conformance`, async (t) => {
    const store = await make();
    const repo = `conformance.example_5000/team/app${randomBytes(3).toString('hex')}`;
    const other = `${repo}-other`;

    await t.resolves(store.ping(), 'ping answers');

    const layer = randomBytes(300_000);
    const config = Buffer.from(`{"architecture":"amd64","os":"linux","r":"${randomBytes(4).toString('hex')}"}`);

    t.equal(await store.statBlob(repo, sha(layer)), undefined, 'an unknown blob is a miss');
    t.equal(await store.openBlob(repo, sha(layer)), undefined, 'opening an unknown blob is a miss');
    t.equal(await store.getManifest(repo, sha(config)), undefined, 'an unknown manifest is a miss');
    t.equal(await store.getTag(repo, 'v1'), undefined, 'an unknown tag is a miss');

    await store.putBlobFile(repo, sha(layer), layer.length, blobFile(layer));
    await store.putBlobFile(repo, sha(config), config.length, blobFile(config));
    t.same(await store.statBlob(repo, sha(layer)), { size: layer.length }, 'stat gives the size');
    const whole = await store.openBlob(repo, sha(layer));
    t.ok(whole, 'the blob opens');
    if (whole) {
      t.equal(whole.size, layer.length, 'open gives the size');
      t.ok((await read(whole.stream)).equals(layer), 'the bytes are the ones stored');
    }
    const part = await store.openBlob(repo, sha(layer), { start: 1000, end: layer.length - 1 });
    if (part) {
      t.equal(part.size, layer.length, 'a range open still reports the full size');
      t.ok((await read(part.stream)).equals(layer.subarray(1000)), 'a range gives exactly those bytes');
    } else t.fail('range open');
    const mid = await store.openBlob(repo, sha(layer), { start: 10, end: 19 });
    t.ok(mid && (await read(mid.stream)).equals(layer.subarray(10, 20)), 'an inner range is inclusive at both ends');

    t.equal(await store.statBlob(other, sha(layer)), undefined, 'a blob is not visible through another repository');

    // Several MiB: the registry store uploads a file in 1 MiB chunks through reused buffers.
    const big = randomBytes(7 * 1024 * 1024 + 123);
    await store.putBlobFile(repo, sha(big), big.length, blobFile(big));
    const bigBack = await store.openBlob(repo, sha(big));
    t.ok(bigBack && (await read(bigBack.stream)).equals(big), 'a blob of several MiB is stored intact');

    // Storing the same blob again is harmless.
    await store.putBlobFile(repo, sha(layer), layer.length, blobFile(layer));
    t.same(await store.statBlob(repo, sha(layer)), { size: layer.length }, 'storing twice is idempotent');

    const m = manifestFor(config, [layer]);
    await store.putManifest(repo, m);
    const got = await store.getManifest(repo, m.digest);
    t.ok(got, 'the manifest is stored');
    t.ok(got?.bytes.equals(m.bytes), 'manifest bytes are kept verbatim');
    t.equal(got?.mediaType, m.mediaType, 'with its media type');
    t.equal(got && sha(got.bytes), m.digest, 'so its digest is unchanged');
    t.equal(
      await store.getManifest(other, m.digest),
      undefined,
      'a manifest is not visible through another repository',
    );

    const dockerM = manifestFor(config, [layer], MediaType.DockerManifest);
    await store.putManifest(repo, dockerM);
    t.equal(
      (await store.getManifest(repo, dockerM.digest))?.mediaType,
      MediaType.DockerManifest,
      'Docker schema 2 keeps its media type',
    );

    // An index whose second child is not stored: a multi-arch image pulled for one platform.
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciIndex,
        manifests: [
          {
            mediaType: MediaType.OciManifest,
            digest: m.digest,
            size: m.bytes.length,
            platform: { os: 'linux', architecture: 'amd64' },
          },
          {
            mediaType: MediaType.OciManifest,
            digest: sha(Buffer.from('absent')),
            size: 6,
            platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
          },
        ],
      }),
    );
    const im: StoredManifest = { bytes: index, digest: sha(index), mediaType: MediaType.OciIndex };
    await store.putManifest(repo, im);
    const gotIndex = await store.getManifest(repo, im.digest);
    t.ok(gotIndex?.bytes.equals(index), 'an index with missing children is still stored verbatim');
    t.equal(gotIndex?.mediaType, MediaType.OciIndex, 'as an index');

    const confirmed = Date.UTC(2026, 0, 2, 3, 4, 5);
    await store.putTag(repo, 'v1', im, confirmed);
    t.same(
      await store.getTag(repo, 'v1'),
      { digest: im.digest, confirmedAt: confirmed },
      'a tag points at its manifest with when it was confirmed',
    );
    await store.putTag(repo, 'v1', m, confirmed + 1000);
    t.same(await store.getTag(repo, 'v1'), { digest: m.digest, confirmedAt: confirmed + 1000 }, 'a tag can move');
    t.equal(await store.getTag(other, 'v1'), undefined, 'tags are per repository');
    await store.putTag(repo, 'A_tag.with-chars', m, confirmed);
    t.equal((await store.getTag(repo, 'A_tag.with-chars'))?.digest, m.digest, 'tags keep their case and characters');

    await store.close();
  });
}
