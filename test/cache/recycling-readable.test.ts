/**
 * Reused read buffers must never change bytes a consumer has not finished with. Each sink here
 * looks at a chunk's bytes only when it finishes writing it (as a socket does), so a buffer reused
 * too early shows up as a wrong digest. Also: reuse does happen where it is safe, and never where
 * the stream is consumed any other way than one pipe.
 */
import t from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import Fastify from 'fastify';
import { request } from 'undici';
import { FileReadable } from '../../src/cache/file-readable.js';
import { BlobFills } from '../../src/cache/blob-fill.js';

const dir = mkdtempSync(join(tmpdir(), 'recycling-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const data = randomBytes(9 * 1024 * 1024 + 12345);
const file = join(dir, 'blob');
writeFileSync(file, data);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const want = sha(data);

async function fileStream(start = 0, end = data.length - 1): Promise<FileReadable> {
  return new FileReadable(await open(file, 'r'), start, end);
}

/** Hashes each chunk when it "finishes" writing it, `delayMs` later; notes which buffers it saw. */
function lateSink(delayMs: number): { sink: Writable; digest: () => string; buffers: Set<ArrayBufferLike>; chunks: () => number } {
  const hash = createHash('sha256');
  const buffers = new Set<ArrayBufferLike>();
  let chunks = 0;
  const sink = new Writable({
    highWaterMark: 64 * 1024,
    write(chunk: Buffer, _enc, cb) {
      buffers.add(chunk.buffer);
      chunks++;
      const finish = () => {
        hash.update(chunk);
        cb();
      };
      if (delayMs === 0) finish();
      else setTimeout(finish, delayMs);
    },
  });
  let digest: string | undefined;
  return { sink, buffers, chunks: () => chunks, digest: () => (digest ??= hash.digest('hex')) };
}

t.test('piped into a sink that keeps up: the bytes are intact and a few buffers serve the whole file', async (t) => {
  const s = lateSink(0);
  await pipeline(await fileStream(), s.sink);
  t.equal(s.digest(), want);
  t.ok(s.chunks() >= 9, `${s.chunks()} chunks`);
  t.ok(s.buffers.size <= 3, `${s.buffers.size} distinct buffers for ${s.chunks()} chunks`);
});

t.test('piped into a slow sink: a buffer is never reused before the sink is done with it', async (t) => {
  const s = lateSink(3);
  await pipeline(await fileStream(), s.sink);
  t.equal(s.digest(), want);
});

t.test('a range, piped into a slow sink', async (t) => {
  const s = lateSink(2);
  await pipeline(await fileStream(1_000_001, 5_000_000), s.sink);
  t.equal(s.digest(), sha(data.subarray(1_000_001, 5_000_001)));
});

t.test('read by async iteration (no pipe): every chunk keeps its own buffer', async (t) => {
  const chunks: Buffer[] = [];
  for await (const c of await fileStream()) chunks.push(c as Buffer);
  t.equal(sha(Buffer.concat(chunks)), want);
  t.equal(new Set(chunks.map((c) => c.buffer)).size, chunks.length);
});

t.test("piped, with a 'data' listener of its own too: the listener's chunks stay intact", async (t) => {
  const stream = await fileStream();
  const kept: Buffer[] = [];
  stream.on('data', (c: Buffer) => kept.push(c));
  const s = lateSink(0);
  await pipeline(stream, s.sink);
  t.equal(sha(Buffer.concat(kept)), want);
  t.equal(s.digest(), want);
});

t.test('piped into two sinks: both get every byte', async (t) => {
  const stream = await fileStream();
  const a = lateSink(1);
  const b = lateSink(0);
  const done = Promise.all([new Promise((r) => a.sink.on('finish', r)), new Promise((r) => b.sink.on('finish', r))]);
  stream.pipe(a.sink);
  stream.pipe(b.sink);
  await done;
  t.equal(a.digest(), want);
  t.equal(b.digest(), want);
});

t.test('through fastify to an HTTP client that reads slowly: every byte intact', async (t) => {
  const app = Fastify();
  app.get('/blob', async (_req, reply) => reply.header('content-length', String(data.length)).send(await fileStream()));
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  const { port } = app.server.address() as { port: number };
  const res = await request(`http://127.0.0.1:${port}/blob`);
  const hash = createHash('sha256');
  let n = 0;
  for await (const c of res.body) {
    hash.update(c as Buffer);
    // Stall now and then, so the response's socket queue fills and writes complete late.
    if (++n % 8 === 0) await new Promise((r) => setTimeout(r, 5));
  }
  t.equal(hash.digest('hex'), want);
});

t.test('a fill reader piped into a slow sink while the fill grows: every byte intact', async (t) => {
  const digest = `sha256:${want}`;
  const origin = new PassThrough();
  const { fill } = new BlobFills({ tmpDir: dir }).getOrStart('r/app', digest, async () => ({ size: data.length, stream: origin }), async () => true);
  const s = lateSink(1);
  const piped = pipeline(fill.reader(0, undefined, { cancelWhenAbandoned: true }), s.sink);
  for (let i = 0; i < data.length; i += 100_000) {
    origin.write(data.subarray(i, i + 100_000));
    await new Promise((r) => setImmediate(r));
  }
  origin.end();
  await piped;
  t.equal(s.digest(), want);
  t.equal(await fill.committed, true);
});
