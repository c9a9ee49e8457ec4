/**
 * The registry client's auth and redirect rules, against small hand-written servers: the real
 * registries of the lab cannot be made to answer these cases (a realm that fails, a registry that
 * serves some repositories anonymously behind Basic auth, a CDN behind a redirect).
 */
import t, { type Test } from 'tap';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Agent } from 'undici';
import type { RegistryClient } from '../../src/oci/registry-client.js';
import { testRegistryClient } from '../helpers/registry-client.js';
import { UpstreamError } from '../../src/oci/errors.js';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
const seen: string[] = [];

async function serve(handler: Handler): Promise<{ url: string; close: () => Promise<void> }> {
  const server: Server = createServer((req, res) => {
    const scheme = req.headers.authorization ? req.headers.authorization.split(' ')[0] : '-';
    seen.push(`${req.headers.host} ${req.method} ${req.url} auth=${scheme}`);
    handler(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(() => r())) };
}

const agent = new Agent();
t.teardown(() => agent.close());

function client(base: string, creds: { username: string; password: string } | undefined): RegistryClient {
  return testRegistryClient(base, { name: 'test', dispatcher: agent, creds, timeoutMs: 2000 });
}

/** A Bearer-auth registry whose token realm answers `realmStatus` to everything. */
async function bearerRegistry(t: Test, realmStatus: number): Promise<string> {
  const realm = await serve((_req, res) => res.writeHead(realmStatus).end());
  const reg = await serve((req, res) => {
    if (!req.headers.authorization)
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm.url}/token",service="x"` }).end();
    else res.writeHead(200).end('{}');
  });
  t.teardown(async () => {
    await realm.close();
    await reg.close();
  });
  return reg.url;
}

t.test('a token realm that fails (503) is an outage, not a refused credential', async (t) => {
  const url = await bearerRegistry(t, 503);
  const c = client(url, { username: 'u', password: 'p' });
  await t.rejects(
    c.request({ registry: 'r', repository: 'a/b', method: 'GET', path: '/v2/a/b/manifests/v1' }),
    UpstreamError,
  );
  const err = await c
    .request({ registry: 'r', repository: 'a/b', method: 'GET', path: '/v2/a/b/manifests/v1' })
    .catch((e: unknown) => e);
  t.equal(
    (err as UpstreamError).status,
    undefined,
    'no status: the origin is unreachable, so a cached tag may be served',
  );
});

t.test('a realm that refuses (401) is a refused credential: the 401 is passed on', async (t) => {
  const url = await bearerRegistry(t, 401);
  const err = await client(url, { username: 'u', password: 'wrong' })
    .request({ registry: 'r', repository: 'a/b', method: 'GET', path: '/v2/a/b/manifests/v1' })
    .then(
      (res) => res.statusCode,
      (e: unknown) => (e as UpstreamError).status,
    );
  t.equal(err, 401);
});

t.test(
  'behind Basic auth, public repositories stay reachable anonymously after a private one asked for credentials',
  async (t) => {
    const reg = await serve((req, res) => {
      if (req.url?.startsWith('/v2/pub/')) res.writeHead(200).end('{}');
      else res.writeHead(401, { 'www-authenticate': 'Basic realm="r"' }).end();
    });
    t.teardown(() => reg.close());
    const c = client(reg.url, undefined);
    const refused = await c
      .request({ registry: 'r', repository: 'private/app', method: 'GET', path: '/v2/private/app/manifests/v1' })
      .catch((e: unknown) => e);
    t.equal((refused as UpstreamError).status, 401, 'the private one: 401');
    const pub = await c.request({
      registry: 'r',
      repository: 'pub/other',
      method: 'GET',
      path: '/v2/pub/other/manifests/v1',
    });
    await pub.body.dump();
    t.equal(pub.statusCode, 200, 'served');
  },
);

t.test(
  'blob redirects are followed; credentials do not follow to another origin, and its 401 is not a challenge',
  async (t) => {
    const cdn = await serve((req, res) => {
      if (req.url?.includes('expired')) res.writeHead(401, { 'www-authenticate': 'Basic realm="cdn"' }).end();
      else res.writeHead(200, { 'content-length': '4' }).end('blob');
    });
    const reg = await serve((req, res) => {
      if (req.headers.authorization !== `Basic ${Buffer.from('u:p').toString('base64')}`) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="r"' }).end();
        return;
      }
      res.writeHead(307, { location: `${cdn.url}/cdn/${req.url?.includes('old') ? 'expired' : 'ok'}?sig=1` }).end();
    });
    t.teardown(async () => {
      await cdn.close();
      await reg.close();
    });
    const c = client(reg.url, { username: 'u', password: 'p' });
    seen.length = 0;
    const res = await c.request({
      registry: 'r',
      repository: 'a/b',
      method: 'GET',
      path: '/v2/a/b/blobs/sha256:new',
      followRedirects: true,
    });
    t.equal(res.statusCode, 200);
    t.equal(await res.body.text(), 'blob');
    t.ok(
      seen.some((l) => l.includes('/cdn/ok') && l.endsWith('auth=-')),
      `the CDN got no Authorization: ${seen.join(' | ')}`,
    );
    const expired = await c.request({
      registry: 'r',
      repository: 'a/b',
      method: 'GET',
      path: '/v2/a/b/blobs/sha256:old',
      followRedirects: true,
    });
    await expired.body.dump();
    t.equal(expired.statusCode, 401, "the CDN's 401 is passed on");
    const again = await c.request({
      registry: 'r',
      repository: 'a/b',
      method: 'GET',
      path: '/v2/a/b/blobs/sha256:new',
      followRedirects: true,
    });
    await again.body.dump();
    t.equal(again.statusCode, 200, "and the registry's own challenge (Basic) is still the one used");
  },
);

t.test('HEAD requests keep their connection (undici would close it after each)', async (t) => {
  let connections = 0;
  const server: Server = createServer((_req, res) => res.writeHead(200, { 'content-length': '2' }).end());
  server.on('connection', () => connections++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const c = client(`http://127.0.0.1:${(server.address() as { port: number }).port}`, undefined);
  for (let i = 0; i < 3; i++) {
    const res = await c.request({ registry: 'r', repository: 'a/b', method: 'HEAD', path: '/v2/a/b/manifests/v1' });
    await res.body.dump();
    t.equal(res.statusCode, 200);
    // undici hands a socket back one event-loop turn after a response: then it is reused.
    await new Promise((r) => setTimeout(r, 5));
  }
  t.equal(connections, 1, 'three HEADs, one connection');
});
