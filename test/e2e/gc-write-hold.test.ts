/**
 * A proxy wired as `pullthrough proxy` wires it (startWriteHold, --gc-lease-namespace) against
 * the fake API server and a real cache registry: while a collector holds the collection Lease,
 * pulls are served but nothing is written to the cache registry; once the Lease is released, the
 * held writes go on.
 */
import t from 'tap';
import { request } from 'undici';
import { startWriteHold } from '../../src/cli/proxy.js';
import { readProxyConfig } from '../../src/config/proxy.js';
import { holdGcLease } from '../../src/kube/gc-lease.js';
import { createKubeClient, silentLogger } from '../../src/kube/index.js';
import { createLogger } from '../../src/observability/logger.js';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { Lab, registryRequests } from '../helpers/lab.js';
import { startProxy } from '../helpers/proxy.js';
import { eventually } from '../helpers/wait.js';

const ORIGIN = 15530;
const CACHE = 15531;
const NS = 'pullthrough';
const lab = new Lab('gc-write-hold');
const originHost = `127.0.0.1:${ORIGIN}`;
const enc = `127.0.0.1_${ORIGIN}`;

t.teardown(() => lab.cleanup());

t.test('writes to the cache registry wait while the collection Lease is held', async (t) => {
  const server = await FakeApiServer.start();
  t.teardown(() => server.close());
  const kubeconfig = await writeKubeconfig(server);
  await lab.registry('origin', ORIGIN);
  const cacheDir = (await lab.registry('cache', CACHE)).dir;
  const image = await lab.image(originHost, 'team/app', 'v1', ['--layers', '1', '--layer-mb', '1']);
  const flags = [
    '--data-dir',
    lab.tempDir('pt-hold'),
    '--cache-registry',
    `http://127.0.0.1:${CACHE}`,
    '--insecure-registries',
    originHost,
    '--kubeconfig',
    kubeconfig,
  ];
  // POD_NAMESPACE stands for the flag, as the manifests set it.
  const { config } = readProxyConfig(flags, { POD_NAMESPACE: NS });
  t.equal(config.gcLeaseNamespace, NS, 'the Lease namespace defaults to POD_NAMESPACE');
  const hold = await startWriteHold(config, undefined, createLogger('silent'));
  t.ok(hold, 'a proxy with a cache registry and a Lease namespace reads the Lease');
  t.teardown(() => hold?.stop());
  const proxy = await startProxy(flags, { extraDeps: () => (hold ? { writeHold: hold } : {}) });
  t.teardown(() => proxy.stop());

  const client = createKubeClient({ kubeconfig });
  const opts = { api: client.coordination, namespace: NS, identity: 'collector', log: silentLogger };
  const manifestPuts = () =>
    registryRequests(cacheDir).filter((r) => r.method === 'PUT' && r.path.includes('/manifests/')).length;
  await holdGcLease({ ...opts, leaseDurationMs: 3000, renewDeadlineMs: 2000, retryPeriodMs: 200 }, async () => {
    await eventually(() => hold?.held === true, 'the proxy to read the Lease held', 30_000);
    const res = await request(`${proxy.url}/v2/${enc}/team/app/manifests/v1`, { headers: { accept: MANIFEST_ACCEPT } });
    await res.body.dump();
    t.equal(res.statusCode, 200, 'a pull is served while writes are held');
    await eventually(() => proxy.pull.persister.pending > 0, 'the manifest write to be under way', 30_000);
    t.equal(manifestPuts(), 0, 'nothing was written to the cache registry while the Lease is held');
    t.ok(proxy.pull.persister.pending > 0, 'the manifest write still waits at the end of the collection');
  });
  await proxy.settle();
  t.ok(manifestPuts() > 0, 'the held write went on once the Lease was released');
  const cached = await request(`http://127.0.0.1:${CACHE}/v2/${enc}/team/app/manifests/${image.digest}`, {
    method: 'HEAD',
    headers: { accept: MANIFEST_ACCEPT },
  });
  await cached.body.dump();
  t.equal(cached.statusCode, 200, 'the image is in the cache registry');
});

t.test('without a Lease namespace writes never wait', async (t) => {
  const { config } = readProxyConfig(['--cache-registry', `http://127.0.0.1:${CACHE}`], {});
  t.equal(await startWriteHold(config, undefined, createLogger('silent')), undefined);
});
