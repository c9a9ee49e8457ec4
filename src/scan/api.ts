/**
 * The Harbor Pluggable Scanner API v1.1 as pullthrough speaks it: media types, the request it
 * sends, and schema checks of what comes back (metadata, scan response, vulnerability report).
 * Checks are structural and strict where a verdict depends on them (severities, the artifact's
 * digest); fields the verdict does not use are ignored.
 */
import { ScanError } from './errors.js';

export const ScanMediaType = {
  metadata: 'application/vnd.scanner.adapter.metadata+json; version=1.0',
  scanRequest: 'application/vnd.scanner.adapter.scan.request+json; version=1.0',
  scanResponse: 'application/vnd.scanner.adapter.scan.response+json; version=1.0',
  error: 'application/vnd.scanner.adapter.error+json; version=1.0',
  /** The report pullthrough asks for first (v1.1), then the v1.0 Harbor report; same schema. */
  reportV11: 'application/vnd.security.vulnerability.report; version=1.1',
  reportHarbor: 'application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0',
} as const;

export const REPORT_TYPES: readonly string[] = [ScanMediaType.reportV11, ScanMediaType.reportHarbor];

/** The spec's scale, lowest first. */
export const SEVERITIES = ['Unknown', 'Negligible', 'Low', 'Medium', 'High', 'Critical'] as const;
export type Severity = (typeof SEVERITIES)[number];

export function severityRank(s: Severity): number {
  return SEVERITIES.indexOf(s);
}

export function isSeverity(v: unknown): v is Severity {
  return typeof v === 'string' && (SEVERITIES as readonly string[]).includes(v);
}

export interface ScannerInfo {
  readonly name: string;
  readonly vendor: string;
  readonly version: string;
}

export interface ScannerMetadata {
  readonly scanner: ScannerInfo;
  readonly capabilities: readonly { readonly consumes: readonly string[]; readonly produces: readonly string[] }[];
}

export interface ScanRequest {
  readonly registry: { readonly url: string; readonly authorization?: string };
  readonly artifact: {
    readonly repository: string;
    readonly digest: string;
    readonly mime_type: string;
    readonly tag?: string;
  };
}

export interface Finding {
  readonly id: string;
  readonly severity: Severity;
  readonly package?: string;
}

export interface VulnerabilityReport {
  readonly digest: string;
  readonly scanner: ScannerInfo;
  readonly generatedAt?: string;
  readonly severity?: Severity;
  readonly vulnerabilities: readonly Finding[];
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === 'string');

function malformed(what: string, why: string): ScanError {
  return new ScanError('REPORT_MALFORMED', `${what}: ${why}`);
}

export function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw malformed(what, `not JSON (${(err as Error).message.slice(0, 100)})`);
  }
}

function scannerInfo(v: unknown, what: string): ScannerInfo {
  if (!isObject(v)) throw malformed(what, 'scanner is not an object');
  const str = (k: string): string => (typeof v[k] === 'string' ? v[k] : '');
  if (str('name') === '') throw malformed(what, 'scanner.name is missing');
  return {
    name: str('name').slice(0, 100),
    vendor: str('vendor').slice(0, 100),
    version: str('version').slice(0, 100),
  };
}

export function parseMetadata(body: unknown): ScannerMetadata {
  const what = 'scanner metadata';
  if (!isObject(body)) throw malformed(what, 'not a JSON object');
  if (!Array.isArray(body.capabilities)) throw malformed(what, 'capabilities is not an array');
  const capabilities = body.capabilities.map((c: unknown) => {
    if (!isObject(c) || !isStringArray(c.consumes_mime_types) || !isStringArray(c.produces_mime_types))
      throw malformed(what, 'a capability lacks consumes_mime_types or produces_mime_types');
    return { consumes: c.consumes_mime_types, produces: c.produces_mime_types };
  });
  return { scanner: scannerInfo(body.scanner, what), capabilities };
}

export function parseScanResponse(body: unknown): string {
  if (!isObject(body) || typeof body.id !== 'string' || body.id === '' || body.id.length > 256)
    throw malformed('scan response', 'id is missing or not a string');
  return body.id;
}

/** Reads a report and refuses one about another artifact than `digest`. */
export function parseReport(body: unknown, digest: string): VulnerabilityReport {
  const what = 'vulnerability report';
  if (!isObject(body)) throw malformed(what, 'not a JSON object');
  if (!isObject(body.artifact) || typeof body.artifact.digest !== 'string')
    throw malformed(what, 'artifact.digest is missing');
  if (body.artifact.digest !== digest) {
    throw new ScanError(
      'REPORT_WRONG_DIGEST',
      `the report is for ${body.artifact.digest.slice(0, 80)}, not the requested ${digest}`,
    );
  }
  const list = body.vulnerabilities ?? [];
  if (!Array.isArray(list)) throw malformed(what, 'vulnerabilities is not an array');
  const vulnerabilities = list.map((v: unknown, i) => {
    if (!isObject(v) || typeof v.id !== 'string' || v.id === '')
      throw malformed(what, `vulnerabilities[${i}].id is missing`);
    if (!isSeverity(v.severity))
      throw malformed(
        what,
        `vulnerabilities[${i}].severity ${JSON.stringify(v.severity)} is not a severity of the spec`,
      );
    return {
      id: v.id.slice(0, 100),
      severity: v.severity,
      ...(typeof v.package === 'string' ? { package: v.package.slice(0, 200) } : {}),
    };
  });
  if (body.severity !== undefined && !isSeverity(body.severity))
    throw malformed(what, `severity ${JSON.stringify(body.severity)} is not a severity of the spec`);
  return {
    digest,
    scanner: scannerInfo(body.scanner, what),
    ...(typeof body.generated_at === 'string' ? { generatedAt: body.generated_at } : {}),
    ...(isSeverity(body.severity) ? { severity: body.severity } : {}),
    vulnerabilities,
  };
}
