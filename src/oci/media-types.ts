/**
 * Manifest media types and the little we need to know of a manifest's structure: which blobs and
 * child manifests it references. Parsing never rewrites: the bytes stay the origin's.
 */
import { OciError } from './errors.js';
import { parseDigest } from './digest.js';

export const MediaType = {
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;

const imageTypes = new Set<string>([MediaType.OciManifest, MediaType.DockerManifest]);
const indexTypes = new Set<string>([MediaType.OciIndex, MediaType.DockerManifestList]);

/** What we ask origins for: every manifest kind we can store and serve verbatim. */
export const MANIFEST_ACCEPT = [
  MediaType.DockerManifest,
  MediaType.DockerManifestList,
  MediaType.OciManifest,
  MediaType.OciIndex,
].join(', ');

/** distribution's own cap on manifest size. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface Descriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly platform?: Platform;
}

export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

export type ParsedManifest =
  | {
      readonly kind: 'image';
      readonly mediaType: string;
      readonly config: Descriptor;
      readonly layers: readonly Descriptor[];
    }
  | { readonly kind: 'index'; readonly mediaType: string; readonly manifests: readonly Descriptor[] };

export function isManifestMediaType(mt: string): boolean {
  return imageTypes.has(mt) || indexTypes.has(mt);
}

function descriptor(v: unknown, where: string): Descriptor {
  if (typeof v !== 'object' || v === null) throw invalid(`${where} is not a descriptor`);
  const d = v as Record<string, unknown>;
  if (typeof d.digest !== 'string' || typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) {
    throw invalid(`${where} lacks a valid digest or size`);
  }
  parseDigest(d.digest);
  const out: { mediaType: string; digest: string; size: number; platform?: Platform } = {
    mediaType: typeof d.mediaType === 'string' ? d.mediaType : '',
    digest: d.digest,
    size: d.size,
  };
  const p = d.platform as Record<string, unknown> | undefined;
  if (p && typeof p.os === 'string' && typeof p.architecture === 'string') {
    out.platform = {
      os: p.os,
      architecture: p.architecture,
      ...(typeof p.variant === 'string' ? { variant: p.variant } : {}),
    };
  }
  return out;
}

function invalid(message: string): OciError {
  return new OciError('MANIFEST_INVALID', message);
}

/**
 * Parses manifest bytes. `contentType` is what the origin (or store) said; the document's own
 * mediaType wins when present, and OCI documents without one are recognised by shape.
 */
export function parseManifest(bytes: Uint8Array, contentType?: string): ParsedManifest {
  if (bytes.byteLength > MAX_MANIFEST_BYTES)
    throw invalid(`manifest is ${bytes.byteLength} bytes, over the ${MAX_MANIFEST_BYTES} byte cap`);
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch {
    throw invalid('manifest is not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw invalid('manifest is not a JSON object');
  const m = doc as Record<string, unknown>;
  if (m.schemaVersion !== 2) {
    throw new OciError(
      'UNSUPPORTED',
      `manifest schemaVersion ${JSON.stringify(m.schemaVersion)} is not supported (only schema 2 / OCI)`,
      { status: 400 },
    );
  }
  const ct = contentType?.split(';')[0]?.trim();
  let mediaType = typeof m.mediaType === 'string' ? m.mediaType : undefined;
  if (mediaType === undefined) {
    if (ct && isManifestMediaType(ct)) mediaType = ct;
    else mediaType = Array.isArray(m.manifests) ? MediaType.OciIndex : MediaType.OciManifest;
  }
  if (indexTypes.has(mediaType)) {
    if (!Array.isArray(m.manifests)) throw invalid('index has no manifests array');
    return { kind: 'index', mediaType, manifests: m.manifests.map((d, i) => descriptor(d, `manifests[${i}]`)) };
  }
  if (imageTypes.has(mediaType)) {
    if (!Array.isArray(m.layers)) throw invalid('manifest has no layers array');
    return {
      kind: 'image',
      mediaType,
      config: descriptor(m.config, 'config'),
      layers: m.layers.map((d, i) => descriptor(d, `layers[${i}]`)),
    };
  }
  throw new OciError('UNSUPPORTED', `manifest media type ${JSON.stringify(mediaType.slice(0, 100))} is not supported`, {
    status: 400,
  });
}

/**
 * The media types a client's Accept header names, lower-cased, parameters (q included) dropped:
 * distribution ignores q values, and a proxy answering as the origin would does the same.
 * Node joins repeated Accept lines with commas.
 */
export function acceptedMediaTypes(accept: string | undefined): ReadonlySet<string> {
  const out = new Set<string>();
  for (const item of (accept ?? '').slice(0, 8192).split(',')) {
    const type = item.split(';')[0]?.trim().toLowerCase();
    if (type) out.add(type);
  }
  return out;
}

/** What a request for a stored manifest gets, given the media types its client accepts. */
export type ManifestChoice =
  | { readonly kind: 'serve' }
  | { readonly kind: 'refuse'; readonly message: string }
  /** By tag, a Docker manifest list for a client that does not accept lists: its linux/amd64 image. */
  | { readonly kind: 'platform'; readonly digest: string };

/**
 * Distribution's content negotiation, without its schema 1 conversions (bytes are never
 * rewritten): an OCI manifest or index is served only to a client that names its media type
 * (wildcards and a missing Accept do not count), otherwise 404 MANIFEST_UNKNOWN; a Docker manifest list
 * asked for by tag by a client that does not accept lists is answered with its linux/amd64
 * image manifest (404 when it has none); a Docker image manifest is served whatever the Accept
 * (distribution 2.8 would convert it to schema 1 for a tag; 3.x serves it as stored).
 */
export function negotiateManifest(
  m: { readonly mediaType: string; readonly bytes: Uint8Array },
  accepted: ReadonlySet<string>,
  byTag: boolean,
): ManifestChoice {
  if (m.mediaType === MediaType.OciManifest && !accepted.has(MediaType.OciManifest))
    return { kind: 'refuse', message: 'OCI manifest found, but accept header does not support OCI manifests' };
  if (m.mediaType === MediaType.OciIndex && !accepted.has(MediaType.OciIndex))
    return { kind: 'refuse', message: 'OCI index found, but accept header does not support OCI indexes' };
  if (byTag && m.mediaType === MediaType.DockerManifestList && !accepted.has(MediaType.DockerManifestList)) {
    const parsed = parseManifest(m.bytes, m.mediaType);
    const child =
      parsed.kind === 'index'
        ? parsed.manifests.find((d) => d.platform?.os === 'linux' && d.platform.architecture === 'amd64')
        : undefined;
    if (!child) return { kind: 'refuse', message: 'manifest unknown: the manifest list has no linux/amd64 image' };
    return { kind: 'platform', digest: child.digest };
  }
  return { kind: 'serve' };
}

export function formatPlatform(p: Platform): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}
