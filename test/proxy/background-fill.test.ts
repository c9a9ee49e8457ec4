/**
 * The background completion of a pulled image is bounded by what its manifest declares: an
 * origin that sends an endless body for a layer declared as 1000 bytes has its fill cut at once,
 * and nothing is stored. The origin is a small HTTP server of the test's own: no lab registry can
 * be made to misbehave this way.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startProxy } from '../helpers/proxy.js';

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const config = Buffer.from('{"architecture":"amd64","os":"linux"}');
const layerDigest = sha256(Buffer.from('a layer the origin never sends whole'));
const manifest = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigest, size: 1000 }],
  }),
);

/** Serves the manifest and its config as they are, and an endless body for the layer. */
function misbehavingOrigin(): { server: Server; layerBytesSent: () => number } {
  let sent = 0;
  const server = createServer((req, res) => {
    const url = req.url ?? '';
    if (url === '/v2/') return res.writeHead(200).end();
    if (url.endsWith('/manifests/1')) {
      res.writeHead(200, {
        'content-type': 'application/vnd.oci.image.manifest.v1+json',
        'content-length': manifest.length,
        'docker-content-digest': sha256(manifest),
      });
      return res.end(req.method === 'HEAD' ? undefined : manifest);
    }
    if (url.endsWith(`/blobs/${sha256(config)}`)) return res.writeHead(200).end(config);
    if (url.endsWith(`/blobs/${layerDigest}`)) {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const chunk = Buffer.alloc(64 * 1024, 1);
      const pump = () => {
        while (!res.destroyed) {
          sent += chunk.length;
          if (!res.write(chunk)) return;
        }
      };
      res.on('drain', pump);
      pump();
      return;
    }
    res.writeHead(404).end();
  });
  return { server, layerBytesSent: () => sent };
}

t.test('a layer fetched in the background stops at its declared size; nothing of the image is stored', async (t) => {
  const origin = misbehavingOrigin();
  await new Promise<void>((r) => origin.server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => origin.server.close(() => r())));
  const address = origin.server.address();
  const host = `127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  const dataDir = mkdtempSync(join(tmpdir(), 'background-fill-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const proxy = await startProxy(['--data-dir', dataDir, '--insecure-registries', host]);
  t.teardown(() => proxy.stop());

  const repo = `${host.replace(':', '_')}/app`;
  const res = await proxy.app.inject({
    method: 'GET',
    url: `/v2/${repo}/manifests/1`,
    headers: { accept: 'application/vnd.oci.image.manifest.v1+json' },
  });
  t.equal(res.statusCode, 200, 'the client gets the manifest');
  await proxy.settle(20_000);

  const failed = proxy.logs().find((l) => l.msg === 'blob fill failed; nothing was cached' && l.digest === layerDigest);
  t.match(failed?.err, /more than the 1000 bytes/, 'the layer fill failed at its declared size');
  t.ok(origin.layerBytesSent() < 16 * 2 ** 20, `the origin's endless body was cut (${origin.layerBytesSent()} bytes)`);
  t.equal(await proxy.store.statBlob(repo, layerDigest), undefined, 'the layer is not stored');
  t.equal(await proxy.store.getManifest(repo, sha256(manifest)), undefined, 'nor the manifest that names it');
});
