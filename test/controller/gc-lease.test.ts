/**
 * The collection Lease through the real client against the fake API server: writers wait while
 * a collector holds it and go on once it is released; a Lease that cannot be read holds writes; a
 * collector killed while holding it holds writes only until the Lease's duration passes, and a
 * restarted one takes it over.
 */
import t, { type Test } from 'tap';
import * as k8s from '@kubernetes/client-node';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { createKubeClient, silentLogger, type LeaseApi } from '../../src/kube/index.js';
import { holdGcLease, LeaseWriteHold } from '../../src/kube/gc-lease.js';
import { eventually } from '../helpers/wait.js';

const NS = 'pullthrough';
const timing = { leaseDurationMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 100 };

async function setup(t: Test): Promise<{ api: LeaseApi; link: { cut: boolean }; writer: LeaseWriteHold }> {
  const server = await FakeApiServer.start();
  t.teardown(() => server.close());
  const client = createKubeClient({ kubeconfig: await writeKubeconfig(server) });
  const link = { cut: false };
  const gate = <T>(call: () => Promise<T>): Promise<T> =>
    link.cut ? Promise.reject(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })) : call();
  const api: LeaseApi = {
    readNamespacedLease: (r) => gate(() => client.coordination.readNamespacedLease(r)),
    createNamespacedLease: (r) => gate(() => client.coordination.createNamespacedLease(r)),
    replaceNamespacedLease: (r) => gate(() => client.coordination.replaceNamespacedLease(r)),
  };
  const writer = new LeaseWriteHold({ api, namespace: NS, log: silentLogger, pollMs: 100 });
  writer.start();
  t.teardown(() => writer.stop());
  return { api, link, writer };
}

t.test('writers wait while the collector holds the Lease, and go on once it is released', async (t) => {
  const { api, writer } = await setup(t);
  await writer.clear();
  t.pass('no Lease: writes go on');
  let cleared = false;
  const opts = { api, namespace: NS, identity: 'collector-a', log: silentLogger, ...timing };
  const result = await holdGcLease(opts, async () => {
    await eventually(() => writer.held, 'the writer to see the Lease held', 10_000);
    void writer.clear().then(() => (cleared = true));
    // The collector renews while it works: the writer reads the Lease held, again and again.
    const reads = writer.reads;
    await eventually(() => writer.reads >= reads + 5, 'five more reads of the Lease', 10_000);
    t.equal(cleared, false, 'a write asked for during the collection is still waiting at its end');
    return 'collected';
  });
  t.equal(result, 'collected');
  await eventually(() => cleared, 'the waiting write to go on after the release', 10_000);
  t.pass('released: the waiting write went on');
});

t.test('a Lease that cannot be read holds writes', async (t) => {
  const { link, writer } = await setup(t);
  await writer.clear();
  link.cut = true;
  await eventually(() => writer.held, 'writes to be held while the API server is away', 10_000);
  let cleared = false;
  void writer.clear().then(() => (cleared = true));
  link.cut = false;
  await eventually(() => cleared, 'writes to go on once the Lease reads free again', 10_000);
  t.pass('held while unreadable, then free');
});

t.test('a collector killed while holding the Lease holds writes only for its duration', async (t) => {
  const { api, writer } = await setup(t);
  const now = new k8s.V1MicroTime(Date.now());
  const lease = new k8s.V1Lease();
  lease.metadata = Object.assign(new k8s.V1ObjectMeta(), { name: 'pullthrough-gc', namespace: NS });
  lease.spec = Object.assign(new k8s.V1LeaseSpec(), {
    holderIdentity: 'killed-collector',
    leaseDurationSeconds: 2,
    acquireTime: now,
    renewTime: now,
  });
  await api.createNamespacedLease({ namespace: NS, body: lease });
  await eventually(() => writer.held, 'the writer to see the Lease held', 10_000);
  await writer.clear();
  t.pass('the silent holder is ignored once its duration passes: writes go on');
  const opts = { api, namespace: NS, identity: 'restarted', log: silentLogger, ...timing };
  t.equal(await holdGcLease(opts, async () => 'finished'), 'finished', 'a restarted collector takes over and finishes');
});
