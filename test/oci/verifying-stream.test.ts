import t from 'tap';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { verifyingStream } from '../../src/oci/verifying-stream.js';
import { drain } from '../helpers/streams.js';

const bytes = Buffer.from('a'.repeat(100_000) + 'b'.repeat(50_000));
const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
const chunks = [bytes.subarray(0, 70_000), bytes.subarray(70_000, 120_000), bytes.subarray(120_000)];

t.test('bytes that match pass through whole', async (t) => {
  const { bytes: out, err } = await drain(Readable.from(chunks).pipe(verifyingStream(digest, bytes.length)));
  t.notOk(err);
  t.ok(out.equals(bytes));
});

t.test('bytes that do not match: an error, and the complete blob is never delivered', async (t) => {
  const bad = [...chunks.slice(0, 2), Buffer.from('c'.repeat(30_000))];
  const { bytes: out, err } = await drain(Readable.from(bad).pipe(verifyingStream(digest, bytes.length)));
  t.match(err?.message, /blob digest is sha256:/);
  t.ok(out.length < bytes.length, `only ${out.length} of ${bytes.length} bytes came out`);
});

t.test('a short blob with the right prefix fails on size or digest', async (t) => {
  const { err } = await drain(Readable.from(chunks.slice(0, 2)).pipe(verifyingStream(digest, bytes.length)));
  t.ok(err);
});
