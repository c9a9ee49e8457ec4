/**
 * A CachedImage's `spec.refresh`: `Never`, or an interval written as the CRD's pattern allows
 * (`30m`, `6h`, `1h30m`, `45s`). Anything else, and a zero interval, is read as Never: the API
 * server's validation rejects such specs, so only an object written around it gets here.
 */
const INTERVAL = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/;

/** Milliseconds between two checks of the tag; undefined: not refreshed. */
export function refreshIntervalMs(refresh: string | undefined): number | undefined {
  if (refresh === undefined || refresh === 'Never' || refresh === '') return undefined;
  const m = INTERVAL.exec(refresh);
  if (!m) return undefined;
  const ms = (Number(m[1] ?? 0) * 3600 + Number(m[2] ?? 0) * 60 + Number(m[3] ?? 0)) * 1000;
  return ms > 0 ? ms : undefined;
}
