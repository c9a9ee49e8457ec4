/** A failing store is a miss and a cool-down; a client that went away is neither. */
import t from 'tap';
import { ResilientStore } from '../../src/cache/resilient-store.js';
import type { Store } from '../../src/cache/store.js';
import { UpstreamError } from '../../src/oci/errors.js';

function storeThat(fail: (signal?: AbortSignal) => Error | undefined): Store {
  const never = async () => {
    throw new Error('not used');
  };
  return {
    kind: 'registry',
    ping: async () => undefined,
    statBlob: async () => undefined,
    openBlob: async (_repo, _digest, _range, signal) => {
      const err = fail(signal);
      if (err) throw err;
      return undefined;
    },
    putBlobFile: never,
    getManifest: never,
    putManifest: never,
    getTag: never,
    putTag: never,
    close: async () => undefined,
  };
}

t.test('an unreachable store: a miss, counted, then skipped for the cool-down', async (t) => {
  const failures: string[] = [];
  let calls = 0;
  const s = new ResilientStore(
    storeThat(() => {
      calls++;
      return new UpstreamError('cache', 'ECONNREFUSED');
    }),
    { storeFailed: (op) => failures.push(op), storeRecovered: () => undefined },
    60_000,
  );
  t.equal(await s.openBlob('r', 'sha256:x'), undefined);
  t.same(failures, ['openBlob']);
  t.equal(calls, 1, 'the first call reached the store');
  t.ok(s.degraded);
  t.equal(await s.openBlob('r', 'sha256:y'), undefined, 'the second call is a miss');
  t.equal(calls, 1, 'and never reached the store');
  t.same(failures, ['openBlob'], 'nor counted as another failure');
});

t.test('a client abort is passed on, not counted, and does not put the store on cool-down', async (t) => {
  const failures: string[] = [];
  const s = new ResilientStore(
    storeThat((signal) => (signal?.aborted ? new UpstreamError('cache', 'aborted') : undefined)),
    { storeFailed: (op) => failures.push(op), storeRecovered: () => undefined },
    60_000,
  );
  const abort = new AbortController();
  abort.abort();
  await t.rejects(s.openBlob('r', 'sha256:x', undefined, abort.signal));
  t.same(failures, []);
  t.notOk(s.degraded);
});

t.test('blobLocation: a store that does not say where its blobs are answers undefined, no failure', async (t) => {
  const failures: string[] = [];
  const s = new ResilientStore(
    storeThat(() => undefined),
    { storeFailed: (op) => failures.push(op), storeRecovered: () => undefined },
    60_000,
  );
  t.equal(await s.blobLocation('r', 'sha256:x'), undefined);
  t.same(failures, []);
  t.notOk(s.degraded);
});
