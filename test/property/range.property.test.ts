/**
 * Range header properties (RFC 9110 section 14): generated valid single byte ranges parse to what
 * they say and resolve against any size as the RFC's model does; invalid, foreign-unit and
 * multiple ranges are ignored; no string makes the parser throw, and only RANGE_INVALID 416 ever
 * comes out of resolving.
 */
import t from 'tap';
import fc from 'fast-check';
import { OciError } from '../../src/oci/errors.js';
import { parseRangeHeader, resolveRange, type RangeRequest } from '../../src/proxy/range.js';
import { runs } from './settings.js';

type Spec = { kind: 'int'; first: bigint; last?: bigint } | { kind: 'suffix'; length: bigint };
/** A range-spec as header text, with what it means. */
interface SpecText {
  text: string;
  spec: Spec;
}

const ows = fc.constantFrom('', '', ' ', '\t', '  ');
/** 1*DIGIT with optional leading zeros; mostly small, sometimes past 2^53. */
const digits = (n: fc.Arbitrary<bigint>) =>
  fc.tuple(fc.constantFrom('', '', '0', '00'), n).map(([zeros, v]) => ({ text: `${zeros}${v}`, value: v }));
const position = fc.oneof(
  { weight: 6, arbitrary: fc.bigInt({ min: 0n, max: 200n }) },
  { weight: 2, arbitrary: fc.bigInt({ min: 0n, max: 1n << 40n }) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 10n ** 30n }) },
);
const bytesUnit = fc.constantFrom('bytes', 'BYTES', 'Bytes', 'bYtEs');

const intRange = fc.tuple(digits(position), fc.option(digits(position), { nil: undefined })).map(([a, b]): SpecText => {
  if (b === undefined) return { text: `${a.text}-`, spec: { kind: 'int', first: a.value } };
  const [lo, hi] = a.value <= b.value ? [a, b] : [b, a];
  return { text: `${lo.text}-${hi.text}`, spec: { kind: 'int', first: lo.value, last: hi.value } };
});
const suffixRange = digits(position).map((d): SpecText => ({
  text: `-${d.text}`,
  spec: { kind: 'suffix', length: d.value },
}));
const rangeSpec = fc.oneof(intRange, suffixRange);

/** A valid header holding one range-spec, with the list's empty elements and OWS around it. */
const validSingle = fc
  .tuple(
    bytesUnit,
    ows,
    fc.array(fc.constantFrom(',', ' ,', ', '), { maxLength: 2 }),
    rangeSpec,
    ows,
    fc.array(fc.constantFrom(',', ' ,', ', '), { maxLength: 2 }),
  )
  .map(([unit, lead, before, r, trail, after]) => ({
    header: `${unit}=${before.join('')}${lead}${r.text}${trail}${after.join('')}`,
    spec: r.spec,
  }));

/** What RFC 9110 says the range means for a representation of `size` bytes: a range, the whole, or 416. */
function model(spec: Spec, size: number): { start: number; end: number } | 'whole' | 416 {
  const n = BigInt(size);
  if (spec.kind === 'suffix') {
    if (spec.length === 0n) return 416;
    if (n === 0n) return 'whole';
    const start = spec.length >= n ? 0n : n - spec.length;
    return { start: Number(start), end: size - 1 };
  }
  if (spec.first >= n) return 416;
  const last = spec.last === undefined || spec.last >= n ? n - 1n : spec.last;
  return { start: Number(spec.first), end: Number(last) };
}

function outcome(req: RangeRequest, size: number): { start: number; end: number } | 'whole' | 416 {
  try {
    return resolveRange(req, size) ?? 'whole';
  } catch (err) {
    if (!(err instanceof OciError) || err.code !== 'RANGE_INVALID' || err.status !== 416) throw err;
    if (err.headers['content-range'] !== `bytes */${size}`)
      throw new Error(`416 without Content-Range bytes */${size}`);
    return 416;
  }
}

const size = fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 2 ** 40 }));

t.test('a valid single byte range means what RFC 9110 says, for any blob size', async (t) => {
  fc.assert(
    fc.property(validSingle, size, ({ header, spec }, n) => {
      const req = parseRangeHeader(header);
      if (req.kind !== 'single') throw new Error(`${JSON.stringify(header)} was ignored`);
      const got = outcome(req, n);
      const want = model(spec, n);
      if (JSON.stringify(got) !== JSON.stringify(want))
        throw new Error(`${header} on ${n} bytes: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
      if (typeof got === 'object' && !(got.start >= 0 && got.start <= got.end && got.end < n))
        throw new Error('range outside the blob');
    }),
    runs(5000),
  );
  t.pass('5000 generated ranges');
});

t.test('a parsed range prints back as a Range header that parses the same', async (t) => {
  // pull-service forwards a parsed range to the origin as `bytes=first-last` or `bytes=-suffix`.
  fc.assert(
    fc.property(validSingle, ({ header }) => {
      const req = parseRangeHeader(header);
      if (req.kind !== 'single') throw new Error(`${header} ignored`);
      const printed = req.suffix !== undefined ? `bytes=-${req.suffix}` : `bytes=${req.first ?? 0}-${req.last ?? ''}`;
      if (!/^bytes=\d*-\d*$/.test(printed)) throw new Error(`${printed} is not a Range header`);
      if (JSON.stringify(parseRangeHeader(printed)) !== JSON.stringify(req))
        throw new Error(`${printed} parses differently`);
    }),
    runs(3000),
  );
  t.pass('3000 generated ranges');
});

t.test('invalid ranges, other units and several ranges are ignored', async (t) => {
  const backwards = fc
    .tuple(digits(position), digits(position))
    .filter(([a, b]) => a.value !== b.value)
    .map(([a, b]) => (a.value > b.value ? `bytes=${a.text}-${b.text}` : `bytes=${b.text}-${a.text}`));
  const otherUnit = fc
    .tuple(fc.stringMatching(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,8}$/), rangeSpec)
    .filter(([u]) => u.toLowerCase() !== 'bytes')
    .map(([u, r]) => `${u}=${r.text}`);
  // other-range: VCHARs but not a comma, and not an int-range or suffix-range.
  const otherRange = fc
    .tuple(bytesUnit, fc.stringMatching(/^[\x21-\x2b\x2d-\x7e]{1,12}$/))
    .filter(([, r]) => !/^\d+-\d*$/.test(r) && !/^-\d+$/.test(r))
    .map(([u, r]) => `${u}=${r}`);
  const several = fc
    .tuple(bytesUnit, fc.array(rangeSpec, { minLength: 2, maxLength: 4 }), ows)
    .map(([u, rs, sp]) => `${u}=${rs.map((r) => r.text).join(`${sp},${sp}`)}`);
  fc.assert(
    fc.property(fc.oneof(backwards, otherUnit, otherRange, several), (header) => {
      const req = parseRangeHeader(header);
      if (req.kind !== 'none') throw new Error(`${JSON.stringify(header)} read as ${JSON.stringify(req)}`);
    }),
    runs(4000),
  );
  t.pass('4000 generated headers');
});

t.test('no string makes the parser throw; resolving only ever says 416', async (t) => {
  const noise = fc.oneof(
    fc.string({ maxLength: 40 }),
    fc.string({ unit: 'binary', maxLength: 40 }),
    fc.stringMatching(/^[ \t]*[bByYtTeEsS]{0,6}[ \t]*=?[ \t,0-9-]{0,20}$/),
    fc
      .tuple(
        bytesUnit,
        fc.string({ unit: fc.constantFrom('0', '9', '-', ',', ' ', '\t', 'a', ';', '='), maxLength: 24 }),
      )
      .map(([u, r]) => `${u}=${r}`),
  );
  fc.assert(
    fc.property(noise, size, (header, n) => {
      const req = parseRangeHeader(header);
      if (req.kind === 'single') {
        const values = [req.first, req.last, req.suffix].filter((v) => v !== undefined);
        if (!values.every((v) => Number.isSafeInteger(v) && v >= 0))
          throw new Error(`${JSON.stringify(header)} gave ${JSON.stringify(req)}`);
      }
      outcome(req, n);
    }),
    runs(5000),
  );
  t.pass('5000 generated strings');
});
