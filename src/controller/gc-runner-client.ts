/**
 * The controller's side of the gc-runner sidecar (src/cli/gc-runner.ts): asks it to run
 * distribution's garbage-collect and waits for the outcome (aborting the signal, the collection
 * Lease lost, closes the request, and the runner kills the run), and asks what the registry's
 * storage holds.
 */
import { request, type Dispatcher } from 'undici';
import { readCapped } from '../oci/registry-client.js';
import { CollectorError, MAX_ANSWER_BYTES, type RegistryStorage } from './registry-collector.js';

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
    let text: string;
    try {
      text = await readCapped(res.body, MAX_ANSWER_BYTES);
    } catch (err) {
      throw new CollectorError('COLLECT_FAILED', `gc-runner ${url}: ${(err as Error).message}`);
    }
    if (res.statusCode !== 200) {
      throw new CollectorError('COLLECT_FAILED', `gc-runner answered ${res.statusCode}: ${text.slice(0, 400)}`);
    }
    const body = JSON.parse(text) as { blobsDeleted?: number };
    return { blobsDeleted: body.blobsDeleted ?? 0 };
  };
}

/** Reads the registry's storage through the gc-runner (a statfs: cheap). */
export function runnerStorage(runnerUrl: string, dispatcher?: Dispatcher): () => Promise<RegistryStorage> {
  const url = new URL('/storage', runnerUrl).toString();
  return async () => {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, {
        // Once a pass: a kept-alive connection would outlive a restarted runner and fail the next read.
        reset: true,
        headersTimeout: 10_000,
        bodyTimeout: 10_000,
        ...(dispatcher ? { dispatcher } : {}),
      });
    } catch (err) {
      throw new CollectorError('STORAGE_UNKNOWN', `gc-runner ${url} unreachable: ${(err as Error).message}`);
    }
    let text: string;
    try {
      text = await readCapped(res.body, MAX_ANSWER_BYTES);
    } catch (err) {
      throw new CollectorError('STORAGE_UNKNOWN', `gc-runner ${url}: ${(err as Error).message}`);
    }
    if (res.statusCode !== 200) {
      throw new CollectorError('STORAGE_UNKNOWN', `gc-runner answered ${res.statusCode}: ${text.slice(0, 400)}`);
    }
    const body = JSON.parse(text) as Partial<{ kind: string; sizeBytes: number; freeBytes: number }>;
    if (body.kind === 'no-volume') return { kind: 'no-volume' };
    if (body.kind === 'volume' && Number.isFinite(body.sizeBytes) && Number.isFinite(body.freeBytes)) {
      return { kind: 'volume', sizeBytes: body.sizeBytes as number, freeBytes: body.freeBytes as number };
    }
    throw new CollectorError('STORAGE_UNKNOWN', `gc-runner ${url}: not a storage answer: ${text.slice(0, 200)}`);
  };
}
