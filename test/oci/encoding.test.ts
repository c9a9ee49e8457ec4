/**
 * The rewritten-image encoding: the table of src/oci/encoding.ts, then round-trip properties over
 * a few thousand generated references (deterministic: a seeded PRNG, no dependency).
 */
import t from 'tap';
import {
  cacheRepositoryName,
  decodeImage,
  decodeName,
  decodeRegistry,
  encodeImage,
  encodeReference,
  encodeRegistry,
} from '../../src/oci/encoding.js';
import { formatReference, isValidRepository, parseReference, type ImageReference } from '../../src/oci/reference.js';

const PROXY = 'localhost:7439';
const D256 = `sha256:${'0123456789abcdef'.repeat(4)}`;
const D512 = `sha512:${'fedcba9876543210'.repeat(8)}`;

/** distribution/reference's path grammar, written out independently of src/oci/reference.ts. */
const DISTRIBUTION_NAME = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;

function encodedName(rewritten: string): string {
  const r = parseReference(rewritten);
  return r.repository;
}

t.test('the table in the module header', async (t) => {
  const table: [string, string][] = [
    ['nginx', 'docker.io/library/nginx:latest'],
    ['index.docker.io/library/alpine:3', 'docker.io/library/alpine:3'],
    ['quay.io/org/app:1', 'quay.io/org/app:1'],
    ['myreg:5000/team/app:1', 'myreg_5000/team/app:1'],
    ['localhost:5000/foo', 'localhost_5000/foo:latest'],
    ['localhost/foo', 'localhost/foo:latest'],
    [`10.0.0.5:5000/app@${D256}`, `10.0.0.5_5000/app@${D256}`],
    [`ghcr.io/o/a:v1@${D256}`, `ghcr.io/o/a:v1@${D256}`],
  ];
  for (const [image, encoded] of table) {
    const r = encodeImage(image, PROXY);
    t.same(r, { ok: true, value: `${PROXY}/${encoded}` }, image);
    const d = decodeImage(`${PROXY}/${encoded}`, PROXY);
    t.ok(d.ok, `decodes ${encoded}`);
    const expected = parseReference(image);
    t.same(
      d.ok && d.value,
      expected.tag === undefined && expected.digest === undefined ? { ...expected, tag: 'latest' } : expected,
      `round trip ${image}`,
    );
  }
  const v6 = encodeImage('[::1]:5000/app', PROXY);
  t.equal(v6.ok, false, 'IPv6 literal registry is not encodable');
  t.match(!v6.ok && v6.reason, /IPv6/);
});

t.test('the other Docker Hub spellings and host forms', async (t) => {
  const same = (a: string, b: string) => t.same(encodeImage(a, PROXY), encodeImage(b, PROXY), `${a} == ${b}`);
  same('nginx', 'docker.io/library/nginx:latest');
  same('library/nginx', 'docker.io/library/nginx');
  same('index.docker.io/nginx', 'docker.io/library/nginx');
  same('DOCKER.IO/library/nginx', 'docker.io/library/nginx');
  same('Quay.IO/org/app:1', 'quay.io/org/app:1');
  same('LOCALHOST:5000/foo', 'localhost:5000/foo');
  t.same(encodeImage('myuser/app:2', PROXY), { ok: true, value: `${PROXY}/docker.io/myuser/app:2` });
  t.same(encodeImage(`nginx:1.27@${D512}`, PROXY), {
    ok: true,
    value: `${PROXY}/docker.io/library/nginx:1.27@${D512}`,
  });
  t.same(encodeImage('10.0.0.5/app', PROXY), { ok: true, value: `${PROXY}/10.0.0.5/app:latest` });
  t.same(encodeImage('reg.example.com:443/a/b/c/d:x', PROXY), {
    ok: true,
    value: `${PROXY}/reg.example.com_443/a/b/c/d:x`,
  });
  t.same(encodeImage('xn--bcher-kva.example:65535/a', PROXY), {
    ok: true,
    value: `${PROXY}/xn--bcher-kva.example_65535/a:latest`,
  });
  // Docker Hub on an explicit port is another registry, not an alias.
  t.same(encodeImage('docker.io:443/x', PROXY), { ok: true, value: `${PROXY}/docker.io_443/x:latest` });
});

t.test('what cannot be encoded is reported as such', async (t) => {
  const cases: [string, RegExp][] = [
    ['[::1]:5000/app', /IPv6/],
    ['[fe80::1]/app:1', /IPv6/],
    // An upper-case dotless name is a domain (distribution/reference) but has no encoded form.
    ['MyReg/app', /no dot or port/],
    [`quay.io/${'a'.repeat(250)}`, /over 255/],
    [`docker.io/x/${'a'.repeat(250)}`, /over 255/],
    [`localhost:5000/${Array.from({ length: 50 }, () => 'abcd').join('/')}`, /over 255/],
    // library/ is added before the repository's own 255-character limit applies.
    ['a'.repeat(250), /invalid repository name/],
    ['', /invalid image reference/],
    ['UPPER/case', /no dot or port/],
    ['quay.io/UPPER/case', /invalid repository name/],
    ['nginx:-bad', /invalid tag/],
    ['nginx@sha1:abc', /unsupported digest algorithm/],
    [`nginx@sha256:${'A'.repeat(64)}`, /invalid sha256 digest/],
    ['quay.io:0/a', /invalid registry host/],
    ['quay.io:65536/a', /invalid registry host/],
    ['1.2.3/a', /invalid registry host/],
    ['a b/c', /white space/],
    ['quay.io//a', /invalid repository/],
    ['quay.io/a/../b', /invalid repository/],
    ['quay.io/a%2Fb', /invalid/],
  ];
  for (const [image, why] of cases) {
    const r = encodeImage(image, PROXY);
    t.equal(r.ok, false, `${JSON.stringify(image.slice(0, 40))} is refused`);
    t.match(!r.ok && r.reason, why, `${JSON.stringify(image.slice(0, 40))}: ${!r.ok && r.reason.slice(0, 120)}`);
  }
  // The longest name that still fits is encoded.
  const fits = `quay.io/${'a'.repeat(255 - 'quay.io/'.length)}`;
  t.equal(fits.length, 255);
  t.ok(encodeImage(fits, PROXY).ok, 'a 255-character encoded name is accepted');
  t.throws(() => cacheRepositoryName('[::1]:5000', 'app'), /IPv6/);
  t.same(encodeRegistry('myreg'), {
    ok: false,
    reason: 'registry myreg has no dot or port and would read as a repository',
  });
});

t.test('decodeImage refuses what the encoder did not write', async (t) => {
  const refused = [
    'docker.io/library/nginx:latest', // not rewritten: the first component is `library`
    `${PROXY}/library/nginx`,
    `${PROXY}/nginx`,
    `${PROXY}/myuser/app`,
    `${PROXY}/quay.io_0/app`,
    `${PROXY}/quay.io_65536/app`,
    `${PROXY}/quay.io__5000/app`,
    `${PROXY}/quay.io_50_00/app`,
    `${PROXY}/quay.io_05000/app`,
    `${PROXY}/myreg/app`,
    `${PROXY}/1.2.3/app`,
    `${PROXY}/quay.io`,
  ];
  for (const r of refused) t.equal(decodeImage(r, PROXY).ok, false, r);
  t.match(decodeImage('other:7439/quay.io/a', PROXY), { ok: false, reason: /does not point at the proxy/ });
  t.match(decodeImage('LOCALHOST:7439/quay.io/a', PROXY), {
    ok: true,
    value: { registry: 'quay.io', repository: 'a' },
  });
  t.same(decodeImage(`${PROXY}/quay.io/a:1@${D256}`), {
    ok: true,
    value: { registry: 'quay.io', repository: 'a', tag: '1', digest: D256 },
  });
  t.equal(decodeName('library/nginx'), undefined);
  t.equal(decodeName('nginx'), undefined);
  t.equal(decodeName('quay.io/'), undefined);
  t.equal(decodeName('quay.io/UPPER'), undefined);
  t.same(decodeName('quay.io/org/app'), { registry: 'quay.io', repository: 'org/app' });
  // The one accepted alias: index.docker.io is Docker Hub, as everywhere else.
  t.same(decodeName('index.docker.io/library/nginx'), { registry: 'docker.io', repository: 'library/nginx' });
});

// ---------------------------------------------------------------------------------------------
// Generated references

/** mulberry32: small, fast, deterministic. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

class Gen {
  constructor(readonly rnd: () => number) {}
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.rnd() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(0, xs.length - 1)] as T;
  }
  chance(p: number): boolean {
    return this.rnd() < p;
  }
  chars(alphabet: string, lo: number, hi: number): string {
    let s = '';
    const n = this.int(lo, hi);
    for (let i = 0; i < n; i++) s += alphabet.charAt(this.int(0, alphabet.length - 1));
    return s;
  }
}

const LOWER = 'abcdefghijklmnopqrstuvwxyz';
const ALNUM = `${LOWER}0123456789`;
const HEX = '0123456789abcdef';
const TAG_FIRST = `${ALNUM}ABCDEFGHIJKLMNOPQRSTUVWXYZ_`;
const TAG_REST = `${TAG_FIRST}.-`;

interface Sample {
  readonly input: string;
  /** What the reference means, worked out by the generator (not by the code under test). */
  readonly expected: ImageReference;
}

function hostLabel(g: Gen): string {
  if (g.chance(0.7)) return g.chars(ALNUM, 1, 10);
  return `${g.chars(ALNUM, 1, 4)}${g.pick(['-', '--', '-a-'])}${g.chars(ALNUM, 1, 4)}`;
}

function randomCase(g: Gen, s: string): string {
  return Array.from(s)
    .map((c) => (g.chance(0.5) ? c.toUpperCase() : c))
    .join('');
}

/** [as written, normalised]; undefined: no registry part at all (a Docker Hub short name). */
function registry(g: Gen): [string, string] | undefined {
  const port = () => String(g.pick([1, 80, 443, 5000, 8080, 65535, g.int(1, 65535)]));
  switch (g.int(0, 9)) {
    case 0:
      return undefined;
    case 1:
      return g.pick([
        ['docker.io', 'docker.io'],
        ['index.docker.io', 'docker.io'],
        ['Docker.IO', 'docker.io'],
        ['INDEX.docker.io', 'docker.io'],
      ] as [string, string][]);
    case 2: {
      const labels = Array.from({ length: g.int(1, 3) }, () => hostLabel(g));
      labels.push(g.chars(LOWER, 2, 6)); // a TLD with a letter
      const host = labels.join('.');
      if (g.chance(0.5)) return [host, host];
      const p = port();
      return [`${host}:${p}`, `${host}:${p}`];
    }
    case 3: {
      const host = g.chars(LOWER, 1, 1) + g.chars(ALNUM, 0, 12);
      const p = port();
      return [`${host}:${p}`, `${host}:${p}`];
    }
    case 4: {
      if (g.chance(0.5)) return ['localhost', 'localhost'];
      const p = port();
      return [`localhost:${p}`, `localhost:${p}`];
    }
    case 5: {
      const ip = Array.from({ length: 4 }, () => String(g.pick([0, 1, 10, 127, 192, 255, g.int(0, 255)]))).join('.');
      if (g.chance(0.5)) return [ip, ip];
      const p = port();
      return [`${ip}:${p}`, `${ip}:${p}`];
    }
    case 6: {
      // Upper-case host names (case-insensitive: normalised to lower case).
      const host = `${hostLabel(g)}.${g.chars(LOWER, 2, 5)}`;
      const written = randomCase(g, host);
      if (g.chance(0.5)) return [written, host];
      const p = port();
      return [`${written}:${p}`, `${host}:${p}`];
    }
    case 7: {
      const host = g.pick(['LOCALHOST', 'LocalHost']);
      const p = port();
      return g.chance(0.5) ? [host, 'localhost'] : [`${host}:${p}`, `localhost:${p}`];
    }
    default: {
      const host = g.pick(['quay.io', 'ghcr.io', 'gcr.io', 'registry.k8s.io', 'public.ecr.aws', 'mcr.microsoft.com']);
      return [host, host];
    }
  }
}

function pathComponent(g: Gen): string {
  let s = g.chars(ALNUM, 1, 8);
  const parts = g.int(0, 3);
  for (let i = 0; i < parts; i++) s += g.pick(['.', '_', '__', '-', '--', '---']) + g.chars(ALNUM, 1, 6);
  return s;
}

function repository(g: Gen, hasRegistry: boolean): string {
  const n = g.int(1, 4);
  const comps = Array.from({ length: n }, () => pathComponent(g));
  if (g.chance(0.03)) comps.push('x'.repeat(g.int(150, 240))); // near and over the length cap
  if (!hasRegistry && comps.length > 1) {
    // Without a registry part, a first component with a dot (or `localhost`) would be a domain.
    comps[0] = (comps[0] as string).replace(/\./g, '-');
    if (comps[0] === 'localhost') comps[0] = 'localhosts';
  }
  return comps.join('/');
}

function sample(g: Gen): Sample {
  const reg = registry(g);
  let repo = repository(g, reg !== undefined);
  while (repo.length > 255) repo = repo.slice(0, repo.lastIndexOf('/'));
  const normReg = reg?.[1] ?? 'docker.io';
  const normRepo = normReg === 'docker.io' && !repo.includes('/') ? `library/${repo}` : repo;
  let tag: string | undefined;
  let digest: string | undefined;
  const form = g.int(0, 3);
  if (form === 1 || form === 3)
    tag = g.chance(0.02)
      ? g.chars(TAG_FIRST, 1, 1) + g.chars(TAG_REST, 127, 127)
      : g.chars(TAG_FIRST, 1, 1) + g.chars(TAG_REST, 0, 20);
  if (form === 2 || form === 3)
    digest = g.chance(0.8) ? `sha256:${g.chars(HEX, 64, 64)}` : `sha512:${g.chars(HEX, 128, 128)}`;
  const input =
    `${reg ? `${reg[0]}/` : ''}${repo}` +
    `${tag !== undefined ? `:${tag}` : ''}${digest !== undefined ? `@${digest}` : ''}`;
  return {
    input,
    expected: {
      registry: normReg,
      repository: normRepo,
      ...(tag !== undefined ? { tag } : {}),
      ...(digest !== undefined ? { digest } : {}),
    },
  };
}

const N = 6000;
const samples: Sample[] = [];
{
  const g = new Gen(prng(0x5eed));
  for (let i = 0; i < N; i++) samples.push(sample(g));
}

t.test(`round trip over ${N} generated references`, async (t) => {
  const byEncoding = new Map<string, string>();
  let encoded = 0;
  let tooLong = 0;
  const failures: string[] = [];
  const fail = (s: Sample, why: string) => {
    if (failures.length < 20) failures.push(`${s.input}: ${why}`);
  };
  for (const s of samples) {
    let parsed: ImageReference;
    try {
      parsed = parseReference(s.input);
    } catch (err) {
      fail(s, `parseReference threw ${(err as Error).message}`);
      continue;
    }
    if (JSON.stringify(parsed) !== JSON.stringify(s.expected))
      fail(s, `parsed as ${JSON.stringify(parsed)}, expected ${JSON.stringify(s.expected)}`);
    const withTag: ImageReference =
      parsed.tag === undefined && parsed.digest === undefined ? { ...parsed, tag: 'latest' } : parsed;
    const proxy = encoded % 3 === 0 ? PROXY : encoded % 3 === 1 ? '127.0.0.1:7439' : 'pullthrough.kube-system.svc:5000';
    const enc = encodeImage(s.input, proxy);
    const nameLength = `${parsed.registry.replace(':', '_')}/${parsed.repository}`.length;
    if (nameLength > 255) {
      tooLong++;
      if (enc.ok || !enc.reason.includes('over 255'))
        fail(s, `a ${nameLength}-character name should be reported as not encodable, got ${JSON.stringify(enc)}`);
      continue;
    }
    if (!enc.ok) {
      fail(s, `not encoded: ${enc.reason}`);
      continue;
    }
    encoded++;
    // The rewritten reference points at the proxy, and its name is a valid distribution name.
    const rewritten = parseReference(enc.value);
    if (rewritten.registry !== proxy) fail(s, `rewritten ${enc.value} has registry ${rewritten.registry}`);
    const name = encodedName(enc.value);
    if (!DISTRIBUTION_NAME.test(name) || name.length > 255 || !isValidRepository(name))
      fail(s, `encoded name ${name} is not a valid repository name`);
    if (name !== cacheRepositoryName(parsed.registry, parsed.repository))
      fail(s, `encoded name ${name} differs from the cache repository name`);
    // Decoding gives the parsed reference back (with :latest where there was neither).
    for (const host of [proxy, undefined]) {
      const dec = decodeImage(enc.value, host);
      if (!dec.ok) fail(s, `decodeImage(${enc.value}, ${host}) failed: ${dec.reason}`);
      else if (JSON.stringify(dec.value) !== JSON.stringify(withTag))
        fail(s, `decoded ${JSON.stringify(dec.value)}, expected ${JSON.stringify(withTag)}`);
    }
    const dn = decodeName(name);
    if (dn?.registry !== parsed.registry || dn.repository !== parsed.repository)
      fail(s, `decodeName(${name}) = ${JSON.stringify(dn)}`);
    // Encoding is a function of the normalised reference: encoding the normal form gives the same.
    const again = encodeReference(withTag, proxy);
    if (!again.ok || again.value !== enc.value)
      fail(s, `encodeReference(normalised) = ${JSON.stringify(again)}, expected ${enc.value}`);
    const canonical = encodeImage(formatReference(parsed), proxy);
    if (!canonical.ok || canonical.value !== enc.value)
      fail(s, `the canonical spelling encodes to ${JSON.stringify(canonical)}`);
    // Injective: distinct normalised references never share an encoding.
    const key = `${proxy} ${enc.value}`;
    const normal = formatReference(withTag);
    const prev = byEncoding.get(key);
    if (prev !== undefined && prev !== normal) fail(s, `${normal} and ${prev} both encode to ${enc.value}`);
    byEncoding.set(key, normal);
  }
  t.same(failures, [], 'no failures');
  t.ok(encoded > N * 0.9, `${encoded} encoded, ${tooLong} over the length cap`);
  t.ok(tooLong > 0, 'the sample reaches the length cap');
  // The sample covers every registry form.
  const regs = new Set(samples.map((s) => s.expected.registry));
  for (const re of [
    /^docker\.io$/,
    /^localhost$/,
    /^localhost:\d+$/,
    /^\d+\.\d+\.\d+\.\d+$/,
    /^\d+\.\d+\.\d+\.\d+:\d+$/,
    /^[a-z][a-z0-9]*:\d+$/,
    /\..*:\d+$/,
  ]) {
    t.ok(
      [...regs].some((r) => re.test(r)),
      `sample has a registry like ${re}`,
    );
  }
  t.ok(
    samples.some((s) => s.input.startsWith('index.docker.io/')),
    'sample has index.docker.io',
  );
  t.ok(
    samples.some((s) => /^[^/]*[A-Z][^/]*\//.test(s.input)),
    'sample has upper-case hosts',
  );
  t.ok(
    samples.some((s) => !s.input.split('/')[0]!.includes('.') && !s.input.includes('/')),
    'sample has short names',
  );
  t.ok(
    samples.some((s) => s.expected.tag !== undefined && s.expected.digest !== undefined),
    'sample has tag+digest',
  );
});

t.test('distinct registries never share an encoded first component', async (t) => {
  const g = new Gen(prng(42));
  const seen = new Map<string, string>();
  let clashes = 0;
  for (let i = 0; i < 3000; i++) {
    const r = registry(g);
    if (!r) continue;
    const e = encodeRegistry(r[1]);
    if (!e.ok) {
      t.fail(`${r[1]} not encodable: ${e.reason}`);
      continue;
    }
    const prev = seen.get(e.value);
    if (prev !== undefined && prev !== r[1]) clashes++;
    seen.set(e.value, r[1]);
    if (decodeRegistry(e.value) !== r[1]) t.fail(`${e.value} decodes to ${decodeRegistry(e.value)}, not ${r[1]}`);
  }
  t.equal(clashes, 0, `${seen.size} distinct registries, no clashes`);
});

t.test('Docker Hub repository names are never read as encoded registries', async (t) => {
  const g = new Gen(prng(7));
  const failures: string[] = [];
  for (let i = 0; i < 3000; i++) {
    // Docker Hub namespaces: lower-case letters and digits (plus `library`).
    const ns = g.chance(0.3) ? 'library' : g.chars(ALNUM, 2, 30);
    const name = `${ns}/${Array.from({ length: g.int(1, 3) }, () => pathComponent(g)).join('/')}`;
    if (decodeName(name) !== undefined) failures.push(name);
    const rewrittenLike = decodeImage(`${PROXY}/${name}`, PROXY);
    if (rewrittenLike.ok) failures.push(`${PROXY}/${name}`);
  }
  t.same(failures, []);
});

t.test('decodeRegistry accepts only what encodeRegistry writes', async (t) => {
  // Random distribution path components: whenever one decodes to a registry, encoding that
  // registry gives the component back (so no two spellings name the same origin), apart from the
  // documented Docker Hub alias.
  const g = new Gen(prng(99));
  const extra = [
    'localhost',
    'localhost_1',
    'a_1',
    '1.2.3.4',
    '1.2.3.4_80',
    'a.b_0',
    'a.b_01',
    'a.b_65536',
    'a__1',
    'a.0',
    '0.a',
    'a_b',
    'index.docker.io',
  ];
  const comps = [
    ...extra,
    ...Array.from({ length: 5000 }, () =>
      g.chance(0.5) ? pathComponent(g) : `${pathComponent(g)}_${g.int(0, 70000)}`,
    ),
  ];
  const failures: string[] = [];
  let decoded = 0;
  for (const c of comps) {
    if (!DISTRIBUTION_NAME.test(c)) continue;
    const r = decodeRegistry(c);
    if (r === undefined) {
      // Letters-first labels with a plain port are always registries.
      if (/^[a-z][a-z0-9]*(\.[a-z][a-z0-9]*)*_[1-9]\d{0,3}$/.test(c)) failures.push(`${c} should decode`);
      continue;
    }
    decoded++;
    if (!(c.includes('.') || /_\d+$/.test(c) || c === 'localhost'))
      failures.push(`${c} decodes to ${r} without a dot, port or localhost`);
    const back = encodeRegistry(r);
    if (!back.ok || (back.value !== c && c !== 'index.docker.io'))
      failures.push(`${c} -> ${r} -> ${JSON.stringify(back)}`);
  }
  t.same(failures, []);
  t.ok(decoded > 100, `${decoded} components decoded`);
});
