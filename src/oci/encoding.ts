/**
 * The rewritten-image encoding shared by the node proxy and the admission webhook:
 *
 *   <registry>/<repository>[:tag][@digest]  ->  <proxy-host>/<encoded registry>/<repository>[:tag][@digest]
 *
 * The registry becomes the first path component of the new name, so it must be a valid
 * distribution path component ([a-z0-9]+ joined by `.`, `_`, `__` or dashes). Host names are
 * lower-cased (they are case-insensitive) and the port separator `:` becomes `_`, a character no
 * host name or IPv4 address contains; so the mapping is one-to-one and a first component is an
 * encoded registry exactly when it holds a `.` or one `_` before a port, or is `localhost`.
 * Docker Hub's short names are normalised first (`nginx` -> `docker.io/library/nginx`).
 *
 * | image                               | encoded name                                  |
 * |-------------------------------------|-----------------------------------------------|
 * | nginx                               | docker.io/library/nginx:latest                |
 * | index.docker.io/library/alpine:3    | docker.io/library/alpine:3                    |
 * | quay.io/org/app:1                   | quay.io/org/app:1                             |
 * | myreg:5000/team/app:1               | myreg_5000/team/app:1                         |
 * | localhost:5000/foo                  | localhost_5000/foo:latest                     |
 * | localhost/foo                       | localhost/foo:latest                          |
 * | 10.0.0.5:5000/app@sha256:...        | 10.0.0.5_5000/app@sha256:...                  |
 * | ghcr.io/o/a:v1@sha256:...           | ghcr.io/o/a:v1@sha256:...                     |
 * | [::1]:5000/app                      | not encodable (IPv6 literal)                  |
 *
 * Cache repositories use the same encoded name, so the shared registry holds
 * `docker.io/library/nginx` and `myreg_5000/team/app` side by side without collisions.
 */
import {
  formatReference,
  isValidRepository,
  MAX_NAME_LENGTH,
  normalizeRegistry,
  parseRegistryHost,
  parseReference,
  type ImageReference,
} from './reference.js';
import { isOciError } from './errors.js';

export type EncodeResult = { ok: true; value: string } | { ok: false; reason: string };

export function encodeRegistry(registry: string): EncodeResult {
  const h = parseRegistryHost(registry);
  if (!h) return { ok: false, reason: `invalid registry host ${JSON.stringify(registry)}` };
  if (h.kind === 'ipv6')
    return { ok: false, reason: `IPv6 registry address ${registry} cannot be written as a repository path component` };
  const value = h.port === undefined ? h.host : `${h.host}_${h.port}`;
  if (!value.includes('.') && !value.includes('_') && value !== 'localhost') {
    // A bare dotless name: a domain only when written with upper case (`MyReg/app`), and then
    // it has no encoded form that could not be read as a Docker Hub repository.
    return { ok: false, reason: `registry ${registry} has no dot or port and would read as a repository` };
  }
  return { ok: true, value };
}

/** The registry an encoded first path component stands for, or undefined if it is not one. */
export function decodeRegistry(component: string): string | undefined {
  let hostPart = component;
  let port = '';
  const us = component.indexOf('_');
  if (us >= 0) {
    if (us !== component.lastIndexOf('_')) return undefined;
    hostPart = component.slice(0, us);
    port = component.slice(us + 1);
    if (!/^[1-9]\d{0,4}$/.test(port) || Number(port) > 65535) return undefined;
  } else if (!component.includes('.') && component !== 'localhost') {
    return undefined;
  }
  if (hostPart !== hostPart.toLowerCase()) return undefined;
  const h = parseRegistryHost(port ? `${hostPart}:${port}` : hostPart);
  if (!h || h.kind === 'ipv6') return undefined;
  return normalizeRegistry(port ? `${hostPart}:${port}` : hostPart);
}

/** The repository name used for an origin repository in the cache (and after the proxy host). */
export function cacheRepositoryName(registry: string, repository: string): string {
  const enc = encodeRegistry(registry);
  if (!enc.ok) throw new Error(enc.reason);
  return `${enc.value}/${repository}`;
}

export function encodeReference(ref: ImageReference, proxyHost: string): EncodeResult {
  const enc = encodeRegistry(ref.registry);
  if (!enc.ok) return enc;
  const name = `${enc.value}/${ref.repository}`;
  if (name.length > MAX_NAME_LENGTH)
    return { ok: false, reason: `encoded name would be ${name.length} characters, over ${MAX_NAME_LENGTH}` };
  return { ok: true, value: formatReference({ ...ref, registry: proxyHost, repository: name }) };
}

/** Encodes an image string as written in a pod spec. */
export function encodeImage(image: string, proxyHost: string): EncodeResult {
  let ref: ImageReference;
  try {
    ref = parseReference(image);
  } catch (err) {
    return { ok: false, reason: isOciError(err) ? err.message : String(err) };
  }
  return encodeReference(ref, proxyHost);
}

/** Splits an encoded name (`<encoded registry>/<repository>`) into origin registry and repository. */
export function decodeName(name: string): { registry: string; repository: string } | undefined {
  const slash = name.indexOf('/');
  if (slash < 0) return undefined;
  const registry = decodeRegistry(name.slice(0, slash));
  const repository = name.slice(slash + 1);
  if (registry === undefined || !isValidRepository(repository)) return undefined;
  return { registry, repository };
}

/**
 * The origin reference a rewritten reference stands for. `proxyHost`, when given, must match the
 * reference's own domain; without it any domain is accepted and dropped.
 */
export function decodeImage(
  rewritten: string,
  proxyHost?: string,
): { ok: true; value: ImageReference } | { ok: false; reason: string } {
  let ref: ImageReference;
  try {
    ref = parseReference(rewritten);
  } catch (err) {
    return { ok: false, reason: isOciError(err) ? err.message : String(err) };
  }
  if (proxyHost !== undefined && ref.registry !== normalizeRegistry(proxyHost)) {
    return { ok: false, reason: `${rewritten} does not point at the proxy ${proxyHost}` };
  }
  const d = decodeName(ref.repository);
  if (!d) return { ok: false, reason: `${ref.repository} does not start with an encoded registry` };
  const origin: ImageReference = {
    registry: d.registry,
    repository: d.registry === 'docker.io' && !d.repository.includes('/') ? `library/${d.repository}` : d.repository,
    ...(ref.tag !== undefined ? { tag: ref.tag } : {}),
    ...(ref.digest !== undefined ? { digest: ref.digest } : {}),
  };
  return { ok: true, value: origin };
}
