/**
 * The controller's leader scans what is cached: CachedImages with a cached digest in a lab cache
 * registry (an image, and a multi-platform index whose platform images are each scanned) get
 * `status.scan` from the test scanner adapter through the real client, once per digest, and the
 * index's verdict holds its children's findings. A replica runs against the fake API server.
 * Ports 15520 (cache registry), 15521 (adapter).
 */
import t from 'tap';
import { fastControllerConfig } from '../controller/config.js';
import { runController } from '../../src/controller/run.js';
import { createCachedImageApi, type CachedImage } from '../../src/kube/cached-images.js';
import { createKubeClient, silentLogger } from '../../src/kube/index.js';
import { ScanQueue } from '../../src/kube/scan-queue.js';
import { ScannerClient } from '../../src/scan/client.js';
import { DigestScanner } from '../../src/scan/digest-scanner.js';
import { registryPullCredentials } from '../../src/scan/pull-credential.js';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { Lab, labAvailable } from '../helpers/lab.js';
import { ScannerAdapter } from '../helpers/scanner-adapter.js';
import { eventually } from '../helpers/wait.js';

const CACHE = 15520;
const ADAPTER = 15521;
const skip = labAvailable() ? false : 'the oci-lab is not installed';

t.test('the leader scans cached digests', { skip }, async (t) => {
  const lab = new Lab('controller-scans');
  t.teardown(() => lab.cleanup());
  await lab.registry('cache', CACHE);
  const registry = `127.0.0.1:${CACHE}`;
  // The cache repository of docker.io/team/<name> is docker.io/team/<name>.
  const [single, multi] = await Promise.all([
    lab.image(registry, 'docker.io/team/single', 'v1', ['--layers', '1']),
    lab.image(registry, 'docker.io/team/multi', 'v1', ['--layers', '1', '--multiarch']),
  ]);
  const arm = multi.children[1] as string;
  const adapter = new ScannerAdapter();
  await adapter.start(ADAPTER);
  t.teardown(() => adapter.close());
  adapter.pendingPolls = 0;
  adapter.findings.set(arm, [{ id: 'CVE-2025-7777', severity: 'High' }]);

  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  const client = createKubeClient({ kubeconfig: await writeKubeconfig(api) });
  const put = (name: string, image: string, digest: string) =>
    api.put('CachedImage', {
      apiVersion: 'pullthrough.dev/v1alpha1',
      kind: 'CachedImage',
      metadata: { name },
      spec: { image, retain: true },
      status: { phase: 'Cached', digest, observedGeneration: 1 },
    });
  put('single', 'docker.io/team/single:v1', single.digest);
  put('multi', 'docker.io/team/multi:v1', multi.digest);
  put('not-cached', 'docker.io/team/none:v1', '');

  const digests = new DigestScanner({
    client: new ScannerClient({ url: adapter.url, requestTimeoutMs: 3_000 }),
    credentials: registryPullCredentials({ registryUrl: `http://${registry}` }),
    registryUrl: `http://${registry}`,
  });
  const scans = new ScanQueue({
    api: createCachedImageApi(client),
    scan: (repo, digest, signal) => digests.scan(repo, digest, signal),
    rescanIntervalMs: 24 * 3_600_000,
    log: silentLogger,
  });
  const running = runController(fastControllerConfig(), { client, log: silentLogger, scans });
  t.teardown(() => running.close());
  const object = (name: string) => api.object('CachedImage', undefined, name) as unknown as CachedImage;

  const s = await eventually(() => object('single').status?.scan, 'single scanned', 60_000);
  t.equal(s.result, 'Scanned', JSON.stringify(s.error));
  t.equal(s.digest, single.digest);
  t.same(s.counts, { unknown: 0, negligible: 0, low: 0, medium: 0, high: 0, critical: 0 });
  const m = await eventually(() => object('multi').status?.scan, 'multi scanned', 60_000);
  t.equal(m.result, 'Scanned', JSON.stringify(m.error));
  t.equal(m.digest, multi.digest);
  t.same([...m.digests].sort(), [multi.digest, ...multi.children].sort(), 'the index and both platform images');
  t.equal(m.counts?.high, 1, "the index's verdict holds its arm64 image's finding");
  t.same(
    adapter.pulls.map((p) => p.digest).sort(),
    [single.digest, ...multi.children].sort(),
    'each image pulled once',
  );
  t.equal(object('not-cached').status?.scan, undefined, 'nothing cached, nothing scanned');
});
