/**
 * Image reference and path encoding properties. References are generated from the distribution
 * grammar (domain, path components, tag, digest) and checked against a model of the module's
 * normalisation; encode then decode gives the normalised reference back; parsing, encoding and
 * decoding mangled or arbitrary strings only ever fail with the module's typed error.
 */
import t from 'tap';
import fc from 'fast-check';
import { OciError } from '../../src/oci/errors.js';
import { formatReference, parseReference, type ImageReference } from '../../src/oci/reference.js';
import { decodeImage, decodeName, encodeImage, encodeRegistry } from '../../src/oci/encoding.js';
import { runs } from './settings.js';

const alnum = fc.stringMatching(/^[a-z0-9]{1,6}$/);
const separator = fc.constantFrom('.', '_', '__', '-', '--', '---');
/** distribution: path-component = alpha-numeric (separator alpha-numeric)* */
const pathComponent = fc
  .tuple(alnum, fc.array(fc.tuple(separator, alnum), { maxLength: 2 }))
  .map(([first, rest]) => first + rest.map(([s, a]) => s + a).join(''));
const repository = fc.array(pathComponent, { minLength: 1, maxLength: 4 }).map((c) => c.join('/'));
// Names around the 255-character cap, on both sides of it.
const longRepository = fc
  .array(fc.stringMatching(/^[a-z0-9]{40,60}$/), { minLength: 4, maxLength: 5 })
  .map((c) => c.join('/'));
const tag = fc.oneof(
  { weight: 9, arbitrary: fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}$/) },
  { weight: 1, arbitrary: fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9_.-]{127}$/) },
);
const digest = fc.oneof(
  fc.stringMatching(/^[a-f0-9]{64}$/).map((h) => `sha256:${h}`),
  fc.stringMatching(/^[a-f0-9]{128}$/).map((h) => `sha512:${h}`),
);
const label = fc.stringMatching(/^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?$/);
// The last label holds a letter: a dotted name ending in digits only is refused on purpose.
const lastLabel = fc.stringMatching(/^[a-zA-Z][a-zA-Z0-9]{0,5}$/);
const octet = fc.integer({ min: 0, max: 255 });
const host = fc.oneof(
  fc.tuple(fc.array(label, { minLength: 1, maxLength: 3 }), lastLabel).map(([ls, last]) => [...ls, last].join('.')),
  fc.tuple(octet, octet, octet, octet).map((o) => o.join('.')),
  fc.constantFrom('localhost', 'LocalHost', 'docker.io', 'index.docker.io', 'Index.Docker.IO', 'registry-1.docker.io'),
  // Dotless upper-case names are domains in distribution's grammar (`MyReg/app`).
  fc.stringMatching(/^[A-Z][a-zA-Z0-9]{0,6}$/),
  fc.constantFrom('[::1]', '[fe80::1]', '[2001:DB8::5]'),
);
const domain = fc
  .tuple(host, fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }))
  .map(([h, p]) => (p === undefined ? h : `${h}:${p}`));

interface Generated {
  readonly input: string;
  readonly domain?: string;
  readonly repository: string;
  readonly tag?: string;
  readonly digest?: string;
}

const reference: fc.Arbitrary<Generated> = fc
  .record(
    {
      domain: domain,
      repository: fc.oneof({ weight: 19, arbitrary: repository }, { weight: 1, arbitrary: longRepository }),
      tag,
      digest,
    },
    { requiredKeys: ['repository'] },
  )
  .map((r) => ({
    ...r,
    input:
      (r.domain !== undefined ? `${r.domain}/` : '') +
      r.repository +
      (r.tag !== undefined ? `:${r.tag}` : '') +
      (r.digest !== undefined ? `@${r.digest}` : ''),
  }));

/**
 * The module's normalisation, written from its header: distribution's domain split, then
 * containerd's rules; undefined where the reference is refused (a repository over 255 characters).
 */
function model(g: Generated): ImageReference | undefined {
  let registry = 'docker.io';
  let repo = g.domain !== undefined ? `${g.domain}/${g.repository}` : g.repository;
  const slash = repo.indexOf('/');
  const first = slash < 0 ? '' : repo.slice(0, slash);
  if (
    slash >= 0 &&
    (first.includes('.') || first.includes(':') || first === 'localhost' || first !== first.toLowerCase())
  ) {
    registry = first.toLowerCase();
    repo = repo.slice(slash + 1);
    // A path component read as a domain must be a host name: no `_`, and (on purpose, stricter
    // than distribution) a last label that is not digits only.
    const labels = g.domain === undefined ? registry.split('.') : [];
    if (labels.some((l) => !/^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/.test(l)) || /^\d+$/.test(labels.at(-1) ?? 'x'))
      return undefined;
  }
  if (registry === 'index.docker.io') registry = 'docker.io';
  if (registry === 'docker.io' && !repo.includes('/')) repo = `library/${repo}`;
  if (repo.length > 255) return undefined;
  return {
    registry,
    repository: repo,
    ...(g.tag !== undefined ? { tag: g.tag } : {}),
    ...(g.digest !== undefined ? { digest: g.digest } : {}),
  };
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
const withDefaultTag = (r: ImageReference): ImageReference =>
  r.tag === undefined && r.digest === undefined ? { ...r, tag: 'latest' } : r;
const proxyHost = fc.constantFrom(
  'localhost:7439',
  '127.0.0.1:7439',
  'pullthrough.kube-system.svc:5000',
  'Mirror.Example.com',
);

/** Runs f; anything thrown that is not an OciError fails the property. */
function onlyTyped(f: () => unknown): void {
  try {
    f();
  } catch (err) {
    if (!(err instanceof OciError)) throw new Error(`untyped error: ${String(err)}`);
    if (err.message.length > 500) throw new Error(`unbounded message (${err.message.length} characters)`);
  }
}

t.test('generated references parse to the normalised form', async (t) => {
  fc.assert(
    fc.property(reference, (g) => {
      const want = model(g);
      let got: ImageReference | undefined;
      try {
        got = parseReference(g.input);
      } catch (err) {
        if (want !== undefined || !(err instanceof OciError) || err.code !== 'NAME_INVALID') throw err;
      }
      if (want === undefined && got !== undefined)
        throw new Error(`${g.input} should be refused, got ${JSON.stringify(got)}`);
      if (!same(got, want)) throw new Error(`${g.input}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    }),
    runs(4000),
  );
  t.pass('4000 generated references');
});

/**
 * A dotless registry without a port that is not localhost (`MyReg/app`) is a domain only because
 * of its upper case; lower-cased it prints as a Docker Hub name (`myreg/app`). Known, reported,
 * and left out of the properties that print a reference and read it back.
 */
const printsAmbiguously = (r: ImageReference) => /^[a-z0-9-]+$/.test(r.registry) && r.registry !== 'localhost';

t.test('the normal form parses back to itself', async (t) => {
  fc.assert(
    fc.property(
      reference.filter((g) => model(g) !== undefined && !printsAmbiguously(model(g) as ImageReference)),
      (g) => {
        const ref = parseReference(g.input);
        const text = formatReference(ref);
        const again = parseReference(text);
        if (!same(again, withDefaultTag(ref))) throw new Error(`${g.input} -> ${text} -> ${JSON.stringify(again)}`);
      },
    ),
    runs(4000),
  );
  t.pass('4000 generated references');
});

t.test('encode then decode gives back the normalised reference', async (t) => {
  let encoded = 0;
  fc.assert(
    fc.property(
      reference.filter((g) => model(g) !== undefined),
      proxyHost,
      (g, proxy) => {
        const ref = parseReference(g.input);
        const enc = encodeImage(g.input, proxy);
        if (!enc.ok) {
          // Only three things have no encoded form: IPv6 hosts, a dotless name without a port, a name over 255.
          const why = encodeRegistry(ref.registry);
          const long = why.ok && `${why.value}/${ref.repository}`.length > 255;
          if (!(ref.registry.startsWith('[') || /^[a-z0-9-]+$/.test(ref.registry) || long))
            throw new Error(`${g.input} not encoded: ${enc.reason}`);
          return;
        }
        encoded++;
        for (const host of [proxy, undefined]) {
          const dec = decodeImage(enc.value, host);
          if (!dec.ok) throw new Error(`${enc.value} does not decode: ${dec.reason}`);
          if (!same(dec.value, withDefaultTag(ref)))
            throw new Error(`${g.input} -> ${enc.value} -> ${JSON.stringify(dec.value)}`);
        }
      },
    ),
    runs(5000),
  );
  t.ok(encoded > 3500, `${encoded} of 5000 generated references encoded and decoded back`);
});

/** A generated reference with a few characters replaced, inserted or removed where they matter most. */
const mangled = fc
  .tuple(
    reference,
    fc.array(
      fc.tuple(
        fc.nat(),
        fc.constantFrom(
          '',
          ':',
          '/',
          '@',
          '.',
          '_',
          '-',
          '__',
          'A',
          '[',
          ']',
          '%2f',
          '\\',
          ' ',
          '\u0000',
          '..',
          'é',
          '0',
          'sha256:',
        ),
      ),
      {
        minLength: 1,
        maxLength: 3,
      },
    ),
  )
  .map(([g, edits]) => {
    let s = g.input;
    for (const [at, text] of edits) {
      const i = at % (s.length + 1);
      s = s.slice(0, i) + text + s.slice(i + (text === '' ? 1 : at % 2));
    }
    return s;
  });
const anyString = fc.oneof(
  mangled,
  fc.string({ maxLength: 60 }),
  fc.string({ unit: 'binary', maxLength: 60 }),
  fc.string({ minLength: 1000, maxLength: 1100 }),
);

t.test('mangled and arbitrary strings fail only with the typed error, and decode never throws', async (t) => {
  fc.assert(
    fc.property(anyString, proxyHost, (s, proxy) => {
      onlyTyped(() => parseReference(s));
      // The result types carry the failure; nothing may be thrown at all.
      const enc = encodeImage(s, proxy);
      if (enc.ok && !decodeImage(enc.value, proxy).ok)
        throw new Error(`${s} encodes to ${enc.value}, which does not decode`);
      decodeImage(s, proxy);
      decodeImage(s);
      decodeName(s);
    }),
    runs(5000),
  );
  t.pass('5000 generated strings');
});

t.test('whatever parses has the normal form of a valid reference', async (t) => {
  fc.assert(
    fc.property(mangled, (s) => {
      let ref: ImageReference;
      try {
        ref = parseReference(s);
      } catch {
        return;
      }
      if (printsAmbiguously(ref)) return;
      const again = parseReference(formatReference(ref));
      if (!same(again, withDefaultTag(ref)))
        throw new Error(`${s} -> ${formatReference(ref)} -> ${JSON.stringify(again)}`);
    }),
    runs(5000),
  );
  t.pass('5000 mangled references');
});
