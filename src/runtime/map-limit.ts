/**
 * Runs `fn` over `items` with at most `limit` calls under way, results in the items' order: work
 * that asks one server many small things (a registry's manifests, its deletes, an image's blobs)
 * overlaps the round trips without flooding it. The first rejection rejects the whole and starts
 * no further call; calls already started run to their end.
 */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i] as T);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
