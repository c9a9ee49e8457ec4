import t from 'tap';
import { parseApiPath, parseManifestReference } from '../../src/oci/api-path.js';
import { OciError } from '../../src/oci/errors.js';

const D = `sha256:${'c'.repeat(64)}`;

t.test('the endpoints of the read API', async (t) => {
  t.same(parseApiPath('/v2'), { kind: 'base' });
  t.same(parseApiPath('/v2/'), { kind: 'base' });
  t.same(parseApiPath('/v2/docker.io/library/nginx/manifests/latest'), {
    kind: 'manifest',
    name: 'docker.io/library/nginx',
    reference: 'latest',
  });
  t.same(parseApiPath(`/v2/a/manifests/${D}`), { kind: 'manifest', name: 'a', reference: D });
  t.same(parseApiPath(`/v2/quay.io/o/a/blobs/${D}`), { kind: 'blob', name: 'quay.io/o/a', digest: D });
  // A repository may itself have components named like endpoints.
  t.same(parseApiPath('/v2/q.io/manifests/blobs/manifests/x'), {
    kind: 'manifest',
    name: 'q.io/manifests/blobs',
    reference: 'x',
  });
  t.same(parseApiPath('/v2/q.io/a/blobs/uploads'), { kind: 'push', name: 'q.io/a' });
  t.same(parseApiPath('/v2/q.io/a/blobs/uploads/0b8c-uuid'), { kind: 'push', name: 'q.io/a' });
  t.same(
    parseApiPath('/v2/q.io/a/blobs/uploads/'),
    { kind: 'push', name: 'q.io/a' },
    "the spec's POST /v2/<name>/blobs/uploads/",
  );
  t.same(parseApiPath('/v2/_catalog'), { kind: 'unsupported', what: 'catalog' });
  t.same(parseApiPath('/v2/q.io/a/tags/list'), { kind: 'unsupported', what: 'tag listing' });
  t.same(parseApiPath(`/v2/q.io/a/referrers/${D}`), { kind: 'unsupported', what: 'referrers' });
  t.same(parseApiPath('/v2/q.io/a'), { kind: 'unsupported', what: 'unknown endpoint' });
  t.same(parseApiPath('/v2/manifests/x'), { kind: 'unsupported', what: 'unknown endpoint' });
  t.same(parseApiPath('/v1/x'), { kind: 'unsupported', what: 'not a distribution API path' });
  t.same(parseApiPath('/'), { kind: 'unsupported', what: 'not a distribution API path' });
});

t.test('traversal and encoded characters are NAME_INVALID before anything is decoded', async (t) => {
  const bad = [
    '/v2/docker.io/../x/manifests/v1',
    '/v2/../../etc/passwd/manifests/x',
    '/v2/..',
    '/v2/./x/manifests/v1',
    '/v2/x/./manifests/v1',
    '/v2/x/manifests/..',
    '/v2/x/blobs/..',
    '/v2/quay.io/%2e%2e/x/manifests/v1',
    '/v2/quay.io/%2E%2E/x/manifests/v1',
    '/v2/quay.io/a%2Fb/manifests/v1',
    '/v2/quay.io/a%2fb/manifests/v1',
    '/v2/quay.io%2F..%2F..%2Fx/manifests/v1',
    '/v2/quay.io/a/manifests/v1%00',
    '/v2/quay.io/a/blobs/sha256%3Aabc',
    '/v2/quay.io\\..\\x/manifests/v1',
    '/v2/quay.io/a\\b/manifests/v1',
    '/v2//quay.io/a/manifests/v1',
    '/v2/quay.io//a/manifests/v1',
    '/v2/quay.io/a/manifests/',
    '/v2/quay.io/a/manifests/v1/',
    '/v2/%',
    `/v2/${'a/'.repeat(2100)}manifests/x`,
  ];
  for (const p of bad) {
    let err: unknown;
    try {
      parseApiPath(p);
    } catch (e) {
      err = e;
    }
    t.ok(
      err instanceof OciError && err.code === 'NAME_INVALID' && err.status === 400,
      `${p.slice(0, 60)}: ${(err as Error | undefined)?.message}`,
    );
  }
});

t.test('a manifest reference is a tag or a digest; anything else names no manifest', async (t) => {
  t.same(parseManifestReference('latest'), { kind: 'tag', tag: 'latest' });
  t.same(parseManifestReference('_v1.2-rc'), { kind: 'tag', tag: '_v1.2-rc' });
  t.same(parseManifestReference('t'.repeat(128)), { kind: 'tag', tag: 't'.repeat(128) });
  t.same(parseManifestReference(D), { kind: 'digest', digest: D });
  const fails = (ref: string) => {
    try {
      parseManifestReference(ref);
    } catch (e) {
      return e as OciError;
    }
    return undefined;
  };
  // The conformance suite's nonexistent manifest, and what else no tag grammar allows: 404.
  for (const ref of ['.INVALID_MANIFEST_NAME', '-tag', 't'.repeat(129), 'a$b', 'a b', 'é']) {
    const e = fails(ref);
    t.equal(e?.code, 'MANIFEST_UNKNOWN', `${ref.slice(0, 30)}: MANIFEST_UNKNOWN`);
    t.equal(e?.status, 404);
  }
  // With a colon it is a digest: malformed is DIGEST_INVALID, an algorithm we cannot verify UNSUPPORTED.
  for (const [ref, code] of [
    ['sha256:totallywrong', 'DIGEST_INVALID'],
    [`sha256:${'c'.repeat(63)}`, 'DIGEST_INVALID'],
    [`sha256:${'C'.repeat(64)}`, 'DIGEST_INVALID'],
    [':', 'DIGEST_INVALID'],
    ['sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709', 'UNSUPPORTED'],
  ]) {
    const e = fails(ref as string);
    t.equal(e?.code, code, `${ref}: ${code}`);
    t.equal(e?.status, 400);
  }
});
