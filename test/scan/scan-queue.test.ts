/**
 * The scan queue's scheduling, with an in-memory CachedImage list: what is due (a cached digest
 * without a verdict for it, a verdict past the rescan interval, an error past the retry delay), and
 * a scan function that throws is logged, writes nothing and never becomes an unhandled rejection.
 */
import t from 'tap';
import type { CachedImage, CachedImageApi, StatusPatch } from '../../src/kube/cached-images.js';
import { silentLogger } from '../../src/kube/index.js';
import { ScanQueue } from '../../src/kube/scan-queue.js';
import type { ScanOutcome } from '../../src/scan/digest-scanner.js';

const NOW = Date.parse('2026-12-06T12:00:00Z');
const HOUR = 3_600_000;
const d = (c: string) => `sha256:${c.repeat(64)}`;
const ci = (name: string, digest: string | undefined, scan?: object): CachedImage =>
  ({
    metadata: { name },
    spec: { image: `docker.io/team/${name}:v1` },
    status: { phase: 'Cached', ...(digest ? { digest } : {}), ...(scan ? { scan } : {}) },
  }) as CachedImage;
const scanned = (digest: string, at: number, result = 'Scanned') => ({
  digest,
  digests: [digest],
  result,
  scannedAt: new Date(at).toISOString(),
});

function setup(scan: (repo: string, digest: string) => Promise<ScanOutcome>) {
  const patches: [string, StatusPatch][] = [];
  const api = {
    patchStatus: (name: string, patch: StatusPatch) => {
      patches.push([name, patch]);
      return Promise.resolve({} as CachedImage);
    },
  } as unknown as CachedImageApi;
  const asked: string[] = [];
  const q = new ScanQueue({
    api,
    scan: (repo, digest) => {
      asked.push(`${repo}@${digest}`);
      return scan(repo, digest);
    },
    rescanIntervalMs: 24 * HOUR,
    retryMs: HOUR,
    log: silentLogger,
    concurrency: 10,
    now: () => NOW,
  });
  return { q, patches, asked };
}

t.test('what is due', async (t) => {
  const { q, asked, patches } = setup((_, digest) =>
    Promise.resolve({
      record: { state: 'failed', digest, code: 'SCANNER_TIMEOUT', message: 'slow', at: new Date(NOW).toISOString() },
      digests: [digest],
    }),
  );
  q.schedule(
    [
      ci('new', d('a')),
      ci('uncached', undefined),
      ci('fresh', d('b'), scanned(d('b'), NOW - HOUR)),
      ci('old', d('c'), scanned(d('c'), NOW - 25 * HOUR)),
      ci('moved', d('d'), scanned(d('0'), NOW - HOUR)),
      ci('error-recent', d('e'), scanned(d('e'), NOW - HOUR / 2, 'Error')),
      ci('error-old', d('f'), scanned(d('f'), NOW - 2 * HOUR, 'Error')),
    ],
    new AbortController().signal,
  );
  await q.idle();
  t.same(
    asked.sort(),
    ['new', 'old', 'moved', 'error-old'].map((n, i) => `docker.io/team/${n}@${d('acdf'[i] as string)}`).sort(),
  );
  t.equal(patches.length, 4);
  t.match(patches[0]?.[1], { scan: { result: 'Error', error: { code: 'SCANNER_TIMEOUT' } } });
});

t.test('a scan function that throws writes nothing and is not an unhandled rejection', async (t) => {
  const { q, patches } = setup(() => Promise.reject(new Error('bug')));
  q.schedule([ci('x', d('a'))], new AbortController().signal);
  await q.idle();
  t.equal(patches.length, 0);
});
