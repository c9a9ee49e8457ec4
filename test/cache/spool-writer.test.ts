/**
 * spoolStream on real files: every byte lands in order, chunks that arrive during a write go in
 * the next one, the source pauses while too much waits, and every way it can fail rejects (with
 * the source destroyed, or handed over when the caller takes it) instead of hanging. A short
 * write is followed by the rest, whose error says why.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { PassThrough, Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { isDiskFull, SpoolError, spoolStream, type SpoolWriterOptions } from '../../src/cache/spool-writer.js';

const dir = mkdtempSync(join(tmpdir(), 'spool-writer-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;

async function spoolFile(t: Test): Promise<{ handle: FileHandle; path: string }> {
  const path = join(dir, `f${files++}`);
  const handle = await open(path, 'w+');
  t.teardown(() => handle.close().catch(() => undefined));
  return { handle, path };
}

/** Options that record what the writer reported. */
function recording(extra: Partial<SpoolWriterOptions> = {}) {
  const chunks: number[] = [];
  const writes: { chunks: number; length: number }[] = [];
  const opts: SpoolWriterOptions = {
    signal: new AbortController().signal,
    maxPending: () => 1 << 20,
    onChunk: (c) => chunks.push(c.byteLength),
    onWritten: (cs, length) => writes.push({ chunks: cs.length, length }),
    writeError: (err, written, length) => new Error(err ? `failed: ${err.code}` : `short: ${written} of ${length}`),
    ...extra,
  };
  return { opts, chunks, writes };
}

/** A handle whose writes wait until the test lets them through (the real file underneath). */
function gated(handle: FileHandle): { handle: FileHandle; open(): void; calls: () => number } {
  let release: () => void = () => undefined;
  let gate = new Promise<void>((r) => (release = r));
  let calls = 0;
  const wrapped = {
    writev: async (bufs: Buffer[], pos: number) => {
      calls++;
      await gate;
      return handle.writev(bufs, pos);
    },
  } as unknown as FileHandle;
  return {
    handle: wrapped,
    open: () => {
      release();
      gate = Promise.resolve();
    },
    calls: () => calls,
  };
}

/** A stream into a spool file whose writes wait until `g.open()`. */
async function gatedSpool(t: Test, extra: Partial<SpoolWriterOptions> = {}) {
  const real = await spoolFile(t);
  const g = gated(real.handle);
  const source = new PassThrough();
  const { opts, writes } = recording(extra);
  return { path: real.path, g, source, writes, done: spoolStream(source, g.handle, opts) };
}

/**
 * One macrotask. While the gate holds the write in flight, what the writer does with a chunk
 * (take it, queue it, pause the source) runs in nextTicks and promise reactions: done by then.
 */
const settled = () => new Promise<void>((r) => setImmediate(r));

const bytes = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));

t.test('every byte lands in order; the length is reported after each write', async (t) => {
  const { handle, path } = await spoolFile(t);
  const parts = Array.from({ length: 40 }, (_, i) => bytes(10_000 + i, i));
  const { opts, chunks, writes } = recording();
  const n = await spoolStream(Readable.from(parts), handle, opts);
  const all = Buffer.concat(parts);
  t.equal(n, all.length);
  t.same(readFileSync(path), all, 'the file holds the stream');
  t.equal(chunks.length, parts.length, 'each chunk was seen before its write');
  t.equal(writes.at(-1)?.length, all.length);
  t.ok(
    writes.every((w, i) => i === 0 || w.length > (writes[i - 1]?.length ?? 0)),
    'lengths grow',
  );
});

t.test('chunks that arrive while a write is in flight go together in the next write', async (t) => {
  const { path, g, source, writes, done } = await gatedSpool(t);
  source.write(bytes(1000, 1));
  await settled();
  for (let i = 0; i < 5; i++) source.write(bytes(1000, 2 + i));
  source.end();
  await settled();
  t.equal(g.calls(), 1, 'one write in flight, the rest wait');
  g.open();
  t.equal(await done, 6000);
  t.same(writes, [
    { chunks: 1, length: 1000 },
    { chunks: 5, length: 6000 },
  ]);
  t.same(readFileSync(path).subarray(1000, 2000), bytes(1000, 2));
});

t.test(
  'the source pauses while maxPending bytes wait for the write in flight, and resumes with the next',
  async (t) => {
    const { g, source, done } = await gatedSpool(t, { maxPending: () => 4096 });
    source.write(bytes(100, 1));
    await settled();
    source.write(bytes(3000, 2));
    await settled();
    t.notOk(source.isPaused(), 'below the bound: still flowing');
    source.write(bytes(3000, 3));
    await settled();
    t.ok(source.isPaused(), 'at the bound: paused');
    const resumed = once(source, 'resume');
    g.open();
    await resumed;
    t.notOk(source.isPaused(), 'the next write took them: flowing again');
    source.end();
    t.equal(await done, 6100);
  },
);

t.test('the bound is asked at each chunk: lowered while bytes wait, it pauses the source at the next', async (t) => {
  let bound = 1 << 20;
  const { g, source, done } = await gatedSpool(t, { maxPending: () => bound });
  source.write(bytes(100, 1));
  await settled();
  source.write(bytes(3000, 2));
  await settled();
  t.notOk(source.isPaused(), 'below 1 MiB: flowing');
  bound = 2048;
  source.write(bytes(10, 3));
  await settled();
  t.ok(source.isPaused(), 'above the new bound: paused');
  g.open();
  source.end();
  t.equal(await done, 3110);
});

t.test('a source error rejects with it', async (t) => {
  const { handle } = await spoolFile(t);
  const source = new PassThrough();
  const done = spoolStream(source, handle, recording().opts);
  source.write(bytes(100, 1));
  source.destroy(new Error('connection reset'));
  await t.rejects(done, { message: 'connection reset' });
});

t.test('a source that closes without ending rejects (no hang)', async (t) => {
  const { handle } = await spoolFile(t);
  const source = new PassThrough();
  const done = spoolStream(source, handle, recording().opts);
  source.write(bytes(100, 1));
  await sleep(10);
  source.destroy();
  await t.rejects(done, { code: 'ERR_STREAM_PREMATURE_CLOSE' });
});

t.test('an abort rejects with its reason and destroys the source', async (t) => {
  const { handle } = await spoolFile(t);
  const source = new PassThrough();
  const ac = new AbortController();
  const done = spoolStream(source, handle, recording({ signal: ac.signal }).opts);
  source.write(bytes(100, 1));
  ac.abort(new Error('client went away'));
  await t.rejects(done, { message: 'client went away' });
  t.ok(source.destroyed);
});

t.test('an already aborted signal rejects at once', async (t) => {
  const { handle } = await spoolFile(t);
  const source = new PassThrough();
  const done = spoolStream(source, handle, recording({ signal: AbortSignal.abort(new Error('stopping')) }).opts);
  await t.rejects(done, { message: 'stopping' });
  t.ok(source.destroyed);
});

t.test('a failed write rejects with writeError and destroys the source', async (t) => {
  const failing = {
    writev: async () => {
      throw Object.assign(new Error('no space'), { code: 'ENOSPC' });
    },
  } as unknown as FileHandle;
  const source = new PassThrough();
  const done = spoolStream(source, failing, recording().opts);
  source.write(bytes(100, 1));
  await t.rejects(done, { message: 'failed: ENOSPC' });
  t.ok(source.destroyed);
});

t.test('a short write rejects: the file would have a hole', async (t) => {
  const short = {
    writev: async (bufs: Buffer[]) => ({ bytesWritten: (bufs[0]?.byteLength ?? 1) - 1, buffers: bufs }),
  } as unknown as FileHandle;
  const source = new PassThrough();
  const done = spoolStream(source, short, recording().opts);
  source.write(bytes(100, 1));
  await t.rejects(done, { message: 'short: 99 of 100' });
});

/** A handle over a real file that writes at most `room` bytes in all, then fails with ENOSPC. */
function filling(handle: FileHandle, room: number): { handle: FileHandle; calls: () => number } {
  let left = room;
  let calls = 0;
  const wrapped = {
    writev: async (bufs: Buffer[], pos: number) => {
      calls++;
      if (left === 0) throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
      // As write(2) on a filling disk: what fits, then the error on the next call.
      const fits = Buffer.concat(bufs).subarray(0, left);
      left -= fits.byteLength;
      return handle.writev([fits], pos);
    },
  } as unknown as FileHandle;
  return { handle: wrapped, calls: () => calls };
}

t.test('a short write is followed by a write of the rest, whose error says why (disk full)', async (t) => {
  const real = await spoolFile(t);
  const full = filling(real.handle, 150);
  const source = new PassThrough();
  const done = spoolStream(source, full.handle, recording().opts);
  source.write(bytes(100, 1));
  source.write(bytes(100, 2));
  source.end();
  await t.rejects(done, { message: 'failed: ENOSPC' }, 'the error of the write after the short one');
  t.ok(full.calls() >= 2);
  t.ok(readFileSync(real.path).equals(Buffer.concat([bytes(100, 1), bytes(100, 2)]).subarray(0, 150)));
});

t.test('a short write that the rest completes: every byte lands, reported once for the whole write', async (t) => {
  const real = await spoolFile(t);
  let calls = 0;
  // Writes at most 30 bytes per call, as a kernel may.
  const halting = {
    writev: async (bufs: Buffer[], pos: number) => {
      calls++;
      return real.handle.writev([Buffer.concat(bufs).subarray(0, 30)], pos);
    },
  } as unknown as FileHandle;
  const source = new PassThrough();
  const { opts, writes } = recording();
  const done = spoolStream(source, halting, opts);
  source.end(bytes(100, 3));
  t.equal(await done, 100);
  t.ok(readFileSync(real.path).equals(bytes(100, 3)));
  t.equal(calls, 4);
  t.same(writes, [{ chunks: 1, length: 100 }]);
});

t.test('a failed write hands the source over when asked: the bytes not written, then the rest', async (t) => {
  const real = await spoolFile(t);
  const full = filling(real.handle, 150);
  const source = new PassThrough();
  let handed: { unwritten: Buffer[]; length: number; ended: boolean } | undefined;
  const done = spoolStream(source, full.handle, {
    ...recording().opts,
    onWriteFailed: (_err, unwritten, length, ended) => {
      handed = { unwritten, length, ended };
      return true;
    },
  });
  const sent = [bytes(100, 4), bytes(100, 5)];
  source.write(sent[0]);
  source.write(sent[1]);
  await t.rejects(done, { message: 'failed: ENOSPC' });
  t.notOk(source.destroyed, 'the source is not destroyed');
  t.equal(handed?.length, 150, 'the file holds 150 bytes');
  t.equal(handed?.ended, false);
  t.equal(source.listenerCount('data'), 0, 'the writer no longer listens');
  const after = bytes(100, 6);
  source.end(after);
  const rest: Buffer[] = [];
  for await (const c of source) rest.push(c as Buffer);
  const whole = Buffer.concat([readFileSync(real.path), ...(handed?.unwritten ?? []), ...rest]);
  t.ok(
    whole.equals(Buffer.concat([...sent, after])),
    'file + unwritten + the rest of the source: every byte, in order',
  );
});

t.test('a failed write that the caller does not take destroys the source as before', async (t) => {
  const real = await spoolFile(t);
  const source = new PassThrough();
  const done = spoolStream(source, filling(real.handle, 0).handle, {
    ...recording().opts,
    onWriteFailed: () => false,
  });
  source.write(bytes(10, 7));
  await t.rejects(done, { message: 'failed: ENOSPC' });
  t.ok(source.destroyed);
});

t.test('isDiskFull: ENOSPC or EDQUOT, on the error or its cause', async (t) => {
  const enospc = Object.assign(new Error('x'), { code: 'ENOSPC' });
  t.ok(isDiskFull(enospc));
  t.ok(isDiskFull(Object.assign(new Error('x'), { code: 'EDQUOT' })));
  t.ok(isDiskFull(new SpoolError('spool write failed: ENOSPC', enospc)));
  t.notOk(isDiskFull(new SpoolError('spool write stopped', undefined)));
  t.notOk(isDiskFull(Object.assign(new Error('x'), { code: 'EIO' })));
  t.notOk(isDiskFull(undefined));
});
