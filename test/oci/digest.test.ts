import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { DigestVerifier, digestOf, looksLikeDigest, parseDigest } from '../../src/oci/digest.js';
import { OciError } from '../../src/oci/errors.js';

const hex64 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

function code(t: Test, s: string): string | undefined {
  try {
    parseDigest(s);
    return undefined;
  } catch (e) {
    t.ok(e instanceof OciError, `${JSON.stringify(s.slice(0, 40))} throws an OciError`);
    return (e as OciError).code;
  }
}

t.test('valid digests', async (t) => {
  t.same(parseDigest(`sha256:${hex64}`), { algorithm: 'sha256', hex: hex64, value: `sha256:${hex64}` });
  t.equal(parseDigest(`sha512:${'0'.repeat(128)}`).algorithm, 'sha512');
});

t.test('malformed digests are DIGEST_INVALID, unknown algorithms UNSUPPORTED', async (t) => {
  for (const s of [
    '',
    'sha256',
    'sha256:',
    ':abc',
    `sha256:${hex64.toUpperCase()}`,
    `sha256:${hex64.slice(1)}`,
    `sha256:${hex64}0`,
    `sha256:${hex64.slice(1)}g`,
    `SHA256:${hex64}`,
    `sha256::${hex64}`,
    `sha256:${hex64}/../x`,
    `sha256:${hex64}%2F`,
    `sha256:${hex64} `,
    `sha512:${hex64}`,
    `sha256:${'a'.repeat(300)}`,
    'sha256+:abc',
  ]) {
    t.equal(code(t, s), 'DIGEST_INVALID', JSON.stringify(s.slice(0, 80)));
  }
  for (const s of [
    'sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709',
    'md5:d41d8cd98f00b204e9800998ecf8427e',
    `sha384:${'a'.repeat(96)}`,
    'blake3:abc',
    `sha256+b64u:${hex64}`,
  ]) {
    t.equal(code(t, s), 'UNSUPPORTED', s);
  }
  // UNSUPPORTED for an algorithm is a client error, not 405.
  try {
    parseDigest('md5:d41d8cd98f00b204e9800998ecf8427e');
  } catch (e) {
    t.equal((e as OciError).status, 400);
  }
  try {
    parseDigest('sha256:abc');
  } catch (e) {
    t.equal((e as OciError).status, 400);
    t.same((e as OciError).toJSON(), {
      errors: [{ code: 'DIGEST_INVALID', message: 'invalid sha256 digest "sha256:abc"' }],
    });
  }
});

t.test('digestOf and the streaming verifier', async (t) => {
  t.equal(digestOf(Buffer.alloc(0)), `sha256:${hex64}`);
  const data = Buffer.from('hello world');
  const d512 = digestOf(data, 'sha512');
  t.equal(d512, `sha512:${createHash('sha512').update(data).digest('hex')}`);
  const v = new DigestVerifier(parseDigest(digestOf(data)));
  v.update(data.subarray(0, 3));
  v.update(data.subarray(3));
  t.equal(v.size, data.length);
  t.equal(v.finish(), digestOf(data));
  t.ok(looksLikeDigest(`sha256:${hex64}`));
  t.notOk(looksLikeDigest('latest'));
});
