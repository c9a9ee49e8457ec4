/**
 * Leader election on a Lease through the real client against the fake API server: one leader at
 * a time among candidates, a stopped leader hands over at once, a killed one (no release) is
 * replaced after the lease duration, and a leader cut off from the API server stops leading
 * within its renew deadline, before anyone else may start.
 */
import t, { type Test } from 'tap';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { createKubeClient, LeaderElector, silentLogger, type LeaseApi } from '../../src/kube/index.js';
import { eventually } from './helpers.js';

const timing = { leaseDurationMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 100 };

interface Candidate {
  readonly elector: LeaderElector;
  readonly stop: AbortController;
  readonly done: Promise<void>;
  /** Leadership spans seen by the lead function: [start, end] on Date.now(). */
  readonly spans: [number, number | undefined][];
  /** While `cut`, every Lease call fails as if the API server were unreachable. */
  readonly link: { cut: boolean };
}

async function candidates(t: Test, n: number, options: { releaseOnStop?: boolean } = {}) {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  const client = createKubeClient({ kubeconfig: await writeKubeconfig(api) });
  const list: Candidate[] = [];
  for (let i = 0; i < n; i++) {
    const link = { cut: false };
    const spans: [number, number | undefined][] = [];
    const gate = <T>(call: () => Promise<T>): Promise<T> =>
      link.cut ? Promise.reject(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })) : call();
    const leases: LeaseApi = {
      readNamespacedLease: (r) => gate(() => client.coordination.readNamespacedLease(r)),
      createNamespacedLease: (r) => gate(() => client.coordination.createNamespacedLease(r)),
      replaceNamespacedLease: (r) => gate(() => client.coordination.replaceNamespacedLease(r)),
    };
    const elector = new LeaderElector({
      api: leases,
      namespace: 'pullthrough',
      name: 'pullthrough-controller',
      identity: `controller-${i}`,
      log: silentLogger,
      ...timing,
      ...options,
    });
    const stop = new AbortController();
    const done = elector.run(stop.signal, async (leading) => {
      const span: [number, number | undefined] = [Date.now(), undefined];
      spans.push(span);
      await new Promise<void>((resolve) => leading.addEventListener('abort', () => resolve(), { once: true }));
      span[1] = Date.now();
    });
    list.push({ elector, stop, done, spans, link });
  }
  t.teardown(async () => {
    for (const c of list) c.stop.abort();
    await Promise.all(list.map((c) => c.done));
  });
  return { api, list };
}

const leaders = (list: Candidate[]) => list.filter((c) => c.elector.isLeader);

/** Waits until exactly one candidate (other than `not`) leads, and returns it. */
const soleLeader = (list: Candidate[], not?: Candidate): Promise<Candidate> =>
  eventually(() => {
    const l = leaders(list);
    return l.length === 1 && l[0] !== not ? l[0] : undefined;
  }, 'one leader');

/** No two candidates' leadership spans overlap. */
function overlaps(list: Candidate[]): string[] {
  const spans = list.flatMap((c, i) => c.spans.map(([a, b]) => ({ i, a, b: b ?? Infinity })));
  const bad: string[] = [];
  for (const x of spans) for (const y of spans) if (x.i < y.i && x.a < y.b && y.a < x.b) bad.push(`${x.i}/${y.i}`);
  return bad;
}

t.test('three candidates: exactly one leads; a stopped leader hands over at once', async (t) => {
  const { api, list } = await candidates(t, 3);
  const first = await soleLeader(list);
  // Renewals go on for several periods; the followers never take over meanwhile.
  const rv = api.store.resourceVersion;
  await eventually(() => api.store.resourceVersion >= rv + 5, 'five renewals');
  t.equal(leaders(list).length, 1, 'still one leader after several renewals');
  t.equal(leaders(list)[0], first, 'and the same one');
  const lease = await createKubeClient({ kubeconfig: await writeKubeconfig(api) }).coordination.readNamespacedLease({
    namespace: 'pullthrough',
    name: 'pullthrough-controller',
  });
  t.equal(lease.spec?.holderIdentity, `controller-${list.indexOf(first)}`);
  first.stop.abort();
  await first.done;
  const released = Date.now();
  const second = await soleLeader(list, first);
  t.not(second, first);
  t.ok(Date.now() - released < timing.leaseDurationMs, 'a released lease is taken without waiting it out');
  t.same(overlaps(list), [], 'no two leaders at once');
});

t.test('a killed leader (no release) is replaced after the lease duration, not before', async (t) => {
  const { list } = await candidates(t, 2, { releaseOnStop: false });
  const first = await soleLeader(list);
  first.stop.abort();
  await first.done;
  const killed = Date.now();
  const second = await soleLeader(list, first);
  t.not(second, first);
  const waited = Date.now() - killed;
  t.ok(waited >= timing.leaseDurationMs - timing.retryPeriodMs, `waited out the lease (${waited} ms)`);
  t.same(overlaps(list), [], 'no two leaders at once');
});

t.test('a leader cut off from the API server stops leading before another starts', async (t) => {
  const { list } = await candidates(t, 2);
  const first = await soleLeader(list);
  first.link.cut = true;
  await eventually(() => !first.elector.isLeader, 'the cut-off leader to step down');
  await soleLeader(list, first);
  t.same(overlaps(list), [], 'the spans do not overlap: the old leader stopped first');
});

t.test('the renew deadline must be shorter than the lease duration', async (t) => {
  const api = { readNamespacedLease: () => Promise.reject(new Error('unused')) } as unknown as LeaseApi;
  t.throws(
    () =>
      new LeaderElector({
        api,
        namespace: 'ns',
        name: 'l',
        identity: 'a',
        log: silentLogger,
        leaseDurationMs: 1000,
        renewDeadlineMs: 1000,
      }),
    /renew deadline/,
  );
});
