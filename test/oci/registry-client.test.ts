/**
 * The registry client's auth and redirect rules, against small hand-written servers: the real
 * registries of the lab cannot be made to answer these cases (a realm that fails, a registry that
 * serves some repositories anonymously behind Basic auth, a CDN behind a redirect), nor show
 * which connection policy each hop of a redirect or a token request went through.
 */
import t, { type Test } from 'tap';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Agent, type Dispatcher } from 'undici';
import { RegistryClient } from '../../src/oci/registry-client.js';
import { createEgressPolicy, guardedConnector } from '../../src/oci/egress.js';
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

/**
 * A client for a registry at `base` with Basic credentials, whose requests that leave the
 * registry's origin go through `elsewhere` (counted per registry name).
 */
function routedClient(base: string, elsewhere: Dispatcher, asked: string[]): RegistryClient {
  return new RegistryClient({
    name: 'routed',
    dispatcher: agent,
    elsewhere: (registry) => {
      asked.push(registry);
      return elsewhere;
    },
    baseUrl: () => base,
    credentials: { credentialsFor: async () => [{ kind: 'basic', username: 'u', password: 'p', label: 'test' }] },
    userAgent: 'pullthrough-test',
    headersTimeoutMs: 2000,
    bodyTimeoutMs: 2000,
  });
}

/** An agent that may reach nothing on loopback nor on private ranges (what a public origin gets elsewhere). */
function refusingAgent(t: Test): Agent {
  const a = new Agent({
    connect: guardedConnector(createEgressPolicy({ named: [], privateRanges: 'named' }), { timeoutMs: 2000 }),
  });
  t.teardown(() => a.close());
  return a;
}

t.test('a redirect that leaves the registry goes through the elsewhere policy; one that stays does not', async (t) => {
  const cdn = await serve((_req, res) => res.writeHead(200, { 'content-length': '4' }).end('blob'));
  const reg = await serve((req, res) => {
    if (req.url?.includes('/blobs/sha256:away')) res.writeHead(307, { location: `${cdn.url}/cdn/x` }).end();
    else if (req.url?.includes('/blobs/sha256:home')) res.writeHead(307, { location: '/local/x' }).end();
    else res.writeHead(200, { 'content-length': '5' }).end('local');
  });
  t.teardown(async () => {
    await cdn.close();
    await reg.close();
  });
  const asked: string[] = [];
  const c = routedClient(reg.url, refusingAgent(t), asked);
  seen.length = 0;
  const err = await c
    .request({
      registry: 'r',
      repository: 'a/b',
      method: 'GET',
      path: '/v2/a/b/blobs/sha256:away',
      followRedirects: true,
    })
    .catch((e: unknown) => e);
  t.type(err, UpstreamError, 'the redirect to a loopback CDN not named is refused');
  t.match((err as Error).message, /loopback 127\.0\.0\.1 for 127\.0\.0\.1:\d+ are not allowed/);
  t.same(asked, ['r'], 'the hop to the CDN asked for the elsewhere dispatcher of the registry');
  t.notOk(
    seen.some((l) => l.includes('/cdn/')),
    `the CDN saw no request: ${seen.join(' | ')}`,
  );
  const home = await c.request({
    registry: 'r',
    repository: 'a/b',
    method: 'GET',
    path: '/v2/a/b/blobs/sha256:home',
    followRedirects: true,
  });
  t.equal(home.statusCode, 200);
  t.equal(await home.body.text(), 'local', 'a redirect within the registry is followed with its own dispatcher');
  t.same(asked, ['r'], 'and did not go elsewhere');

  // With an elsewhere that lets the CDN through, the same redirect is followed.
  const open = routedClient(reg.url, agent, asked);
  const res = await open.request({
    registry: 'r',
    repository: 'a/b',
    method: 'GET',
    path: '/v2/a/b/blobs/sha256:away',
    followRedirects: true,
  });
  t.equal(await res.body.text(), 'blob');
  t.same(asked, ['r', 'r']);
});

t.test(
  'a token realm elsewhere goes through the elsewhere policy: refused, it never sees the credential',
  async (t) => {
    const realm = await serve((_req, res) => res.writeHead(200).end(JSON.stringify({ token: 'tok' })));
    const reg = await serve((req, res) => {
      if (req.url?.startsWith('/token')) {
        res.writeHead(200).end(JSON.stringify({ token: 'own' }));
        return;
      }
      const own = req.url?.includes('/own/');
      if (req.headers.authorization === `Bearer ${own ? 'own' : 'tok'}`) {
        res.writeHead(200, { 'content-length': '2' }).end('{}');
        return;
      }
      const where = own ? `http://${req.headers.host ?? ''}/token` : `${realm.url}/token`;
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${where}",service="reg"` }).end();
    });
    t.teardown(async () => {
      await realm.close();
      await reg.close();
    });
    const asked: string[] = [];
    seen.length = 0;
    const refused = routedClient(reg.url, refusingAgent(t), asked);
    const err = await refused
      .request({ registry: 'r', repository: 'a/b', method: 'GET', path: '/v2/a/b/manifests/v1' })
      .catch((e: unknown) => e);
    t.type(err, UpstreamError);
    t.match((err as Error).message, /token request to 127\.0\.0\.1:\d+ failed: .*loopback/);
    t.equal((err as UpstreamError).status, undefined, 'an origin that cannot be served, not a refused credential');
    t.same(asked, ['r']);
    t.notOk(
      seen.some((l) => l.includes('/token')),
      `the realm saw no request, so no credential: ${seen.join(' | ')}`,
    );

    // A realm on the registry's own origin is the registry: its own dispatcher.
    const own = await refused.request({
      registry: 'r2',
      repository: 'own/app',
      method: 'GET',
      path: '/v2/own/app/manifests/v1',
    });
    await own.body.dump();
    t.equal(own.statusCode, 200, 'a realm on the registry itself is reached');
    t.same(asked, ['r'], 'without going elsewhere');

    // An elsewhere that allows the realm: the token is fetched there and used.
    const allowed = routedClient(reg.url, agent, asked);
    const ok = await allowed.request({ registry: 'r', repository: 'a/b', method: 'GET', path: '/v2/a/b/manifests/v1' });
    await ok.body.dump();
    t.equal(ok.statusCode, 200);
    t.ok(
      seen.some((l) => l.includes('/token') && l.endsWith('auth=Basic')),
      'the realm got the credential once the policy allowed it',
    );
  },
);
