/**
 * Scans one cached image by digest: reads what the digest is from the cache registry (an image,
 * or an index whose cached platform images are each scanned, since scanners consume image
 * manifests only), asks the scanner about each with a fresh short-lived pull credential, and
 * folds the reports into one verdict. Any failure is a failed record with its typed code: never
 * a verdict for a digest that was not the one reported on.
 */
import { digestOf } from '../oci/digest.js';
import { parseManifest } from '../oci/media-types.js';
import type { ScannerClient } from './client.js';
import { ScanError, isScanError } from './errors.js';
import type { CacheRegistryAccess } from './pull-credential.js';
import { verdictOf, type ScanRecord } from './verdict.js';
import type { Finding, ScannerInfo } from './api.js';

export interface DigestScannerOptions {
  readonly client: ScannerClient;
  /** The cache registry as pullthrough reads it (what a digest is) and the scanner's pull credentials. */
  readonly credentials: CacheRegistryAccess;
  /** The cache registry as pullthrough reaches it. */
  readonly registryUrl: string;
  /** The cache registry as the scanner reaches it (sent in the scan request). Default: registryUrl. */
  readonly scannerRegistryUrl?: string;
  readonly now?: () => Date;
}

export interface ScanOutcome {
  readonly record: ScanRecord;
  /** The manifests scanned: the digest, and an index's platform images. */
  readonly digests: readonly string[];
}

export class DigestScanner {
  constructor(private readonly o: DigestScannerOptions) {}

  async scan(repository: string, digest: string, signal?: AbortSignal): Promise<ScanOutcome> {
    const now = this.o.now ?? (() => new Date());
    const digests = [digest];
    try {
      // A registry that refuses the login is PULL_CREDENTIAL_FAILED before anything is read.
      await this.o.credentials.issue(repository, signal);
      const targets = await this.targets(repository, digest, signal);
      digests.push(...targets.map((x) => x.digest).filter((d) => d !== digest));
      const findings: Finding[] = [];
      let scanner: ScannerInfo | undefined;
      for (const target of targets) {
        const r = await this.o.client.scan(
          {
            registryUrl: this.o.scannerRegistryUrl ?? this.o.registryUrl,
            // Each scan gets its own: a token may expire while an earlier one runs.
            ...(await this.o.credentials
              .issue(repository, signal)
              .then((a) => (a ? { registryAuthorization: a } : {}))),
            repository,
            digest: target.digest,
            mediaType: target.mediaType,
          },
          signal,
        );
        findings.push(...r.report.vulnerabilities);
        scanner = r.metadata.scanner;
      }
      const info = scanner ?? { name: '', vendor: '', version: '' };
      const verdict = verdictOf({ digest, scanner: info, vulnerabilities: findings }, info, now());
      return { record: { state: 'scanned', verdict }, digests };
    } catch (err) {
      const e = isScanError(err) ? err : new ScanError('SCANNER_FAILED', (err as Error).message);
      return {
        record: { state: 'failed', digest, code: e.code, message: e.message, at: now().toISOString() },
        digests,
      };
    }
  }

  /** The image manifests to scan for `digest`: itself, or an index's children present in the cache. */
  private async targets(
    repository: string,
    digest: string,
    signal?: AbortSignal,
  ): Promise<{ digest: string; mediaType: string }[]> {
    // An index whose children are not all cached is kept as a blob of the same digest.
    const registry = this.o.credentials;
    const bytes =
      (await registry.read(repository, `manifests/${digest}`, signal)) ??
      (await registry.read(repository, `blobs/${digest}`, signal));
    if (!bytes) throw new ScanError('SCAN_REFUSED', `${repository}@${digest} is not in the cache registry`);
    if (digestOf(bytes) !== digest)
      throw new ScanError('SCAN_REFUSED', `the cache registry answered other bytes for ${digest}`);
    const m = parseManifest(bytes);
    if (m.kind === 'image') return [{ digest, mediaType: m.mediaType }];
    const out: { digest: string; mediaType: string }[] = [];
    for (const child of m.manifests) {
      const b = await registry.read(repository, `manifests/${child.digest}`, signal);
      if (!b || digestOf(b) !== child.digest) continue;
      const c = parseManifest(b);
      if (c.kind === 'image') out.push({ digest: child.digest, mediaType: c.mediaType });
    }
    if (out.length === 0)
      throw new ScanError('SCAN_REFUSED', `no platform image of ${digest} is in the cache registry`);
    return out;
  }
}
