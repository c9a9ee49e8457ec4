import t from 'tap';
import { parseChallenges } from '../../src/oci/challenge.js';

t.test('the challenges registries send', async (t) => {
  t.same(
    parseChallenges(
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"',
    ),
    [
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.docker.io/token',
          service: 'registry.docker.io',
          scope: 'repository:library/nginx:pull',
        },
      },
    ],
  );
  t.same(parseChallenges('Basic realm="Registry Realm"'), [{ scheme: 'basic', params: { realm: 'Registry Realm' } }]);
  t.same(
    parseChallenges(
      'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/a:pull",error="insufficient_scope"',
    ),
    [
      {
        scheme: 'bearer',
        params: {
          realm: 'https://ghcr.io/token',
          service: 'ghcr.io',
          scope: 'repository:o/a:pull',
          error: 'insufficient_scope',
        },
      },
    ],
  );
  // A scope list with commas inside quotes stays one value.
  t.same(parseChallenges('Bearer realm="r",scope="repository:a:pull,push"')[0]?.params, {
    realm: 'r',
    scope: 'repository:a:pull,push',
  });
});

t.test('RFC 7235 syntax', async (t) => {
  t.same(
    parseChallenges('bearer REALM="caps"'),
    [{ scheme: 'bearer', params: { realm: 'caps' } }],
    'scheme and names are case-insensitive',
  );
  t.same(parseChallenges('Bearer realm = "spaced" , service = svc'), [
    { scheme: 'bearer', params: { realm: 'spaced', service: 'svc' } },
  ]);
  t.same(parseChallenges('Bearer realm=token-value'), [{ scheme: 'bearer', params: { realm: 'token-value' } }]);
  t.same(
    parseChallenges('Bearer realm="a\\"b\\\\c"'),
    [{ scheme: 'bearer', params: { realm: 'a"b\\c' } }],
    'quoted-pair',
  );
  t.same(
    parseChallenges('Bearer realm="a",,service="b"'),
    [{ scheme: 'bearer', params: { realm: 'a', service: 'b' } }],
    'empty list elements',
  );
  t.same(parseChallenges('Bearer realm="r", Basic realm="b"'), [
    { scheme: 'bearer', params: { realm: 'r' } },
    { scheme: 'basic', params: { realm: 'b' } },
  ]);
  t.same(parseChallenges('Negotiate, Bearer realm="r"'), [
    { scheme: 'negotiate', params: {} },
    { scheme: 'bearer', params: { realm: 'r' } },
  ]);
  t.same(
    parseChallenges('Negotiate abc123==, Basic realm="r"'),
    [
      { scheme: 'negotiate', params: {} },
      { scheme: 'basic', params: { realm: 'r' } },
    ],
    'token68',
  );
  t.same(parseChallenges('Bearer realm="r", Basic'), [
    { scheme: 'bearer', params: { realm: 'r' } },
    { scheme: 'basic', params: {} },
  ]);
});

t.test('garbage never throws', async (t) => {
  t.same(parseChallenges(undefined), []);
  t.same(parseChallenges(''), []);
  t.same(parseChallenges(',,, ,'), []);
  t.same(parseChallenges('"quoted"'), []);
  t.same(parseChallenges('====='), []);
  t.same(parseChallenges('Bearer realm="unterminated'), [{ scheme: 'bearer', params: { realm: 'unterminated' } }]);
  t.same(parseChallenges('Bearer realm='), [{ scheme: 'bearer', params: { realm: '' } }]);
  t.same(parseChallenges('Bearer realm="x\\'), [{ scheme: 'bearer', params: { realm: 'x\\' } }]);
  const weird = [
    '\u0000',
    'Bearer \u0000=1',
    'Bearer realm="\u00ff"',
    '\r\nBearer realm="x"',
    'B'.repeat(100_000),
    `Bearer ${'a=b,'.repeat(5000)}`,
    `Bearer realm="${'x'.repeat(100_000)}"`,
    'Bearer __proto__="x", constructor="y"',
  ];
  for (const h of weird) {
    t.doesNotThrow(() => parseChallenges(h), JSON.stringify(h.slice(0, 30)));
  }
  // Long headers are cut at 8 KiB instead of being parsed in full.
  const long = parseChallenges(`Bearer realm="${'x'.repeat(100_000)}"`);
  t.ok((long[0]?.params.realm?.length ?? 0) <= 8192);
  // Parameter names from the header never reach the prototype.
  const p = parseChallenges('Bearer __proto__="x"')[0]?.params as Record<string, unknown>;
  t.equal(Object.getPrototypeOf(p) === Object.prototype || Object.getPrototypeOf(p) === null, true);
  t.equal(({} as Record<string, unknown>).x, undefined);
});

t.test('a parameter named like a prototype property is a parameter', async (t) => {
  // Found by test/property/challenge.property.test.ts: `params[name] = value` with `__proto__`
  // set nothing, so the parameter was lost.
  const [c] = parseChallenges('Bearer __proto__="x", constructor="y", realm="r"');
  t.same(Object.entries(c?.params ?? {}), [
    ['__proto__', 'x'],
    ['constructor', 'y'],
    ['realm', 'r'],
  ]);
  t.equal(Object.getPrototypeOf(c?.params), Object.prototype);
  t.equal(c?.params.realm, 'r');
});
