/**
 * The OCI distribution-spec pull workflow through the proxy, checked as the spec's conformance
 * suite checks it (conformance/01_pull_test.go of v1.0.1 and v1.1.1, ported: the Go suite cannot
 * be built here), plus what the spec text asks of a pull that the suite leaves out: the error
 * body's code, Content-Type, Content-Length, Docker-Content-Digest and Range on blobs (v1.1).
 * Against a real registry origin with genuine images, through the proxy on each store (embedded
 * and a real cache registry), cold, warm and after a restart of the proxy on the same data.
 *
 * Then Accept negotiation: each kind of manifest asked for by tag and by digest with each Accept
 * a client sends, straight from the origin and through the proxy: the same status, error code,
 * media type and digest, except where distribution 2.8 rewrites a Docker manifest into schema 1
 * (the proxy never rewrites bytes: it serves the stored Docker manifest).
 */
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { request } from 'undici';
import { Lab, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const ORIGIN_PORT = 15140;
const CACHE_PORT = 15141;
const lab = new Lab('spec-pull');
const originHost = `127.0.0.1:${ORIGIN_PORT}`;
const enc = `127.0.0.1_${ORIGIN_PORT}`;
const originUrl = `http://${originHost}`;
const cacheUrl = `http://127.0.0.1:${CACHE_PORT}`;

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const SCHEMA1 = 'application/vnd.docker.distribution.manifest.v1+prettyjws';

// From the conformance suite's setup.go.
const dummyDigest = sha(Buffer.from('hello world'));
const nonexistentManifest = '.INVALID_MANIFEST_NAME';
const errorCodes = [
  'BLOB_UNKNOWN',
  'BLOB_UPLOAD_INVALID',
  'BLOB_UPLOAD_UNKNOWN',
  'DIGEST_INVALID',
  'MANIFEST_BLOB_UNKNOWN',
  'MANIFEST_INVALID',
  'MANIFEST_UNKNOWN',
  'MANIFEST_UNVERIFIED',
  'NAME_INVALID',
  'NAME_UNKNOWN',
  'SIZE_INVALID',
  'TAG_INVALID',
  'UNAUTHORIZED',
  'DENIED',
  'UNSUPPORTED',
];

let app: Image; // manifests[0] (tagged), its config and layers
let index: Image; // its children are manifests pushed by digest only: manifests[1]
let dock: Image;
let dockList: Image;
const proxies: TestProxy[] = [];

t.teardown(async () => {
  for (const p of proxies) await p.stop();
  await lab.cleanup();
});

t.before(async () => {
  await Promise.all([lab.registry('origin', ORIGIN_PORT), lab.registry('cache', CACHE_PORT)]);
  [app, index, dock, dockList] = await Promise.all([
    lab.image(originHost, 'conformance/app', 'tagtest0', ['--layers', '2', '--layer-mb', '1']),
    lab.image(originHost, 'conformance/index', 'v1', ['--layers', '1', '--layer-mb', '1', '--multiarch']),
    lab.image(originHost, 'conformance/dock', 'v1', ['--layers', '1', '--layer-mb', '1', '--docker']),
    lab.image(originHost, 'conformance/docklist', 'v1', [
      '--layers',
      '1',
      '--layer-mb',
      '1',
      '--docker',
      '--multiarch',
    ]),
  ]);
});

function sha(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

async function call(
  method: 'GET' | 'HEAD' | 'PUT' | 'DELETE',
  url: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<Answer> {
  const res = await request(url, { method, headers, ...(body !== undefined ? { body } : {}) });
  const bytes = Buffer.from(await res.body.arrayBuffer());
  const h: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) h[k] = Array.isArray(v) ? v.join(', ') : String(v);
  return { status: res.statusCode, headers: h, body: bytes };
}

function errorCode(a: Answer): string | undefined {
  try {
    return (JSON.parse(a.body.toString('utf8')) as { errors?: { code?: string }[] }).errors?.[0]?.code;
  } catch {
    return undefined;
  }
}

/** The config blob and the layers of `app`, read from the origin: what every check compares with. */
async function appBlobs(): Promise<{ config: string; layer: string; layerBytes: Buffer }> {
  const m = await call('GET', `${originUrl}/v2/conformance/app/manifests/${app.digest}`, { accept: OCI_MANIFEST });
  const doc = JSON.parse(m.body.toString('utf8')) as { config: { digest: string } };
  const layer = app.layers[0] as string;
  const layerBytes = (await call('GET', `${originUrl}/v2/conformance/app/blobs/${layer}`)).body;
  return { config: doc.config.digest, layer, layerBytes };
}

/** 01_pull_test.go, "Pull blobs", "Pull manifests", "Error codes" and "Teardown", for one registry URL. */
async function pullWorkflow(t: Test, base: string): Promise<void> {
  const { config, layer, layerBytes } = await appBlobs();
  const name = `${base}/conformance/app`;
  const manifest1 = index.children[0] as string;
  const indexName = `${base}/conformance/index`;

  // Pull blobs.
  let a = await call('HEAD', `${name}/blobs/${dummyDigest}`);
  t.equal(a.status, 404, 'HEAD request to nonexistent blob should result in 404 response');
  a = await call('HEAD', `${name}/blobs/${config}`);
  t.equal(a.status, 200, 'HEAD request to existing blob should yield 200');
  t.equal(a.headers['docker-content-digest'], config, '  with its Docker-Content-Digest');
  t.ok(Number(a.headers['content-length']) > 0, '  and its Content-Length');
  a = await call('GET', `${name}/blobs/${dummyDigest}`);
  t.equal(a.status, 404, 'GET nonexistent blob should result in 404 response');
  t.equal(errorCode(a), 'BLOB_UNKNOWN', '  code BLOB_UNKNOWN');
  a = await call('GET', `${name}/blobs/${config}`);
  t.equal(a.status, 200, 'GET request to existing blob URL should yield 200');
  t.equal(sha(a.body), config, '  the blob itself');
  t.equal(a.headers['docker-content-digest'], config, '  its Docker-Content-Digest');
  t.equal(Number(a.headers['content-length']), a.body.length, '  its Content-Length');

  // Range on blobs (v1.1: "A registry SHOULD support the Range request header", RFC 9110).
  const size = layerBytes.length;
  a = await call('GET', `${name}/blobs/${layer}`, { range: 'bytes=0-9' });
  t.equal(a.status, 206, 'Range bytes=0-9: 206');
  t.equal(a.headers['content-range'], `bytes 0-9/${size}`, '  Content-Range');
  t.equal(a.headers['content-length'], '10', '  Content-Length');
  t.ok(a.body.equals(layerBytes.subarray(0, 10)), '  the first ten bytes');
  a = await call('GET', `${name}/blobs/${layer}`, { range: `bytes=${size - 100}-` });
  t.equal(a.status, 206, 'Range bytes=N-: 206');
  t.equal(a.headers['content-range'], `bytes ${size - 100}-${size - 1}/${size}`, '  Content-Range');
  t.ok(a.body.equals(layerBytes.subarray(size - 100)), '  the last hundred bytes');
  a = await call('GET', `${name}/blobs/${layer}`, { range: `bytes=${size}-` });
  t.equal(a.status, 416, 'Range past the end: 416');
  t.equal(a.headers['content-range'], `bytes */${size}`, '  Content-Range names the size');
  a = await call('GET', `${name}/blobs/${layer}`, { range: 'bytes=5-1' });
  t.equal(a.status, 200, 'an invalid Range is ignored: 200');
  t.equal(sha(a.body), layer, '  the whole blob');

  // Pull manifests.
  a = await call('HEAD', `${name}/manifests/${nonexistentManifest}`);
  t.equal(a.status, 404, 'HEAD request to nonexistent manifest should return 404');
  a = await call('HEAD', `${name}/manifests/${app.digest}`, { accept: OCI_MANIFEST });
  t.equal(a.status, 200, 'HEAD request to manifest[0] path (digest) should yield 200 response');
  t.equal(a.headers['docker-content-digest'], app.digest, '  its Docker-Content-Digest');
  t.equal(a.headers['content-type'], OCI_MANIFEST, '  its Content-Type');
  t.ok(Number(a.headers['content-length']) > 0, '  its Content-Length');
  a = await call('HEAD', `${indexName}/manifests/${manifest1}`, { accept: OCI_MANIFEST });
  t.equal(a.status, 200, 'HEAD request to manifest[1] path (digest) should yield 200 response');
  t.equal(a.headers['docker-content-digest'], manifest1, '  its Docker-Content-Digest');
  a = await call('HEAD', `${name}/manifests/tagtest0`, { accept: OCI_MANIFEST });
  t.equal(a.status, 200, 'HEAD request to manifest path (tag) should yield 200 response');
  t.equal(a.headers['docker-content-digest'], app.digest, '  its Docker-Content-Digest');
  a = await call('GET', `${name}/manifests/${nonexistentManifest}`);
  t.equal(a.status, 404, 'GET nonexistent manifest should return 404');
  t.equal(errorCode(a), 'MANIFEST_UNKNOWN', '  code MANIFEST_UNKNOWN');
  a = await call('GET', `${name}/manifests/nosuchtag`, { accept: OCI_MANIFEST });
  t.equal(a.status, 404, 'GET of a valid tag the origin does not have: 404');
  t.equal(errorCode(a), 'MANIFEST_UNKNOWN', '  code MANIFEST_UNKNOWN');
  a = await call('GET', `${name}/manifests/${app.digest}`, { accept: OCI_MANIFEST });
  t.equal(a.status, 200, 'GET request to manifest[0] path (digest) should yield 200 response');
  t.equal(sha(a.body), app.digest, '  the manifest itself');
  t.equal(a.headers['content-type'], OCI_MANIFEST, '  its Content-Type');
  t.equal(Number(a.headers['content-length']), a.body.length, '  its Content-Length');
  t.equal(a.headers['docker-content-digest'], app.digest, '  its Docker-Content-Digest');
  a = await call('GET', `${indexName}/manifests/${manifest1}`, { accept: OCI_MANIFEST });
  t.equal(a.status, 200, 'GET request to manifest[1] path (digest) should yield 200 response');
  t.equal(sha(a.body), manifest1, '  the manifest itself');
  a = await call('GET', `${name}/manifests/tagtest0`, { accept: OCI_MANIFEST });
  t.equal(a.status, 200, 'GET request to manifest path (tag) should yield 200 response');
  t.equal(sha(a.body), app.digest, '  the manifest the tag names');

  // Error codes: v1.1.1 sends a GET, v1.0.1 a PUT; 400 or 404, and a 400 carries a code of the table.
  for (const method of ['GET', 'PUT'] as const) {
    a = await call(method, `${name}/manifests/sha256:totallywrong`, { 'content-type': OCI_MANIFEST }, 'blablabla');
    t.ok(a.status === 400 || a.status === 404, `${method} sha256:totallywrong: 400 or 404 (${a.status})`);
    if (a.status === 400) t.ok(errorCodes.includes(errorCode(a) ?? ''), `  an OCI error code (${errorCode(a)})`);
  }

  // Teardown: deletes are refused (405 is what the suite accepts besides success).
  for (const [what, url] of [
    ['manifest[0]', `${name}/manifests/${app.digest}`],
    ['manifest[1]', `${indexName}/manifests/${manifest1}`],
  ]) {
    a = await call('DELETE', url as string);
    t.equal(a.status, 405, `Delete ${what}: 405`);
  }
  for (const [what, digest] of [
    ['config', config],
    ['layer', layer],
  ]) {
    a = await call('DELETE', `${name}/blobs/${digest}`);
    t.ok([404, 405].includes(a.status), `Delete ${what} blob: 404 or 405 (${a.status})`);
  }
}

for (const store of ['embedded', 'shared'] as const) {
  t.test(`the pull workflow through the proxy on the ${store} store: cold, warm, after a restart`, async (t) => {
    const dataDir = lab.tempDir(`pt-spec-${store}`);
    const flags = [
      '--data-dir',
      dataDir,
      '--insecure-registries',
      originHost,
      ...(store === 'shared' ? ['--cache-registry', cacheUrl] : []),
    ];
    let proxy = await startProxy(flags);
    proxies.push(proxy);
    const base = () => `${proxy.url}/v2/${enc}`;
    await t.test('cold', (t) => pullWorkflow(t, base()));
    await proxy.settle();
    await t.test('warm', (t) => pullWorkflow(t, base()));
    await proxy.settle();
    await proxy.stop();
    proxy = await startProxy(flags);
    proxies.push(proxy);
    await t.test('after a restart', (t) => pullWorkflow(t, base()));
    const served = proxy
      .logs()
      .filter((l) => l.msg === 'request' && l.method === 'GET' && (l.status === 200 || l.status === 206))
      .filter((l) => String(l.path).includes('/conformance/app/'));
    t.ok(served.length > 0, 'the restarted proxy served the image');
    t.same(
      served.filter((l) => l.source !== 'cache').map((l) => l.path),
      [],
      'after the restart, everything of the tagged image came from the store',
    );
    await proxy.settle();
  });
}

// ---------------------------------------------------------------------------------------------
// Accept negotiation: the origin's answer and the proxy's, side by side.

const ACCEPTS: Record<string, string | undefined> = {
  none: undefined,
  'any (*/*)': '*/*',
  'application/json': 'application/json',
  'OCI manifest': OCI_MANIFEST,
  'OCI index': OCI_INDEX,
  'Docker manifest': DOCKER_MANIFEST,
  'Docker list': DOCKER_LIST,
  'Docker only': `${DOCKER_MANIFEST}, ${DOCKER_LIST}`,
  'OCI only, with q': `${OCI_MANIFEST};q=0.9, ${OCI_INDEX} ; q=0.5`,
  containerd: `${DOCKER_MANIFEST}, ${DOCKER_LIST}, ${OCI_MANIFEST}, ${OCI_INDEX}, */*`,
};

interface Seen {
  status: number;
  code: string | undefined;
  type: string | undefined;
  digest: string | undefined;
}

async function seen(method: 'GET' | 'HEAD', url: string, accept: string | undefined): Promise<Seen> {
  // undici sends no Accept unless told; "accept: ''" would send an empty one.
  const a = await call(method, url, accept === undefined ? {} : { accept });
  return {
    status: a.status,
    code: method === 'GET' && a.status >= 400 ? errorCode(a) : undefined,
    type: a.status === 200 ? a.headers['content-type'] : undefined,
    digest: a.status === 200 ? a.headers['docker-content-digest'] : undefined,
  };
}

for (const store of ['embedded', 'shared'] as const) {
  t.test(`Accept negotiation on the ${store} store: what the origin answers, without rewriting`, async (t) => {
    const dataDir = lab.tempDir(`pt-accept-${store}`);
    const proxy = await startProxy([
      '--data-dir',
      dataDir,
      '--insecure-registries',
      originHost,
      ...(store === 'shared' ? ['--cache-registry', cacheUrl] : []),
    ]);
    proxies.push(proxy);
    const images: [string, Image][] = [
      ['conformance/app', app],
      ['conformance/index', index],
      ['conformance/dock', dock],
      ['conformance/docklist', dockList],
    ];
    for (const [repo, image] of images) {
      for (const reference of ['v1', image.digest]) {
        const ref = image === app && reference === 'v1' ? 'tagtest0' : reference;
        for (const [label, accept] of Object.entries(ACCEPTS)) {
          for (const method of ['GET', 'HEAD'] as const) {
            const what = `${method} ${repo}:${ref.slice(0, 14)} Accept ${label}`;
            const origin = await seen(method, `${originUrl}/v2/${repo}/manifests/${ref}`, accept);
            const through = await seen(method, `${proxy.url}/v2/${enc}/${repo}/manifests/${ref}`, accept);
            if (origin.type === SCHEMA1) {
              // distribution 2.8 rewrote a Docker manifest into schema 1 for this tag; the proxy serves
              // the Docker manifest it would have rewritten (the tag's, or a list's linux/amd64 image).
              const expected = image === dockList ? (image.children[0] as string) : image.digest;
              t.same(
                through,
                { status: 200, code: undefined, type: DOCKER_MANIFEST, digest: expected },
                `${what}: the stored Docker manifest (the origin rewrites it to schema 1)`,
              );
            } else {
              t.same(through, origin, `${what}: ${origin.status} ${origin.code ?? origin.type ?? ''}`);
            }
          }
        }
      }
    }
    await proxy.settle();
  });
}
