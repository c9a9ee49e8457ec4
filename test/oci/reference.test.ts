import t from 'tap';
import { OciError } from '../../src/oci/errors.js';
import {
  formatReference,
  isValidRepository,
  isValidTag,
  normalizeRegistry,
  parseReference,
  parseRegistryHost,
} from '../../src/oci/reference.js';

const D256 = `sha256:${'a'.repeat(64)}`;
const D512 = `sha512:${'b'.repeat(128)}`;

t.test('parseReference normalises as containerd does', async (t) => {
  const cases: [string, object][] = [
    ['nginx', { registry: 'docker.io', repository: 'library/nginx' }],
    ['nginx:1.27', { registry: 'docker.io', repository: 'library/nginx', tag: '1.27' }],
    [`nginx@${D256}`, { registry: 'docker.io', repository: 'library/nginx', digest: D256 }],
    [`nginx:1@${D512}`, { registry: 'docker.io', repository: 'library/nginx', tag: '1', digest: D512 }],
    ['user/app', { registry: 'docker.io', repository: 'user/app' }],
    ['docker.io/nginx', { registry: 'docker.io', repository: 'library/nginx' }],
    ['index.docker.io/library/nginx', { registry: 'docker.io', repository: 'library/nginx' }],
    ['Index.Docker.IO/user/app', { registry: 'docker.io', repository: 'user/app' }],
    ['registry-1.docker.io/library/nginx', { registry: 'registry-1.docker.io', repository: 'library/nginx' }],
    ['quay.io/org/app:v1', { registry: 'quay.io', repository: 'org/app', tag: 'v1' }],
    ['quay.io/app', { registry: 'quay.io', repository: 'app' }],
    ['QUAY.io/org/app', { registry: 'quay.io', repository: 'org/app' }],
    ['myreg:5000/a', { registry: 'myreg:5000', repository: 'a' }],
    ['myreg:5000/a:5000', { registry: 'myreg:5000', repository: 'a', tag: '5000' }],
    ['localhost/a', { registry: 'localhost', repository: 'a' }],
    ['localhost:5000/a/b/c', { registry: 'localhost:5000', repository: 'a/b/c' }],
    ['10.0.0.5:5000/app', { registry: '10.0.0.5:5000', repository: 'app' }],
    ['255.255.255.255/app', { registry: '255.255.255.255', repository: 'app' }],
    ['[::1]:5000/app', { registry: '[::1]:5000', repository: 'app' }],
    ['[FE80::1]/app', { registry: '[fe80::1]', repository: 'app' }],
    ['MyReg/app', { registry: 'myreg', repository: 'app' }],
    ['a/b__c/d-e/f.g', { registry: 'docker.io', repository: 'a/b__c/d-e/f.g' }],
    ['a---b', { registry: 'docker.io', repository: 'library/a---b' }],
    [`x:${'T'.repeat(128)}`, { registry: 'docker.io', repository: 'library/x', tag: 'T'.repeat(128) }],
    ['x:_', { registry: 'docker.io', repository: 'library/x', tag: '_' }],
    ['localhost', { registry: 'docker.io', repository: 'library/localhost' }],
    ['localhost:5000', { registry: 'docker.io', repository: 'library/localhost', tag: '5000' }],
  ];
  for (const [input, expected] of cases) t.same(parseReference(input), expected, input);
});

t.test('malformed references are NAME_INVALID / DIGEST_INVALID / UNSUPPORTED', async (t) => {
  const cases: [string, string][] = [
    ['', 'NAME_INVALID'],
    ['x'.repeat(1025), 'NAME_INVALID'],
    ['Nginx', 'NAME_INVALID'],
    ['user/App', 'NAME_INVALID'],
    ['quay.io/', 'NAME_INVALID'],
    ['quay.io//a', 'NAME_INVALID'],
    ['/a', 'NAME_INVALID'],
    ['a/', 'NAME_INVALID'],
    ['quay.io/a/../b', 'NAME_INVALID'],
    ['quay.io/./a', 'NAME_INVALID'],
    ['quay.io/a%2fb', 'NAME_INVALID'],
    ['quay.io/a\\b', 'NAME_INVALID'],
    ['a b', 'NAME_INVALID'],
    ['a\tb', 'NAME_INVALID'],
    ['a\nb', 'NAME_INVALID'],
    ['a\u0000b', 'NAME_INVALID'],
    ['a\u007fb', 'NAME_INVALID'],
    ['nginx:', 'NAME_INVALID'],
    ['nginx:-x', 'NAME_INVALID'],
    ['nginx:.x', 'NAME_INVALID'],
    [`nginx:${'t'.repeat(129)}`, 'NAME_INVALID'],
    ['nginx:a/b', 'NAME_INVALID'],
    ['nginx:a:b', 'NAME_INVALID'],
    ['a_/b', 'NAME_INVALID'],
    ['a___b', 'NAME_INVALID'],
    ['-a', 'NAME_INVALID'],
    ['a.', 'NAME_INVALID'],
    ['quay.io:/a', 'NAME_INVALID'],
    ['quay.io:0/a', 'NAME_INVALID'],
    ['quay.io:05000/a', 'NAME_INVALID'],
    ['quay.io:65536/a', 'NAME_INVALID'],
    ['quay.io:x/a', 'NAME_INVALID'],
    ['-quay.io/a', 'NAME_INVALID'],
    ['quay-.io/a', 'NAME_INVALID'],
    ['quay..io/a', 'NAME_INVALID'],
    ['quay_io.com/a', 'NAME_INVALID'],
    ['1.2.3/a', 'NAME_INVALID'],
    ['256.1.1.1/a', 'NAME_INVALID'],
    ['1.2.3.4.5/a', 'NAME_INVALID'],
    ['[::1/a', 'NAME_INVALID'],
    ['[::1]x/a', 'NAME_INVALID'],
    ['[zz::1]/a', 'NAME_INVALID'],
    ['[127.0.0.1]/a', 'NAME_INVALID'],
    [`${'a'.repeat(250)}.com/a`, 'NAME_INVALID'],
    [`quay.io/${'a'.repeat(256)}`, 'NAME_INVALID'],
    ['nginx@', 'DIGEST_INVALID'],
    ['nginx@sha256', 'DIGEST_INVALID'],
    ['nginx@sha256:', 'DIGEST_INVALID'],
    ['nginx@sha256:abc', 'DIGEST_INVALID'],
    [`nginx@sha256:${'A'.repeat(64)}`, 'DIGEST_INVALID'],
    [`nginx@sha256:${'a'.repeat(65)}`, 'DIGEST_INVALID'],
    [`nginx@sha512:${'a'.repeat(64)}`, 'DIGEST_INVALID'],
    [`nginx@${D256}@${D256}`, 'DIGEST_INVALID'],
    ['nginx@sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709', 'UNSUPPORTED'],
    ['nginx@md5:d41d8cd98f00b204e9800998ecf8427e', 'UNSUPPORTED'],
  ];
  for (const [input, code] of cases) {
    let err: unknown;
    try {
      parseReference(input);
    } catch (e) {
      err = e;
    }
    t.ok(err instanceof OciError, `${JSON.stringify(input.slice(0, 60))} throws an OciError`);
    t.equal(
      (err as OciError | undefined)?.code,
      code,
      `${JSON.stringify(input.slice(0, 60))}: ${(err as Error | undefined)?.message.slice(0, 100)}`,
    );
  }
  // Messages quote at most a bounded slice of the input.
  try {
    parseReference('A'.repeat(1000));
  } catch (e) {
    t.ok((e as Error).message.length < 400);
  }
});

t.test('registry hosts', async (t) => {
  t.same(parseRegistryHost('Quay.IO:443'), { host: 'quay.io', port: 443, kind: 'name' });
  t.same(parseRegistryHost('10.0.0.1'), { host: '10.0.0.1', port: undefined, kind: 'ipv4' });
  t.same(parseRegistryHost('[::1]:1'), { host: '[::1]', port: 1, kind: 'ipv6' });
  t.same(parseRegistryHost('localhost'), { host: 'localhost', port: undefined, kind: 'name' });
  for (const bad of [
    '',
    ':5000',
    'a:',
    'a:0',
    'a:65536',
    'a:-1',
    'a:1:2',
    '[::1]:',
    '[::1]5000',
    '[]',
    '[::g]',
    'a b',
    'a/b',
    '01.2.3.4',
    '1.2.3',
    'a'.repeat(254),
    `${'a.'.repeat(140)}com`,
  ]) {
    t.equal(parseRegistryHost(bad), undefined, JSON.stringify(bad.slice(0, 40)));
  }
  t.equal(normalizeRegistry('INDEX.DOCKER.IO'), 'docker.io');
  t.equal(normalizeRegistry('docker.io'), 'docker.io');
  t.equal(normalizeRegistry('docker.io:443'), 'docker.io:443');
  t.equal(normalizeRegistry('Example.COM:5000'), 'example.com:5000');
  t.equal(normalizeRegistry('not a host'), undefined);
});

t.test('tags, repositories and formatting', async (t) => {
  t.ok(isValidTag('latest'));
  t.ok(isValidTag('A_b.c-D'));
  t.notOk(isValidTag(''));
  t.notOk(isValidTag('.a'));
  t.notOk(isValidTag('a+b'));
  t.ok(isValidRepository('a/b/c'));
  t.ok(isValidRepository('a'.repeat(255)));
  t.notOk(isValidRepository('a'.repeat(256)));
  t.notOk(isValidRepository(''));
  t.notOk(isValidRepository('a//b'));
  t.equal(formatReference({ registry: 'docker.io', repository: 'library/nginx' }), 'docker.io/library/nginx:latest');
  t.equal(
    formatReference({ registry: 'docker.io', repository: 'library/nginx' }, { defaultTag: false }),
    'docker.io/library/nginx',
  );
  t.equal(formatReference({ registry: 'q.io', repository: 'a', digest: D256 }), `q.io/a@${D256}`);
  t.equal(formatReference({ registry: 'q.io', repository: 'a', tag: 't', digest: D256 }), `q.io/a:t@${D256}`);
  // format(parse(x)) is a fixed point of parse.
  for (const s of ['nginx', 'myreg:5000/a:1', `localhost/a@${D256}`, 'Quay.io/x/y:Z']) {
    const r = parseReference(s);
    t.same(parseReference(formatReference(r, { defaultTag: false })), r, s);
  }
});
