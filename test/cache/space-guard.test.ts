/**
 * A fill checked before it writes a byte: a blob that does not fit in the spool volume's free
 * space (less what other fills still have to write) or under the store's budget streams through
 * to its readers, verified, and is never spooled nor committed; one that fits is cached as before.
 * The volume is a stand-in for statfs; the disk-full e2e test drives a real full filesystem.
 */
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import type { BlobFill } from '../../src/cache/blob-fill.js';
import { BlobFills } from '../../src/cache/blob-fills.js';
import { NoSpaceError, SpaceGuard, type Volume } from '../../src/cache/space-guard.js';
import { CacheBudgetError } from '../../src/cache/store-budget.js';
import { drain } from '../helpers/streams.js';
import { testTempDir } from '../helpers/temp.js';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const MB = 1_000_000;

interface Setup {
  fills: BlobFills;
  dir: string;
  commits: string[];
  spoolFailures: Error[];
  failures: Error[];
}

function setup(volume: Volume, budget?: { maxBytes: number; lowWaterBytes: number }): Setup {
  const dir = testTempDir('space-');
  const commits: string[] = [];
  const spoolFailures: Error[] = [];
  const failures: Error[] = [];
  const fills = new BlobFills({
    tmpDir: dir,
    store: {
      putBlobFile: async (_repo, digest) => {
        commits.push(digest);
        return true;
      },
    },
    space: new SpaceGuard({ dir, volume: async () => volume, ...(budget ? { budget } : {}) }),
    events: {
      onSpoolFailed: (_f, err) => spoolFailures.push(err),
      onFailed: (_f, err) => failures.push(err),
    },
  });
  return { fills, dir, commits, spoolFailures, failures };
}

/** The bytes of every spool file in `dir` right now. */
const spooledBytes = (dir: string) => readdirSync(dir).reduce((sum, f) => sum + statSync(join(dir, f)).size, 0);

function fillOf(s: Setup, blob: Buffer, origin: Readable = Readable.from([blob])): BlobFill {
  return s.fills.getOrStart('r/app', sha(blob), { open: async () => ({ size: blob.length, stream: origin }) }).fill;
}

t.test('a blob larger than the free space streams through verified, never spooled nor stored', async (t) => {
  const s = setup({ size: 10 * MB, free: 3 * MB });
  const blob = randomBytes(4 * MB);
  const origin = new PassThrough();
  const fill = fillOf(s, blob, origin);
  const reader = drain(fill.reader(0, undefined, { cancelWhenAbandoned: true }));
  await fill.started;
  origin.write(blob.subarray(0, MB));
  origin.end(blob.subarray(MB));
  const got = await reader;
  t.equal(got.err, undefined, 'the reader ends without an error');
  t.equal(sha(got.bytes), sha(blob), 'the reader gets the whole blob, verified');
  t.equal(await fill.committed, false, 'nothing is committed');
  t.same(s.commits, [], 'the store was not asked');
  t.equal(spooledBytes(s.dir), 0, 'the spool holds nothing');
  t.equal(s.spoolFailures.length, 1, 'reported once, as a spool failure');
  t.ok(s.spoolFailures[0] instanceof NoSpaceError, 'for lack of space');
  t.match(s.spoolFailures[0]?.message, /not enough free space to cache: 4000000 bytes needed/);
});

t.test('a blob that fits is spooled and committed', async (t) => {
  const s = setup({ size: 10 * MB, free: 5 * MB });
  const blob = randomBytes(MB);
  const fill = fillOf(s, blob);
  const got = await drain(fill.reader(0, undefined, { cancelWhenAbandoned: true }));
  t.equal(sha(got.bytes), sha(blob));
  t.equal(await fill.committed, true, 'committed');
  t.same(s.commits, [sha(blob)]);
  t.same(s.spoolFailures, []);
});

t.test('the space the fills under way still have to write counts as taken', async (t) => {
  const s = setup({ size: 10 * MB, free: 4 * MB });
  const first = randomBytes(2 * MB);
  const held = new PassThrough();
  const a = fillOf(s, first, held);
  const readA = drain(a.reader(0, undefined, { cancelWhenAbandoned: true }));
  await a.started;
  const second = randomBytes(2 * MB + 1000);
  const b = fillOf(s, second);
  const readB = await drain(b.reader(0, undefined, { cancelWhenAbandoned: true }));
  t.equal(sha(readB.bytes), sha(second), 'the second blob is served whole');
  t.equal(await b.committed, false, 'but not cached: the first fill still needs its 2 MB (alone it would fit)');
  held.end(first);
  t.equal(sha((await readA).bytes), sha(first));
  t.equal(await a.committed, true, 'the first one is cached');
  const again = fillOf(s, second);
  t.equal(sha((await drain(again.reader(0, undefined, { cancelWhenAbandoned: true }))).bytes), sha(second));
  t.equal(await again.committed, true, 'with no other fill under way, the second blob is cached');
});

t.test("a blob over the store budget's low-water mark is served uncached, with no spool cool-down", async (t) => {
  const s = setup({ size: 10 * MB, free: 9 * MB }, { maxBytes: 2 * MB, lowWaterBytes: 1.5 * MB });
  const blob = randomBytes(2 * MB);
  const fill = fillOf(s, blob);
  const got = await drain(fill.reader(0, undefined, { cancelWhenAbandoned: true }));
  t.equal(sha(got.bytes), sha(blob), 'served whole and verified');
  t.equal(await fill.committed, false, 'not cached');
  t.ok(s.failures[0] instanceof CacheBudgetError, 'the fill says why: too large for the budget');
  t.same(s.spoolFailures, [], 'not a spool failure');
  t.equal(s.fills.spoolUnavailable, false, 'other fills go on caching');
  t.equal(spooledBytes(s.dir), 0, 'the spool holds nothing');
});

t.test('a background completion that cannot be cached does not fetch at all', async (t) => {
  const s = setup({ size: 10 * MB, free: MB });
  const blob = randomBytes(2 * MB);
  const origin = new PassThrough();
  const { fill } = s.fills.getOrStart(
    'r/app',
    sha(blob),
    { open: async () => ({ size: blob.length, stream: origin }) },
    blob.length,
  );
  fill.pin();
  t.equal(await fill.fetched, false, 'the fill ends without its bytes');
  t.ok(origin.destroyed, 'the origin response is closed, not read');
  t.same(s.commits, []);
});
