/**
 * The shape of a CachedImage's `status.scan` (manifests/base/crds.yaml): the scan verdict of its
 * cached digest. Conversions live in cached-image-scan.ts.
 */
import type { Severity } from '../scan/api.js';

export type SeverityKey = 'unknown' | 'negligible' | 'low' | 'medium' | 'high' | 'critical';

export interface ScanStatus {
  /** The status digest this verdict is about; a verdict for another digest is stale. */
  readonly digest: string;
  /** The manifests scanned: the digest and an index's cached platform images. */
  readonly digests: readonly string[];
  readonly result: 'Scanned' | 'Error';
  /** When the scan ended (RFC 3339). */
  readonly scannedAt: string;
  readonly scanner?: { readonly name: string; readonly version: string };
  readonly counts?: Readonly<Record<SeverityKey, number>>;
  readonly findings?: readonly { readonly id: string; readonly severity: Severity }[];
  readonly truncated?: boolean;
  readonly error?: { readonly code: string; readonly message: string };
}
