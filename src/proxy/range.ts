/**
 * The Range header of a blob GET (RFC 9110 section 14). Blob clients send one range (containerd
 * resumes with `bytes=N-`); `bytes=N-M` and suffix ranges are served too. What RFC 9110 lets a
 * server ignore is ignored, and the whole blob is served with 200: a header that is not a valid
 * ranges-specifier (`bytes=abc`, `bytes=5-1`), another range unit (`items=0-5`), and several
 * ranges (no multipart answers). Only a valid single range that the blob cannot meet is a 416.
 */
import { OciError } from '../oci/errors.js';

export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

export type RangeRequest =
  | { readonly kind: 'none' }
  | { readonly kind: 'single'; readonly first?: number; readonly last?: number; readonly suffix?: number };

const NONE: RangeRequest = { kind: 'none' };
// Longer headers are no range a blob client sends; they are ignored without being scanned.
const MAX_HEADER = 1024;
// RFC 9110 token characters (range-unit = token).
const unitSpec = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*=(.*)$/s;
// Spaces around `=` and `-` are not in the grammar; they are tolerated, as lenient servers do.
const intRange = /^(\d+)[ \t]*-[ \t]*(\d*)$/;
const suffixRange = /^-[ \t]*(\d+)$/;

/** Decimal digit strings compared as integers, whatever their length. */
function compareDecimal(a: string, b: string): number {
  const x = a.replace(/^0+(?=\d)/, '');
  const y = b.replace(/^0+(?=\d)/, '');
  if (x.length !== y.length) return x.length - y.length;
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * A position as a number. Beyond 2^53 - 1 it is clamped: no blob is that large, so the answer is
 * the same, and the value still prints as digits when it is forwarded in a Range header.
 */
function position(digits: string): number {
  return Math.min(Number(digits), Number.MAX_SAFE_INTEGER);
}

/** Never throws: a header that cannot be honoured is read as no Range at all. */
export function parseRangeHeader(header: string | undefined): RangeRequest {
  if (header === undefined || header.length > MAX_HEADER) return NONE;
  const spec = unitSpec.exec(header.replace(/^[ \t]+|[ \t]+$/g, ''));
  if (!spec || (spec[1] as string).toLowerCase() !== 'bytes') return NONE;
  // range-set = 1#range-spec: a list in which empty elements are allowed and not counted.
  const specs = (spec[2] as string)
    .split(',')
    .map((s) => s.replace(/^[ \t]+|[ \t]+$/g, ''))
    .filter((s) => s !== '');
  if (specs.length !== 1) return NONE;
  const only = specs[0] as string;
  const suffix = suffixRange.exec(only);
  if (suffix) return { kind: 'single', suffix: position(suffix[1] as string) };
  const int = intRange.exec(only);
  if (!int) return NONE;
  const [, a, b] = int as unknown as [string, string, string];
  if (b !== '' && compareDecimal(b, a) < 0) return NONE;
  return { kind: 'single', first: position(a), ...(b !== '' ? { last: position(b) } : {}) };
}

/** The inclusive byte range to send, undefined for the whole blob; 416 when it cannot be met. */
export function resolveRange(req: RangeRequest, size: number): ByteRange | undefined {
  if (req.kind === 'none') return undefined;
  const unsatisfiable = () =>
    new OciError('RANGE_INVALID', `range not satisfiable for a blob of ${size} bytes`, {
      headers: { 'content-range': `bytes */${size}` },
    });
  if (req.suffix !== undefined) {
    if (req.suffix === 0) throw unsatisfiable();
    // RFC 9110 counts a non-zero suffix of an empty blob as satisfiable, yet no Content-Range
    // can describe the empty part: the whole (empty) blob is the answer.
    if (size === 0) return undefined;
    return { start: Math.max(0, size - req.suffix), end: size - 1 };
  }
  const first = req.first ?? 0;
  if (first >= size) throw unsatisfiable();
  return { start: first, end: Math.min(req.last ?? size - 1, size - 1) };
}
