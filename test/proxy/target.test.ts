import t from 'tap';
import { OciError } from '../../src/oci/errors.js';
import { parseHostList } from '../../src/oci/host-pattern.js';
import { resolveTarget } from '../../src/proxy/target.js';

const any = parseHostList(['*']);

function code(f: () => unknown): [string, number] | undefined {
  try {
    f();
  } catch (e) {
    if (!(e instanceof OciError)) throw e;
    return [e.code, e.status];
  }
  return undefined;
}

t.test('the rewritten form: <encoded registry>/<repository>', async (t) => {
  t.same(resolveTarget('docker.io/library/nginx', undefined, any), {
    registry: 'docker.io',
    repository: 'library/nginx',
    cacheRepo: 'docker.io/library/nginx',
  });
  t.same(resolveTarget('myreg_5000/team/app', undefined, any), {
    registry: 'myreg:5000',
    repository: 'team/app',
    cacheRepo: 'myreg_5000/team/app',
  });
  t.same(resolveTarget('localhost/a', undefined, any), {
    registry: 'localhost',
    repository: 'a',
    cacheRepo: 'localhost/a',
  });
  t.same(resolveTarget('10.0.0.5_5000/a', undefined, any), {
    registry: '10.0.0.5:5000',
    repository: 'a',
    cacheRepo: '10.0.0.5_5000/a',
  });
  t.same(resolveTarget('index.docker.io/library/nginx', undefined, any), {
    registry: 'docker.io',
    repository: 'library/nginx',
    cacheRepo: 'docker.io/library/nginx',
  });
});

t.test('the mirror form: <repository>?ns=<registry>', async (t) => {
  t.same(resolveTarget('library/nginx', 'docker.io', any), {
    registry: 'docker.io',
    repository: 'library/nginx',
    cacheRepo: 'docker.io/library/nginx',
  });
  t.same(resolveTarget('org/app', 'Quay.IO', any), {
    registry: 'quay.io',
    repository: 'org/app',
    cacheRepo: 'quay.io/org/app',
  });
  t.same(resolveTarget('a', 'myreg:5000', any), { registry: 'myreg:5000', repository: 'a', cacheRepo: 'myreg_5000/a' });
  // override_path: the mirror path also carries the encoded registry, which is dropped.
  t.same(resolveTarget('quay.io/org/app', 'quay.io', any), {
    registry: 'quay.io',
    repository: 'org/app',
    cacheRepo: 'quay.io/org/app',
  });
  t.same(resolveTarget('myreg_5000/a', 'myreg:5000', any), {
    registry: 'myreg:5000',
    repository: 'a',
    cacheRepo: 'myreg_5000/a',
  });
  // ... but only when it names the same registry.
  t.same(resolveTarget('ghcr.io/org/app', 'quay.io', any), {
    registry: 'quay.io',
    repository: 'ghcr.io/org/app',
    cacheRepo: 'quay.io/ghcr.io/org/app',
  });
  t.same(resolveTarget('library/nginx', 'index.docker.io', any).registry, 'docker.io');
});

t.test('without ns and not rewritten: 404 NAME_UNKNOWN so containerd tries its next host', async (t) => {
  for (const name of ['library/nginx', 'nginx', 'myuser/app', 'myreg/app', 'quay.io']) {
    t.same(
      code(() => resolveTarget(name, undefined, any)),
      ['NAME_UNKNOWN', 404],
      name,
    );
  }
});

t.test('malformed names and ns values are NAME_INVALID', async (t) => {
  for (const ns of [
    '',
    ' ',
    'http://quay.io',
    'quay.io/x',
    'quay.io:0',
    'quay.io:99999',
    'a b',
    '..',
    '../..',
    'quay.io?x',
    'x'.repeat(300),
    '[::1',
    'quay.io\u0000',
  ]) {
    t.same(
      code(() => resolveTarget('library/nginx', ns, any)),
      ['NAME_INVALID', 400],
      `ns=${JSON.stringify(ns.slice(0, 30))}`,
    );
  }
  for (const name of ['Library/nginx', 'a//b', '..', 'a/..', 'a/./b', '-a', 'a_', 'a'.repeat(256)]) {
    t.same(
      code(() => resolveTarget(name, 'docker.io', any)),
      ['NAME_INVALID', 400],
      `name=${JSON.stringify(name.slice(0, 30))} with ns`,
    );
  }
  // A rewritten name whose registry part is well-formed but whose repository is not.
  for (const name of ['quay.io/UPPER', 'quay.io/a//b', 'quay.io/a/../b', `quay.io/${'a'.repeat(256)}`]) {
    t.same(
      code(() => resolveTarget(name, undefined, any)),
      ['NAME_INVALID', 400],
      `name=${JSON.stringify(name.slice(0, 30))}`,
    );
  }
  t.same(
    code(() => resolveTarget('app', '[::1]:5000', any)),
    ['NAME_INVALID', 400],
    'an IPv6 origin has no cache repository name',
  );
});

t.test('hosts outside --allowed-registries are DENIED', async (t) => {
  const allowed = parseHostList(['quay.io', '*.example.com', '127.0.0.1:15059']);
  t.same(
    code(() => resolveTarget('docker.io/library/nginx', undefined, allowed)),
    ['DENIED', 403],
  );
  t.same(
    code(() => resolveTarget('library/nginx', 'docker.io', allowed)),
    ['DENIED', 403],
  );
  t.same(
    code(() => resolveTarget('a.b.example.com/x', undefined, allowed)),
    ['DENIED', 403],
  );
  t.same(
    code(() => resolveTarget('127.0.0.1_15058/x', undefined, allowed)),
    ['DENIED', 403],
  );
  t.same(
    code(() => resolveTarget('169.254.169.254/x', undefined, allowed)),
    ['DENIED', 403],
  );
  t.equal(resolveTarget('quay.io/x', undefined, allowed).registry, 'quay.io');
  t.equal(resolveTarget('x', 'reg.example.com', allowed).registry, 'reg.example.com');
  t.equal(resolveTarget('127.0.0.1_15059/x', undefined, allowed).registry, '127.0.0.1:15059');
  t.same(
    code(() => resolveTarget('x', 'anything.io', parseHostList([]))),
    ['DENIED', 403],
    'an empty list allows nothing',
  );
});

t.test('?ns= naming the proxy itself: the rewritten form (cluster-proxy fallback)', async (t) => {
  const self = parseHostList(['localhost:7439', '127.0.0.1:7439']);
  t.same(resolveTarget('docker.io/library/nginx', 'localhost:7439', any, self), {
    registry: 'docker.io',
    repository: 'library/nginx',
    cacheRepo: 'docker.io/library/nginx',
  });
  t.same(resolveTarget('myreg_5000/a', 'LOCALHOST:7439', any, self).registry, 'myreg:5000');
  t.same(
    code(() => resolveTarget('library/nginx', '127.0.0.1:7439', any, self)),
    ['NAME_UNKNOWN', 404],
  );
  t.same(
    code(() => resolveTarget('quay.io/UPPER', 'localhost:7439', any, self)),
    ['NAME_INVALID', 400],
  );
  t.same(
    code(() => resolveTarget('docker.io/library/nginx', 'localhost:7439', parseHostList(['quay.io']), self)),
    ['DENIED', 403],
  );
  // Any other ns is an origin, as before.
  t.same(resolveTarget('library/nginx', 'localhost:7440', any, self).registry, 'localhost:7440');
});
