/** The node's pod index follows the API server through list, watch, 410, bookmarks and outages. */
import t from 'tap';
import { eventually, names, NODE, pod, startHarness } from './helpers.js';

const PODS = '/api/v1/pods';

t.test('list + watch keep the index current: add, modify image, delete', async (t) => {
  const { api, kube } = await startHarness(t);
  api.addPod(pod('web', { images: ['nginx:1.25'] }));
  await kube.informer.whenSynced();
  const creds = kube.credentials;
  t.same(names(creds.podsUsing('docker.io', 'library/nginx')), ['team-a/web']);
  // Docker Hub spellings all find it.
  t.same(names(creds.podsUsing('index.docker.io', 'nginx')), ['team-a/web']);

  api.addPod(
    pod('api', { images: ['ghcr.io/acme/api:2'], initImages: ['busybox'], ephemeralImages: ['quay.io/debug/tools'] }),
  );
  await eventually(() => creds.podsUsing('ghcr.io', 'acme/api').length === 1, 'added pod');
  t.same(names(creds.podsUsing('docker.io', 'library/busybox')), ['team-a/api'], 'init containers count');
  t.same(names(creds.podsUsing('quay.io', 'debug/tools')), ['team-a/api'], 'ephemeral containers count');

  api.updatePod(pod('api', { images: ['ghcr.io/acme/api2:1'] }));
  await eventually(() => creds.podsUsing('ghcr.io', 'acme/api2').length === 1, 'modified image');
  t.same(creds.podsUsing('ghcr.io', 'acme/api'), [], 'the old image no longer maps to the pod');
  t.same(creds.podsUsing('docker.io', 'library/busybox'), []);

  api.deletePod('team-a', 'api');
  await eventually(() => creds.podsUsing('ghcr.io', 'acme/api2').length === 0, 'deleted pod');
  t.equal(api.lists(PODS), 1, 'one list; everything after came through the watch');
  const w = api.watchRequests(PODS)[0];
  t.equal(w?.query.allowWatchBookmarks, 'true');
  t.equal(w?.query.fieldSelector, `spec.nodeName=${NODE}`);
});

t.test('the field selector is respected: pods of other nodes never appear', async (t) => {
  const { api, kube } = await startHarness(t);
  api.addPod(pod('elsewhere', { node: 'node-b', images: ['registry.example.com/secret/app'] }));
  api.addPod(pod('here', { images: ['nginx'] }));
  await kube.informer.whenSynced();
  api.addPod(pod('elsewhere-2', { node: 'node-b', images: ['registry.example.com/secret/app'] }));
  api.addPod(pod('marker', { images: ['marker.example.com/m'] }));
  await eventually(() => kube.credentials.podsUsing('marker.example.com', 'm').length === 1, 'marker');
  t.same(kube.credentials.podsUsing('registry.example.com', 'secret/app'), []);
  t.equal(kube.informer.index.size, 2);
  t.ok(api.requests.filter((r) => r.path === PODS).every((r) => r.query.fieldSelector === `spec.nodeName=${NODE}`));
});

t.test('finished pods are left out of the index', async (t) => {
  const { api, kube } = await startHarness(t);
  api.addPod(pod('job', { images: ['private.example.com/batch'], phase: 'Running' }));
  await kube.informer.whenSynced();
  t.equal(kube.credentials.podsUsing('private.example.com', 'batch').length, 1);
  api.updatePod(pod('job', { images: ['private.example.com/batch'], phase: 'Succeeded' }));
  await eventually(
    () => kube.credentials.podsUsing('private.example.com', 'batch').length === 0,
    'finished pod dropped',
  );
});

for (const mode of ['event', 'http'] as const) {
  t.test(`410 Gone (${mode}) on resume leads to a relist that drops what vanished`, async (t) => {
    const { api, kube } = await startHarness(t);
    api.setExpiredWatchMode(mode);
    api.addPod(pod('a', { images: ['a.example.com/a'] }));
    api.addPod(pod('b', { images: ['b.example.com/b'] }));
    await kube.informer.whenSynced();
    await eventually(() => api.openWatches === 1, 'watch open');
    // While the watch is down, b goes away and c arrives; then history is compacted.
    await api.stop();
    api.deletePod('team-a', 'b');
    api.addPod(pod('c', { images: ['c.example.com/c'] }));
    api.compact();
    await api.restart();
    await eventually(() => kube.credentials.podsUsing('c.example.com', 'c').length === 1, 'relisted');
    t.same(kube.credentials.podsUsing('b.example.com', 'b'), [], 'the pod deleted meanwhile is gone');
    t.same(names(kube.credentials.podsUsing('a.example.com', 'a')), ['team-a/a']);
    t.equal(api.lists(PODS), 2, 'exactly one relist');
  });
}

t.test('bookmarks move the resume point, so a compaction needs no relist', async (t) => {
  const { api, kube } = await startHarness(t);
  api.addPod(pod('a', { images: ['a.example.com/a'] }));
  await kube.informer.whenSynced();
  await eventually(() => api.openWatches === 1, 'watch open');
  // Writes on another node move the resourceVersion without sending this watch anything.
  for (let i = 0; i < 5; i++) api.addPod(pod(`other-${i}`, { node: 'node-b' }));
  api.bookmark();
  api.addPod(pod('marker', { images: ['marker.example.com/m'] }));
  await eventually(() => kube.credentials.podsUsing('marker.example.com', 'm').length === 1, 'marker after bookmark');
  const resumeFrom = api.store.resourceVersion;
  api.expireResourceVersions();
  await eventually(() => api.watchRequests(PODS).length === 2 && api.openWatches === 1, 'resumed watch');
  t.equal(api.watchRequests(PODS)[1]?.query.resourceVersion, String(resumeFrom));
  t.equal(api.lists(PODS), 1, 'no relist');

  // Without a bookmark the resume point stays behind and the compaction forces a relist.
  for (let i = 5; i < 8; i++) api.addPod(pod(`other-${i}`, { node: 'node-b' }));
  api.expireResourceVersions();
  await eventually(() => api.lists(PODS) === 2, 'relist');
});

t.test('API server stopped then restarted: calls fail fast, the informer recovers', async (t) => {
  const { api, kube, lines } = await startHarness(t);
  api.addPod(pod('web', { images: ['private.example.com/web'], pullSecrets: ['regcred'] }));
  await kube.informer.whenSynced();
  await api.stop();
  // Two retries logged at debug level are the known-later event the warning count is read after.
  const lineMsgs = () => lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
  await eventually(
    () => lineMsgs().filter((m) => m === 'pod list/watch still failing').length >= 2,
    'two retries during the outage',
  );
  t.notOk(kube.informer.connected, 'the outage is noticed');
  // The index keeps what it knew; secret reads fail at once with a reason.
  t.same(names(kube.credentials.podsUsing('private.example.com', 'web')), ['team-a/web']);
  const lookup = await kube.credentials.lookup({ namespace: 'team-a', name: 'web' }, 'private.example.com', 'web');
  t.same(lookup.credentials, []);
  t.match(lookup.skipped, [
    { source: 'serviceaccount team-a/default', reason: 'ECONNREFUSED' },
    { source: 'secret team-a/regcred', reason: 'ECONNREFUSED' },
  ]);
  t.equal(lineMsgs().filter((m) => m.startsWith('pod list/watch failed')).length, 1, 'the outage is logged once');

  api.addPod(pod('late', { images: ['late.example.com/app'] }));
  await api.restart();
  await eventually(() => kube.credentials.podsUsing('late.example.com', 'app').length === 1, 'recovered');
  await eventually(() => kube.informer.connected, 'connected again');
  t.ok(lines.some((l) => l.includes('pod watch recovered')));
});

t.test('an API server that accepts and never answers: requests time out instead of hanging', async (t) => {
  const { api, kube } = await startHarness(t, { requestTimeoutMs: 200 });
  api.addPod(pod('web', { images: ['private.example.com/web'], pullSecrets: ['regcred'] }));
  await kube.informer.whenSynced();
  api.hang(true);
  const lookup = await kube.credentials.lookup({ namespace: 'team-a', name: 'web' }, 'private.example.com', 'web');
  t.same(lookup.credentials, []);
  t.match(lookup.skipped, [{ reason: 'timeout' }, { reason: 'timeout' }]);
  // Within the outage window, the next lookup does not wait again: it asks the API server nothing.
  const reads = (r: { path: string }) => r.path.startsWith('/api/v1/namespaces/team-a/');
  t.equal(api.count(reads), 2, 'the first lookup asked for the service account and the secret');
  const again = await kube.credentials.lookup({ namespace: 'team-a', name: 'web' }, 'private.example.com', 'web');
  t.match(again.skipped, [{ reason: 'timeout' }, { reason: 'timeout' }]);
  t.equal(api.count(reads), 2, 'the second lookup made no request');
  api.hang(false);
});

t.test('starts without the API server and catches up when it appears', async (t) => {
  const { FakeApiServer } = await import('../fake-apiserver/index.js');
  const api = await FakeApiServer.start();
  api.addPod(pod('web', { images: ['app.example.com/web'] }));
  await api.stop();
  const { kube } = await startHarness(t, { api });
  t.equal(kube.informer.synced, false);
  t.same(kube.credentials.podsUsing('app.example.com', 'web'), [], 'nothing known yet, and no waiting');
  await api.restart();
  await kube.informer.whenSynced();
  t.equal(kube.credentials.podsUsing('app.example.com', 'web').length, 1);
});
