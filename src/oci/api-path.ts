/**
 * Parses the path of a distribution API request. Names and references never need percent
 * encoding, so any `%`, backslash, empty or dot segment is refused outright: that closes the
 * door on traversal (`..`, `%2e%2e`, `%2f`) before anything is decoded or joined to a path.
 */
import { looksLikeDigest, parseDigest } from './digest.js';
import { OciError } from './errors.js';
import { isValidTag } from './reference.js';

export type ApiRequest =
  | { readonly kind: 'base' }
  | { readonly kind: 'manifest'; readonly name: string; readonly reference: string }
  | { readonly kind: 'blob'; readonly name: string; readonly digest: string }
  | { readonly kind: 'push'; readonly name: string }
  | { readonly kind: 'unsupported'; readonly what: string };

const MAX_PATH = 4096;

export function parseApiPath(path: string): ApiRequest {
  if (path === '/v2' || path === '/v2/') return { kind: 'base' };
  if (path.length > MAX_PATH) throw new OciError('NAME_INVALID', `request path longer than ${MAX_PATH} characters`);
  if (/[%\\]/.test(path))
    throw new OciError('NAME_INVALID', 'percent-encoded or backslash characters are not allowed in repository paths');
  if (!path.startsWith('/v2/')) return { kind: 'unsupported', what: 'not a distribution API path' };
  // The spec's upload start is `POST /v2/<name>/blobs/uploads/`: its trailing slash is no empty segment.
  const segments = path
    .slice(4)
    .replace(/(\/blobs\/uploads)\/$/, '$1')
    .split('/');
  if (segments.some((s) => s === '' || s === '.' || s === '..')) {
    throw new OciError('NAME_INVALID', 'empty, "." or ".." path segments are not allowed');
  }
  if (segments[0] === '_catalog') return { kind: 'unsupported', what: 'catalog' };
  const n = segments.length;
  if (n >= 3 && segments[n - 2] === 'manifests') {
    return { kind: 'manifest', name: segments.slice(0, n - 2).join('/'), reference: segments[n - 1] as string };
  }
  if (n >= 3 && segments[n - 2] === 'blobs' && segments[n - 1] !== 'uploads') {
    return { kind: 'blob', name: segments.slice(0, n - 2).join('/'), digest: segments[n - 1] as string };
  }
  const uploads = segments.lastIndexOf('uploads');
  if (uploads >= 2 && segments[uploads - 1] === 'blobs')
    return { kind: 'push', name: segments.slice(0, uploads - 1).join('/') };
  if (n >= 3 && segments[n - 2] === 'tags' && segments[n - 1] === 'list')
    return { kind: 'unsupported', what: 'tag listing' };
  if (n >= 3 && segments[n - 2] === 'referrers') return { kind: 'unsupported', what: 'referrers' };
  return { kind: 'unsupported', what: 'unknown endpoint' };
}

export type ManifestReference =
  { readonly kind: 'tag'; readonly tag: string } | { readonly kind: 'digest'; readonly digest: string };

/**
 * The `<reference>` of a manifest path: a tag or a digest, nothing else (the spec: it "MUST NOT
 * be in any other format"). With a colon it is read as a digest, so a malformed one is
 * DIGEST_INVALID (or UNSUPPORTED for an algorithm we cannot verify). Anything else that is no
 * valid tag names no manifest: 404 MANIFEST_UNKNOWN, as the spec requires for a manifest that
 * does not exist and as distribution answers.
 */
export function parseManifestReference(reference: string): ManifestReference {
  if (looksLikeDigest(reference)) return { kind: 'digest', digest: parseDigest(reference).value };
  if (!isValidTag(reference)) {
    throw new OciError(
      'MANIFEST_UNKNOWN',
      `manifest unknown: ${JSON.stringify(reference.slice(0, 140))} is neither a valid tag nor a digest`,
    );
  }
  return { kind: 'tag', tag: reference };
}
