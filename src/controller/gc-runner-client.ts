/**
 * The controller's side of the gc-runner sidecar (src/cli/gc-runner.ts): asks it to run
 * distribution's garbage-collect and waits for the outcome. Aborting the signal (the collection
 * Lease lost) closes the request, and the runner kills the run.
 */
import { request, type Dispatcher } from 'undici';
import { CollectorError } from './registry-collector.js';

export function runnerGarbageCollect(
  runnerUrl: string,
  dispatcher?: Dispatcher,
): (signal: AbortSignal) => Promise<{ blobsDeleted: number }> {
  const url = new URL('/collect', runnerUrl).toString();
  return async (signal) => {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, {
        method: 'POST',
        signal,
        // A garbage-collect over a large store takes long; the runner's own --timeout bounds it.
        headersTimeout: 0,
        bodyTimeout: 0,
        ...(dispatcher ? { dispatcher } : {}),
      });
    } catch (err) {
      if (signal.aborted) throw err;
      throw new CollectorError('COLLECT_FAILED', `gc-runner ${url} unreachable: ${(err as Error).message}`);
    }
    const text = await res.body.text();
    if (res.statusCode !== 200) {
      throw new CollectorError('COLLECT_FAILED', `gc-runner answered ${res.statusCode}: ${text.slice(0, 400)}`);
    }
    const body = JSON.parse(text) as { blobsDeleted?: number };
    return { blobsDeleted: body.blobsDeleted ?? 0 };
  };
}
