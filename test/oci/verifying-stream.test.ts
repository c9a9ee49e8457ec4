import t from 'tap';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { verifyingStream } from '../../src/oci/verifying-stream.js';

const bytes = Buffer.from('a'.repeat(100_000) + 'b'.repeat(50_000));
const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
const chunks = [bytes.subarray(0, 70_000), bytes.subarray(70_000, 120_000), bytes.subarray(120_000)];

async function collect(stream: NodeJS.ReadableStream): Promise<{ out: Buffer; err?: Error }> {
  const got: Buffer[] = [];
  try {
    for await (const c of stream) got.push(c as Buffer);
    return { out: Buffer.concat(got) };
  } catch (err) {
    return { out: Buffer.concat(got), err: err as Error };
  }
}

t.test('bytes that match pass through whole', async (t) => {
  const { out, err } = await collect(Readable.from(chunks).pipe(verifyingStream(digest, bytes.length)));
  t.notOk(err);
  t.ok(out.equals(bytes));
});

t.test('bytes that do not match: an error, and the complete blob is never delivered', async (t) => {
  const bad = [...chunks.slice(0, 2), Buffer.from('c'.repeat(30_000))];
  const { out, err } = await collect(Readable.from(bad).pipe(verifyingStream(digest, bytes.length)));
  t.match(err?.message, /blob digest is sha256:/);
  t.ok(out.length < bytes.length, `only ${out.length} of ${bytes.length} bytes came out`);
});

t.test('a short blob with the right prefix fails on size or digest', async (t) => {
  const { err } = await collect(Readable.from(chunks.slice(0, 2)).pipe(verifyingStream(digest, bytes.length)));
  t.ok(err);
});
