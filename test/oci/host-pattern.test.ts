import t from 'tap';
import { parseHostList } from '../../src/oci/host-pattern.js';

t.test('host lists as operators write them', async (t) => {
  const l = parseHostList([
    'quay.io',
    ' MyReg:5000 ',
    '*.example.com',
    '127.0.0.1:*',
    'index.docker.io',
    '',
    'localhost',
    '[::1]:5000',
  ]);
  t.same(l.patterns, [
    'quay.io',
    'myreg:5000',
    '*.example.com',
    '127.0.0.1:*',
    'index.docker.io',
    'localhost',
    '[::1]:5000',
  ]);
  const yes = [
    'quay.io',
    'myreg:5000',
    'a.example.com',
    'x-1.example.com',
    '127.0.0.1:1',
    '127.0.0.1:65535',
    'docker.io',
    'localhost',
    '[::1]:5000',
  ];
  const no = [
    'quay.io:443',
    'myreg',
    'myreg:5001',
    'a.b.example.com',
    'example.com',
    'a.example.com:5000',
    'aexample.com',
    'quayxio',
    'localhost:5000',
    'ghcr.io',
    'evil.com/quay.io',
    'quay.io.evil.com',
    '[::1]',
  ];
  for (const r of yes) t.ok(l.matches(r), `${r} matches`);
  for (const r of no) t.notOk(l.matches(r), `${r} does not match`);
});

t.test('* is any registry, an empty list none', async (t) => {
  const any = parseHostList(['*']);
  for (const r of ['docker.io', 'a.b.c:5000', '10.0.0.1', '[::1]:1']) t.ok(any.matches(r), r);
  const none = parseHostList([]);
  t.notOk(none.matches('docker.io'));
  t.notOk(parseHostList(['', '  ']).matches('docker.io'));
});

t.test('pattern text is never a regular expression', async (t) => {
  const l = parseHostList(['a.b', 'x(y|z)', 'q+.io', '[a-z].io', '^quay.io$']);
  t.notOk(l.matches('axb'), '. is literal');
  t.notOk(l.matches('xy'));
  t.notOk(l.matches('qq.io'));
  t.notOk(l.matches('b.io'));
  t.notOk(l.matches('quay.io'));
  t.ok(l.matches('a.b'));
  const star = parseHostList(['reg-*.corp.example']);
  t.ok(star.matches('reg-eu.corp.example'));
  t.notOk(star.matches('reg-eu.x.corp.example'), 'a * stays within one label');
  t.notOk(star.matches('reg-eu:5000.corp.example'));
});
