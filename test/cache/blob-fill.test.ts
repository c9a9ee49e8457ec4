/**
 * The fill's own promises, driven with in-memory origin streams (the e2e suites drive it with
 * real registries): the last byte waits for verification, a mismatch is never committed, and
 * readers joining late or from an offset get exactly the bytes. On a real full filesystem (a
 * small tmpfs), a fill goes on for its readers without its spool and stores nothing.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmdirSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BlobFill, OriginBlob } from '../../src/cache/blob-fill.js';
import { BlobFills, type BlobFillsOptions } from '../../src/cache/blob-fills.js';
import { isDiskFull, SpoolError } from '../../src/cache/spool-writer.js';
import { drain } from '../helpers/streams.js';

const dir = mkdtempSync(join(tmpdir(), 'blob-fill-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const blob = Buffer.alloc(300_000, 7);
blob.write('the end', blob.length - 7);
const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;

/** Each set of fills' store: the commit a test gave a digest (default: stored). */
const commitsOf = new WeakMap<BlobFills, Map<string, () => Promise<boolean>>>();

function newFills(opts: Omit<BlobFillsOptions, 'tmpDir' | 'store'> = {}): BlobFills {
  const byDigest = new Map<string, () => Promise<boolean>>();
  const store = { putBlobFile: (_repo: string, d: string) => (byDigest.get(d) ?? (async () => true))() };
  const fills = new BlobFills({ tmpDir: dir, ...opts, store });
  commitsOf.set(fills, byDigest);
  return fills;
}

/** Starts a fill of `d` whose origin answers `origin()`, committed by `commit`. */
function startFill(
  fills: BlobFills,
  d: string,
  origin: () => Promise<OriginBlob>,
  commit?: () => Promise<boolean>,
  declaredSize?: number,
) {
  if (commit) commitsOf.get(fills)?.set(d, commit);
  return fills.getOrStart('r/app', d, { open: origin }, declaredSize);
}

/** A fill whose origin has sent `first` and then waits for the test to write the rest. */
async function begin(first: Buffer): Promise<{ fill: BlobFill; origin: PassThrough; commits: string[] }> {
  const origin = new PassThrough();
  const commits: string[] = [];
  const { fill } = startFill(
    newFills(),
    digest,
    async () => ({ size: blob.length, stream: origin }),
    async () => {
      commits.push(digest);
      return true;
    },
  );
  await new Promise((r) => setImmediate(r));
  origin.write(first);
  await fill.started;
  return { fill, origin, commits };
}

t.test(
  'bytes that match: every reader gets them all, from its own offset, and the blob is committed once',
  async (t) => {
    const { fill, origin, commits } = await begin(blob.subarray(0, 100_000));
    const whole = drain(fill.reader(0, undefined, { cancelWhenAbandoned: true }));
    const tail = drain(fill.reader(250_000, undefined, { cancelWhenAbandoned: true }));
    origin.end(blob.subarray(100_000));
    t.ok((await whole).bytes.equals(blob), 'whole');
    t.ok((await tail).bytes.equals(blob.subarray(250_000)), 'from an offset');
    t.equal(await fill.committed, true);
    t.same(commits, [digest]);
    t.same(readdirSync(dir), [], 'no spool file left');
  },
);

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

/** Writes `chunk` from the origin and waits until the fill has it in its spool file. */
async function feed(fill: BlobFill, origin: PassThrough, chunk: Buffer): Promise<void> {
  const target = fill.written + chunk.length;
  origin.write(chunk);
  while (fill.written < target) await sleep(1);
}

/** Counts reads of spool files (FileHandle.read) while `fn` runs. */
async function countingSpoolReads<T>(fn: () => Promise<T>): Promise<{ result: T; reads: number }> {
  const probe = await open(join(dir, 'probe'), 'w');
  const proto = Object.getPrototypeOf(probe) as { read: (...a: unknown[]) => Promise<unknown> };
  await probe.close();
  rmSync(join(dir, 'probe'));
  const read = proto.read;
  let reads = 0;
  proto.read = function (this: unknown, ...a: unknown[]) {
    reads++;
    return read.apply(this, a);
  };
  try {
    return { result: await fn(), reads };
  } finally {
    proto.read = read;
  }
}

t.test(
  'a reader that keeps up takes the bytes from memory, a late one reads the spool file: both get them exactly',
  async (t) => {
    const chunks = Array.from({ length: 30 }, (_, i) => blob.subarray(i * 10_000, (i + 1) * 10_000));
    const { result, reads } = await countingSpoolReads(async () => {
      const { fill, origin } = await begin(chunks[0] as Buffer);
      const early = fill.reader(0, undefined, { cancelWhenAbandoned: true });
      const got: Buffer[] = [];
      let received = 0;
      early.on('data', (c: Buffer) => {
        got.push(c);
        received += c.length;
      });
      const ended = new Promise((r) => early.once('end', r));
      for (const c of chunks.slice(1)) {
        // In step: every byte written so far but the withheld last one has reached the reader.
        while (received < fill.written - 1) await sleep(1);
        await feed(fill, origin, c);
      }
      while (received < fill.written - 1) await sleep(1);
      const withheld = received;
      origin.end();
      await ended;
      return { fill, got: Buffer.concat(got), withheld };
    });
    t.ok(result.got.equals(blob), 'the reader that kept up got every byte');
    t.equal(result.withheld, blob.length - 1, 'the last byte waited for the digest');
    t.equal(reads, 0, 'and none was read back from the spool file');
    t.equal(await result.fill.committed, true);

    const late = await countingSpoolReads(async () => {
      const { fill, origin } = await begin(chunks[0] as Buffer);
      for (const c of chunks.slice(1, 20)) await feed(fill, origin, c);
      const reading = drain(fill.reader(1, undefined, { cancelWhenAbandoned: true }));
      origin.end(blob.subarray(200_000));
      return reading;
    });
    t.ok(late.result.bytes.equals(blob.subarray(1)), 'a reader that joined late, from an offset, got every byte');
    t.ok(late.reads > 0, `it read ${late.reads} times from the spool file`);
  },
);

/** A fill of `blob` whose origin has sent 10 bytes and then waits. */
function stalledFill(fills: BlobFills) {
  const origin = new PassThrough();
  const started = startFill(fills, digest, async () => ({ size: blob.length, stream: origin }));
  origin.write(blob.subarray(0, 10));
  return started;
}

/** A fill of a small blob whose origin sends it all at once. */
function quickFill(fills: BlobFills, text: string, commit: () => Promise<boolean> = async () => true) {
  const bytes = Buffer.from(text);
  const d = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  return {
    bytes,
    ...startFill(
      fills,
      d,
      async () => ({ size: bytes.length, stream: PassThrough.from([bytes]) as unknown as Readable }),
      commit,
    ),
  };
}

/** A commit that only notes `commit <name>` in `events`. */
function noting(events: string[], name: string) {
  return async () => {
    events.push(`commit ${name}`);
    return true;
  };
}

/**
 * One macrotask. From a fill's `fetched` to the start of its commit everything runs in promise
 * reactions, so by then a commit the gate does not hold back has started: what has not, waits.
 */
const commitsStarted = () => new Promise<void>((r) => setImmediate(r));

t.test(
  'commitDeferMs: an upload waits while another fill is still fetching, then runs; at most commitConcurrency at once',
  async (t) => {
    const fills = newFills({ commitDeferMs: 60_000, commitConcurrency: 1 });
    const events: string[] = [];
    let releaseFirstCommit!: () => void;
    const firstCommitHeld = new Promise<void>((r) => (releaseFirstCommit = r));
    const slowOrigin = new PassThrough();
    const a = startFill(
      fills,
      digest,
      async () => ({ size: blob.length, stream: slowOrigin }),
      async () => {
        events.push('commit a');
        await firstCommitHeld;
        return true;
      },
    );
    const b = quickFill(fills, 'another blob', noting(events, 'b'));
    t.equal(await b.fill.fetched, true, 'b is fetched');
    const whileFetching = drain(b.fill.reader(0, undefined, { cancelWhenAbandoned: false }));
    t.ok(
      (await whileFetching).bytes.equals(b.bytes),
      'a verified blob waiting for its upload is served from its spool file',
    );
    await commitsStarted();
    t.same(events, [], 'b waits: a is still fetching');
    slowOrigin.end(blob);
    t.equal(await a.fill.fetched, true);
    await commitsStarted();
    t.equal(events.length, 1, 'one commit at a time');
    const c = quickFill(fills, 'a third blob', noting(events, 'c'));
    t.equal(await c.fill.fetched, true);
    await commitsStarted();
    t.equal(events.length, 1, 'c waits for the commit slot too');
    releaseFirstCommit();
    t.same(await Promise.all([a.fill.committed, b.fill.committed, c.fill.committed]), [true, true, true]);
    t.equal(events.length, 3);
    t.same(readdirSync(dir), [], 'no spool file left');
  },
);

t.test(
  'commitDeferMs: an upload also waits while a client is still reading a blob, its own included',
  { timeout: 10_000 },
  async (t) => {
    const fills = newFills({ commitDeferMs: 60_000 });
    const events: string[] = [];
    const a = quickFill(fills, 'a blob', noting(events, 'a'));
    const slowClient = a.fill.reader(0, undefined, { cancelWhenAbandoned: true });
    t.equal(await a.fill.fetched, true, 'fetched and verified');
    await commitsStarted();
    t.same(events, [], 'no upload while its client has not read it');
    t.ok((await drain(slowClient)).bytes.equals(a.bytes), 'the client gets the blob from the spool file');
    t.equal(await a.fill.committed, true, 'then it is uploaded');
    t.same(events, ['commit a']);
    t.same(readdirSync(dir), [], 'no spool file left');
  },
);

t.test(
  'commitDeferMs: a client reading another blob holds an upload back too, until it goes away',
  { timeout: 10_000 },
  async (t) => {
    const fills = newFills({ commitDeferMs: 60_000 });
    const events: string[] = [];
    const a = quickFill(fills, 'blob a', noting(events, 'a'));
    const b = quickFill(fills, 'blob b', noting(events, 'b'));
    const onB = b.fill.reader(0, undefined, { cancelWhenAbandoned: true });
    t.same(await Promise.all([a.fill.fetched, b.fill.fetched]), [true, true]);
    await commitsStarted();
    t.same(events, [], 'neither uploads while a client reads b');
    onB.destroy();
    t.same(await Promise.all([a.fill.committed, b.fill.committed]), [true, true], 'a client gone away wakes them');
    t.same(events.sort(), ['commit a', 'commit b']);
  },
);

t.test('commitDeferMs is a bound: an upload starts after it even while other fills go on', async (t) => {
  const fills = newFills({ commitDeferMs: 100 });
  const a = stalledFill(fills);
  let committedAt = 0;
  const b = quickFill(fills, 'another blob', async () => {
    committedAt = Date.now();
    return true;
  });
  await b.fill.fetched;
  const fetchedAt = Date.now();
  t.equal(await b.fill.committed, true, 'committed while the other fill is still fetching');
  t.ok(committedAt - fetchedAt >= 80, `after the bound (${committedAt - fetchedAt} ms)`);
  a.fill.cancel(new Error('test over'));
  t.equal(await a.fill.committed, false);
});

t.test('shutdown: a verified blob still waiting for its commit is dropped, its spool file removed', async (t) => {
  const fills = newFills({ commitDeferMs: 60_000 });
  const a = stalledFill(fills);
  let commits = 0;
  const b = quickFill(fills, 'another blob', async () => {
    commits++;
    return true;
  });
  await b.fill.fetched;
  fills.cancelAll(new Error('shutting down'));
  t.same(await Promise.all([a.fill.committed, b.fill.committed]), [false, false]);
  t.equal(commits, 0, 'no commit started');
  t.same(readdirSync(dir), [], 'no spool file left');
});

t.test(
  'shutdown with a flush: a verified blob waiting for its commit is committed at once, ' +
    'a fill still fetching is cancelled',
  async (t) => {
    const fills = newFills({ commitDeferMs: 60_000 });
    const a = stalledFill(fills);
    const events: string[] = [];
    const b = quickFill(fills, 'uploaded before the pod goes', noting(events, 'b'));
    // A client still reading b keeps its upload waiting, whatever happens to a.
    const reader = b.fill.reader(0, undefined, { cancelWhenAbandoned: false });
    await b.fill.fetched;
    await commitsStarted();
    t.same(events, [], 'b waits: a is still fetching, and a client still reads b');
    await fills.flush(new Error('shutting down'), 5_000);
    t.same(events, ['commit b'], 'the flush committed b without waiting for its client');
    t.equal(await b.fill.committed, true);
    t.equal(await a.fill.committed, false, 'a was cancelled');
    reader.destroy();
    fills.cancelAll(new Error('shutting down'));
    t.same(readdirSync(dir), [], 'no spool file left');
  },
);

t.test('verified blobs past maxDeferredBytes are committed without waiting', async (t) => {
  const blobs = Array.from({ length: 6 }, (_, i) => Buffer.from(`blob number ${i}`));
  const fills = newFills({ commitDeferMs: 60_000, maxDeferredBytes: 4 * (blobs[0] as Buffer).length });
  const a = stalledFill(fills);
  const events: string[] = [];
  const started = blobs.map((b, i) => quickFill(fills, b.toString(), noting(events, String(i))));
  await Promise.all(started.map((s) => s.fill.fetched));
  await commitsStarted();
  t.equal(blobs.length - events.length, 4, `4 wait, the rest are committed (${events.join(', ')})`);
  t.equal(fills.commitBacklogFull, true, 'the backlog is full: the persister holds its slot until its blob is stored');
  a.fill.cancel(new Error('test over'));
  t.same(
    await Promise.all(started.map((s) => s.fill.committed)),
    blobs.map(() => true),
    'once no fill is fetching, the rest are committed',
  );
  t.equal(await a.fill.committed, false);
});

t.test('a fill stops at the declared size: an origin that sends more fails it, nothing is stored', async (t) => {
  const fills = newFills();
  let sent = 0;
  // An endless body with no announced size, for a blob the manifest declares as 1000 bytes.
  const endless = new Readable({
    read() {
      sent += 64 * 1024;
      this.push(Buffer.alloc(64 * 1024, 1));
    },
  });
  const commits: string[] = [];
  const { fill } = startFill(
    fills,
    digest,
    async () => ({ size: undefined, stream: endless }),
    async () => (commits.push(digest), true),
    1000,
  );
  t.equal(await fill.committed, false);
  t.match(fill.error?.message, /more than the 1000 bytes/);
  t.ok(sent < 1024 * 1024, `the origin stream was stopped early (${sent} bytes read)`);
  t.ok(endless.destroyed, 'and destroyed');
  t.same(commits, []);
  t.same(readdirSync(dir), [], 'no spool file left');
});

t.test('an origin that announces another size than the manifest declares is refused at once', async (t) => {
  const fills = newFills();
  const origin = new PassThrough();
  const { fill } = startFill(
    fills,
    digest,
    async () => ({ size: blob.length + 1, stream: origin }),
    undefined,
    blob.length,
  );
  t.equal(await fill.committed, false);
  t.match(fill.error?.message, /announced .* declares/);
  t.ok(origin.destroyed);
});

t.test('a fill of known size has a deadline: a trickling origin is cut, nothing is stored', async (t) => {
  const fills = newFills({ bounds: { baseMs: 200, minBytesPerSecond: 1_000_000 } });
  const trickle = new PassThrough();
  const timer = setInterval(() => trickle.write(blob.subarray(0, 1)), 20);
  t.teardown(() => clearInterval(timer));
  const started = Date.now();
  const { fill } = startFill(fills, digest, async () => ({ size: undefined, stream: trickle }), undefined, blob.length);
  t.equal(await fill.committed, false);
  t.match(fill.error?.message, /took over/);
  const took = Date.now() - started;
  t.ok(took < 5_000, `cut after ${took} ms (deadline 200 ms + 300 KB at 1 MB/s)`);
  t.ok(trickle.destroyed, 'the origin stream is destroyed');
  t.same(readdirSync(dir), [], 'no spool file left');
});

/** A 64 KiB tmpfs for spool files, or why there is none. */
const fullDir = mkdtempSync(join(tmpdir(), 'blob-fill-full-'));
const cannotMount = ((): string | undefined => {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', fullDir], { stdio: 'pipe' });
    t.teardown(() => {
      // Lazily: a spool file a failed test left open would keep the mount busy.
      execFileSync('umount', ['-l', fullDir]);
      rmdirSync(fullDir);
    });
    return undefined;
  } catch (err) {
    rmdirSync(fullDir);
    return `mounting a tmpfs is not permitted here: ${(err as Error).message.split('\n')[0]}`;
  }
})();

/** Fills whose spool is the small tmpfs, recording commits and events. */
function fullDiskFills() {
  const commits: string[] = [];
  const spoolFailures: Error[] = [];
  const failures: Error[] = [];
  const fills = new BlobFills({
    tmpDir: fullDir,
    store: { putBlobFile: async (_repo, d) => (commits.push(d), true) },
    events: {
      onSpoolFailed: (_f, err) => spoolFailures.push(err),
      onFailed: (_f, err) => failures.push(err),
    },
  });
  return { fills, commits, spoolFailures, failures };
}

t.test(
  'a full spool: every reader still gets the whole verified blob, nothing is stored, reported once',
  { skip: cannotMount ?? false },
  async (t) => {
    const { fills, commits, spoolFailures, failures } = fullDiskFills();
    const origin = new PassThrough();
    const { fill } = fills.getOrStart('r/app', digest, { open: async () => ({ size: blob.length, stream: origin }) });
    await new Promise((r) => setImmediate(r));
    origin.write(blob.subarray(0, 20_000));
    await fill.started;
    const whole = drain(fill.reader(0, undefined, { cancelWhenAbandoned: true }));
    const tail = drain(fill.reader(250_000, undefined, { cancelWhenAbandoned: true }));
    // Four times the disk, in chunks as an origin sends them.
    for (let at = 20_000; at < blob.length; at += 16_384) origin.write(blob.subarray(at, at + 16_384));
    origin.end();
    const [w, tl] = await Promise.all([whole, tail]);
    t.equal(w.err, undefined);
    t.ok(w.bytes.equals(blob), 'the reader from 0 gets the whole blob');
    t.ok(tl.bytes.equals(blob.subarray(250_000)), 'the reader from an offset gets its part');
    t.equal(await fill.committed, false, 'nothing is committed');
    t.same(commits, []);
    t.equal(spoolFailures.length, 1, 'the spool failure is reported once for the fill');
    t.ok(isDiskFull(spoolFailures[0]), `as disk full (${spoolFailures[0]?.message})`);
    t.equal(failures.length, 1);
    t.ok(fill.error instanceof SpoolError, 'the fill failed for its spool');
    t.ok(fills.spoolUnavailable, 'new fills wait for the cool-down');
    t.same(readdirSync(fullDir), [], 'no spool file left');
  },
);

t.test(
  'a full spool and bytes that do not match: the reader never gets the whole blob',
  { skip: cannotMount ?? false },
  async (t) => {
    const { fills, commits } = fullDiskFills();
    const wrong = Buffer.from(blob);
    wrong[blob.length - 1] = 0;
    const origin = new PassThrough();
    const { fill } = fills.getOrStart('r/app', digest, { open: async () => ({ size: blob.length, stream: origin }) });
    await new Promise((r) => setImmediate(r));
    origin.write(wrong.subarray(0, 1000));
    await fill.started;
    const reading = drain(fill.reader(0, undefined, { cancelWhenAbandoned: true }));
    origin.end(wrong.subarray(1000));
    const { bytes, err } = await reading;
    t.match(err?.message, /digest/, 'the reader fails');
    t.ok(bytes.length < blob.length, `and got ${bytes.length} of ${blob.length} bytes`);
    t.equal(await fill.committed, false);
    t.same(commits, []);
  },
);

t.test(
  'a full spool and a reader that does not read: the origin is paused, then resumed as it reads',
  { skip: cannotMount ?? false },
  async (t) => {
    const { fills } = fullDiskFills();
    const big = Buffer.alloc(16 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4096) big.writeUInt32BE(i, i);
    const bigDigest = `sha256:${createHash('sha256').update(big).digest('hex')}`;
    let sent = 0;
    const origin = new Readable({
      highWaterMark: 64 * 1024,
      read() {
        const chunk = big.subarray(sent, sent + 64 * 1024);
        sent += chunk.length;
        this.push(chunk.length > 0 ? chunk : null);
      },
    });
    const { fill } = fills.getOrStart('r/app', bigDigest, { open: async () => ({ size: big.length, stream: origin }) });
    await fill.started;
    const reader = fill.reader(0, undefined, { cancelWhenAbandoned: true });
    const until = Date.now() + 30_000;
    while (!(fill.error === undefined && origin.isPaused() && sent > 4 * 1024 * 1024)) {
      if (Date.now() > until) throw new Error(`the origin was never paused (${sent} bytes read)`);
      await sleep(5);
    }
    t.ok(sent < 6 * 1024 * 1024, `paused after ${sent} bytes: the spool's 64 KiB and about 4 MiB held`);
    const { bytes, err } = await drain(reader);
    t.equal(err, undefined);
    t.ok(bytes.equals(big), 'then the whole blob as the reader reads');
    t.equal(await fill.committed, false);
  },
);

t.test(
  'a full spool under a background completion alone: it stops at once, nothing held',
  { skip: cannotMount ?? false },
  async (t) => {
    const { fills, spoolFailures } = fullDiskFills();
    const origin = new PassThrough();
    const { fill } = fills.getOrStart('r/app', digest, { open: async () => ({ size: blob.length, stream: origin }) });
    fill.pin();
    await new Promise((r) => setImmediate(r));
    origin.write(blob.subarray(0, 200_000));
    t.equal(await fill.committed, false);
    t.ok(origin.destroyed, 'the origin stream is destroyed');
    t.ok(isDiskFull(fill.error), `the fill failed: ${fill.error?.message}`);
    t.equal(spoolFailures.length, 1);
  },
);
