/** matchDockerConfig against the kubelet's matching rules (credentialprovider.URLsMatch and the keyring). */
import t from 'tap';
import { matchDockerConfig, parseDockerConfig } from '../../src/oci/credentials.js';

function users(keys: string[], registry: string, repository: string): string[] {
  const auths = Object.fromEntries(keys.map((k) => [k, { username: k, password: 'p' }]));
  return matchDockerConfig(parseDockerConfig({ auths }, 'test'), registry, repository).map((c) =>
    c.kind === 'basic' ? c.username : '',
  );
}

t.test('hosts, schemes and case', async (t) => {
  t.same(users(['reg.example.com'], 'reg.example.com', 'a'), ['reg.example.com']);
  t.same(users(['https://reg.example.com'], 'reg.example.com', 'a'), ['https://reg.example.com']);
  t.same(users(['http://reg.example.com/'], 'reg.example.com', 'a'), ['http://reg.example.com/']);
  t.same(users(['REG.Example.COM'], 'reg.example.com', 'a'), ['REG.Example.COM']);
  t.same(users(['reg.example.com'], 'other.example.com', 'a'), []);
  t.same(users(['example.com'], 'reg.example.com', 'a'), [], 'no suffix matching without a glob');
  t.same(users(['10.0.0.5:5000'], '10.0.0.5:5000', 'a'), ['10.0.0.5:5000']);
  t.same(users(['localhost:5000'], 'localhost:5000', 'a'), ['localhost:5000']);
});

t.test('globs, one label at a time', async (t) => {
  t.same(users(['*.example.com'], 'reg.example.com', 'a'), ['*.example.com']);
  t.same(users(['*.example.com'], 'example.com', 'a'), []);
  t.same(users(['*.example.com'], 'a.reg.example.com', 'a'), []);
  t.same(users(['*.*.example.com'], 'a.reg.example.com', 'a'), ['*.*.example.com']);
  t.same(users(['reg-*.example.com'], 'reg-eu.example.com', 'a'), ['reg-*.example.com']);
  t.same(users(['*.example.com:5000'], 'reg.example.com:5000', 'a'), ['*.example.com:5000']);
  t.same(users(['*.example.com:5000'], 'reg.example.com', 'a'), []);
  t.same(
    users(['*.example.com', 'reg.example.com'], 'reg.example.com', 'a'),
    ['reg.example.com', '*.example.com'],
    'exact before glob',
  );
});

t.test('ports must be equal', async (t) => {
  t.same(users(['reg.example.com:5000'], 'reg.example.com', 'a'), []);
  t.same(users(['reg.example.com'], 'reg.example.com:5000', 'a'), []);
  t.same(users(['reg.example.com:443'], 'reg.example.com', 'a'), [], 'the kubelet compares ports as written');
});

t.test('path prefixes', async (t) => {
  t.same(users(['reg.example.com/team'], 'reg.example.com', 'team/app'), ['reg.example.com/team']);
  t.same(users(['reg.example.com/team/'], 'reg.example.com', 'team/app'), ['reg.example.com/team/']);
  t.same(users(['reg.example.com/team/app'], 'reg.example.com', 'team/app'), ['reg.example.com/team/app']);
  t.same(users(['reg.example.com/team'], 'reg.example.com', 'other/app'), []);
  t.same(
    users(['reg.example.com', 'reg.example.com/team', 'reg.example.com/team/app'], 'reg.example.com', 'team/app'),
    ['reg.example.com/team/app', 'reg.example.com/team', 'reg.example.com'],
    'most specific first',
  );
});

t.test('Docker Hub aliases', async (t) => {
  for (const key of [
    'docker.io',
    'index.docker.io',
    'registry-1.docker.io',
    'https://index.docker.io/v1/',
    'https://index.docker.io/v1',
  ]) {
    for (const registry of ['docker.io', 'index.docker.io', 'registry-1.docker.io']) {
      t.same(users([key], registry, 'library/nginx'), [key], `${key} for ${registry}`);
    }
    t.same(users([key], 'quay.io', 'library/nginx'), [], `${key} is not for other registries`);
  }
  t.same(users(['docker.io/acme'], 'docker.io', 'acme/app'), ['docker.io/acme']);
  t.same(users(['docker.io/acme'], 'docker.io', 'library/nginx'), []);
});
