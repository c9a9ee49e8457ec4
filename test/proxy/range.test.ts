/**
 * Range per RFC 9110: the header's parsing and its resolution against a blob size, then over
 * HTTP through a proxy in front of a real registry (127.0.0.1:15145): a GET with a satisfiable
 * range gets 206, an unsatisfiable one 416, an invalid one the whole blob; a HEAD ignores Range.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { request } from 'undici';
import { OciError } from '../../src/oci/errors.js';
import { parseRangeHeader, resolveRange } from '../../src/proxy/range.js';
import { Lab } from '../helpers/lab.js';
import { startProxy } from '../helpers/proxy.js';

function err(f: () => unknown): OciError | undefined {
  try {
    f();
  } catch (e) {
    return e as OciError;
  }
  return undefined;
}

t.test('Range headers', async (t) => {
  t.same(parseRangeHeader(undefined), { kind: 'none' });
  t.same(parseRangeHeader('bytes=100-'), { kind: 'single', first: 100 });
  t.same(parseRangeHeader('bytes=0-0'), { kind: 'single', first: 0, last: 0 });
  t.same(parseRangeHeader('bytes=5-9'), { kind: 'single', first: 5, last: 9 });
  t.same(parseRangeHeader('bytes=-500'), { kind: 'single', suffix: 500 });
  t.same(parseRangeHeader(' Bytes = 1 - 2 '), { kind: 'single', first: 1, last: 2 });
  // Several ranges: the whole blob is served instead (RFC 9110 allows it).
  t.same(parseRangeHeader('bytes=0-1,5-6'), { kind: 'none' });
  // RFC 9110: what is not a valid single byte range is ignored (the whole blob, 200), never a 416.
  for (const bad of [
    '',
    'garbage',
    'bytes',
    'bytes=',
    'bytes=-',
    'bytes=a-b',
    'bytes=1-a',
    'bytes=9-5',
    'bytes=1.5-2',
    'bytes=-1-2',
    'bytes 0-1',
    'bits=0-1',
    'bytes=0-1;x',
    '\u0000',
    'x'.repeat(100_000),
  ]) {
    t.same(parseRangeHeader(bad), { kind: 'none' }, `${JSON.stringify(bad.slice(0, 20))} ignored`);
  }
  // The cases, and what the list grammar and big numbers bring.
  for (const ignored of [
    'bytes=5-1',
    'bytes=abc',
    'items=0-5',
    'bytes=0-5, 7-9',
    'bytes=,',
    'bytes=5-1,',
    `bytes=${'9'.repeat(60_000)}`,
    'bytes=9007199254740993-9007199254740992',
    'bytes=0-1\n',
  ]) {
    t.same(parseRangeHeader(ignored), { kind: 'none' }, `${JSON.stringify(ignored.slice(0, 40))} ignored`);
  }
  t.same(parseRangeHeader('BYTES=1-2'), { kind: 'single', first: 1, last: 2 }, 'the unit is case-insensitive');
  t.same(parseRangeHeader('bytes=0-5,'), { kind: 'single', first: 0, last: 5 }, 'empty list elements do not count');
  t.same(parseRangeHeader('bytes= , -7 ,'), { kind: 'single', suffix: 7 });
  t.same(parseRangeHeader('bytes=007-009'), { kind: 'single', first: 7, last: 9 });
  t.same(parseRangeHeader('bytes=9007199254740992-9007199254740993'), {
    kind: 'single',
    first: Number.MAX_SAFE_INTEGER,
    last: Number.MAX_SAFE_INTEGER,
  });
  t.same(
    parseRangeHeader(`bytes=0-${'9'.repeat(400)}`),
    { kind: 'single', first: 0, last: Number.MAX_SAFE_INTEGER },
    'positions past 2^53 clamp and still print as digits',
  );
});

t.test('resolving against a blob size', async (t) => {
  t.equal(resolveRange({ kind: 'none' }, 10), undefined);
  t.same(resolveRange(parseRangeHeader('bytes=0-'), 10), { start: 0, end: 9 });
  t.same(resolveRange(parseRangeHeader('bytes=9-'), 10), { start: 9, end: 9 });
  t.same(resolveRange(parseRangeHeader('bytes=2-5'), 10), { start: 2, end: 5 });
  t.same(resolveRange(parseRangeHeader('bytes=2-500'), 10), { start: 2, end: 9 }, 'last clamped to the size');
  t.same(resolveRange(parseRangeHeader('bytes=-3'), 10), { start: 7, end: 9 });
  t.same(resolveRange(parseRangeHeader('bytes=-30'), 10), { start: 0, end: 9 });
  t.same(resolveRange(parseRangeHeader('bytes=0-99999999999999999999999'), 10), { start: 0, end: 9 });
  for (const [h, size] of [
    ['bytes=10-', 10],
    ['bytes=10-20', 10],
    ['bytes=0-', 0],
    ['bytes=-0', 10],
    ['bytes=99999999999999999999-', 10],
  ] as [string, number][]) {
    const e = err(() => resolveRange(parseRangeHeader(h), size));
    t.equal(e?.code, 'RANGE_INVALID', `${h} on ${size} bytes`);
    t.equal(e?.status, 416);
    t.same(e?.headers, { 'content-range': `bytes */${size}` });
  }
  // A non-zero suffix of an empty blob is satisfiable (RFC 9110 14.1.1) but has no Content-Range: the whole,
  // empty blob.
  t.equal(resolveRange(parseRangeHeader('bytes=-5'), 0), undefined);
});

t.test('over HTTP: Range on a GET of a blob; a HEAD ignores it', async (t) => {
  const ORIGIN_PORT = 15145;
  const lab = new Lab('range');
  t.teardown(() => lab.cleanup());
  const originHost = `127.0.0.1:${ORIGIN_PORT}`;
  await lab.registry('origin', ORIGIN_PORT);
  const image = await lab.image(originHost, 'lab/range', 'v1', ['--layers', '2', '--layer-mb', '1']);
  const proxy = await startProxy(['--data-dir', lab.tempDir('pt-range'), '--insecure-registries', originHost]);
  t.teardown(() => proxy.stop());
  const url = (digest: string) => `${proxy.url}/v2/127.0.0.1_${ORIGIN_PORT}/lab/range/blobs/${digest}`;
  const call = async (method: 'GET' | 'HEAD', digest: string, range: string) => {
    const res = await request(url(digest), { method, headers: { range } });
    const body = Buffer.from(await res.body.arrayBuffer());
    return { status: res.statusCode, headers: res.headers, body };
  };
  const [cold, warm] = image.layers as [string, string];
  const whole = await call('GET', warm, 'bytes=abc');
  t.equal(whole.status, 200, 'an invalid range on a cold blob: the whole blob');
  t.equal(`sha256:${createHash('sha256').update(whole.body).digest('hex')}`, warm, 'verified bytes');
  const size = whole.body.length;
  await proxy.settle();

  for (const [digest, where] of [
    [cold, 'from the origin'],
    [warm, 'from the cache'],
  ] as const) {
    for (const range of [`bytes=${size * 4}-`, 'bytes=0-9', 'bytes=-0', 'bytes=5-1']) {
      const head = await call('HEAD', digest, range);
      t.equal(head.status, 200, `HEAD ${where} with Range ${range}: 200`);
      t.ok(Number(head.headers['content-length']) > 10, `  the whole blob's Content-Length`);
      t.equal(head.headers['content-range'], undefined, '  no Content-Range');
      t.equal(head.body.length, 0, '  no body');
    }
  }
  for (const range of ['bytes=5-1', 'bytes=abc', 'items=0-5', 'bytes=0-1,5-6']) {
    const a = await call('GET', warm, range);
    t.equal(a.status, 200, `GET with ${range}: ignored, 200`);
    t.equal(a.body.length, size, '  the whole blob');
    t.equal(a.headers['content-range'], undefined, '  no Content-Range');
  }
  const part = await call('GET', warm, 'bytes=10-19');
  t.equal(part.status, 206, 'GET with bytes=10-19: 206');
  t.equal(part.headers['content-range'], `bytes 10-19/${size}`);
  t.ok(part.body.equals(whole.body.subarray(10, 20)), '  the right bytes');
  const out = await call('GET', warm, `bytes=${size}-`);
  t.equal(out.status, 416, 'GET past the end: 416');
  t.equal(out.headers['content-range'], `bytes */${size}`);
});
