/**
 * CachedImage names: readable, valid object names, the same for every spelling of one image and
 * different for different images.
 */
import t from 'tap';
import fc from 'fast-check';
import { cachedImageName, canonicalImage } from '../../src/controller/object-name.js';
import { runs } from '../property/settings.js';

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
const digest = `sha256:${'ab'.repeat(32)}`;

t.test('examples read as the image', async (t) => {
  t.match(cachedImageName('nginx:1.27'), /^nginx-1.27-[0-9a-f]{10}$/);
  t.match(cachedImageName('ghcr.io/org/app:v2'), /^ghcr.io-org-app-v2-[0-9a-f]{10}$/);
  t.match(cachedImageName(`quay.io/a/b@${digest}`), /^quay.io-a-b-abababababab-[0-9a-f]{10}$/);
  t.match(cachedImageName('registry.local:5000/x/y:Latest'), /^registry.local-5000-x-y-latest-[0-9a-f]{10}$/);
  t.equal(canonicalImage('nginx'), 'docker.io/library/nginx:latest');
});

t.test('every spelling of one image gets one name', async (t) => {
  const name = cachedImageName('docker.io/library/nginx:latest');
  for (const spelling of ['nginx', 'nginx:latest', 'library/nginx', 'index.docker.io/library/nginx:latest']) {
    t.equal(cachedImageName(spelling), name, spelling);
  }
});

t.test('names differ where squeezing alone would not tell images apart', async (t) => {
  t.not(cachedImageName('a/b:c'), cachedImageName('a-b:c'));
  t.not(cachedImageName('app:Latest'), cachedImageName('app:latest'));
  t.not(cachedImageName('app:1'), cachedImageName(`app:1@${digest}`));
});

t.test('any valid reference: a valid object name of at most 63 characters, deterministic', async (t) => {
  // No dot: a first component with one would read as a registry host.
  const component = fc.stringMatching(/^[a-z0-9]+([_-][a-z0-9]+)*$/);
  const reference = fc
    .tuple(
      fc.option(fc.constantFrom('ghcr.io', 'registry.local:5000', '10.0.0.1:5000', 'quay.io')),
      fc.array(component, { minLength: 1, maxLength: 6 }),
      fc.option(fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/)),
      fc.option(fc.stringMatching(/^[a-f0-9]{64}$/)),
    )
    .map(([host, path, tag, hex]) => {
      const name = `${host === null ? '' : `${host}/`}${path.join('/')}`;
      return `${name}${tag === null ? '' : `:${tag}`}${hex === null ? '' : `@sha256:${hex}`}`;
    })
    .filter((r) => r.length <= 1024 && r.replace(/^[^/]*[.:][^/]*\//, '').split(/[:@]/)[0]!.length <= 200);
  fc.assert(
    fc.property(reference, (r) => {
      const name = cachedImageName(r);
      return DNS_SUBDOMAIN.test(name) && name.length <= 63 && cachedImageName(r) === name;
    }),
    runs(3000),
  );
  t.pass('held for every generated reference');
});
