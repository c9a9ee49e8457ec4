/**
 * Image references as the Docker/OCI tooling parses them (distribution/reference), normalised the
 * way containerd's CRI plugin does: no domain -> docker.io, single Docker Hub component -> library/,
 * index.docker.io -> docker.io, host names lower-cased.
 */
import { OciError } from './errors.js';
import { parseDigest } from './digest.js';

export const DOCKER_HUB = 'docker.io';
export const DOCKER_HUB_ENDPOINT = 'registry-1.docker.io';
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io']);

export interface ImageReference {
  /** Registry host, with `:port` when one was given; lower-case; Docker Hub is `docker.io`. */
  readonly registry: string;
  /** Repository path inside the registry, e.g. `library/nginx`. */
  readonly repository: string;
  readonly tag?: string;
  readonly digest?: string;
}

const pathComponent = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const tagPattern = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const hostLabel = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;
const ipv4 = /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
/** The longest repository name distribution accepts (registry part excluded). */
export const MAX_NAME_LENGTH = 255;

export function isValidTag(tag: string): boolean {
  return tagPattern.test(tag);
}

export function isValidRepository(repository: string): boolean {
  if (repository.length === 0 || repository.length > MAX_NAME_LENGTH) return false;
  return repository.split('/').every((c) => pathComponent.test(c));
}

export function isValidPathComponent(component: string): boolean {
  return pathComponent.test(component);
}

export interface RegistryHost {
  /** host without port; IPv6 keeps its brackets. */
  readonly host: string;
  readonly port?: number;
  readonly kind: 'name' | 'ipv4' | 'ipv6';
}

/** Parses `host[:port]` as it may appear as the domain of an image reference. Lower-cases names. */
export function parseRegistryHost(s: string): RegistryHost | undefined {
  if (s.length === 0 || s.length > 262) return undefined;
  let host = s;
  let portText: string | undefined;
  if (s.startsWith('[')) {
    const end = s.indexOf(']');
    if (end < 0) return undefined;
    host = s.slice(0, end + 1);
    const rest = s.slice(end + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) return undefined;
      portText = rest.slice(1);
    }
    if (!/^\[[0-9a-fA-F:.]+\]$/.test(host) || !host.includes(':')) return undefined;
  } else {
    const i = s.lastIndexOf(':');
    if (i >= 0) {
      host = s.slice(0, i);
      portText = s.slice(i + 1);
    }
  }
  let port: number | undefined;
  if (portText !== undefined) {
    if (!/^[1-9]\d{0,4}$/.test(portText)) return undefined;
    port = Number(portText);
    if (port > 65535) return undefined;
  }
  if (host.startsWith('[')) return { host: host.toLowerCase(), port, kind: 'ipv6' };
  host = host.toLowerCase();
  if (ipv4.test(host)) return { host, port, kind: 'ipv4' };
  if (host.length > 253 || !host.split('.').every((l) => hostLabel.test(l))) return undefined;
  // A last label of digits only that is not a dotted quad is neither a name nor an address.
  if (/^\d+$/.test(host.split('.').at(-1) ?? '')) return undefined;
  return { host, port, kind: 'name' };
}

export function formatRegistryHost(h: RegistryHost): string {
  return h.port === undefined ? h.host : `${h.host}:${h.port}`;
}

/** Canonical registry name: lower case, Docker Hub aliases folded into `docker.io`. */
export function normalizeRegistry(s: string): string | undefined {
  const h = parseRegistryHost(s);
  if (!h) return undefined;
  const out = formatRegistryHost(h);
  return DOCKER_HUB_ALIASES.has(out) ? DOCKER_HUB : out;
}

function looksLikeDomain(first: string): boolean {
  return first.includes('.') || first.includes(':') || first === 'localhost' || first !== first.toLowerCase();
}

/** Parses an image reference; throws OciError NAME_INVALID / DIGEST_INVALID on anything malformed. */
export function parseReference(input: string): ImageReference {
  const bad = (why: string): never => {
    throw new OciError('NAME_INVALID', `invalid image reference ${JSON.stringify(input.slice(0, 300))}: ${why}`);
  };
  if (input.length === 0 || input.length > 1024) bad('empty or too long');
  // eslint-disable-next-line no-control-regex -- control characters are exactly what this refuses
  if (/[\s\u0000-\u001f\u007f]/.test(input)) bad('contains white space or control characters');
  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = parseDigest(rest.slice(at + 1)).value;
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isValidTag(tag)) bad(`invalid tag ${JSON.stringify(tag)}`);
  }
  const slash = rest.indexOf('/');
  let registry = DOCKER_HUB;
  let repository = rest;
  if (slash >= 0 && looksLikeDomain(rest.slice(0, slash))) {
    const r = normalizeRegistry(rest.slice(0, slash));
    if (r === undefined) bad(`invalid registry host ${JSON.stringify(rest.slice(0, slash))}`);
    registry = r as string;
    repository = rest.slice(slash + 1);
  }
  if (registry === DOCKER_HUB && repository !== '' && !repository.includes('/')) repository = `library/${repository}`;
  if (!isValidRepository(repository)) bad('invalid repository name');
  return { registry, repository, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}) };
}

/** `registry/repository[:tag][@digest]`, fully qualified. A reference with neither gets `:latest`. */
export function formatReference(ref: ImageReference, opts: { defaultTag?: boolean } = {}): string {
  let s = `${ref.registry}/${ref.repository}`;
  if (ref.tag !== undefined) s += `:${ref.tag}`;
  else if (ref.digest === undefined && opts.defaultTag !== false) s += ':latest';
  if (ref.digest !== undefined) s += `@${ref.digest}`;
  return s;
}
