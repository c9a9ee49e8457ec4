/**
 * Scans one cached image by digest: reads what the digest is from the cache registry (an image,
 * or an index whose cached platform images are each scanned, since scanners consume image
 * manifests only), asks the scanner about each with a fresh short-lived pull credential, and
 * folds the reports into one verdict. Any failure is a failed record with its typed code: never
 * a verdict for a digest that was not the one reported on.
 */
import { request, type Dispatcher } from 'undici';
import { digestOf } from '../oci/digest.js';
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, parseManifest } from '../oci/media-types.js';
import { readCappedBytes } from '../oci/registry-client.js';
import type { ScannerClient } from './client.js';
import { ScanError, isScanError } from './errors.js';
import type { PullCredentialIssuer } from './pull-credential.js';
import { verdictOf, type ScanRecord } from './verdict.js';
import type { Finding, ScannerInfo } from './api.js';

export interface DigestScannerOptions {
  readonly client: ScannerClient;
  readonly credentials: PullCredentialIssuer;
  /** The cache registry as pullthrough reaches it (to read what a digest is). */
  readonly registryUrl: string;
  /** The cache registry as the scanner reaches it (sent in the scan request). Default: registryUrl. */
  readonly scannerRegistryUrl?: string;
  readonly dispatcher?: Dispatcher;
  readonly now?: () => Date;
}

export interface ScanOutcome {
  readonly record: ScanRecord;
  /** The manifests scanned: the digest, and an index's platform images. */
  readonly digests: readonly string[];
}

export class DigestScanner {
  private readonly base: string;

  constructor(private readonly o: DigestScannerOptions) {
    this.base = o.registryUrl.replace(/\/+$/, '');
  }

  async scan(repository: string, digest: string, signal?: AbortSignal): Promise<ScanOutcome> {
    const now = this.o.now ?? (() => new Date());
    const digests = [digest];
    try {
      const auth = await this.o.credentials.issue(repository, signal);
      const targets = await this.targets(repository, digest, auth, signal);
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
    auth: string | undefined,
    signal?: AbortSignal,
  ): Promise<{ digest: string; mediaType: string }[]> {
    // An index whose children are not all cached is kept as a blob of the same digest.
    const bytes =
      (await this.fetch(`/v2/${repository}/manifests/${digest}`, auth, signal)) ??
      (await this.fetch(`/v2/${repository}/blobs/${digest}`, auth, signal));
    if (!bytes) throw new ScanError('SCAN_REFUSED', `${repository}@${digest} is not in the cache registry`);
    if (digestOf(bytes) !== digest)
      throw new ScanError('SCAN_REFUSED', `the cache registry answered other bytes for ${digest}`);
    const m = parseManifest(bytes);
    if (m.kind === 'image') return [{ digest, mediaType: m.mediaType }];
    const out: { digest: string; mediaType: string }[] = [];
    for (const child of m.manifests) {
      const b = await this.fetch(`/v2/${repository}/manifests/${child.digest}`, auth, signal);
      if (!b || digestOf(b) !== child.digest) continue;
      const c = parseManifest(b);
      if (c.kind === 'image') out.push({ digest: child.digest, mediaType: c.mediaType });
    }
    if (out.length === 0)
      throw new ScanError('SCAN_REFUSED', `no platform image of ${digest} is in the cache registry`);
    return out;
  }

  private async fetch(path: string, auth: string | undefined, signal?: AbortSignal): Promise<Buffer | undefined> {
    const timeout = AbortSignal.timeout(10_000);
    try {
      const res = await request(`${this.base}${path}`, {
        headers: { accept: MANIFEST_ACCEPT, ...(auth ? { authorization: auth } : {}) },
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
        ...(this.o.dispatcher ? { dispatcher: this.o.dispatcher } : {}),
      });
      if (res.statusCode !== 200) {
        await res.body.dump();
        return undefined;
      }
      return await readCappedBytes(res.body, MAX_MANIFEST_BYTES);
    } catch (err) {
      throw new ScanError(
        'CACHE_REGISTRY_UNREACHABLE',
        `the cache registry: ${(err as { code?: string }).code ?? (err as Error).message}`,
      );
    }
  }
}
