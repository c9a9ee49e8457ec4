/**
 * `pullthrough warm`: a list of image references (a file, or `kubectl get pods -A -o jsonpath=...`
 * on standard input) becomes one CachedImage each, which the controller then fetches into the
 * cache. Each reference is checked with the proxy's own parser first, so a typo is reported with
 * its line instead of becoming a Failed object.
 */
import type { CachedImageApi, CachedImageSpec } from '../kube/cached-images.js';
import { describeKubeError } from '../kube/errors.js';
import { parseReference } from '../oci/reference.js';
import { cachedImageName, canonicalImage } from './object-name.js';

export interface WarmListEntry {
  readonly line: number;
  readonly image: string;
}

export interface WarmOutcome {
  readonly line: number;
  readonly input: string;
  /** `created`, `exists` (the object was there: left as it is), or why it was not created. */
  readonly result: 'created' | 'exists' | { readonly error: string };
  readonly name?: string;
}

/** One reference per line or per whitespace-separated word; blank lines and `#` comments skipped. */
export function readWarmList(text: string): WarmListEntry[] {
  const out: WarmListEntry[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*$/, '').trim();
    if (line === '') return;
    for (const image of line.split(/\s+/)) out.push({ line: i + 1, image });
  });
  return out;
}

export async function createCachedImages(
  api: CachedImageApi,
  entries: readonly WarmListEntry[],
  extra: Omit<CachedImageSpec, 'image'>,
): Promise<WarmOutcome[]> {
  const outcomes: WarmOutcome[] = [];
  const seen = new Set<string>();
  for (const { line, image } of entries) {
    let canonical: string;
    try {
      canonical = canonicalImage(parseReference(image));
    } catch (err) {
      outcomes.push({ line, input: image, result: { error: (err as Error).message } });
      continue;
    }
    const name = cachedImageName(canonical);
    if (seen.has(name)) continue;
    seen.add(name);
    try {
      const { created } = await api.create(name, { image: canonical, ...extra });
      outcomes.push({ line, input: image, name, result: created ? 'created' : 'exists' });
    } catch (err) {
      outcomes.push({ line, input: image, name, result: { error: describeKubeError(err).reason } });
    }
  }
  return outcomes;
}
