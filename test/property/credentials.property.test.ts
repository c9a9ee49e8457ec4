/**
 * Docker config properties: any JSON value is read without throwing; generated configs give the
 * credentials a model of the kubelet's rules expects, and no secret reaches a label or an
 * identity; host globs match as a per-label wildcard does, in time bounded by the input sizes.
 */
import t from 'tap';
import fc from 'fast-check';
import {
  credentialIdentity,
  matchDockerConfig,
  parseDockerConfig,
  type Credential,
} from '../../src/oci/credentials.js';
import { runs } from './settings.js';

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
/** Secrets unlikely to appear by chance anywhere else. */
const secret = fc.stringMatching(/^[A-Za-z0-9+/=!@#$%^&*:]{12,24}$/).map((s) => `S3CR3T${s}`);
const user = fc.stringMatching(/^[A-Za-z0-9._@-]{1,12}$/);
const key = fc.oneof(
  fc.constantFrom(
    'https://index.docker.io/v1/',
    'docker.io',
    'quay.io',
    '*.example.com',
    'myreg:5000',
    'ghcr.io/org',
    'http://10.0.0.5:5000/team/app',
  ),
  fc.string({ maxLength: 20 }),
);

interface Entry {
  raw: Record<string, unknown>;
  want?: Credential['kind'];
  secrets: string[];
}
const entry: fc.Arbitrary<Entry> = fc.oneof(
  fc.tuple(user, secret).map(([u, p]) => ({ raw: { auth: b64(`${u}:${p}`) }, want: 'basic' as const, secrets: [p] })),
  fc.tuple(user, secret).map(([u, p]) => ({ raw: { username: u, password: p }, want: 'basic' as const, secrets: [p] })),
  fc
    .tuple(user, secret)
    .map(([u, tok]) => ({ raw: { username: u, identitytoken: tok }, want: 'identity-token' as const, secrets: [tok] })),
  fc.tuple(secret, secret).map(([tok, p]) => ({
    raw: { registrytoken: tok, auth: b64(`u:${p}`) },
    want: 'registry-token' as const,
    secrets: [tok, p],
  })),
  // Malformed: skipped.
  secret.map((p) => ({ raw: { auth: b64(`:${p}`) }, secrets: [p] })),
  secret.map((p) => ({ raw: { password: p }, secrets: [p] })),
  secret.map((p) => ({ raw: { auth: `!!${p}` }, secrets: [p] })),
  fc
    .anything()
    .filter((v) => typeof v !== 'string')
    .map((v) => ({ raw: { username: v, password: v, auth: v }, secrets: [] })),
);

t.test('any JSON value is read without throwing, into well-formed entries', async (t) => {
  const json = fc.oneof(
    fc.jsonValue(),
    fc.dictionary(key, fc.jsonValue()),
    fc.record({ auths: fc.oneof(fc.jsonValue(), fc.dictionary(key, fc.jsonValue())) }),
  );
  fc.assert(
    fc.property(json, (value) => {
      for (const e of parseDockerConfig(value, 'secret default/pull')) {
        if (e.credential.label !== `secret default/pull ${e.key}`) throw new Error(`label ${e.credential.label}`);
        if (!['basic', 'identity-token', 'registry-token'].includes(e.credential.kind))
          throw new Error(`kind ${e.credential.kind}`);
        credentialIdentity(e.credential);
      }
    }),
    runs(4000),
  );
  t.pass('4000 generated JSON values');
});

t.test('generated configs give the expected credentials; no secret reaches a label or an identity', async (t) => {
  const config = fc.tuple(fc.uniqueArray(fc.tuple(key, entry), { selector: ([k]) => k, maxLength: 5 }), fc.boolean());
  fc.assert(
    fc.property(config, ([entries, wrapped]) => {
      const map = Object.fromEntries(entries.map(([k, e]) => [k, e.raw]));
      // A legacy .dockercfg is the map itself; `auths` as a key of it would be read as the wrapper.
      if (!wrapped && 'auths' in map) return;
      const got = parseDockerConfig(JSON.parse(JSON.stringify(wrapped ? { auths: map } : map)), 'l');
      // Object key order puts integer-like keys first; the order of entries is not the point here.
      const want = entries
        .filter(([, e]) => e.want !== undefined)
        .map(([k, e]) => `${k} ${e.want}`)
        .sort();
      const gotKinds = got.map((g) => `${g.key} ${g.credential.kind}`).sort();
      if (JSON.stringify(gotKinds) !== JSON.stringify(want))
        throw new Error(`got ${JSON.stringify(gotKinds)}, want ${JSON.stringify(want)}`);
      const secrets = entries.flatMap(([, e]) => e.secrets);
      for (const g of got) {
        const visible = `${g.credential.label} ${credentialIdentity(g.credential)} ${g.key}`;
        const leaked = secrets.find((s) => visible.includes(s));
        if (leaked !== undefined) throw new Error(`secret ${leaked} in ${visible}`);
      }
    }),
    runs(4000),
  );
  t.pass('4000 generated configs');
});

/** The glob's meaning, as a regex over short inputs where backtracking stays cheap. */
function modelGlob(pattern: string, label: string): boolean {
  const re = new RegExp(
    `^${pattern
      .split('*')
      .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('[^.]*')}$`,
  );
  return re.test(label);
}

t.test('host globs match per label as a wildcard does', async (t) => {
  const globLabel = fc.stringMatching(/^[ab*?\-()]{1,8}$/);
  const hostLabel = fc.stringMatching(/^[ab?\-()]{1,10}$/);
  const credential: Credential = { kind: 'registry-token', token: 'x', label: 'l' };
  fc.assert(
    fc.property(
      fc.array(globLabel, { minLength: 1, maxLength: 3 }),
      fc.array(hostLabel, { minLength: 1, maxLength: 3 }),
      (pattern, host) => {
        const got = matchDockerConfig([{ key: pattern.join('.'), credential }], host.join('.'), 'r').length === 1;
        const want =
          pattern.length === host.length &&
          pattern.every((p, i) => p === host[i] || (p.includes('*') && modelGlob(p, host[i] as string)));
        if (got !== want) throw new Error(`${pattern.join('.')} vs ${host.join('.')}: got ${got}`);
      },
    ),
    runs(5000),
  );
  t.pass('5000 generated globs');
});

t.test('matching time is bounded by the input sizes, whatever the stars', async (t) => {
  const credential: Credential = { kind: 'registry-token', token: 'x', label: 'l' };
  // Stars between the letters a host label repeats, against a label that almost matches.
  const pattern = fc
    .array(fc.constantFrom('*a', 'a*', '*', 'a', '**a'), { minLength: 1, maxLength: 14 })
    .map((p) => p.join('').slice(0, 63));
  const host = fc
    .tuple(fc.integer({ min: 1, max: 62 }), fc.constantFrom('', 'b'))
    .map(([n, end]) => 'a'.repeat(n) + end);
  let slowest = 0;
  fc.assert(
    fc.property(pattern, host, (pattern, host) => {
      const started = performance.now();
      matchDockerConfig([{ key: `${pattern}.io`, credential }], `${host}.io`, 'r');
      const took = performance.now() - started;
      slowest = Math.max(slowest, took);
      if (took > 200) throw new Error(`${pattern}.io against ${host}.io took ${took.toFixed(1)} ms`);
    }),
    runs(2000),
  );
  t.pass(`2000 generated globs, slowest ${slowest.toFixed(2)} ms`);
});
