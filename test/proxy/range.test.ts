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
