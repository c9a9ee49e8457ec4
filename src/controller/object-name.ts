/**
 * The CachedImage object name for an image: readable (`kubectl get ci` lists them) and stable, so
 * the controller, the webhook and `pullthrough warm` all land on the same object for the same image
 * however a pod spelled it. The name is the normalised reference squeezed into a DNS subdomain,
 * plus a short hash of the whole normalised reference, because squeezing loses information
 * (`a/b:c` and `a-b:c` squeeze alike) and long references are cut.
 */
import { createHash } from 'node:crypto';
import { formatReference, parseReference, type ImageReference } from '../oci/reference.js';

/** Readable part's length: names stay short in `kubectl get`; the hash keeps them unique. */
const READABLE_MAX = 52;

/**
 * The reference as the cache knows it: registry always named, Docker Hub's `library/` kept,
 * `:latest` when it has neither tag nor digest.
 */
export function canonicalImage(image: string | ImageReference): string {
  return formatReference(typeof image === 'string' ? parseReference(image) : image);
}

export function cachedImageName(image: string | ImageReference): string {
  const canonical = canonicalImage(image);
  const hash = createHash('sha256').update(canonical).digest('hex').slice(0, 10);
  const readable = canonical
    .replace(/^docker\.io\/library\//, '')
    .replace(/^docker\.io\//, '')
    .replace(/@sha256:([0-9a-f]{12})[0-9a-f]*$/, '-$1')
    .toLowerCase()
    .replace(/[^a-z0-9.]+/g, '-')
    .slice(0, READABLE_MAX)
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '');
  return readable === '' ? hash : `${readable}-${hash}`;
}
