import t, { type Test } from 'tap';
import { OciError } from '../../src/oci/errors.js';
import {
  formatPlatform,
  isManifestMediaType,
  MAX_MANIFEST_BYTES,
  MediaType,
  parseManifest,
} from '../../src/oci/media-types.js';

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;
const bytes = (o: unknown) => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o));
const desc = (digest = D1, extra: object = {}) => ({
  mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
  digest,
  size: 10,
  ...extra,
});
const image = (extra: object = {}) => ({
  schemaVersion: 2,
  mediaType: MediaType.OciManifest,
  config: desc(D1),
  layers: [desc(D2)],
  ...extra,
});

function code(t: Test, b: Uint8Array, ct?: string): [string, number] | undefined {
  try {
    parseManifest(b, ct);
    return undefined;
  } catch (e) {
    t.ok(e instanceof OciError, 'an OciError');
    return [(e as OciError).code, (e as OciError).status];
  }
}

t.test('the four manifest kinds', async (t) => {
  t.match(parseManifest(bytes(image())), {
    kind: 'image',
    mediaType: MediaType.OciManifest,
    config: { digest: D1, size: 10 },
    layers: [{ digest: D2 }],
  });
  t.match(parseManifest(bytes(image({ mediaType: MediaType.DockerManifest }))), {
    kind: 'image',
    mediaType: MediaType.DockerManifest,
  });
  const index = {
    schemaVersion: 2,
    mediaType: MediaType.OciIndex,
    manifests: [
      desc(D1, { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } }),
      desc(D2, { platform: { os: 'linux' } }),
    ],
  };
  const parsed = parseManifest(bytes(index));
  t.match(parsed, { kind: 'index', mediaType: MediaType.OciIndex });
  t.same(parsed.kind === 'index' && parsed.manifests.map((m) => m.platform), [
    { os: 'linux', architecture: 'arm64', variant: 'v8' },
    undefined,
  ]);
  t.equal(formatPlatform({ os: 'linux', architecture: 'arm64', variant: 'v8' }), 'linux/arm64/v8');
  t.equal(formatPlatform({ os: 'linux', architecture: 'amd64' }), 'linux/amd64');
  t.match(parseManifest(bytes({ ...index, mediaType: MediaType.DockerManifestList })), {
    kind: 'index',
    mediaType: MediaType.DockerManifestList,
  });
  t.ok(isManifestMediaType(MediaType.DockerManifestList));
  t.notOk(isManifestMediaType('application/vnd.docker.distribution.manifest.v1+prettyjws'));
});

t.test('without a mediaType field: the Content-Type, then the shape', async (t) => {
  const { mediaType: _, ...bare } = image();
  t.equal(parseManifest(bytes(bare), `${MediaType.DockerManifest}; charset=utf-8`).mediaType, MediaType.DockerManifest);
  t.equal(parseManifest(bytes(bare)).mediaType, MediaType.OciManifest);
  t.equal(parseManifest(bytes(bare), 'application/json').mediaType, MediaType.OciManifest);
  t.equal(parseManifest(bytes({ schemaVersion: 2, manifests: [] })).mediaType, MediaType.OciIndex);
  // The document's own field wins over the header.
  t.equal(parseManifest(bytes(image()), MediaType.DockerManifest).mediaType, MediaType.OciManifest);
  // Bytes are read where the view points, not from the start of its buffer.
  const padded = Buffer.concat([Buffer.from('garbage'), bytes(image())]);
  t.equal(parseManifest(padded.subarray(7)).kind, 'image');
});

t.test('unknown media types and schema 1 are UNSUPPORTED', async (t) => {
  t.same(code(t, bytes(image({ mediaType: 'application/vnd.example.thing+json' }))), ['UNSUPPORTED', 400]);
  t.same(code(t, bytes(image({ mediaType: 'application/vnd.docker.distribution.manifest.v1+prettyjws' }))), [
    'UNSUPPORTED',
    400,
  ]);
  t.same(code(t, bytes({ schemaVersion: 1, name: 'x', fsLayers: [] })), ['UNSUPPORTED', 400]);
  t.same(code(t, bytes({ mediaType: MediaType.OciManifest, config: desc(), layers: [] })), ['UNSUPPORTED', 400]);
  t.same(code(t, bytes(image({ schemaVersion: '2' }))), ['UNSUPPORTED', 400]);
  try {
    parseManifest(bytes(image({ mediaType: `x/${'y'.repeat(10_000)}` })));
  } catch (e) {
    t.ok((e as Error).message.length < 300, 'the message quotes a bounded slice');
  }
});

t.test('malformed manifests are MANIFEST_INVALID (bad digests inside: DIGEST_INVALID)', async (t) => {
  for (const [what, b] of [
    ['not JSON', bytes('{')],
    ['empty', bytes('')],
    ['a BOM', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), bytes(image())])],
    ['an array', bytes([image()])],
    ['null', bytes('null')],
    ['a string', bytes('"x"')],
    ['no layers', bytes(image({ layers: undefined }))],
    ['layers not an array', bytes(image({ layers: {} }))],
    ['no config', bytes(image({ config: undefined }))],
    ['config null', bytes(image({ config: null }))],
    ['negative size', bytes(image({ layers: [desc(D2, { size: -1 })] }))],
    ['fractional size', bytes(image({ layers: [desc(D2, { size: 1.5 })] }))],
    ['size as string', bytes(image({ layers: [desc(D2, { size: '10' })] }))],
    ['huge size', bytes(image({ layers: [desc(D2, { size: 2 ** 60 })] }))],
    ['digest missing', bytes(image({ layers: [{ size: 1 }] }))],
    ['layer not an object', bytes(image({ layers: ['x'] }))],
    ['index without manifests', bytes({ schemaVersion: 2, mediaType: MediaType.OciIndex })],
    ['index entry null', bytes({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [null] })],
  ] as [string, Buffer][]) {
    t.same(code(t, b), ['MANIFEST_INVALID', 400], what);
  }
  t.same(code(t, bytes(image({ layers: [desc('sha256:abc')] }))), ['DIGEST_INVALID', 400]);
  t.same(code(t, bytes(image({ layers: [desc(`sha256:${'A'.repeat(64)}`)] }))), ['DIGEST_INVALID', 400]);
  t.same(code(t, bytes(image({ layers: [desc('md5:d41d8cd98f00b204e9800998ecf8427e')] }))), ['UNSUPPORTED', 400]);
});

t.test('a manifest over 4 MiB is refused, one at the cap is not', async (t) => {
  t.equal(MAX_MANIFEST_BYTES, 4 * 1024 * 1024);
  const at = bytes(image({ annotations: { pad: '' } }));
  const padTo = (n: number) => bytes(image({ annotations: { pad: 'x'.repeat(n - at.length) } }));
  const exact = padTo(MAX_MANIFEST_BYTES);
  t.equal(exact.length, MAX_MANIFEST_BYTES);
  t.equal(parseManifest(exact).kind, 'image');
  const over = padTo(MAX_MANIFEST_BYTES + 1);
  t.equal(over.length, MAX_MANIFEST_BYTES + 1);
  t.same(code(t, over), ['MANIFEST_INVALID', 400]);
});
