/** parseDockerConfig only (matching is tested with the kube credential sources). */
import t from 'tap';
import { credentialIdentity, matchDockerConfig, parseDockerConfig } from '../../src/oci/credentials.js';

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
    {
      key: 'https://index.docker.io/v1/',
      credential: {
        kind: 'basic',
        username: 'hub',
        password: 'pa:ss',
        label: 'secret ns/x https://index.docker.io/v1/',
      },
    },
    { key: 'quay.io', credential: { kind: 'basic', username: 'u', password: 'p', label: 'secret ns/x quay.io' } },
    {
      key: 'ghcr.io',
      credential: { kind: 'identity-token', username: 'ignored', token: 'refresh', label: 'secret ns/x ghcr.io' },
    },
    {
      key: 'reg.example.com',
      credential: { kind: 'registry-token', token: 'bearer-token', label: 'secret ns/x reg.example.com' },
    },
    {
      key: 'both.example.com',
      credential: { kind: 'basic', username: 'from-auth', password: 'pw', label: 'secret ns/x both.example.com' },
    },
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
  t.not(
    credentialIdentity({ kind: 'basic', username: 'u', password: 'a', label: 'x' }),
    credentialIdentity({ kind: 'basic', username: 'u', password: 'b', label: 'x' }),
  );
  t.equal(
    credentialIdentity({ kind: 'basic', username: 'u', password: 'a', label: 'x' }),
    credentialIdentity({ kind: 'basic', username: 'u', password: 'a', label: 'y' }),
    'labels do not change identity',
  );
});

t.test('a glob key cannot make matching backtrack without end', async (t) => {
  // Each `*` was a `[^.]*` in one regex (found while writing the credentials properties), and
  // this key (a pull secret's, any namespace may write one) against this image's host took 207 s.
  const credential = { kind: 'registry-token' as const, token: 'x', label: 'l' };
  const started = Date.now();
  t.same(matchDockerConfig([{ key: `${'*a'.repeat(16)}*b.io`, credential }], `${'a'.repeat(60)}.io`, 'r'), []);
  t.same(matchDockerConfig([{ key: `${'*a'.repeat(16)}*.io`, credential }], `${'a'.repeat(60)}.io`, 'r'), [credential]);
  t.ok(Date.now() - started < 1000, `matched in ${Date.now() - started} ms`);
  // What the glob means is unchanged: `*` is any run inside one label, other characters are literal.
  t.same(matchDockerConfig([{ key: 'r*g-?.ex(a)mple.com', credential }], 'reg-?.ex(a)mple.com', 'r'), [credential]);
  t.same(matchDockerConfig([{ key: 'r*g-?.example.com', credential }], 'reg-x.example.com', 'r'), []);
  t.same(matchDockerConfig([{ key: '*', credential }], 'a.b', 'r'), []);
  t.same(matchDockerConfig([{ key: 'a**', credential }], 'a', 'r'), [credential]);
});

t.test('an auth that is not strict base64 is no credential', async (t) => {
  // Found by test/property/credentials.property.test.ts: Buffer.from skips what is not base64, and
  // read this as a user and a password made of its letters (`Kp\uFFFD\uFFFD` and `\u001a`).
  t.same(parseDockerConfig({ auths: { q: { auth: '!!S3CR3Toa**!:$=%\\#/0*^' } } }, 'l'), []);
  t.same(parseDockerConfig({ auths: { q: { auth: `${b64('u:p')}!` } } }, 'l'), []);
  t.same(
    parseDockerConfig({ auths: { q: { auth: b64('u:pw').replace(/=+$/, '') } } }, 'l'),
    [],
    'padding is part of the encoding',
  );
  // Then the separate fields still count, as with an auth that holds no colon.
  t.same(parseDockerConfig({ auths: { q: { auth: '!!', username: 'u', password: 'p' } } }, 'l'), [
    { key: 'q', credential: { kind: 'basic', username: 'u', password: 'p', label: 'l q' } },
  ]);
  t.same(parseDockerConfig({ auths: { q: { auth: b64('u:p:q') } } }, 'l'), [
    { key: 'q', credential: { kind: 'basic', username: 'u', password: 'p:q', label: 'l q' } },
  ]);
  // Line breaks are skipped, as Go's decoder skips them: `base64` wraps a long key at 76 columns.
  const long = b64(`_json_key:${'k'.repeat(100)}`);
  t.same(
    parseDockerConfig(
      {
        auths: {
          q: {
            auth: `${long.slice(0, 76)}
${long.slice(76)}
`,
          },
        },
      },
      'l',
    ),
    [{ key: 'q', credential: { kind: 'basic', username: '_json_key', password: 'k'.repeat(100), label: 'l q' } }],
  );
});
