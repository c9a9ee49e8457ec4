/**
 * What an image holds in the cache registry, read from a real distribution registry: a multi-arch
 * index, its children, their configs and layers, each with its size; each manifest read once per
 * digest (a second reading asks the registry nothing), at most `maxManifests` remembered; an
 * image the registry does not hold holds nothing.
 */
import t from 'tap';
import { Agent } from 'undici';
import { ImageFootprints } from '../../src/controller/image-footprint.js';
import { Lab, labAvailable, registryRequests } from '../helpers/lab.js';
import { testRegistryClient } from '../helpers/registry-client.js';

const CACHE = 15653;
const lab = new Lab('image-footprint');
const skip = labAvailable() ? false : 'the oci-lab is not installed';
// The image as the proxies store it: under the origin's encoded name in the cache registry.
const origin = '127.0.0.1:9';
const repo = '127.0.0.1_9/team/multi';

t.test('an index, its children and their blobs, each manifest read once', { skip }, async (t) => {
  t.teardown(() => lab.cleanup());
  const { dir } = await lab.registry('cache', CACHE);
  const image = await lab.image(`127.0.0.1:${CACHE}`, repo, 'v1', [
    '--multiarch',
    '--seed',
    'footprint',
    '--layers',
    '1',
    '--layer-mb',
    '0.1',
  ]);
  const dispatcher = new Agent();
  t.teardown(() => dispatcher.close());
  const client = testRegistryClient(`http://127.0.0.1:${CACHE}`, { dispatcher, name: 'cache', timeoutMs: 10_000 });
  const footprints = new ImageFootprints({ client, host: 'cache' });
  const ref = `${origin}/team/multi:v1`;
  const manifestGets = () => registryRequests(dir).filter((r) => r.method === 'GET' && r.path.includes('/manifests/'));

  const got = await footprints.footprint(ref, image.digest);
  t.equal(got.size, 7, 'the index, two children, and each child config and layer');
  for (const d of [image.digest, ...image.children, ...image.layers]) t.ok(got.has(d), `${d} counted`);
  for (const layer of image.layers) t.ok((got.get(layer) ?? 0) > 100_000, 'a layer with its size');
  t.equal(footprints.remembered, 3, 'three manifests remembered');
  const asked = manifestGets().length;
  t.equal(asked, 3);

  t.same(await footprints.footprint(ref, image.digest), got, 'the same again');
  t.equal(manifestGets().length, asked, 'without asking the registry');

  const small = new ImageFootprints({ client, host: 'cache', maxManifests: 2 });
  t.same(await small.footprint(ref, image.digest), got);
  t.equal(small.remembered, 2, 'bounded');

  const absent = await footprints.footprint(`${origin}/team/gone:v1`, `sha256:${'1'.repeat(64)}`);
  t.equal(absent.size, 0, 'an image the registry does not hold takes nothing');
});
