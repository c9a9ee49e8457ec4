/**
 * The CachedImage controller against the fake API server, through the real client: one
 * CachedImage per image pods use (rewritten, annotated or plain), usedBy and lastUsed following
 * pods, Expiring for an unused image, exactly one replica writing, a killed leader handed over,
 * and status writes bounded while 200 pods churn.
 */
import t, { type Test } from 'tap';
import type { ControllerConfig } from '../../src/config/controller.js';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { fastControllerConfig } from './config.js';
import { cachedImageName } from '../../src/controller/object-name.js';
import { runController, type RunningController } from '../../src/controller/run.js';
import type { CachedImage } from '../../src/kube/cached-images.js';
import { createKubeClient, silentLogger } from '../../src/kube/index.js';
import { eventually, pod } from '../kube/helpers.js';

const config = fastControllerConfig;

async function setup(t: Test) {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  const kubeconfig = await writeKubeconfig(api);
  const started: RunningController[] = [];
  const start = (identity: string, over: Partial<ControllerConfig> = {}) => {
    const c = runController(config(identity, over), { client: createKubeClient({ kubeconfig }), log: silentLogger });
    started.push(c);
    return c;
  };
  t.teardown(async () => {
    for (const c of started) await c.close();
  });
  const object = (image: string) =>
    api.object('CachedImage', undefined, cachedImageName(image)) as unknown as CachedImage | undefined;
  return { api, start, object };
}

const NGINX = 'docker.io/library/nginx:1.27';
const APP = 'ghcr.io/org/app:v2';
const REWRITTEN_APP = 'localhost:7439/ghcr.io/org/app:v2';

t.test('one CachedImage per image pods use, usedBy and lastUsed following the pods', async (t) => {
  const { api, start, object } = await setup(t);
  api.addPod(pod('web-0', { namespace: 'web', images: ['nginx:1.27'] }));
  api.addPod(pod('web-1', { namespace: 'web', images: ['nginx:1.27'], node: 'node-b' }));
  api.addPod(
    pod('app-0', {
      namespace: 'team-a',
      images: [REWRITTEN_APP],
      annotations: { 'pullthrough.dev/original-images': JSON.stringify({ c0: APP }) },
    }),
  );
  api.addPod(pod('done', { namespace: 'web', images: ['busybox:1'], phase: 'Succeeded' }));
  start('a');
  const nginx = await eventually(
    () => (object(NGINX)?.status?.usedBy?.count === 2 ? object(NGINX) : undefined),
    'nginx used by 2',
  );
  t.equal(nginx.spec.image, NGINX);
  t.same(nginx.status?.usedBy?.pods, [
    { namespace: 'web', name: 'web-0' },
    { namespace: 'web', name: 'web-1' },
  ]);
  t.match(nginx.status?.lastUsed, /^\d{4}-\d\d-\d\dT/);
  t.equal(nginx.metadata.labels?.['pullthrough.dev/from-pods'], 'true');
  const app = await eventually(() => object(APP)?.status?.usedBy, 'app used');
  t.equal(app.count, 1, 'a rewritten image counts once, under its original');
  t.equal(object('docker.io/library/busybox:1'), undefined, 'a finished pod uses nothing');

  api.deletePod('web', 'web-0');
  await eventually(() => object(NGINX)?.status?.usedBy?.count === 1, 'nginx used by 1');
  t.same(object(NGINX)?.status?.usedBy?.pods, [{ namespace: 'web', name: 'web-1' }]);
  t.equal(object(NGINX)?.status?.phase, undefined, 'in use: not expiring');
});

t.test('an unused, unretained image is Expiring after --expire-after; a retained one is not', async (t) => {
  const { api, start, object } = await setup(t);
  api.addPod(pod('a', { namespace: 'x', images: ['nginx:1.27'] }));
  api.addPod(pod('b', { namespace: 'x', images: [APP] }));
  start('a', { expireAfterMs: 300 });
  await eventually(() => object(NGINX)?.status?.usedBy && object(APP)?.status?.usedBy, 'both tracked');
  api.put('CachedImage', { ...object(APP), spec: { image: APP, retain: true } });
  api.deletePod('x', 'a');
  api.deletePod('x', 'b');
  await eventually(() => object(NGINX)?.status?.phase === 'Expiring', 'nginx expiring');
  t.match(object(NGINX)?.status?.message, /unused since/);
  await eventually(() => object(APP)?.status?.usedBy?.count === 0, 'app unused');
  t.not(object(APP)?.status?.phase, 'Expiring', 'retained: never expiring');
  api.addPod(pod('c', { namespace: 'x', images: ['nginx:1.27'] }));
  await eventually(() => object(NGINX)?.status?.usedBy?.count === 1, 'nginx used again');
  t.equal(object(NGINX)?.status?.phase, 'Pending', 'used again: Pending until the cache is looked at again');
});

t.test('two replicas: exactly one writes; a killed leader is replaced and the work goes on', async (t) => {
  const { api, start, object } = await setup(t);
  api.addPod(pod('p0', { namespace: 'x', images: ['nginx:1.27'] }));
  const a = start('a');
  const b = start('b');
  await eventually(() => object(NGINX)?.status?.usedBy?.count === 1, 'tracked');
  const [leader, follower] = a.isLeader() ? [a, b] : [b, a];
  t.ok(leader.isLeader() && !follower.isLeader(), 'one leader');
  await eventually(() => leader.backlog() === 0 && leader.writes() > 0, 'the leader wrote');
  t.equal(follower.writes(), 0, 'the follower wrote nothing');
  await leader.close();
  await eventually(() => follower.isLeader(), 'the follower takes over');
  api.addPod(pod('p1', { namespace: 'x', images: ['nginx:1.27'] }));
  await eventually(() => object(NGINX)?.status?.usedBy?.count === 2, 'the new leader tracks the new pod');
  await eventually(() => follower.writes() > 0, 'the new leader wrote');
});

t.test('200 pods churning: writes stay within the budget; a change of nothing costs nothing', async (t) => {
  const { api, start, object } = await setup(t);
  const images = [NGINX, 'docker.io/library/redis:7', APP];
  const image = (i: number) => images[i % 3] as string;
  const writesAtServer = () => api.count((r) => r.path.startsWith('/apis/pullthrough.dev/') && r.method !== 'GET');
  const c = start('a', { statusWritesPerSecond: 10 });
  api.addPod(pod('warm', { namespace: 'churn', images: [NGINX] }));
  await eventually(() => object(NGINX)?.status?.usedBy?.count === 1, 'the controller running');
  await eventually(() => c.backlog() === 0 && c.writes() === writesAtServer(), 'the warm-up written');
  const writesBefore = writesAtServer();
  const began = Date.now();
  const tick = () => new Promise((r) => setTimeout(r, 20));
  let events = 0;
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 200; i++, events++) api.addPod(pod(`p${i}`, { namespace: 'churn', images: [image(i)] }));
    await tick();
    for (let i = 0; i < 200; i += 2, events++) api.deletePod('churn', `p${i}`);
    await tick();
    for (let i = 0; i < 200; i += 2, events++) api.addPod(pod(`p${i}`, { namespace: 'churn', images: [image(i)] }));
    await tick();
    for (let i = 0; i < 200; i++, events++) api.deletePod('churn', `p${i}`);
    await tick();
  }
  for (let i = 0; i < 200; i++, events++) api.addPod(pod(`p${i}`, { namespace: 'churn', images: [image(i)] }));
  // A last pod with an image of its own: once it shows, every earlier event has been seen.
  api.addPod(pod('last', { namespace: 'churn', images: ['docker.io/library/last:1'] }));
  await eventually(() => object('docker.io/library/last:1')?.status?.usedBy?.count === 1, 'the last pod');
  await eventually(() => c.backlog() === 0 && c.writes() === writesAtServer(), 'every write done');
  t.same(
    images.map((img) => object(img)?.status?.usedBy?.count),
    [68, 67, 66],
    'the final usage',
  );
  const seconds = (Date.now() - began) / 1000;
  const writes = writesAtServer() - writesBefore;
  t.ok(writes <= 10 * seconds + 10, `${writes} writes in ${seconds.toFixed(1)} s: at most 10 per second, plus a burst`);
  t.ok(writes * 20 < events, `${writes} writes for ${events} pod events`);

  // An update that changes no image, then a known-later change: only the later one is written.
  const before = c.writes();
  api.updatePod({ ...pod('p1', { namespace: 'churn', images: [image(1)] }), status: { phase: 'Running' } });
  api.addPod(pod('later', { namespace: 'churn', images: ['busybox:1'] }));
  await eventually(() => object('docker.io/library/busybox:1')?.status?.usedBy?.count === 1, 'the later pod');
  await eventually(() => c.backlog() === 0 && c.writes() === writesAtServer(), 'the writes counted');
  t.equal(c.writes() - before, 2, 'the later pod cost a create and a status write; the update nothing');
});
