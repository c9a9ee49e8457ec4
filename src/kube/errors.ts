/**
 * Log-safe descriptions of what went wrong talking to the API server. An ApiException's message
 * embeds the response body, and a request error can carry headers, so neither is ever logged or
 * rethrown as is: only the status code, the Status reason, or a network error code.
 */
export interface KubeFailure {
  /** HTTP status from the API server, when it answered. */
  readonly code?: number;
  /** Short, non-secret: `NotFound`, `Forbidden`, `ECONNREFUSED`, `timeout`... */
  readonly reason: string;
  /** True when the API server could not be reached or did not answer in time. */
  readonly unreachable: boolean;
}

const REASONS: Record<number, string> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  409: 'Conflict',
  410: 'Gone',
  422: 'Invalid',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
  504: 'Timeout',
};

function statusReason(body: unknown): string | undefined {
  let b = body;
  if (typeof b === 'string') {
    try {
      b = JSON.parse(b);
    } catch {
      return undefined;
    }
  }
  if (typeof b !== 'object' || b === null) return undefined;
  const reason = (b as { reason?: unknown }).reason;
  return typeof reason === 'string' && /^[A-Za-z]{1,64}$/.test(reason) ? reason : undefined;
}

/** An error of our own whose message is safe to log and which is an answer, not an outage. */
export class DefinitiveError extends Error {}

export function describeKubeError(err: unknown): KubeFailure {
  if (err instanceof DefinitiveError) return { reason: err.message, unreachable: false };
  if (typeof err === 'object' && err !== null) {
    const e = err as {
      code?: unknown;
      statusCode?: unknown;
      name?: unknown;
      body?: unknown;
      errno?: unknown;
      type?: unknown;
    };
    const status = typeof e.statusCode === 'number' ? e.statusCode : typeof e.code === 'number' ? e.code : undefined;
    if (status !== undefined) {
      return {
        code: status,
        reason: statusReason(e.body) ?? REASONS[status] ?? `HTTP ${status}`,
        unreachable: status >= 500 || status === 429,
      };
    }
    if (e.name === 'AbortError' || e.name === 'TimeoutError' || e.type === 'aborted')
      return { reason: 'timeout', unreachable: true };
    if (typeof e.code === 'string' && /^E[A-Z_]+$/.test(e.code)) return { reason: e.code, unreachable: true };
    // node-fetch's FetchError keeps the system error code in `errno` (a string) and `code`.
    if (typeof e.errno === 'string' && /^E[A-Z_]+$/.test(e.errno)) return { reason: e.errno, unreachable: true };
    if (e.type === 'system') return { reason: 'network error', unreachable: true };
  }
  return { reason: 'request failed', unreachable: true };
}
