/**
 * Which origin repositories a pod uses: every container, init container and ephemeral container
 * image, read both as written (pods the webhook did not rewrite, or mirror mode) and decoded when
 * it points at the node proxy, plus the originals the webhook recorded in its annotation. A
 * garbled image or annotation is skipped: a pod's own fields can never make lookups fail.
 */
import type * as k8s from '@kubernetes/client-node';
import { decodeImage } from '../oci/encoding.js';
import { formatReference, normalizeRegistry, parseReference, parseRegistryHost } from '../oci/reference.js';
import { ORIGINAL_IMAGES_ANNOTATION } from '../webhook/policy.js';
import type { ImageRepository } from './types.js';

/** Whether a registry is the node proxy, i.e. images under it are rewritten ones to decode. */
export type ProxyRegistryTest = (registry: string) => boolean;

/** The proxy is reached on the node's loopback (`localhost:7439`), whatever the port. */
export const isLoopbackRegistry: ProxyRegistryTest = (registry) => {
  const h = parseRegistryHost(registry);
  return h !== undefined && (h.host === 'localhost' || h.host === '127.0.0.1' || h.host === '[::1]');
};

export function repositoryKey(registry: string, repository: string): string | undefined {
  const r = normalizeRegistry(registry);
  if (r === undefined) return undefined;
  const repo = r === 'docker.io' && !repository.includes('/') ? `library/${repository}` : repository;
  return `${r}/${repo}`;
}

function fromImage(image: string, isProxy: ProxyRegistryTest, out: Map<string, ImageRepository>): void {
  let ref;
  try {
    ref = parseReference(image);
  } catch {
    return;
  }
  const add = (registry: string, repository: string): void => {
    const key = repositoryKey(registry, repository);
    if (key !== undefined) out.set(key, { registry, repository });
  };
  add(ref.registry, ref.repository);
  if (isProxy(ref.registry)) {
    const d = decodeImage(image);
    if (d.ok) add(d.value.registry, d.value.repository);
  }
}

function annotatedOriginals(pod: k8s.V1Pod): string[] {
  const raw = pod.metadata?.annotations?.[ORIGINAL_IMAGES_ANNOTATION];
  if (raw === undefined) return [];
  try {
    const parsed: unknown = JSON.parse(raw);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return [];
    return Object.values(parsed).filter((v): v is string => typeof v === 'string');
  } catch {
    return [];
  }
}

export function podImages(pod: k8s.V1Pod, isProxy: ProxyRegistryTest = isLoopbackRegistry): ImageRepository[] {
  const out = new Map<string, ImageRepository>();
  const spec = pod.spec;
  const containers = [
    ...(spec?.containers ?? []),
    ...(spec?.initContainers ?? []),
    ...(spec?.ephemeralContainers ?? []),
  ];
  for (const c of containers) if (typeof c.image === 'string') fromImage(c.image, isProxy, out);
  for (const image of annotatedOriginals(pod)) fromImage(image, isProxy, out);
  return [...out.values()];
}

/**
 * The images a pod uses as the origin names them, each fully qualified (`docker.io/library/nginx:
 * latest`): rewritten images decoded back, the webhook's recorded originals, the rest as written.
 */
export function podImageReferences(pod: k8s.V1Pod, isProxy: ProxyRegistryTest = isLoopbackRegistry): string[] {
  const out = new Set<string>();
  const spec = pod.spec;
  const containers = [
    ...(spec?.containers ?? []),
    ...(spec?.initContainers ?? []),
    ...(spec?.ephemeralContainers ?? []),
  ];
  const images = [
    ...containers.flatMap((c) => (typeof c.image === 'string' ? [c.image] : [])),
    ...annotatedOriginals(pod),
  ];
  for (const image of images) {
    try {
      const ref = parseReference(image);
      if (!isProxy(ref.registry)) {
        out.add(formatReference(ref));
        continue;
      }
      const d = decodeImage(image);
      if (d.ok) out.add(formatReference(d.value));
    } catch {
      // A garbled image names nothing the cache could hold.
    }
  }
  return [...out].sort();
}
