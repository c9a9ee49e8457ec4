/**
 * A node proxy that serves a tag stale because its origin is down records a `StaleImageServed`
 * Event on the pods of its node that use that tag, wired as `pullthrough proxy --node-name` wires
 * it: the pod informer against a fake API server, a real lab origin that is then stopped. The
 * Event names the image, the cached digest, its age and the origin's failure; pods using another
 * tag or on another node get none; a second stale answer within the repeat period adds none.
 * Then, without the lab: a pod's image rewritten to the node proxy and a Docker Hub short form
 * match their tag, a digest-pinned one does not, and no URL credential or query reaches a message.
 */
import t from 'tap';
import { request } from 'undici';
import { createKubeClient, PodIndex, silentLogger, startPodCredentials, type NodeKube } from '../../src/kube/index.js';
import { EventRecorder } from '../../src/kube/event-recorder.js';
import { STALE_IMAGE_REASON, StaleImageEvents } from '../../src/kube/stale-image-events.js';
import { encodeImage } from '../../src/oci/encoding.js';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { Lab, labAvailable } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { eventually } from '../helpers/wait.js';

const ORIGIN = 15350;
const PROXY = 15351;
const NODE = 'node-a';
const lab = new Lab('stale-pod-events');
const origin = `127.0.0.1:${ORIGIN}`;
const skip = labAvailable() ? false : 'the oci-lab is not installed';

interface CoreEvent {
  reason: string;
  type: string;
  message: string;
  involvedObject: { kind: string; namespace?: string; name: string; uid?: string };
  metadata: { namespace: string };
}

const pod = (namespace: string, name: string, node: string, image: string) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { namespace, name, uid: `uid-${name}` },
  spec: { nodeName: node, containers: [{ name: 'c', image }] },
  status: { phase: 'Running' },
});

t.test('a stale tag served to a pod is an Event on the pod', { skip }, async (t) => {
  t.teardown(() => lab.cleanup());
  await lab.registry('origin', ORIGIN);
  const image = await lab.image(origin, 'library/app', 'v1', ['--layers', '1']);
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  api.addPod(pod('web', 'uses-v1', NODE, `${origin}/library/app:v1`));
  api.addPod(pod('web', 'uses-v2', NODE, `${origin}/library/app:v2`));
  api.addPod(pod('web', 'elsewhere', 'node-b', `${origin}/library/app:v1`));
  const client = createKubeClient({ kubeconfig: await writeKubeconfig(api), requestTimeoutMs: 1000 });

  let kube: NodeKube | undefined;
  const proxy: TestProxy = await startProxy(
    [
      '--node-name',
      NODE,
      '--data-dir',
      lab.tempDir('pt-stale-pod-events'),
      '--insecure-registries',
      origin,
      '--tag-ttl',
      '1s',
      '--origin-timeout',
      '2s',
    ],
    {
      port: PROXY,
      extraDeps: (_config, log) => {
        const logger = log.child({ component: 'kube' });
        kube = startPodCredentials({
          client,
          nodeName: NODE,
          logger,
          informer: { backoff: { initialMs: 50, maxMs: 500 }, watch: { timeoutSeconds: 60, connectTimeoutMs: 1000 } },
        });
        const recorder = new EventRecorder({
          client,
          namespace: 'default',
          component: 'pullthrough-proxy',
          log: logger,
        });
        const events = new StaleImageEvents({ index: kube.informer.index, recorder });
        return { podCredentials: kube.source, pods: kube.credentials, onStale: events.served };
      },
      onStop: async () => kube?.stop(),
    },
  );
  t.teardown(() => proxy.stop());
  await eventually(() => kube?.informer.index.size === 2, "the node's pods listed");

  const pull = async () => {
    const res = await request(`${proxy.url}/v2/library/app/manifests/v1?ns=${encodeURIComponent(origin)}`, {
      headers: { accept: MANIFEST_ACCEPT },
    });
    await res.body.dump();
    return { status: res.statusCode, digest: res.headers['docker-content-digest'] };
  };
  t.same(await pull(), { status: 200, digest: image.digest }, 'first pull, from the origin');
  await proxy.settle();

  await lab.stop('origin');
  const served = () =>
    proxy.logs().filter((l) => l.msg === 'request' && l.source === 'stale' && String(l.path).includes('/manifests/v1'))
      .length;
  // Once the tag TTL has passed, the pull is answered stale.
  await eventually(async () => {
    const p = await pull();
    return p.status === 200 && served() >= 1;
  }, 'a stale answer');

  const events = () =>
    api.store
      .list({ resource: 'events', kind: 'Event', apiVersion: 'v1', namespaced: true })
      .map((e) => e as unknown as CoreEvent)
      .filter((e) => e.reason === STALE_IMAGE_REASON);
  const [event] = await eventually(() => (events().length > 0 ? events() : undefined), 'the pod Event');
  t.equal(event?.type, 'Warning');
  t.same(event?.involvedObject, {
    apiVersion: 'v1',
    kind: 'Pod',
    namespace: 'web',
    name: 'uses-v1',
    uid: 'uid-uses-v1',
  });
  t.equal(event?.metadata.namespace, 'web', "in the pod's namespace");
  t.match(event?.message, `${origin}/library/app:v1`, 'names the image');
  t.match(event?.message, image.digest, 'the cached digest');
  t.match(event?.message, /confirmed \d+s ago/, 'its age');
  t.match(event?.message, /could not confirm the tag: .+/, "and the origin's failure");

  // A second stale answer: its sink call ran before the answer came back; the repeat period holds.
  const before = served();
  await eventually(async () => (await pull()).status === 200 && served() > before, 'a second stale answer');
  t.equal(events().length, 1, 'one Event: none for the other tag, the other node, or the repeat');
});

t.test('which pods use the tag: as written, rewritten to the node proxy, Docker Hub short forms', async (t) => {
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  const client = createKubeClient({ kubeconfig: await writeKubeconfig(api), requestTimeoutMs: 1000 });
  const index = new PodIndex();
  const rewritten = encodeImage('registry.example:5000/team/app:v1', 'localhost:7439');
  if (!rewritten.ok) throw new Error('not encodable');
  for (const p of [
    pod('a', 'rewritten', NODE, rewritten.value),
    pod('a', 'pinned', NODE, `registry.example:5000/team/app:v1@sha256:${'e'.repeat(64)}`),
    pod('a', 'short', NODE, 'nginx'),
    pod('a', 'other-tag', NODE, 'nginx:1.27'),
  ]) {
    // eslint-disable-next-line @typescript-eslint/no-unsafe-class-instance-assignment -- plain JSON, as listed
    index.upsert(p);
  }
  const recorder = new EventRecorder({
    client,
    namespace: 'default',
    component: 'pullthrough-proxy',
    log: silentLogger,
  });
  const events = new StaleImageEvents({ index, recorder, now: () => 7_200_000 });
  const failure = 'origin registry.example:5000 unreachable: GET https://u:secret@registry.example:5000/v2/?token=abc';
  events.served({
    registry: 'registry.example:5000',
    repository: 'team/app',
    tag: 'v1',
    digest: `sha256:${'d'.repeat(64)}`,
    confirmedAt: 0,
    reason: failure,
  });
  events.served({
    registry: 'docker.io',
    repository: 'library/nginx',
    tag: 'latest',
    digest: `sha256:${'f'.repeat(64)}`,
    confirmedAt: undefined,
    reason: 'origin docker.io answered 503',
  });
  const list = await eventually(() => {
    const l = api.store
      .list({ resource: 'events', kind: 'Event', apiVersion: 'v1', namespaced: true })
      .map((e) => e as unknown as CoreEvent);
    return l.length >= 2 ? l : undefined;
  }, 'the Events');
  t.same(list.map((e) => e.involvedObject.name).sort(), ['rewritten', 'short'], 'only the pods naming that tag');
  const r = list.find((e) => e.involvedObject.name === 'rewritten');
  t.match(r?.message, 'confirmed 2h0m ago');
  t.notOk(r?.message.includes('secret'), 'no URL user information');
  t.notOk(r?.message.includes('token=abc'), 'no URL query');
  t.match(list.find((e) => e.involvedObject.name === 'short')?.message, 'docker.io/library/nginx:latest');
});
