/**
 * Distribution API path properties: paths built from the spec's grammar (names, tags, digests,
 * including components named like endpoints) route to their parts; mangled and arbitrary paths
 * either route to a name with no empty, dot or encoded segment, or fail with OciError NAME_INVALID.
 * Manifest references: generated tags and digests parse as such; any string is a tag, a digest, or
 * a typed refusal (404 MANIFEST_UNKNOWN without a colon, 400 with one).
 */
import t from 'tap';
import fc from 'fast-check';
import { parseApiPath, parseManifestReference } from '../../src/oci/api-path.js';
import { OciError } from '../../src/oci/errors.js';
import { runs } from './settings.js';

const alnum = fc.stringMatching(/^[a-z0-9]{1,6}$/);
const separator = fc.constantFrom('.', '_', '__', '-', '--');
const component = fc.oneof(
  {
    weight: 8,
    arbitrary: fc
      .tuple(alnum, fc.array(fc.tuple(separator, alnum), { maxLength: 2 }))
      .map(([a, r]) => a + r.map(([s, b]) => s + b).join('')),
  },
  // Components that are also endpoint words, and encoded registries.
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      'manifests',
      'blobs',
      'uploads',
      'tags',
      'list',
      'referrers',
      'v2',
      'quay.io',
      'localhost_5000',
      '10.0.0.5_5000',
    ),
  },
);
const name = fc.array(component, { minLength: 1, maxLength: 5 }).map((c) => c.join('/'));
const tag = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}$/),
  fc.constantFrom('manifests', 'blobs', 'uploads', 'list', 'latest'),
);
const digest = fc.oneof(
  fc.stringMatching(/^[a-f0-9]{64}$/).map((h) => `sha256:${h}`),
  fc.stringMatching(/^[a-f0-9]{128}$/).map((h) => `sha512:${h}`),
);

type Want =
  | { kind: 'manifest'; name: string; reference: string }
  | { kind: 'blob'; name: string; digest: string }
  | { kind: 'push'; name: string };
const request: fc.Arbitrary<{ path: string; want: Want }> = fc.oneof(
  fc
    .tuple(name, fc.oneof(tag, digest))
    .map(([n, r]) => ({ path: `/v2/${n}/manifests/${r}`, want: { kind: 'manifest' as const, name: n, reference: r } })),
  fc
    .tuple(name, digest)
    .map(([n, d]) => ({ path: `/v2/${n}/blobs/${d}`, want: { kind: 'blob' as const, name: n, digest: d } })),
  fc
    .tuple(name, fc.constantFrom('', '/', '/0b8c-uuid', '/c0ffee'))
    .map(([n, tail]) => ({ path: `/v2/${n}/blobs/uploads${tail}`, want: { kind: 'push' as const, name: n } })),
);

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

t.test('generated API paths route to their name and reference', async (t) => {
  fc.assert(
    fc.property(request, ({ path, want }) => {
      const got = parseApiPath(path);
      if (!same(got, want)) throw new Error(`${path}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    }),
    runs(5000),
  );
  t.pass('5000 generated paths');
});

/** A routed name never holds what could climb out of a directory or hide a separator. */
function checkRouted(path: string): void {
  let got;
  try {
    got = parseApiPath(path);
  } catch (err) {
    if (!(err instanceof OciError) || err.code !== 'NAME_INVALID' || err.status !== 400)
      throw new Error(`${JSON.stringify(path)}: untyped ${String(err)}`);
    if (err.message.length > 200) throw new Error('unbounded message');
    return;
  }
  if (got.kind === 'base' || got.kind === 'unsupported') return;
  const parts = [
    ...got.name.split('/'),
    ...(got.kind === 'manifest' ? [got.reference] : got.kind === 'blob' ? [got.digest] : []),
  ];
  if (parts.some((p) => p === '' || p === '.' || p === '..' || /[%\\/]/.test(p)))
    throw new Error(`${JSON.stringify(path)} routed to ${JSON.stringify(got)}`);
}

t.test('mangled and arbitrary paths route safely or fail with NAME_INVALID', async (t) => {
  const mangled = fc
    .tuple(
      request,
      fc.array(
        fc.tuple(
          fc.nat(),
          fc.constantFrom('', '/', '//', '.', '..', '/../', '%2e', '%2F', '\\', '%', '?', '#', ' ', '\u0000', 'é'),
        ),
        { minLength: 1, maxLength: 3 },
      ),
    )
    .map(([r, edits]) => {
      let s = r.path;
      for (const [at, text] of edits) {
        const i = at % (s.length + 1);
        s = s.slice(0, i) + text + s.slice(i + (text === '' ? 1 : 0));
      }
      return s;
    });
  const arbitrary = fc.oneof(
    mangled,
    fc.string({ maxLength: 80 }).map((s) => `/v2/${s}`),
    fc.string({ unit: 'binary', maxLength: 80 }),
    fc
      .array(fc.constantFrom('a', '.', '..', '', 'manifests', 'blobs', 'uploads', 'sha256:x', '_catalog'), {
        maxLength: 8,
      })
      .map((segs) => `/v2/${segs.join('/')}`),
  );
  fc.assert(fc.property(arbitrary, checkRouted), runs(5000));
  t.pass('5000 generated paths');
});

t.test('manifest references: tags and digests parse, anything else is a typed refusal', async (t) => {
  fc.assert(
    fc.property(fc.oneof(tag, digest), (r) => {
      const got = parseManifestReference(r);
      const want = r.includes(':') ? { kind: 'digest', digest: r } : { kind: 'tag', tag: r };
      if (!same(got, want)) throw new Error(`${r}: got ${JSON.stringify(got)}`);
    }),
    runs(5000),
  );
  const any = fc.oneof(
    fc.string({ maxLength: 140 }),
    fc.string({ unit: 'binary', maxLength: 140 }),
    fc
      .tuple(fc.constantFrom('sha256', 'sha512', 'md5', 'SHA256', ''), fc.string({ maxLength: 130 }))
      .map(([a, h]) => `${a}:${h}`),
  );
  fc.assert(
    fc.property(any, (r) => {
      let got;
      try {
        got = parseManifestReference(r);
      } catch (err) {
        const ok =
          err instanceof OciError &&
          (r.includes(':')
            ? err.status === 400 && (err.code === 'DIGEST_INVALID' || err.code === 'UNSUPPORTED')
            : err.status === 404 && err.code === 'MANIFEST_UNKNOWN');
        if (!ok) throw new Error(`${JSON.stringify(r)}: ${String(err)}`);
        return;
      }
      const valid =
        got.kind === 'tag'
          ? /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/.test(got.tag)
          : /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/.test(got.digest);
      if (!valid) throw new Error(`${JSON.stringify(r)} accepted as ${JSON.stringify(got)}`);
    }),
    runs(5000),
  );
  t.pass('5000 generated references of each kind');
});
