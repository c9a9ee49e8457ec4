/**
 * Bad input against the real node proxy (buildProxy from main.ts): every class of malformed or
 * hostile request gets a precise OCI error JSON with the right status and one log line, never a
 * crash, a hang or an unhandled rejection.
 *
 * Most cases use app.inject (no listening). Where inject would hide the input (it normalises
 * `..` and `%2e%2e` through the WHATWG URL parser) or the point is the HTTP parser itself, the
 * proxy listens on 127.0.0.1:15055 and a raw socket sends the bytes. 127.0.0.1:15059 is first an
 * origin port where nothing listens, then a hand-written origin serving manifests no real
 * registry would store (over 4 MiB, unknown media types) and hostile auth challenges.
 */
import t, { type Test } from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { buildProxy, type BuiltProxy } from '../../src/proxy/build-proxy.js';
import { readProxyConfig } from '../../src/config/proxy.js';
import { createLogger } from '../../src/observability/logger.js';

const PROXY_PORT = 15055;
const ORIGIN_PORT = 15059;
const ORIGIN = `127.0.0.1_${ORIGIN_PORT}`;
const D = `sha256:${'d'.repeat(64)}`;

const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);
process.on('unhandledRejection', onUnhandled);

interface LogLine {
  level: number;
  msg: string;
  method?: string;
  path?: string;
  status?: number;
  code?: string;
  [k: string]: unknown;
}

interface Proxy {
  readonly proxy: BuiltProxy;
  readonly lines: LogLine[];
}

async function startProxy(t: Test, flags: string[]): Promise<Proxy> {
  const dir = await mkdtemp(join(tmpdir(), 'pt-bad-input-'));
  const { config } = readProxyConfig(
    ['--data-dir', dir, '--metrics-listen', '', '--origin-connect-timeout', '2s', '--origin-timeout', '5s', ...flags],
    {},
  );
  const lines: LogLine[] = [];
  const stream = new PassThrough();
  let pending = '';
  stream.on('data', (chunk: Buffer) => {
    pending += chunk.toString('utf8');
    const parts = pending.split('\n');
    pending = parts.pop() ?? '';
    for (const p of parts) if (p.trim() !== '') lines.push(JSON.parse(p) as LogLine);
  });
  const proxy = buildProxy(config, { log: createLogger('debug', stream) });
  t.teardown(async () => {
    await proxy.close();
    await rm(dir, { recursive: true, force: true });
  });
  return { proxy, lines };
}

async function until<T>(f: () => T | undefined, ms = 3000): Promise<T | undefined> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface Case {
  readonly method?: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';
  readonly url: string;
  readonly headers?: Record<string, string>;
  readonly payload?: string | Buffer;
  readonly status: number;
  readonly code: string;
  readonly message?: RegExp;
  /** The code in the log line when it differs from the body's. */
  readonly logCode?: string;
}

/** One request: the status, the OCI error body, and the one log line for it. */
async function expectError(t: Test, p: Proxy, c: Case): Promise<void> {
  const method = c.method ?? 'GET';
  const name = `${method} ${c.url.slice(0, 100)}`;
  const before = p.lines.length;
  const started = Date.now();
  const res = await p.proxy.app.inject({ method, url: c.url, headers: c.headers, payload: c.payload });
  t.ok(Date.now() - started < 5000, `${name}: answered without hanging`);
  t.equal(res.statusCode, c.status, `${name}: status ${c.status}`);
  t.match(res.headers['content-type'], /^application\/json/, `${name}: JSON`);
  if (method === 'HEAD') {
    t.equal(res.body, '', `${name}: no body`);
  } else {
    let body: unknown;
    try {
      body = JSON.parse(res.body);
    } catch {
      t.fail(`${name}: body is not JSON: ${res.body.slice(0, 200)}`);
    }
    const errors = (body as { errors?: { code?: unknown; message?: unknown }[] } | undefined)?.errors;
    t.ok(Array.isArray(errors) && errors.length === 1, `${name}: {"errors":[...]}`);
    t.equal(errors?.[0]?.code, c.code, `${name}: code ${c.code} (${String(errors?.[0]?.message).slice(0, 160)})`);
    t.type(errors?.[0]?.message, 'string');
    if (c.message) t.match(errors?.[0]?.message, c.message);
  }
  const line = await until(() => p.lines.slice(before).find((l) => l.msg === 'request' && l.status === c.status));
  t.ok(line, `${name}: one request log line`);
  t.equal(p.lines.slice(before).filter((l) => l.msg === 'request').length, 1, `${name}: exactly one`);
  if (line) t.equal(line.code, c.logCode ?? c.code, `${name}: the log line has the code`);
}

t.test('a proxy allowing quay.io and 127.0.0.1:15059 only', async (t) => {
  const p = await startProxy(t, [
    '--allowed-registries',
    `quay.io,127.0.0.1:${ORIGIN_PORT}`,
    '--insecure-registries',
    `127.0.0.1:${ORIGIN_PORT}`,
  ]);
  const cases: Case[] = [
    // Hosts outside --allowed-registries.
    {
      url: '/v2/docker.io/library/nginx/manifests/latest',
      status: 403,
      code: 'DENIED',
      message: /docker\.io is not in --allowed-registries/,
    },
    { url: `/v2/docker.io/library/nginx/blobs/${D}`, status: 403, code: 'DENIED' },
    { method: 'HEAD', url: '/v2/docker.io/library/nginx/manifests/latest', status: 403, code: 'DENIED' },
    { url: '/v2/library/nginx/manifests/latest?ns=docker.io', status: 403, code: 'DENIED' },
    { url: '/v2/ghcr.io/o/a/manifests/v1', status: 403, code: 'DENIED' },
    { url: '/v2/127.0.0.1_15058/a/manifests/v1', status: 403, code: 'DENIED' },
    { url: '/v2/169.254.169.254/latest/manifests/latest', status: 403, code: 'DENIED' },
    { url: '/v2/a/manifests/latest?ns=169.254.169.254', status: 403, code: 'DENIED' },
    // Without ns and not rewritten: 404 at once, so containerd goes on to its next host.
    { url: '/v2/library/nginx/manifests/latest', status: 404, code: 'NAME_UNKNOWN' },
    { url: `/v2/library/nginx/blobs/${D}`, status: 404, code: 'NAME_UNKNOWN' },
    { url: '/v2/nginx/manifests/latest', status: 404, code: 'NAME_UNKNOWN' },
    { url: '/v2/library/nginx/manifests/latest?ns=localhost:7439', status: 404, code: 'NAME_UNKNOWN' },
    { url: '/v2/docker.io/library/nginx/manifests/latest?ns=localhost:7439', status: 403, code: 'DENIED' },
    { method: 'HEAD', url: '/v2/library/nginx/manifests/latest', status: 404, code: 'NAME_UNKNOWN' },
    // Malformed names and paths.
    { url: '/v2/quay.io/UPPER/manifests/latest', status: 400, code: 'NAME_INVALID' },
    { url: '/v2/quay.io/a%2Fb/manifests/v1', status: 400, code: 'NAME_INVALID' },
    { url: '/v2/quay.io/a%2fb/manifests/v1', status: 400, code: 'NAME_INVALID' },
    { url: '/v2/quay.io/a%00/manifests/v1', status: 400, code: 'NAME_INVALID' },
    { url: '/v2//quay.io/a/manifests/v1', status: 400, code: 'NAME_INVALID' },
    { url: '/v2/quay.io//a/manifests/v1', status: 400, code: 'NAME_INVALID' },
    { url: '/v2/quay.io/a/manifests/', status: 400, code: 'NAME_INVALID' },
    { url: `/v2/quay.io/${'a'.repeat(300)}/manifests/v1`, status: 400, code: 'NAME_INVALID' },
    { url: `/v2/quay.io/${'a/'.repeat(3000)}manifests/v1`, status: 400, code: 'NAME_INVALID' },
    // A reference that is neither a tag nor a digest names no manifest: 404 (the spec; distribution too).
    { url: '/v2/quay.io/a/manifests/-tag', status: 404, code: 'MANIFEST_UNKNOWN' },
    { method: 'HEAD', url: '/v2/quay.io/a/manifests/-tag', status: 404, code: 'MANIFEST_UNKNOWN' },
    { url: `/v2/quay.io/a/manifests/${'t'.repeat(129)}`, status: 404, code: 'MANIFEST_UNKNOWN' },
    { url: '/v2/quay.io/a/manifests/.INVALID_MANIFEST_NAME', status: 404, code: 'MANIFEST_UNKNOWN' },
    { url: '/v2/quay.io/a/manifests/a$b', status: 404, code: 'MANIFEST_UNKNOWN' },
    // ns garbage.
    { url: '/v2/library/nginx/manifests/latest?ns=', status: 400, code: 'NAME_INVALID' },
    { url: '/v2/library/nginx/manifests/latest?ns=http://quay.io', status: 400, code: 'NAME_INVALID' },
    { url: '/v2/library/nginx/manifests/latest?ns=quay.io/x', status: 400, code: 'NAME_INVALID' },
    { url: '/v2/library/nginx/manifests/latest?ns=quay.io%00', status: 400, code: 'NAME_INVALID' },
    { url: '/v2/library/nginx/manifests/latest?ns=..%2F..', status: 400, code: 'NAME_INVALID' },
    { url: `/v2/library/nginx/manifests/latest?ns=${'q'.repeat(5000)}`, status: 400, code: 'NAME_INVALID' },
    {
      url: '/v2/library/nginx/manifests/latest?ns=quay.io&ns=quay.io',
      status: 400,
      code: 'NAME_INVALID',
      message: /more than one ns/,
    },
    { url: '/v2/library/nginx/manifests/latest?ns=quay.io&ns=docker.io', status: 400, code: 'NAME_INVALID' },
    { url: '/v2/Library/nginx/manifests/latest?ns=quay.io', status: 400, code: 'NAME_INVALID' },
    // Digests.
    { url: '/v2/quay.io/a/blobs/sha256:abc', status: 400, code: 'DIGEST_INVALID' },
    { url: `/v2/quay.io/a/blobs/sha256:${'D'.repeat(64)}`, status: 400, code: 'DIGEST_INVALID' },
    { url: '/v2/quay.io/a/blobs/latest', status: 400, code: 'DIGEST_INVALID' },
    { url: `/v2/quay.io/a/manifests/sha256:${'d'.repeat(63)}`, status: 400, code: 'DIGEST_INVALID' },
    { url: `/v2/quay.io/a/manifests/sha512:${'d'.repeat(64)}`, status: 400, code: 'DIGEST_INVALID' },
    { url: '/v2/quay.io/a/blobs/sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709', status: 400, code: 'UNSUPPORTED' },
    { url: '/v2/quay.io/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e', status: 400, code: 'UNSUPPORTED' },
    { url: '/v2/quay.io/a/manifests/sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709', status: 400, code: 'UNSUPPORTED' },
    {
      method: 'HEAD',
      url: '/v2/quay.io/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e',
      status: 400,
      code: 'UNSUPPORTED',
    },
    // Writes: refused before the body is read.
    {
      method: 'PUT',
      url: '/v2/quay.io/a/manifests/v1',
      payload: '{"schemaVersion":2}',
      headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
      status: 405,
      code: 'UNSUPPORTED',
    },
    { method: 'POST', url: '/v2/quay.io/a/blobs/uploads/', status: 405, code: 'UNSUPPORTED' },
    {
      method: 'PATCH',
      url: '/v2/quay.io/a/blobs/uploads/uuid',
      payload: Buffer.alloc(64 * 1024),
      headers: { 'content-type': 'application/octet-stream' },
      status: 405,
      code: 'UNSUPPORTED',
    },
    { method: 'DELETE', url: `/v2/quay.io/a/manifests/${D}`, status: 405, code: 'UNSUPPORTED' },
    { method: 'DELETE', url: '/v2/quay.io/a/manifests/v1', status: 405, code: 'UNSUPPORTED' },
    { method: 'DELETE', url: `/v2/quay.io/a/blobs/${D}`, status: 405, code: 'UNSUPPORTED' },
    // Writes: the spec's error table before the refusal, and still before the body is read.
    {
      method: 'PUT',
      url: '/v2/quay.io/a/manifests/sha256:totallywrong',
      payload: 'blablabla',
      headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
      status: 400,
      code: 'DIGEST_INVALID',
    },
    { method: 'DELETE', url: '/v2/quay.io/a/manifests/sha256:totallywrong', status: 400, code: 'DIGEST_INVALID' },
    { method: 'DELETE', url: '/v2/quay.io/a/blobs/sha256:abc', status: 400, code: 'DIGEST_INVALID' },
    {
      method: 'DELETE',
      url: '/v2/quay.io/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e',
      status: 400,
      code: 'UNSUPPORTED',
    },
    {
      method: 'PUT',
      url: '/v2/quay.io/a/manifests/.INVALID_MANIFEST_NAME',
      payload: '{}',
      headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
      status: 404,
      code: 'MANIFEST_UNKNOWN',
    },
    { method: 'DELETE', url: '/v2/quay.io/a/manifests/-tag', status: 404, code: 'MANIFEST_UNKNOWN' },
    { method: 'PUT', url: '/v2/quay.io/a//b/manifests/v1', status: 400, code: 'NAME_INVALID' },
    { method: 'PATCH', url: '/v2/quay.io/a%2Fb/blobs/uploads/uuid', status: 400, code: 'NAME_INVALID' },
    {
      method: 'POST',
      url: '/v2/',
      payload: '{',
      headers: { 'content-type': 'application/json' },
      status: 405,
      code: 'UNSUPPORTED',
    },
    // Endpoints that are not served.
    { url: '/v2/_catalog', status: 404, code: 'UNSUPPORTED' },
    { url: '/v2/quay.io/a/tags/list', status: 404, code: 'UNSUPPORTED' },
    { url: `/v2/quay.io/a/referrers/${D}`, status: 404, code: 'UNSUPPORTED' },
    { url: '/v2/quay.io/a/blobs/uploads/', status: 405, code: 'UNSUPPORTED' },
    { url: '/etc/passwd', status: 404, code: 'NAME_UNKNOWN', logCode: 'NAME_UNKNOWN' },
    // Hostile headers. An invalid Range is ignored (RFC 9110): the request goes on to the origin, which
    // this test cannot reach.
    { url: `/v2/quay.io/a/blobs/${D}`, headers: { range: 'garbage' }, status: 502, code: 'UNAVAILABLE' },
    { url: `/v2/quay.io/a/blobs/${D}`, headers: { range: 'bytes=9-5' }, status: 502, code: 'UNAVAILABLE' },
    {
      url: `/v2/quay.io/a/blobs/${D}`,
      headers: { range: `bytes=${'9'.repeat(60_000)}` },
      status: 502,
      code: 'UNAVAILABLE',
    },
    {
      url: '/v2/docker.io/library/nginx/manifests/latest',
      headers: { 'x-junk': 'j'.repeat(256 * 1024), accept: 'a'.repeat(64 * 1024) },
      status: 403,
      code: 'DENIED',
    },
    {
      url: '/v2/library/nginx/manifests/latest',
      headers: { host: '169.254.169.254', 'x-forwarded-host': 'quay.io' },
      status: 404,
      code: 'NAME_UNKNOWN',
    },
  ];
  for (const c of cases) await expectError(t, p, c);

  // An origin port where nothing listens, named explicitly: 502 UNAVAILABLE, quickly.
  for (const c of [
    { url: `/v2/${ORIGIN}/a/manifests/latest`, status: 502, code: 'UNAVAILABLE', message: /unreachable.*ECONNREFUSED/ },
    { url: `/v2/${ORIGIN}/a/manifests/${D}`, status: 502, code: 'UNAVAILABLE' },
    { url: `/v2/${ORIGIN}/a/blobs/${D}`, status: 502, code: 'UNAVAILABLE' },
    { method: 'HEAD' as const, url: `/v2/${ORIGIN}/a/blobs/${D}`, status: 502, code: 'UNAVAILABLE' },
    { url: `/v2/a/manifests/latest?ns=127.0.0.1:${ORIGIN_PORT}`, status: 502, code: 'UNAVAILABLE' },
  ]) {
    await expectError(t, p, c);
  }
  // The base endpoint still answers.
  const base = await p.proxy.app.inject({ method: 'GET', url: '/v2/' });
  t.equal(base.statusCode, 200);
  t.equal(base.headers['docker-distribution-api-version'], 'registry/2.0');
});

t.test('allowed-registries *: the egress guard refuses link-local, metadata and unnamed loopback', async (t) => {
  const p = await startProxy(t, ['--allowed-registries', '*']);
  const cases: Case[] = [
    {
      url: '/v2/169.254.169.254/latest/manifests/latest',
      status: 502,
      code: 'UNAVAILABLE',
      message: /link-local or metadata/,
    },
    {
      url: `/v2/169.254.169.254_80/latest/blobs/${D}`,
      status: 502,
      code: 'UNAVAILABLE',
      message: /link-local or metadata/,
    },
    { method: 'HEAD', url: `/v2/169.254.169.254/latest/blobs/${D}`, status: 502, code: 'UNAVAILABLE' },
    {
      url: '/v2/latest/manifests/latest?ns=169.254.169.254',
      status: 502,
      code: 'UNAVAILABLE',
      message: /link-local or metadata/,
    },
    {
      url: '/v2/latest/manifests/latest?ns=169.254.0.1:8080',
      status: 502,
      code: 'UNAVAILABLE',
      message: /link-local or metadata/,
    },
    // A hex spelling resolved through DNS (getaddrinfo reads it as an address).
    {
      url: '/v2/0xa9fea9fe_80/latest/manifests/latest',
      status: 502,
      code: 'UNAVAILABLE',
      message: /link-local or metadata/,
    },
    {
      url: '/v2/0.0.0.0_15058/a/manifests/latest',
      status: 502,
      code: 'UNAVAILABLE',
      message: /link-local or metadata/,
    },
    // Loopback that is not named explicitly.
    { url: '/v2/127.0.0.1_15058/a/manifests/latest', status: 502, code: 'UNAVAILABLE', message: /loopback/ },
    { url: '/v2/localhost_15058/a/manifests/latest', status: 502, code: 'UNAVAILABLE', message: /loopback/ },
    { url: '/v2/localhost/a/manifests/latest', status: 502, code: 'UNAVAILABLE', message: /loopback/ },
    { url: '/v2/a/manifests/latest?ns=127.0.0.1:15058', status: 502, code: 'UNAVAILABLE', message: /loopback/ },
    { url: '/v2/a/manifests/latest?ns=0x7f000001:15058', status: 502, code: 'UNAVAILABLE', message: /loopback/ },
    // IPv6 origins have no rewritten form, and no cache repository name either.
    { url: '/v2/a/manifests/latest?ns=[fe80::1]', status: 400, code: 'NAME_INVALID' },
    { url: '/v2/a/manifests/latest?ns=[::ffff:a9fe:a9fe]', status: 400, code: 'NAME_INVALID' },
  ];
  for (const c of cases) await expectError(t, p, c);
});

// ---------------------------------------------------------------------------------------------
// A hand-written origin on 127.0.0.1:15059 (real registries refuse to store such manifests).

const BIG = 4 * 1024 * 1024 + 1;

function origin(req: IncomingMessage, res: ServerResponse): void {
  res.on('error', () => undefined);
  const path = req.url ?? '/';
  const json = (status: number, body: unknown, headers: Record<string, string> = {}) => {
    const b = Buffer.from(JSON.stringify(body));
    res
      .writeHead(status, { 'content-type': 'application/json', 'content-length': String(b.length), ...headers })
      .end(b);
  };
  const manifest = (doc: unknown, type: string) => json(200, doc, { 'content-type': type });
  switch (path) {
    case '/v2/big/manifests/latest': {
      // Declared too large: refused on the header.
      res.writeHead(200, {
        'content-type': 'application/vnd.oci.image.manifest.v1+json',
        'content-length': String(BIG),
      });
      res.end(Buffer.alloc(BIG, 0x20));
      return;
    }
    case '/v2/chunked/manifests/latest': {
      // No length: refused while reading.
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' });
      const chunk = Buffer.alloc(256 * 1024, 0x20);
      let sent = 0;
      const more = (): void => {
        while (sent < BIG + chunk.length) {
          sent += chunk.length;
          if (!res.write(chunk)) {
            res.once('drain', more);
            return;
          }
        }
        res.end();
      };
      more();
      return;
    }
    case '/v2/unknown-type/manifests/latest':
      return manifest(
        { schemaVersion: 2, mediaType: 'application/vnd.example.thing.v1+json', layers: [] },
        'application/vnd.example.thing.v1+json',
      );
    case '/v2/schema1/manifests/latest':
      return manifest(
        { schemaVersion: 1, name: 'schema1', tag: 'latest', fsLayers: [] },
        'application/vnd.docker.distribution.manifest.v1+prettyjws',
      );
    case '/v2/missing/manifests/latest':
      return json(404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'no' }] });
    case `/v2/missing/blobs/${D}`:
      return json(404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'no' }] });
    case `/v2/wrong-digest/manifests/${D}`:
      return manifest(
        { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] },
        'application/vnd.oci.image.index.v1+json',
      );
    case '/v2/rate-limited/manifests/latest':
      return json(429, { errors: [{ code: 'TOOMANYREQUESTS', message: 'slow down' }] });
    case '/v2/garbage-challenge/manifests/latest':
      return json(401, { errors: [{ code: 'UNAUTHORIZED', message: 'who?' }] }, { 'www-authenticate': '"=,,=\u00ff' });
    case '/v2/metadata-realm/manifests/latest':
      return json(
        401,
        { errors: [] },
        { 'www-authenticate': 'Bearer realm="http://169.254.169.254/latest/meta-data/iam",service="x"' },
      );
    case '/v2/loopback-realm/manifests/latest':
      return json(
        401,
        { errors: [] },
        { 'www-authenticate': `Bearer realm="http://127.0.0.2:${ORIGIN_PORT}/token",service="x"` },
      );
    default:
      return json(404, { errors: [{ code: 'NAME_UNKNOWN', message: path }] });
  }
}

t.test('an origin serving what registries would not store', async (t) => {
  const server: Server = createServer(origin);
  await new Promise<void>((resolve) => server.listen(ORIGIN_PORT, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  server.on('connection', (s) => t.teardown(() => s.destroy()));
  const p = await startProxy(t, [
    '--allowed-registries',
    `127.0.0.1:${ORIGIN_PORT},localhost:${ORIGIN_PORT}`,
    '--insecure-registries',
    `127.0.0.1:${ORIGIN_PORT},localhost:${ORIGIN_PORT}`,
  ]);
  const cases: Case[] = [
    {
      url: `/v2/${ORIGIN}/big/manifests/latest`,
      status: 502,
      code: 'MANIFEST_INVALID',
      message: /over the 4194304 byte cap/,
    },
    {
      url: `/v2/${ORIGIN}/chunked/manifests/latest`,
      status: 502,
      code: 'MANIFEST_INVALID',
      message: /over 4194304 bytes/,
    },
    {
      url: `/v2/${ORIGIN}/unknown-type/manifests/latest`,
      status: 502,
      code: 'UNSUPPORTED',
      message: /media type "application\/vnd\.example\.thing\.v1\+json" is not supported/,
    },
    { url: `/v2/${ORIGIN}/schema1/manifests/latest`, status: 502, code: 'UNSUPPORTED', message: /schemaVersion 1/ },
    { url: `/v2/${ORIGIN}/missing/manifests/latest`, status: 404, code: 'MANIFEST_UNKNOWN' },
    { url: `/v2/${ORIGIN}/missing/blobs/${D}`, status: 404, code: 'BLOB_UNKNOWN' },
    { url: `/v2/${ORIGIN}/wrong-digest/manifests/${D}`, status: 502, code: 'DIGEST_INVALID' },
    { url: `/v2/${ORIGIN}/rate-limited/manifests/latest`, status: 503, code: 'TOOMANYREQUESTS' },
    { url: `/v2/${ORIGIN}/garbage-challenge/manifests/latest`, status: 401, code: 'UNAUTHORIZED' },
  ];
  for (const c of cases) await expectError(t, p, c);
  // The same again: a refused manifest was not cached.
  await expectError(t, p, cases[0] as Case);
  await expectError(t, p, cases[2] as Case);
  // A token realm the origin hands us is an address like any other. (Last: the client keeps a
  // registry's challenge, so each realm gets its own registry name for the same origin.)
  await expectError(t, p, {
    url: `/v2/${ORIGIN}/metadata-realm/manifests/latest`,
    status: 502,
    code: 'UNAVAILABLE',
    message: /token request to 169\.254\.169\.254 failed.*link-local or metadata/,
  });
  await expectError(t, p, {
    url: `/v2/localhost_${ORIGIN_PORT}/loopback-realm/manifests/latest`,
    status: 502,
    code: 'UNAVAILABLE',
    message: /token request to 127\.0\.0\.2.*loopback/,
  });
});

// ---------------------------------------------------------------------------------------------
// Raw bytes on a socket, where app.inject would normalise the input away.

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Sends `request` as it is and reads one response (by Content-Length, or to the end). */
function raw(request: string | Buffer): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect(PROXY_PORT, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within 5 s; got ${JSON.stringify(buf.toString('latin1').slice(0, 200))}`));
    }, 5000);
    const tryParse = (ended: boolean) => {
      const text = buf.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) {
        if (ended) finish(undefined);
        return;
      }
      const [statusLine, ...headerLines] = text.slice(0, end).split('\r\n');
      const headers: Record<string, string> = {};
      for (const h of headerLines) {
        const i = h.indexOf(':');
        headers[h.slice(0, i).toLowerCase()] = h.slice(i + 1).trim();
      }
      const body = buf.subarray(end + 4);
      const len = headers['content-length'] === undefined ? undefined : Number(headers['content-length']);
      const status = Number(statusLine?.split(' ')[1]);
      if (len !== undefined && body.length >= len)
        finish({ status, headers, body: body.subarray(0, len).toString('utf8') });
      else if (ended) finish({ status, headers, body: body.toString('utf8') });
    };
    const finish = (r: RawResponse | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      if (r) resolve(r);
      else reject(new Error(`no HTTP response: ${JSON.stringify(buf.toString('latin1').slice(0, 200))}`));
    };
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      tryParse(false);
    });
    socket.on('end', () => tryParse(true));
    socket.on('error', (err) => {
      if (buf.length > 0) tryParse(true);
      else {
        clearTimeout(timer);
        reject(err);
      }
    });
    socket.write(request);
  });
}

function ociBody(t: Test, r: RawResponse, code: string, what: string): void {
  let body: { errors?: { code?: string; message?: string }[] } | undefined;
  try {
    body = JSON.parse(r.body) as typeof body;
  } catch {
    t.fail(`${what}: body is not JSON: ${r.body.slice(0, 200)}`);
  }
  t.equal(body?.errors?.[0]?.code, code, `${what}: ${code} (${body?.errors?.[0]?.message?.slice(0, 120)})`);
  t.type(body?.errors?.[0]?.message, 'string');
}

t.test('raw requests on a socket', async (t) => {
  const p = await startProxy(t, ['--allowed-registries', 'quay.io,docker.io']);
  await p.proxy.app.listen({ host: '127.0.0.1', port: PROXY_PORT });
  t.equal((p.proxy.app.server.address() as AddressInfo).port, PROXY_PORT);
  const get = (path: string, extra = '') =>
    `GET ${path} HTTP/1.1\r\nHost: localhost:${PROXY_PORT}\r\n${extra}Connection: close\r\n\r\n`;

  for (const path of [
    '/v2/docker.io/../x/manifests/v1',
    '/v2/docker.io/library/../../../etc/passwd/manifests/v1',
    '/v2/quay.io/%2e%2e/x/manifests/v1',
    '/v2/quay.io/%2E%2E/%2E%2E/x/manifests/v1',
    '/v2/quay.io/..%2Fx/manifests/v1',
    '/v2/quay.io%2F..%2Fdocker.io/x/manifests/v1',
    '/v2/docker.io/library/nginx/blobs/..%2F..%2F..%2Fetc%2Fpasswd',
    '/v2/docker.io/./library/nginx/manifests/latest',
    '/v2/quay.io\\..\\x/manifests/v1',
    '/v2/..',
  ]) {
    const before = p.lines.length;
    const r = await raw(get(path));
    t.equal(r.status, 400, `${path}: 400`);
    ociBody(t, r, 'NAME_INVALID', path);
    const line = await until(() => p.lines.slice(before).find((l) => l.msg === 'request'));
    t.match(line, { path, status: 400, code: 'NAME_INVALID' }, `${path}: logged with the path as sent`);
  }

  // A write with a body that is never sent: answered at once, without reading it.
  {
    const before = p.lines.length;
    const r = await raw(
      'PUT /v2/quay.io/a/manifests/v1 HTTP/1.1\r\nHost: x\r\n' +
        'Content-Type: application/vnd.oci.image.manifest.v1+json\r\n' +
        'Content-Length: 1000000000\r\n\r\n{"schemaVersion":',
    );
    t.equal(r.status, 405);
    ociBody(t, r, 'UNSUPPORTED', 'PUT with an unsent body');
    t.ok(await until(() => p.lines.slice(before).find((l) => l.msg === 'request' && l.status === 405)), 'logged');
  }
  {
    const r = await raw(
      `POST /v2/quay.io/a/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffff\r\nabc`,
    );
    t.equal(r.status, 405);
    ociBody(t, r, 'UNSUPPORTED', 'POST with a chunked body never finished');
  }

  // A Range full of odd bytes: ignored as invalid (RFC 9110), on to the unreachable origin.
  {
    const r = await raw(Buffer.from(get(`/v2/quay.io/a/blobs/${D}`, 'Range: bytes=\xff\xfe-\x80\r\n'), 'latin1'));
    t.equal(r.status, 502);
    ociBody(t, r, 'UNAVAILABLE', 'a Range of obs-text bytes');
  }

  // The proxy is still serving after all of it.
  const ok = await raw(get('/v2/'));
  t.equal(ok.status, 200);
});

t.test('raw requests the HTTP parser refuses', async (t) => {
  const p = await startProxy(t, ['--allowed-registries', 'quay.io']);
  await p.proxy.app.listen({ host: '127.0.0.1', port: PROXY_PORT });
  const cases: [string, string | Buffer, number][] = [
    ['a header over 16 KiB', `GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Junk: ${'j'.repeat(64 * 1024)}\r\n\r\n`, 431],
    ['a control character in a header', `GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n`, 400],
    [
      'a Range with control characters',
      `GET /v2/quay.io/a/blobs/${D} HTTP/1.1\r\nHost: x\r\nRange: bytes=\x01\x02-\r\n\r\n`,
      400,
    ],
    ['not HTTP at all', '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS hello\r\n\r\n', 400],
    ['a bad request line', 'GET /v2/ HTX/1.1\r\nHost: x\r\n\r\n', 400],
  ];
  for (const [what, req, status] of cases) {
    const before = p.lines.length;
    const r = await raw(req);
    t.equal(r.status, status, `${what}: ${status}`);
    // Which code is a choice for server.ts; the shape is not.
    t.match(
      JSON.parse(r.body || 'null'),
      { errors: [{ code: String, message: String }] },
      `${what}: {"errors":[...]}: ${r.body.slice(0, 120)}`,
    );
    t.ok(await until(() => p.lines.slice(before).find((l) => l.status === status), 500), `${what}: logged`);
  }
});

t.test('no unhandled rejection during the file', async (t) => {
  // Every proxy of the file was closed (its teardown awaited) before this test: a rejection its
  // work left unhandled is reported at the end of the tick it happened in, so one macrotask later
  // all of them are in the list.
  await new Promise((r) => setImmediate(r));
  process.off('unhandledRejection', onUnhandled);
  t.same(
    unhandled.map((r) => (r instanceof Error ? (r.stack ?? r.message) : String(r))),
    [],
  );
});
