/**
 * Reused read buffers must never change bytes a consumer still holds. Buffers are reused only when
 * the stream is piped into an HTTP response (or a socket); the clients here stall now and then so
 * the response's writes complete late, and every byte is hashed on arrival. Also: reuse does
 * happen there, and never when the stream is consumed any other way.
 */
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import http from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import Fastify from 'fastify';
import { FileReadable } from '../../src/cache/file-readable.js';
import { BlobFills } from '../../src/cache/blob-fills.js';

const dir = mkdtempSync(join(tmpdir(), 'recycling-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const data = randomBytes(24 * 1024 * 1024 + 12345);
const file = join(dir, 'blob');
writeFileSync(file, data);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const want = sha(data);
const CHUNKS = Math.ceil(data.length / (1024 * 1024));

/** A FileReadable that notes every buffer it reads into. */
class Counted extends FileReadable {
  readonly buffers = new Set<Buffer>();
  protected override takeBuffer(): Buffer {
    const b = super.takeBuffer();
    this.buffers.add(b);
    return b;
  }
}

async function fileStream(start = 0, end = data.length - 1): Promise<Counted> {
  return new Counted(await open(file, 'r'), start, end);
}

/** Serves `make()` through a plain Node response; resolves the server's port. */
async function serve(t: Test, make: () => Promise<Readable>, length: number): Promise<number> {
  const server = http.createServer((_req, res) => {
    res.setHeader('content-length', String(length));
    void make().then((s) => s.pipe(res));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as { port: number }).port;
}

/** GETs / on a raw socket, stalling 10 ms every 8 reads; the body's digest and length. */
function stallingGet(port: number, requests = 1): Promise<{ digest: string; length: number }[]> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const results: { digest: string; length: number }[] = [];
    let pending = Buffer.alloc(0);
    let body: { hash: ReturnType<typeof createHash>; left: number; length: number } | undefined;
    let reads = 0;
    socket.on('error', reject);
    socket.on('connect', () => socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(requests)));
    socket.on('data', (chunk: Buffer) => {
      if (++reads % 8 === 0) {
        socket.pause();
        setTimeout(() => socket.resume(), 10);
      }
      pending = Buffer.concat([pending, chunk]);
      for (;;) {
        if (!body) {
          const end = pending.indexOf('\r\n\r\n');
          if (end < 0) return;
          const length = Number(/content-length: (\d+)/i.exec(pending.subarray(0, end).toString())?.[1]);
          body = { hash: createHash('sha256'), left: length, length };
          pending = pending.subarray(end + 4);
        }
        const take = pending.subarray(0, body.left);
        body.hash.update(take);
        body.left -= take.length;
        pending = pending.subarray(take.length);
        if (body.left > 0) return;
        results.push({ digest: body.hash.digest('hex'), length: body.length });
        body = undefined;
        if (results.length === requests) {
          socket.destroy();
          resolve(results);
          return;
        }
      }
    });
  });
}

t.test(
  'piped into an HTTP response, to a client that stalls: intact, and a few buffers serve the whole file',
  async (t) => {
    let stream: Counted | undefined;
    const port = await serve(t, async () => (stream = await fileStream()), data.length);
    const [got] = await stallingGet(port);
    t.equal(got?.digest, want);
    t.ok(stream && stream.buffers.size < CHUNKS / 2, `${stream?.buffers.size} buffers for ${CHUNKS} chunks`);
  },
);

t.test('two responses on one keep-alive connection, each from its own stream: both intact', async (t) => {
  const port = await serve(t, () => fileStream(1_000_001, 9_000_000), 8_000_000);
  const got = await stallingGet(port, 2);
  t.same(
    got.map((g) => g.digest),
    [sha(data.subarray(1_000_001, 9_000_001)), sha(data.subarray(1_000_001, 9_000_001))],
  );
});

t.test('through fastify to a client that stalls: intact, with reuse', async (t) => {
  const app = Fastify();
  let stream: Counted | undefined;
  app.get('/', async (_req, reply) =>
    reply.header('content-length', String(data.length)).send((stream = await fileStream())),
  );
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  const [got] = await stallingGet((app.server.address() as { port: number }).port);
  t.equal(got?.digest, want);
  t.ok(stream && stream.buffers.size < CHUNKS / 2, `${stream?.buffers.size} buffers for ${CHUNKS} chunks`);
});

t.test('piped into a Writable of our own that keeps chunks: every chunk has its own buffer', async (t) => {
  const stream = await fileStream();
  const kept: Buffer[] = [];
  await pipeline(
    stream,
    new Writable({
      write: (c: Buffer, _e, cb) => {
        kept.push(c);
        cb();
      },
    }),
  );
  t.equal(sha(Buffer.concat(kept)), want);
  t.equal(stream.buffers.size, kept.length);
});

t.test('read by async iteration: every chunk keeps its own buffer', async (t) => {
  const stream = await fileStream();
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  t.equal(sha(Buffer.concat(chunks)), want);
  t.equal(stream.buffers.size, chunks.length);
});

t.test('piped into a response, with a one-off peek at the first chunk: the peeked chunk stays intact', async (t) => {
  let peek: Buffer | undefined;
  const port = await serve(
    t,
    async () => {
      const s = await fileStream();
      setImmediate(() => s.once('data', (c: Buffer) => (peek = c)));
      return s;
    },
    data.length,
  );
  const [got] = await stallingGet(port);
  t.equal(got?.digest, want);
  t.ok(peek?.equals(data.subarray(0, peek.length)), 'the peeked chunk still holds the first bytes');
});

t.test('a fill reader piped into a response while the fill grows: intact, with reuse', async (t) => {
  const digest = `sha256:${want}`;
  const origin = new PassThrough();
  const { fill } = new BlobFills({ tmpDir: dir, store: { putBlobFile: async () => true } }).getOrStart(
    'r/app',
    digest,
    {
      open: async () => ({ size: data.length, stream: origin }),
    },
  );
  const port = await serve(t, async () => fill.reader(0, undefined, { cancelWhenAbandoned: true }), data.length);
  const getting = stallingGet(port);
  for (let i = 0; i < data.length; i += 100_000) {
    origin.write(data.subarray(i, i + 100_000));
    await new Promise((r) => setImmediate(r));
  }
  origin.end();
  const [got] = await getting;
  t.equal(got?.digest, want);
  t.equal(await fill.committed, true);
});
