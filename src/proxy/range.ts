/**
 * The one Range form blob clients send (containerd resumes with `bytes=N-`), plus `bytes=N-M`
 * and suffix ranges. Multiple ranges are not served: the whole blob is, as RFC 9110 allows.
 */
import { OciError } from '../oci/errors.js';

export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

export type RangeRequest = { readonly kind: 'none' } | { readonly kind: 'single'; readonly first?: number; readonly last?: number; readonly suffix?: number };

export function parseRangeHeader(header: string | undefined): RangeRequest {
  if (header === undefined) return { kind: 'none' };
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) {
    if (/^\s*bytes\s*=.*,/.test(header)) return { kind: 'none' };
    throw new OciError('RANGE_INVALID', `unsupported Range header ${JSON.stringify(header.slice(0, 100))}`);
  }
  const [, a, b] = m;
  if (a === '' && b === '') throw new OciError('RANGE_INVALID', 'empty byte range');
  if (a === '') return { kind: 'single', suffix: Number(b) };
  const first = Number(a);
  const last = b === '' ? undefined : Number(b);
  if (last !== undefined && last < first) throw new OciError('RANGE_INVALID', `invalid byte range ${header.slice(0, 100)}`);
  return { kind: 'single', first, ...(last !== undefined ? { last } : {}) };
}

/** The inclusive byte range to send, undefined for the whole blob; 416 when it cannot be met. */
export function resolveRange(req: RangeRequest, size: number): ByteRange | undefined {
  if (req.kind === 'none') return undefined;
  const unsatisfiable = () =>
    new OciError('RANGE_INVALID', `range not satisfiable for a blob of ${size} bytes`, { headers: { 'content-range': `bytes */${size}` } });
  if (req.suffix !== undefined) {
    if (req.suffix === 0 || size === 0) throw unsatisfiable();
    return { start: Math.max(0, size - req.suffix), end: size - 1 };
  }
  const first = req.first ?? 0;
  if (first >= size) throw unsatisfiable();
  return { start: first, end: Math.min(req.last ?? size - 1, size - 1) };
}
