/**
 * The controller pre-warms CachedImages made by hand, against the fake API server and real
 * registries: a multi-arch image with `platforms: [all]` and a private one with its pullSecretRef
 * become Cached with digest, size and platforms; a bad reference, a registry outside the allowed
 * list, a missing secret and an image the origin lacks become Failed with a clear message; Events
 * say each; no credential appears in a status or an Event.
 */
import t from 'tap';
import { join } from 'node:path';
import { prepareSpoolDir } from '../../src/cache/blob-fills.js';
import { readProxyConfig } from '../../src/config/proxy.js';
import { controllerEvents, fastControllerConfig } from '../controller/config.js';
import { runController } from '../../src/controller/run.js';
import type { CachedImage } from '../../src/kube/cached-images.js';
import { createKubeClient, secretCredentials, silentLogger } from '../../src/kube/index.js';
import { createLogger } from '../../src/observability/logger.js';
import { buildPrewarmer } from '../../src/proxy/build-proxy.js';
import { FakeApiServer, writeKubeconfig } from '../fake-apiserver/index.js';
import { Lab, labAvailable, type Image } from '../helpers/lab.js';
import { eventually } from '../helpers/wait.js';
import { basicAuth, dockerConfigSecret } from '../kube/helpers.js';

const ORIGIN = 15330;
const PRIVATE = 15331;
const CACHE = 15332;
const PW = 'prewarm-secret-value';
const lab = new Lab('controller-prewarm');
const origin = `127.0.0.1:${ORIGIN}`;
const priv = `127.0.0.1:${PRIVATE}`;
const skip = labAvailable() ? false : 'the oci-lab is not installed';

const config = fastControllerConfig();

t.test('pre-warm of hand-made CachedImages', { skip }, async (t) => {
  t.teardown(() => lab.cleanup());
  await Promise.all([
    lab.registry('origin', ORIGIN),
    lab.registry('private', PRIVATE, ['--htpasswd', `bob:${PW}`]),
    lab.registry('cache', CACHE),
  ]);
  const [multi, app]: Image[] = await Promise.all([
    lab.image(origin, 'library/multi', 'v1', ['--multiarch']),
    lab.image(priv, 'team/app', 'v1', ['--creds', `bob:${PW}`]),
  ]);
  const { config: proxyConfig } = readProxyConfig(
    [
      '--cache-registry',
      `http://127.0.0.1:${CACHE}`,
      '--data-dir',
      lab.tempDir('pt-controller-prewarm'),
      '--insecure-registries',
      `${origin},${priv}`,
      '--allowed-registries',
      `${origin},${priv}`,
      '--metrics-listen',
      '',
    ],
    {},
  );
  await prepareSpoolDir(join(proxyConfig.dataDir, 'tmp'));
  const warming = buildPrewarmer(proxyConfig, { log: createLogger('silent') });
  t.teardown(() => warming.close());
  const api = await FakeApiServer.start();
  t.teardown(() => api.close());
  const client = createKubeClient({ kubeconfig: await writeKubeconfig(api) });
  api.putSecret(dockerConfigSecret('team-a', 'regcred', { [priv]: basicAuth('bob', PW) }));
  const running = runController(config, {
    client,
    log: silentLogger,
    events: controllerEvents(client),
    warm: { warmer: warming.prewarmer, secrets: secretCredentials(client) },
  });
  t.teardown(() => running.close());

  const put = (name: string, spec: Record<string, unknown>) =>
    api.put('CachedImage', { apiVersion: 'pullthrough.dev/v1alpha1', kind: 'CachedImage', metadata: { name }, spec });
  const object = (name: string) => api.object('CachedImage', undefined, name) as unknown as CachedImage | undefined;
  const settled = (name: string) =>
    eventually(
      () => {
        const o = object(name);
        return o?.status?.phase === 'Cached' || o?.status?.phase === 'Failed' ? o : undefined;
      },
      `${name} settled`,
      120_000,
    );

  put('multi', { image: `${origin}/library/multi:v1`, platforms: ['all'] });
  put('private', { image: `${priv}/team/app:v1`, pullSecretRef: { namespace: 'team-a', name: 'regcred' } });
  put('no-secret', { image: `${priv}/team/app:v1`, pullSecretRef: { namespace: 'team-a', name: 'missing' } });
  put('bad-ref', { image: 'Not_A/Valid::Ref' });
  put('not-allowed', { image: 'quay.io/org/app:1' });
  put('absent', { image: `${origin}/library/multi:nope` });

  const m = await settled('multi');
  t.equal(m.status?.phase, 'Cached', `multi: ${String(m.status?.message)}`);
  t.equal(m.status?.digest, multi?.digest);
  t.same([...(m.status?.platforms ?? [])].sort(), ['linux/amd64', 'linux/arm64/v8']);
  t.match(m.status?.sizeText, /^\d+(\.\d)? (B|KiB|MiB)$/);
  t.equal(m.status?.observedGeneration, 1);

  const p = await settled('private');
  t.equal(p.status?.phase, 'Cached', `private: ${String(p.status?.message)}`);
  t.equal(p.status?.digest, app?.digest);

  const failures: Record<string, RegExp> = {
    'no-secret': /pull secret team-a\/missing not found/,
    'bad-ref': /invalid image reference/,
    'not-allowed': /not in --allowed-registries/,
    absent: /manifest|unknown|not found/i,
  };
  for (const [name, message] of Object.entries(failures)) {
    const o = await settled(name);
    t.equal(o.status?.phase, 'Failed', name);
    t.match(o.status?.message, message, `${name}: ${String(o.status?.message)}`);
  }

  const events = await eventually(() => {
    const list = api.store
      .list({ resource: 'events', kind: 'Event', apiVersion: 'v1', namespaced: true })
      .map((e) => e as unknown as { reason: string; involvedObject: { name: string }; message: string });
    return list.filter((e) => e.reason === 'CacheFailed').length >= 4 ? list : undefined;
  }, 'the Events');
  const reasons = (name: string) => events.filter((e) => e.involvedObject.name === name).map((e) => e.reason);
  t.same(reasons('multi').sort(), ['Cached', 'Caching']);
  t.same(reasons('bad-ref').sort(), ['CacheFailed', 'Caching']);
  const everything = JSON.stringify({ events, objects: ['multi', 'private', 'no-secret'].map(object) });
  t.notOk(everything.includes(PW), 'no password in a status or an Event');
  t.notOk(everything.includes(Buffer.from(`bob:${PW}`).toString('base64')), 'nor its base64');

  // Cached stays cached: a later list pass (the one that finds a new object) writes nothing for it.
  const rv = object('multi')?.metadata.resourceVersion;
  put('later', { image: `${origin}/library/multi:v1`, platforms: ['linux/amd64'] });
  t.equal((await settled('later')).status?.phase, 'Cached', 'a later object, found by a later list pass');
  t.equal(object('multi')?.metadata.resourceVersion, rv, 'a Cached image of this generation is not warmed again');
});
