/**
 * WWW-Authenticate properties (RFC 7235 / RFC 9110 section 11): challenges generated from the
 * grammar (token schemes, auth-params with token or quoted-string values and optional whitespace,
 * token68, several challenges in one value) parse back to their schemes and parameters; no string
 * makes the parser throw.
 */
import t from 'tap';
import fc from 'fast-check';
import { parseChallenges, type Challenge } from '../../src/oci/challenge.js';
import { runs } from './settings.js';

const tchar = "!#$%&'*+-.^_`|~0-9A-Za-z";
const token = fc.stringMatching(new RegExp(`^[${tchar.replace(/[-\]\\^]/g, '\\$&')}]{1,10}$`));
const scheme = fc.oneof(fc.constantFrom('Bearer', 'Basic', 'bearer', 'BASIC', 'Negotiate'), token);
const ows = fc.constantFrom('', '', ' ', '\t', '  ');
// qdtext and quoted-pair over printable ASCII; `"` and `\` are always escaped, others sometimes.
const quotedChar = fc
  .tuple(
    fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
    fc.boolean(),
  )
  .map(([c, esc]) => ({
    raw: c === '"' || c === '\\' || esc ? `\\${c}` : c,
    value: c,
  }));
const value = fc.oneof(
  token.map((v) => ({ text: v, value: v })),
  fc
    .array(quotedChar, { maxLength: 24 })
    .map((cs) => ({ text: `"${cs.map((c) => c.raw).join('')}"`, value: cs.map((c) => c.value).join('') })),
  fc
    .constantFrom('https://auth.docker.io/token', 'repository:library/nginx:pull', 'repository:a:pull,push')
    .map((v) => ({ text: `"${v}"`, value: v })),
);
const param = fc.tuple(
  fc.oneof(fc.constantFrom('realm', 'service', 'scope', 'error', 'REALM', '__proto__', 'constructor'), token),
  ows,
  ows,
  value,
);
// A token68 ending in one `=` (`Negotiate abc=`) reads as a parameter with an empty value: the
// grammar cannot tell them apart until the value is missing, and `Bearer realm=` is kept as
// `realm: ""` on purpose (test/oci/challenge.test.ts). No registry scheme uses token68.
const token68 = fc
  .tuple(fc.stringMatching(/^[A-Za-z0-9._~+/-]{1,16}$/), fc.constantFrom('', '=='))
  .map(([a, pad]) => a + pad);

interface Generated {
  readonly text: string;
  readonly want: Challenge;
}

const challenge: fc.Arbitrary<Generated> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .tuple(scheme, fc.uniqueArray(param, { selector: ([n]) => n.toLowerCase(), minLength: 1, maxLength: 5 }), ows)
      .map(([s, ps, sp]) => ({
        text: `${s} ${ps.map(([n, a, b, v]) => `${n}${a}=${b}${v.text}`).join(`${sp},${sp}`)}`,
        want: {
          scheme: s.toLowerCase(),
          params: Object.fromEntries(ps.map(([n, , , v]) => [n.toLowerCase(), v.value])),
        },
      })),
  },
  { weight: 1, arbitrary: scheme.map((s) => ({ text: s, want: { scheme: s.toLowerCase(), params: {} } })) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(scheme, token68)
      .map(([s, t68]) => ({ text: `${s} ${t68}`, want: { scheme: s.toLowerCase(), params: {} } })),
  },
);

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

t.test('generated challenges parse back', async (t) => {
  fc.assert(
    fc.property(fc.array(challenge, { minLength: 1, maxLength: 3 }), ows, (cs, sp) => {
      const header = cs.map((c) => c.text).join(`${sp},${sp}`);
      const got = parseChallenges(header);
      const want = cs.map((c) => c.want);
      if (!same(got, want))
        throw new Error(`${JSON.stringify(header)}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    }),
    runs(5000),
  );
  t.pass('5000 generated headers');
});

t.test('no string makes the parser throw', async (t) => {
  const noise = fc.oneof(
    fc.string({ maxLength: 80 }),
    fc.string({ unit: 'binary', maxLength: 80 }),
    fc.string({ unit: fc.constantFrom('Bearer', ' ', ',', '=', '"', '\\', 'a', 'realm', '\t', '=='), maxLength: 30 }),
  );
  fc.assert(
    fc.property(noise, (h) => {
      for (const c of parseChallenges(h)) {
        if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(c.scheme))
          throw new Error(`${JSON.stringify(h)}: scheme ${JSON.stringify(c.scheme)}`);
        if (Object.values(c.params).some((v) => typeof v !== 'string'))
          throw new Error(`${JSON.stringify(h)}: params ${JSON.stringify(c.params)}`);
      }
    }),
    runs(5000),
  );
  t.pass('5000 generated strings');
});
