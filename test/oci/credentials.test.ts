/** parseDockerConfig only (matching is tested with the kube credential sources). */
import t from 'tap';
import { credentialIdentity, parseDockerConfig } from '../../src/oci/credentials.js';

const b64 = (s: string) => Buffer.from(s).toString('base64');

t.test('config.json and .dockercfg shapes', async (t) => {
  const config = {
    auths: {
      'https://index.docker.io/v1/': { auth: b64('hub:pa:ss') },
      'quay.io': { username: 'u', password: 'p' },
      'ghcr.io': { auth: b64('ignored:x'), identitytoken: 'refresh' },
      'reg.example.com': { registrytoken: 'bearer-token', auth: b64('a:b') },
      'both.example.com': { auth: b64('from-auth:pw'), username: 'field', password: 'fieldpw' },
    },
    credsStore: 'desktop',
  };
  t.same(parseDockerConfig(config, 'secret ns/x'), [
    { key: 'https://index.docker.io/v1/', credential: { kind: 'basic', username: 'hub', password: 'pa:ss', label: 'secret ns/x https://index.docker.io/v1/' } },
    { key: 'quay.io', credential: { kind: 'basic', username: 'u', password: 'p', label: 'secret ns/x quay.io' } },
    { key: 'ghcr.io', credential: { kind: 'identity-token', username: 'ignored', token: 'refresh', label: 'secret ns/x ghcr.io' } },
    { key: 'reg.example.com', credential: { kind: 'registry-token', token: 'bearer-token', label: 'secret ns/x reg.example.com' } },
    { key: 'both.example.com', credential: { kind: 'basic', username: 'from-auth', password: 'pw', label: 'secret ns/x both.example.com' } },
  ]);
  // Legacy .dockercfg: the map itself.
  t.same(parseDockerConfig({ 'myreg:5000': { auth: b64('a:b'), email: 'x@y' } }, 'l'), [
    { key: 'myreg:5000', credential: { kind: 'basic', username: 'a', password: 'b', label: 'l myreg:5000' } },
  ]);
});

t.test('malformed entries are skipped, never echoed', async (t) => {
  for (const bad of [null, undefined, 1, 'str', [], true]) {
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- JSON.stringify(undefined) is undefined
    t.same(parseDockerConfig(bad, 'l'), [], JSON.stringify(bad) ?? 'undefined');
  }
  t.same(parseDockerConfig({ auths: null }, 'l'), [], 'auths: null');
  t.same(parseDockerConfig({ auths: {} }, 'l'), []);
  const entries = parseDockerConfig(
    {
      auths: {
        a: null,
        b: 'string',
        c: { auth: b64('no-colon') },
        d: { auth: b64(':only-password') },
        e: { auth: b64('user:') },
        f: { auth: '!!!not base64!!!' },
        g: { username: 'u' },
        h: { password: 'p' },
        i: { username: 1, password: 2 },
        j: { identitytoken: '' },
        k: { registrytoken: 42 },
        l: { auth: 12 },
      },
    },
    'l',
  );
  t.same(entries, []);
  // The identity of a credential is not the secret.
  const [e] = parseDockerConfig({ auths: { q: { username: 'u', password: 'hunter2' } } }, 'l');
  const id = credentialIdentity(e?.credential);
  t.notMatch(id, /hunter2/);
  t.match(id, /^basic:[0-9a-f]{16}$/);
  t.equal(credentialIdentity(undefined), 'anonymous');
  t.not(credentialIdentity({ kind: 'basic', username: 'u', password: 'a', label: 'x' }), credentialIdentity({ kind: 'basic', username: 'u', password: 'b', label: 'x' }));
  t.equal(credentialIdentity({ kind: 'basic', username: 'u', password: 'a', label: 'x' }), credentialIdentity({ kind: 'basic', username: 'u', password: 'a', label: 'y' }), 'labels do not change identity');
});
