/**
 * A client of one scanner adapter speaking the Harbor Pluggable Scanner API v1.1: reads its
 * metadata, asks it to scan an artifact of the cache registry (the registry URL and a short-lived
 * pull credential go with the request, so the scanner pulls from the cache, never from the
 * origin), and polls the report, waiting as long as each 302's `Refresh-After` says (the spec's
 * header; `Retry-After` is read when it is absent). Every request has a deadline, the whole scan
 * has one, bodies have a size bound, and a report for another digest is refused. The pull
 * credential and the scanner's own authorization never appear in an error message: anything the
 * scanner echoes is redacted before it is kept.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { request, type Dispatcher } from 'undici';
import { readCappedBytes, SizeError } from '../oci/registry-client.js';
import {
  parseJson,
  parseMetadata,
  parseReport,
  parseScanResponse,
  REPORT_TYPES,
  ScanMediaType,
  type ScannerMetadata,
  type ScanRequest,
  type VulnerabilityReport,
} from './api.js';
import { ScanError, isScanError } from './errors.js';

export interface ScannerClientOptions {
  /** The adapter's base URL; the API is below `/api/v1`. */
  readonly url: string;
  /** The Authorization header the adapter itself wants, if any. */
  readonly authorization?: string;
  readonly dispatcher?: Dispatcher;
  /** Each request's deadline. Default 10 s. */
  readonly requestTimeoutMs?: number;
  /** The whole scan's deadline, polling included. Default 10 min. */
  readonly scanTimeoutMs?: number;
  /** A report or any other body larger than this is refused. Default 16 MiB. */
  readonly maxBodyBytes?: number;
  /** Between polls when a 302 names no delay. Default 2 s. The named delay is held to [100 ms, 60 s]. */
  readonly pollIntervalMs?: number;
}

export interface ScanArtifact {
  /** The cache registry's base URL as the scanner reaches it. */
  readonly registryUrl: string;
  /** A short-lived Authorization header value that pulls this repository from it. */
  readonly registryAuthorization?: string;
  /** The repository in the cache registry. */
  readonly repository: string;
  readonly digest: string;
  readonly mediaType: string;
  readonly tag?: string;
}

export interface ScanResult {
  readonly report: VulnerabilityReport;
  readonly metadata: ScannerMetadata;
}

const MAX_ERROR_TEXT = 300;

export class ScannerClient {
  private readonly o: Required<Omit<ScannerClientOptions, 'authorization' | 'dispatcher'>> &
    Pick<ScannerClientOptions, 'authorization' | 'dispatcher'>;

  constructor(opts: ScannerClientOptions) {
    this.o = {
      requestTimeoutMs: 10_000,
      scanTimeoutMs: 600_000,
      maxBodyBytes: 16 * 1024 * 1024,
      pollIntervalMs: 2_000,
      ...opts,
      url: opts.url.replace(/\/+$/, ''),
    };
  }

  get url(): string {
    return this.o.url;
  }

  async metadata(signal: AbortSignal = AbortSignal.timeout(this.o.requestTimeoutMs)): Promise<ScannerMetadata> {
    const res = await this.send('GET', '/metadata', { accept: `${ScanMediaType.metadata}, application/json` }, signal);
    if (res.status !== 200) throw this.statusError('metadata', res);
    return parseMetadata(parseJson(res.text, 'scanner metadata'));
  }

  /** Metadata, scan request, then the report polled until it is ready or the scan's deadline passes. */
  async scan(artifact: ScanArtifact, outer?: AbortSignal): Promise<ScanResult> {
    const deadline = AbortSignal.timeout(this.o.scanTimeoutMs);
    const signal = outer ? AbortSignal.any([outer, deadline]) : deadline;
    const secrets = [artifact.registryAuthorization, this.o.authorization].filter((s): s is string => !!s);
    try {
      const metadata = await this.metadata(signal);
      const reportType = pickReportType(metadata, artifact.mediaType);
      const id = await this.requestScan(artifact, signal);
      const report = await this.pollReport(id, artifact.digest, reportType, signal);
      return { report, metadata };
    } catch (err) {
      if (deadline.aborted && !outer?.aborted)
        throw new ScanError('SCANNER_TIMEOUT', `the scan took longer than ${this.o.scanTimeoutMs} ms`);
      throw redacted(err, secrets);
    }
  }

  private async requestScan(a: ScanArtifact, signal: AbortSignal): Promise<string> {
    const body: ScanRequest = {
      registry: { url: a.registryUrl, ...(a.registryAuthorization ? { authorization: a.registryAuthorization } : {}) },
      artifact: {
        repository: a.repository,
        digest: a.digest,
        mime_type: a.mediaType,
        ...(a.tag ? { tag: a.tag } : {}),
      },
    };
    const res = await this.send(
      'POST',
      '/scan',
      { 'content-type': ScanMediaType.scanRequest, accept: `${ScanMediaType.scanResponse}, application/json` },
      signal,
      JSON.stringify(body),
    );
    if (res.status !== 202 && res.status !== 200) throw this.statusError('scan request', res);
    return parseScanResponse(parseJson(res.text, 'scan response'));
  }

  private async pollReport(
    id: string,
    digest: string,
    type: string,
    signal: AbortSignal,
  ): Promise<VulnerabilityReport> {
    const path = `/scan/${encodeURIComponent(id)}/report`;
    for (;;) {
      const res = await this.send('GET', path, { accept: type }, signal);
      if (res.status === 200) return parseReport(parseJson(res.text, 'vulnerability report'), digest);
      if (res.status !== 302) throw this.statusError('report', res);
      await sleep(this.refreshDelay(res.headers), undefined, { signal });
    }
  }

  private refreshDelay(headers: Record<string, string | string[] | undefined>): number {
    const raw = headers['refresh-after'] ?? headers['retry-after'];
    const seconds = Number(Array.isArray(raw) ? raw[0] : raw);
    if (raw === undefined || !Number.isFinite(seconds)) return this.o.pollIntervalMs;
    return Math.min(60_000, Math.max(100, seconds * 1000));
  }

  private statusError(what: string, res: { status: number; text: string }): ScanError {
    const detail = errorMessage(res.text);
    const suffix = detail ? `: ${detail}` : '';
    if (res.status >= 500) return new ScanError('SCANNER_FAILED', `${what} answered ${res.status}${suffix}`);
    return new ScanError('SCAN_REFUSED', `${what} answered ${res.status}${suffix}`);
  }

  private async send(
    method: 'GET' | 'POST',
    path: string,
    headers: Record<string, string>,
    signal: AbortSignal,
    body?: string,
  ): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; text: string }> {
    const url = `${this.o.url}/api/v1${path}`;
    const timeout = AbortSignal.timeout(this.o.requestTimeoutMs);
    try {
      const res = await request(url, {
        method,
        headers: { ...headers, ...(this.o.authorization ? { authorization: this.o.authorization } : {}) },
        signal: AbortSignal.any([signal, timeout]),
        headersTimeout: this.o.requestTimeoutMs,
        bodyTimeout: this.o.requestTimeoutMs,
        ...(body !== undefined ? { body } : {}),
        ...(this.o.dispatcher ? { dispatcher: this.o.dispatcher } : {}),
      });
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > this.o.maxBodyBytes) {
        res.body.destroy();
        throw new SizeError(this.o.maxBodyBytes);
      }
      const bytes = await readCappedBytes(res.body, this.o.maxBodyBytes);
      return { status: res.statusCode, headers: res.headers, text: bytes.toString('utf8') };
    } catch (err) {
      if (isScanError(err) || signal.aborted) throw err;
      if (err instanceof SizeError)
        throw new ScanError('REPORT_TOO_LARGE', `${method} ${path}: the body is larger than ${err.max} bytes`);
      const code = (err as { code?: string }).code ?? '';
      if (timeout.aborted || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT')
        throw new ScanError('SCANNER_TIMEOUT', `${method} ${path}: no answer within ${this.o.requestTimeoutMs} ms`);
      throw new ScanError('SCANNER_UNREACHABLE', `${method} ${path}: ${code || (err as Error).message}`, {
        cause: err,
      });
    }
  }
}

/** The report type to ask for: one the scanner produces for this artifact's media type. */
function pickReportType(m: ScannerMetadata, mediaType: string): string {
  const fits = m.capabilities.filter((c) => c.consumes.includes(mediaType));
  if (fits.length === 0) throw new ScanError('SCANNER_UNSUPPORTED', `${m.scanner.name} does not consume ${mediaType}`);
  const produced = new Set(fits.flatMap((c) => c.produces));
  const type = REPORT_TYPES.find((t) => produced.has(t));
  if (!type) throw new ScanError('SCANNER_UNSUPPORTED', `${m.scanner.name} produces no Harbor vulnerability report`);
  return type;
}

/** The message of the spec's ErrorResponse, else the body's first characters. */
function errorMessage(text: string): string {
  let msg = text;
  try {
    const j = JSON.parse(text) as { error?: { message?: unknown } };
    if (typeof j.error?.message === 'string') msg = j.error.message;
  } catch {
    // Not the spec's JSON: keep the text.
  }
  return msg.replace(/\s+/g, ' ').trim().slice(0, MAX_ERROR_TEXT);
}

/** The same error with every secret (and its credential part) cut out of the message. */
function redacted(err: unknown, secrets: readonly string[]): unknown {
  if (!isScanError(err)) return err;
  let msg = err.message;
  for (const s of secrets.flatMap((s) => [s, s.replace(/^\S+\s+/, '')]).filter((s) => s.length >= 4)) {
    msg = msg.split(s).join('[redacted]');
  }
  return msg === err.message ? err : new ScanError(err.code, msg);
}
