/**
 * The embedded store's budget (--max-cache-size): how many bytes of content it may hold, where
 * eviction stops, and what is too large to cache at all. Also how big an image is, from its
 * manifest, for the check at start that the budget holds the largest image already stored.
 */
import { statfsSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

export interface StoreBudget {
  /** Stored content never exceeds this (bytes). */
  readonly maxBytes: number;
  /** Eviction frees space down to this (bytes); no single file or image larger than it is stored. */
  readonly lowWaterBytes: number;
}

export type CacheBudgetCode = 'TOO_LARGE';

/** Content the budget cannot hold: it is served uncached. */
export class CacheBudgetError extends Error {
  readonly code: CacheBudgetCode = 'TOO_LARGE';
  readonly bytes: number;

  constructor(message: string, bytes: number) {
    super(message);
    this.name = 'CacheBudgetError';
    this.bytes = bytes;
  }
}

/**
 * The refusal of content of `bytes` the budget cannot hold, or undefined when it fits: anything
 * over the low-water mark would be evicted by the next commit (an image, its own layers on every
 * pull). `what` names it in the message: one file's bytes, or an image's with its config and layers.
 */
export function tooLarge(
  budget: StoreBudget,
  bytes: number,
  what: 'content' | 'image' = 'content',
): CacheBudgetError | undefined {
  if (bytes <= budget.lowWaterBytes) return undefined;
  const size = what === 'image' ? `an image of ${bytes} bytes` : `${bytes} bytes`;
  return new CacheBudgetError(
    `${size} is larger than the cache budget's low-water mark (${budget.lowWaterBytes} bytes)`,
    bytes,
  );
}

/**
 * The budget for `size` (bytes, or a share of the volume holding `dir`) with eviction down to
 * `lowWater` of it.
 */
export function resolveStoreBudget(
  size: { readonly bytes: number } | { readonly shareOfVolume: number },
  lowWater: number,
  dir: string,
): StoreBudget {
  let maxBytes: number;
  if ('bytes' in size) maxBytes = size.bytes;
  else {
    const s = statfsSync(dir);
    maxBytes = Math.floor(s.blocks * s.bsize * size.shareOfVolume);
  }
  return { maxBytes, lowWaterBytes: Math.floor(maxBytes * lowWater) };
}

/**
 * Why the store in `dir` cannot run with `budget`, or undefined: it already holds an image larger
 * than the low-water mark, which could never stay cached.
 */
export async function budgetRefusal(dir: string, budget: StoreBudget): Promise<string | undefined> {
  const largest = await largestStoredImage(dir);
  if (largest === undefined || largest.bytes <= budget.lowWaterBytes) return undefined;
  return (
    `the cache budget (${budget.maxBytes} bytes, evicting down to ${budget.lowWaterBytes}) is smaller than ` +
    `an image already in the store (${largest.digest}: ${largest.bytes} bytes with its layers); ` +
    'raise --max-cache-size or --cache-low-water'
  );
}

/** Config and layer digests of an image manifest; undefined for an index or anything else. */
export function imageBlobs(bytes: Buffer): { digest: string; size: number }[] | undefined {
  if (bytes.byteLength > MAX_MANIFEST_BYTES) return undefined;
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
  const d = doc as { config?: unknown; layers?: unknown };
  if (!isDescriptor(d.config) || !Array.isArray(d.layers)) return undefined;
  const layers = d.layers.filter(isDescriptor);
  return [d.config, ...layers].map((x) => ({ digest: x.digest, size: x.size }));
}

/** An image's bytes in the store: its manifest, config and layers. */
export function imageBytes(manifest: Buffer): number | undefined {
  const blobs = imageBlobs(manifest);
  return blobs?.reduce((sum, b) => sum + b.size, manifest.byteLength);
}

/** Manifests are small (distribution refuses over 4 MiB); larger content files are not read. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/** The largest image (manifest, config, layers) among the manifests in an embedded store's `blobs/`. */
export async function largestStoredImage(dir: string): Promise<{ digest: string; bytes: number } | undefined> {
  let largest: { digest: string; bytes: number } | undefined;
  for (const { digest, path, size } of await listContent(dir)) {
    if (size > MAX_MANIFEST_BYTES) continue;
    const bytes = imageBytes(await readFile(path).catch(() => Buffer.alloc(0)));
    if (bytes !== undefined && bytes > (largest?.bytes ?? 0)) largest = { digest, bytes };
  }
  return largest;
}

/** Every content file of an embedded store, with its size and modification time. */
export async function listContent(
  dir: string,
): Promise<{ digest: string; path: string; size: number; mtimeMs: number }[]> {
  const out: { digest: string; path: string; size: number; mtimeMs: number }[] = [];
  const root = join(dir, 'blobs');
  for (const alg of await readdir(root).catch(() => [] as string[])) {
    for (const hex of await readdir(join(root, alg)).catch(() => [] as string[])) {
      const path = join(root, alg, hex);
      try {
        const s = await stat(path);
        if (s.isFile()) out.push({ digest: `${alg}:${hex}`, path, size: s.size, mtimeMs: s.mtimeMs });
      } catch {
        // Removed while listed: nothing to count.
      }
    }
  }
  return out;
}

function isDescriptor(x: unknown): x is { digest: string; size: number } {
  const d = x as { digest?: unknown; size?: unknown } | undefined;
  return typeof d?.digest === 'string' && typeof d.size === 'number' && Number.isFinite(d.size) && d.size >= 0;
}
