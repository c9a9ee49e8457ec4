import t from 'tap';
import { OciError } from '../../src/oci/errors.js';
import { parseRangeHeader, resolveRange } from '../../src/proxy/range.js';

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
  for (const bad of ['', 'garbage', 'bytes', 'bytes=', 'bytes=-', 'bytes=a-b', 'bytes=1-a', 'bytes=9-5', 'bytes=1.5-2', 'bytes=-1-2', 'bytes 0-1', 'bits=0-1', 'bytes=0-1;x', '\u0000', 'x'.repeat(100_000)]) {
    const e = err(() => parseRangeHeader(bad));
    t.ok(e instanceof OciError, `${JSON.stringify(bad.slice(0, 20))} refused`);
    t.equal(e?.code, 'RANGE_INVALID');
    t.equal(e?.status, 416);
    t.ok((e?.message.length ?? 0) < 200, 'bounded message');
  }
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
  for (const [h, size] of [['bytes=10-', 10], ['bytes=10-20', 10], ['bytes=0-', 0], ['bytes=-0', 10], ['bytes=-5', 0], ['bytes=99999999999999999999-', 10]] as [string, number][]) {
    const e = err(() => resolveRange(parseRangeHeader(h), size));
    t.equal(e?.code, 'RANGE_INVALID', `${h} on ${size} bytes`);
    t.equal(e?.status, 416);
    t.same(e?.headers, { 'content-range': `bytes */${size}` });
  }
});
