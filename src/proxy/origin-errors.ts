/**
 * What a client is told when the origin cannot serve. containerd moves on to its next host on any
 * status >= 400 except 429, which it retries on the same host: an origin's rate limit therefore
 * becomes a 503 here, so a cluster falls through to its next mirror instead of hammering us.
 */
import { OciError, UpstreamError, type OciErrorCode } from '../oci/errors.js';
import { SizeError, describe } from '../oci/registry-client.js';

export function originStatusError(status: number, kind: 'manifest' | 'blob', registry: string, ref: string): OciError {
  const what = `${kind} ${ref} at ${registry}`;
  if (status === 404) return new OciError(kind === 'manifest' ? 'MANIFEST_UNKNOWN' : 'BLOB_UNKNOWN', `origin has no ${what}`);
  if (status === 401) return new OciError('UNAUTHORIZED', `origin refused ${what}: no credential it accepts`);
  if (status === 403) return new OciError('DENIED', `origin denied access to ${what}`);
  if (status === 429) return new OciError('TOOMANYREQUESTS', `origin rate-limited ${what}`, { status: 503 });
  return new OciError('UNAVAILABLE', `origin answered ${status} for ${what}`, { status: 502 });
}

const timeoutCodes = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT']);

export function originFailure(err: unknown, registry: string): OciError {
  if (err instanceof OciError) return err;
  if (err instanceof SizeError) {
    return new OciError('MANIFEST_INVALID', `origin ${registry} sent a manifest over ${err.max} bytes`, { status: 502 });
  }
  // The registry client gives up with a 401 when the origin challenged and no candidate
  // credential could be used (Basic without credentials, a token realm refusing them all).
  if (err instanceof UpstreamError && err.status === 401) {
    return new OciError('UNAUTHORIZED', `origin ${registry} refused: no credential it accepts`, { cause: err });
  }
  const cause = err instanceof UpstreamError ? err.cause : err;
  const code = (cause as { code?: string } | undefined)?.code;
  const timedOut = code !== undefined && timeoutCodes.has(code);
  const message = err instanceof UpstreamError ? err.message : describe(err);
  const c: OciErrorCode = 'UNAVAILABLE';
  return new OciError(c, `origin ${registry} ${timedOut ? 'timed out' : 'unreachable'}: ${message}`, { status: timedOut ? 504 : 502, cause: err });
}

/** Auth refusals must not be papered over with a stale copy (no private image to a pod without access). */
export function isAuthError(err: unknown): boolean {
  return err instanceof OciError && (err.code === 'UNAUTHORIZED' || err.code === 'DENIED');
}

export function isNotFound(err: unknown): boolean {
  return err instanceof OciError && err.status === 404;
}
