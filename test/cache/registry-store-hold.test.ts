/**
 * The registry store under a write hold (a collection running on the cache registry): the store
 * conformance suite with the hold open (blobs go as a PATCH and a closing PUT), and with the hold
 * closed, nothing becomes visible in the registry until it opens, then everything does.
 */
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent } from 'undici';
import { RegistryStore } from '../../src/cache/registry-store.js';
import type { WriteHold } from '../../src/cache/write-hold.js';
import { MediaType } from '../../src/oci/media-types.js';
import { Lab } from '../helpers/lab.js';
import { testRegistryClient } from '../helpers/registry-client.js';
import { testTempDir } from '../helpers/temp.js';
import { storeConformance } from './store-conformance.js';

const lab = new Lab('registry-store-hold');
const agent = new Agent({ connect: { timeout: 2000 } });
t.teardown(async () => {
  await agent.close();
  await lab.cleanup();
});

/** A hold the test opens and closes. */
class TestHold implements WriteHold {
  private waiters: (() => void)[] = [];
  waiting = 0;
  constructor(public held: boolean) {}
  async clear(): Promise<void> {
    if (!this.held) return;
    this.waiting++;
    await new Promise<void>((resolve) => this.waiters.push(resolve));
    this.waiting--;
  }
  set(held: boolean): void {
    this.held = held;
    if (!held) for (const w of this.waiters.splice(0)) w();
  }
}

let url: string;
const storeFor = (hold: WriteHold) =>
  new RegistryStore(testRegistryClient(url, { name: 'cache', dispatcher: agent, timeoutMs: 5000 }), 'cache', hold);

t.before(async () => {
  url = (await lab.registry('cache', 15460)).url;
});

storeConformance(t, 'registry store with an open write hold', async () => storeFor(new TestHold(false)));

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const until = async (what: string, check: () => boolean) => {
  for (let i = 0; !check(); i++) {
    if (i > 500) throw new Error(`waited too long for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

t.test('while the hold is closed nothing becomes visible; once open, everything does', async (t) => {
  const hold = new TestHold(true);
  const store = storeFor(hold);
  const repo = `docker.io/team/held${randomBytes(3).toString('hex')}`;
  const layer = randomBytes(3 * 1024 * 1024);
  const file = join(testTempDir('held-'), 'layer');
  writeFileSync(file, layer);
  const putting = store.putBlobFile(repo, sha(layer), layer.length, file);
  // The bytes are uploaded, then the closing PUT waits.
  await until('the upload to wait for the hold', () => hold.waiting === 1);
  t.equal(await store.statBlob(repo, sha(layer)), undefined, 'the blob is not in the registry while held');

  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] }));
  const index = { bytes, digest: sha(bytes), mediaType: MediaType.OciIndex };
  const manifestPut = store.putManifest(repo, index);
  const tagPut = store.putTag(repo, 'v1', index, 1);
  await until('the manifest and tag writes to wait', () => hold.waiting === 3);
  t.equal(await store.getManifest(repo, index.digest), undefined, 'nor the manifest');
  t.equal(await store.getTag(repo, 'v1'), undefined, 'nor the tag');

  hold.set(false);
  await Promise.all([putting, manifestPut, tagPut]);
  t.same(await store.statBlob(repo, sha(layer)), { size: layer.length }, 'released: the blob is stored');
  const back = await store.openBlob(repo, sha(layer));
  const chunks: Buffer[] = [];
  for await (const c of back?.stream ?? []) chunks.push(c as Buffer);
  t.equal(sha(Buffer.concat(chunks)), sha(layer), 'whole and correct');
  t.ok((await store.getManifest(repo, index.digest))?.bytes.equals(bytes), 'the manifest');
  t.equal((await store.getTag(repo, 'v1'))?.digest, index.digest, 'the tag');
});
