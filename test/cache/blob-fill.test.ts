/**
 * The fill's own promises, driven with in-memory origin streams (the e2e suites drive it with
 * real registries): the last byte waits for verification, a mismatch is never committed, and
 * readers joining late or from an offset get exactly the bytes.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { BlobFills, type BlobFill } from '../../src/cache/blob-fill.js';

const dir = mkdtempSync(join(tmpdir(), 'blob-fill-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const blob = Buffer.alloc(300_000, 7);
blob.write('the end', blob.length - 7);
const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;

async function drain(r: Readable): Promise<{ bytes: Buffer; err?: Error }> {
  const chunks: Buffer[] = [];
  try {
    for await (const c of r) chunks.push(c as Buffer);
    return { bytes: Buffer.concat(chunks) };
  } catch (err) {
    return { bytes: Buffer.concat(chunks), err: err as Error };
  }
}

/** A fill whose origin has sent `first` and then waits for the test to write the rest. */
async function begin(first: Buffer): Promise<{ fill: BlobFill; origin: PassThrough; commits: string[] }> {
  const origin = new PassThrough();
  const commits: string[] = [];
  const { fill } = new BlobFills({ tmpDir: dir }).getOrStart(
    'r/app',
    digest,
    async () => ({ size: blob.length, stream: origin }),
    async (f) => {
      commits.push(f.digest);
      return true;
    },
  );
  await new Promise((r) => setImmediate(r));
  origin.write(first);
  await fill.started;
  return { fill, origin, commits };
}

t.test('bytes that match: every reader gets them all, from its own offset, and the blob is committed once', async (t) => {
  const { fill, origin, commits } = await begin(blob.subarray(0, 100_000));
  const whole = drain(fill.reader(0, undefined, { cancelWhenAbandoned: true }));
  const tail = drain(fill.reader(250_000, undefined, { cancelWhenAbandoned: true }));
  origin.end(blob.subarray(100_000));
  t.ok((await whole).bytes.equals(blob), 'whole');
  t.ok((await tail).bytes.equals(blob.subarray(250_000)), 'from an offset');
  t.equal(await fill.committed, true);
  t.same(commits, [digest]);
  t.same(readdirSync(dir), [], 'no spool file left');
});

t.test('bytes that do not match: readers never get the whole blob, nothing is committed', async (t) => {
  const wrong = Buffer.from(blob);
  wrong[0] = 1;
  const { fill, origin, commits } = await begin(wrong.subarray(0, 1000));
  const reading = drain(fill.reader(0, undefined, { cancelWhenAbandoned: true }));
  origin.end(wrong.subarray(1000));
  const { bytes, err } = await reading;
  t.match(err?.message, /digest/, 'the reader fails');
  t.ok(bytes.length < blob.length, `and got ${bytes.length} of ${blob.length} bytes: the last one is held back`);
  t.equal(await fill.committed, false);
  t.same(commits, []);
  t.same(readdirSync(dir), [], 'no spool file left');
});

t.test('the last reader going away cancels the origin fetch', async (t) => {
  const { fill, origin, commits } = await begin(blob.subarray(0, 1000));
  const reader = fill.reader(0, undefined, { cancelWhenAbandoned: true });
  reader.destroy();
  t.equal(await fill.committed, false);
  t.ok(origin.destroyed, 'the origin stream was destroyed');
  t.same(commits, []);
});
