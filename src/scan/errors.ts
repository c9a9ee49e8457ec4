/**
 * Typed errors of the scanner client, with stable codes: what a verdict records as "not scanned"
 * and why. Messages name the scanner and what went wrong, never a credential.
 */
export type ScanErrorCode =
  /** Refused, reset, DNS: nothing answered. */
  | 'SCANNER_UNREACHABLE'
  /** A request, or the whole scan, ran past its deadline. */
  | 'SCANNER_TIMEOUT'
  /** A 5xx, or a report answered 500 (the scan itself failed, e.g. the artifact could not be pulled). */
  | 'SCANNER_FAILED'
  /** A 4xx to a request the spec says it accepts (400/422 on a scan, 404 on a report). */
  | 'SCAN_REFUSED'
  /** The scanner consumes no manifest type of ours or produces no report type we read. */
  | 'SCANNER_UNSUPPORTED'
  /** A body that is not the schema's JSON. */
  | 'REPORT_MALFORMED'
  /** A body past the size bound. */
  | 'REPORT_TOO_LARGE'
  /** A report whose artifact is another digest than the one asked for. */
  | 'REPORT_WRONG_DIGEST'
  /** No pull credential could be had for the cache registry. */
  | 'PULL_CREDENTIAL_FAILED'
  /** The cache registry could not be read (to learn what a digest is). */
  | 'CACHE_REGISTRY_UNREACHABLE';

export class ScanError extends Error {
  readonly code: ScanErrorCode;
  constructor(code: ScanErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'ScanError';
    this.code = code;
  }
}

export function isScanError(err: unknown): err is ScanError {
  return err instanceof ScanError;
}
