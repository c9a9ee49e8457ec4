/**
 * The vulnerability gate's flags, shared by the commands that read them: the policy (webhook,
 * node proxy, controller) and the scanner (controller only, which runs the scans). Exceptions are
 * `ID@EXPIRY` and `REGEX@EXPIRY` (split at the last `@`, so a pattern may hold `@sha256:`); an
 * exception without an expiry is refused. The scanner's and the cache registry's credentials are
 * read from files, never from flags.
 */
import { readFileSync } from 'node:fs';
import { isSeverity } from '../scan/api.js';
import type {
  CveException,
  GateMode,
  GatePolicy,
  ImageException,
  ScannerDownAction,
  UnscannedAction,
} from '../scan/policy.js';
import { ConfigError, parseDuration, valueOf, type FlagSpec, type ParsedFlags } from './flags.js';

export const scanPolicyFlags: readonly FlagSpec[] = [
  {
    name: 'scan-policy',
    kind: 'string',
    arg: 'off|warn|enforce',
    default: 'off',
    help:
      'The vulnerability gate: warn admits failing images with a warning; enforce denies them at ' +
      'admission and the node proxy refuses to serve them.',
  },
  {
    name: 'scan-threshold',
    kind: 'string',
    arg: 'SEVERITY',
    default: 'High',
    help: 'Findings at or above this severity fail an image: Unknown, Negligible, Low, Medium, High, Critical.',
  },
  {
    name: 'scan-unscanned',
    kind: 'string',
    arg: 'allow-and-scan|hold',
    default: 'allow-and-scan',
    help: 'An image without a verdict yet: let it through (it is scanned once cached), or treat it as failing.',
  },
  {
    name: 'scan-scanner-down',
    kind: 'string',
    arg: 'fail-open|fail-closed',
    default: 'fail-open',
    help:
      'An image whose scan gave no verdict (scanner unreachable, timing out, a bad report): let it ' +
      'through, or treat it as failing.',
  },
  {
    name: 'scan-cve-exception',
    kind: 'repeatable',
    arg: 'ID@EXPIRY',
    help: 'A finding that does not count until EXPIRY (RFC 3339 date or time), e.g. CVE-2024-1234@2026-12-31.',
  },
  {
    name: 'scan-image-exception',
    kind: 'repeatable',
    arg: 'REGEX@EXPIRY',
    help: 'Images (normalised references matching REGEX) that pass whatever their findings until EXPIRY.',
  },
];

export const scannerFlags: readonly FlagSpec[] = [
  {
    name: 'scanner-url',
    kind: 'string',
    arg: 'URL',
    help: 'A Harbor Pluggable Scanner API v1.1 adapter (Trivy, Clair...); without it nothing is scanned.',
  },
  {
    name: 'scanner-auth-file',
    kind: 'string',
    arg: 'FILE',
    help: "A file holding the Authorization header value the adapter wants (e.g. 'Bearer ...').",
  },
  {
    name: 'scan-registry-url',
    kind: 'string',
    arg: 'URL',
    help: 'The cache registry as the scanner reaches it (default: --cache-registry).',
  },
  {
    name: 'scan-registry-auth-file',
    kind: 'string',
    arg: 'FILE',
    help:
      'USER:PASSWORD for the cache registry; a token registry then issues the scanner a short-lived ' +
      'pull token per repository.',
  },
  { name: 'scan-timeout', kind: 'duration', default: '10m', help: 'A whole scan, polling included.' },
  { name: 'scan-request-timeout', kind: 'duration', default: '10s', help: 'Each request to the scanner.' },
  { name: 'scan-max-report-bytes', kind: 'string', arg: 'N', default: '16777216', help: 'A larger report is refused.' },
  {
    name: 'rescan-interval',
    kind: 'duration',
    default: '24h',
    help: 'A digest is scanned again after this long (new CVEs).',
  },
];

export interface ScannerConfig {
  readonly url: string;
  readonly authorization?: string;
  readonly registryUrl?: string;
  readonly registryUser?: { readonly username: string; readonly password: string };
  readonly scanTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly maxReportBytes: number;
  readonly rescanIntervalMs: number;
}

function oneOf<T extends string>(name: string, v: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(v))
    throw new ConfigError(`--${name}: ${JSON.stringify(v)} is not one of ${allowed.join(', ')}`);
  return v as T;
}

function expiry(flag: string, text: string): { head: string; until: number } {
  const at = text.lastIndexOf('@');
  const head = at > 0 ? text.slice(0, at) : '';
  const when = at > 0 ? text.slice(at + 1) : '';
  const until = /^\d{4}-\d{2}-\d{2}/.test(when) ? Date.parse(when) : NaN;
  if (head === '' || Number.isNaN(until))
    throw new ConfigError(`--${flag}: ${JSON.stringify(text)} is not VALUE@EXPIRY (e.g. CVE-2024-1234@2026-12-31)`);
  return { head, until };
}

export function parseScanPolicy(f: Pick<ParsedFlags, 'values' | 'repeated'>): GatePolicy {
  const v = f.values;
  const threshold = valueOf(v, 'scan-threshold');
  if (!isSeverity(threshold)) throw new ConfigError(`--scan-threshold: ${JSON.stringify(threshold)} is not a severity`);
  const cveExceptions: CveException[] = (f.repeated['scan-cve-exception'] ?? []).map((s) => {
    const { head, until } = expiry('scan-cve-exception', s);
    return { id: head, until };
  });
  const imageExceptions: ImageException[] = (f.repeated['scan-image-exception'] ?? []).map((s) => {
    const { head, until } = expiry('scan-image-exception', s);
    try {
      return { pattern: new RegExp(head), until };
    } catch (err) {
      throw new ConfigError(
        `--scan-image-exception: invalid regular expression ${JSON.stringify(head)}: ${(err as Error).message}`,
      );
    }
  });
  return {
    mode: oneOf<GateMode>('scan-policy', valueOf(v, 'scan-policy'), ['off', 'warn', 'enforce']),
    threshold,
    unscanned: oneOf<UnscannedAction>('scan-unscanned', valueOf(v, 'scan-unscanned'), ['allow-and-scan', 'hold']),
    scannerDown: oneOf<ScannerDownAction>('scan-scanner-down', valueOf(v, 'scan-scanner-down'), [
      'fail-open',
      'fail-closed',
    ]),
    cveExceptions,
    imageExceptions,
  };
}

function readSecretFile(flag: string, file: string): string {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new ConfigError(`--${flag}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

/** Undefined without --scanner-url. `cacheRegistry` is the command's --cache-registry, if any. */
export function parseScannerConfig(v: ParsedFlags['values'], cacheRegistry?: string): ScannerConfig | undefined {
  const url = v['scanner-url'];
  if (!url) return undefined;
  if (!/^https?:\/\//.test(url)) throw new ConfigError('--scanner-url: use an http:// or https:// URL');
  const registryUrl = v['scan-registry-url'] || cacheRegistry;
  let registryUser: ScannerConfig['registryUser'];
  if (v['scan-registry-auth-file']) {
    const text = readSecretFile('scan-registry-auth-file', v['scan-registry-auth-file']);
    const colon = text.indexOf(':');
    if (colon <= 0) throw new ConfigError('--scan-registry-auth-file: expected USER:PASSWORD');
    registryUser = { username: text.slice(0, colon), password: text.slice(colon + 1) };
  }
  const maxReportBytes = Number(valueOf(v, 'scan-max-report-bytes'));
  if (!Number.isSafeInteger(maxReportBytes) || maxReportBytes <= 0)
    throw new ConfigError('--scan-max-report-bytes: not a positive integer');
  return {
    url,
    ...(v['scanner-auth-file'] ? { authorization: readSecretFile('scanner-auth-file', v['scanner-auth-file']) } : {}),
    ...(registryUrl ? { registryUrl } : {}),
    ...(registryUser ? { registryUser } : {}),
    scanTimeoutMs: parseDuration('scan-timeout', valueOf(v, 'scan-timeout')),
    requestTimeoutMs: parseDuration('scan-request-timeout', valueOf(v, 'scan-request-timeout')),
    maxReportBytes,
    rescanIntervalMs: parseDuration('rescan-interval', valueOf(v, 'rescan-interval')),
  };
}
