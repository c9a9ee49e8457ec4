/**
 * The egress policy against real registries and a real token server: loopback is reached only on
 * the host:port pairs the configuration names, and where an origin sends the proxy (a blob
 * redirect, a token realm) is held to the same rule, so an origin's credentials never reach a
 * realm on a loopback port nobody named. Absence is asserted in a log after a known-later request.
 * Ports 15100-15105.
 */
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { Lab, registryRequests, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const NAMED = 15100;
const UNNAMED = 15101;
const TOKEN_REGISTRY = 15102;
const TOKEN_SERVER = 15103;
const TO_NAMED = 15104;
const TO_UNNAMED = 15105;
const USER = 'alice';
const PASSWORD = 'Egress-Secret-Pw-15102';
const lab = new Lab('egress');
const dataDir = lab.tempDir('pt-egress');
const credsFile = join(dataDir, 'config.json');
const host = (port: number) => `127.0.0.1:${port}`;
let unnamedDir: string;
let tokenDir: string;
let image: Image;
let proxy: TestProxy;
const others: TestProxy[] = [];

t.teardown(async () => {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await proxy?.stop();
  for (const p of others) await p.stop();
  await lab.cleanup();
});

/** Waits until `found()` holds, or fails with `what` after a deadline. */
async function until(what: string, found: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!found()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** A redirecting origin: blob GETs are sent to `target`, everything else is relayed to NAMED. */
async function redirector(t: Test, port: number, target: number): Promise<void> {
  const server: Server = createServer((req, res) => {
    if (req.method === 'GET' && req.url?.includes('/blobs/')) {
      res.writeHead(307, { location: `http://${host(target)}${req.url}` }).end();
      return;
    }
    void request(`http://${host(NAMED)}${req.url ?? '/'}`, {
      method: req.method as 'GET' | 'HEAD',
      headers: { accept: req.headers.accept ?? '*/*' },
    }).then(async (up) => {
      res.writeHead(up.statusCode, up.headers as Record<string, string>);
      res.end(Buffer.from(await up.body.arrayBuffer()));
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
}

async function get(url: string): Promise<{ status: number; body: string }> {
  const res = await request(url, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  return { status: res.statusCode, body: await res.body.text() };
}

function ociError(body: string): { code?: string; message?: string } | undefined {
  try {
    return (JSON.parse(body) as { errors?: { code?: string; message?: string }[] }).errors?.[0];
  } catch {
    return undefined;
  }
}

/**
 * Sends a request of our own to a registry and waits for its log line: every request the registry
 * answered before it is in the log then. Returns how many log lines there are.
 */
async function mark(dir: string, port: number, name: string): Promise<number> {
  await request(`http://${host(port)}/v2/marker/${name}/manifests/m`).then((r) => r.body.dump());
  await until(`marker ${name} in ${dir}`, () => registryRequests(dir).some((r) => r.path.includes(`/marker/${name}/`)));
  return registryRequests(dir).length;
}

/** Token server log lines in which the user asked for a token (the image's push did too). */
function tokensForUser(): number {
  return readFileSync(join(tokenDir, 'token.log'), 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{') && l.includes(`"user": "${USER}"`)).length;
}

/** As mark(), for the token server: asks for a token of our own and waits for its log line. */
async function markToken(name: string): Promise<void> {
  await request(`http://${host(TOKEN_SERVER)}/token?scope=repository:marker/${name}:pull`).then((r) => r.body.dump());
  await until(`marker ${name} in the token server log`, () =>
    readFileSync(join(tokenDir, 'token.log'), 'utf8').includes(`marker/${name}:`),
  );
}

t.before(async () => {
  const [, unnamed, token] = await Promise.all([
    lab.registry('named', NAMED),
    lab.registry('unnamed', UNNAMED),
    lab.registry('token', TOKEN_REGISTRY, [
      '--token',
      '--htpasswd',
      `${USER}:${PASSWORD}`,
      '--no-anon',
      '--token-port',
      String(TOKEN_SERVER),
    ]),
  ]);
  unnamedDir = unnamed.dir;
  tokenDir = token.dir;
  [image] = await Promise.all([
    lab.image(host(NAMED), 'team/app', 'v1', ['--layers', '1']),
    lab.image(host(UNNAMED), 'team/app', 'v1', ['--layers', '1']),
    lab.image(host(TOKEN_REGISTRY), 'team/app', 'v1', ['--layers', '1', '--creds', `${USER}:${PASSWORD}`]),
  ]);
  writeFileSync(
    credsFile,
    JSON.stringify({ auths: { [host(TOKEN_REGISTRY)]: { username: USER, password: PASSWORD } } }),
  );
  // Every origin of this file is named with its port; the token server and UNNAMED are not.
  proxy = await startProxy([
    '--data-dir',
    dataDir,
    '--insecure-registries',
    [NAMED, TOKEN_REGISTRY, TO_NAMED, TO_UNNAMED].map(host).join(','),
    '--registry-credentials',
    credsFile,
  ]);
});

t.test('loopback is reached on the named host:port only, never on another port of that host', async (t) => {
  const before = await mark(unnamedDir, UNNAMED, 'ns-before');
  const named = await get(`${proxy.url}/v2/team/app/manifests/v1?ns=${host(NAMED)}`);
  t.equal(named.status, 200, `the named origin serves: ${named.body.slice(0, 200)}`);

  for (const path of [
    `/v2/team/app/manifests/v1?ns=${host(UNNAMED)}`,
    `/v2/127.0.0.1_${UNNAMED}/team/app/manifests/v1`,
  ]) {
    const res = await get(`${proxy.url}${path}`);
    t.equal(res.status, 502, `${path}: refused`);
    const err = ociError(res.body);
    t.equal(err?.code, 'UNAVAILABLE', `${path}: as OCI error JSON`);
    t.match(err?.message, /loopback 127\.0\.0\.1 for 127\.0\.0\.1:15101 are not allowed/, path);
  }
  const after = await mark(unnamedDir, UNNAMED, 'ns-after');
  t.same(
    registryRequests(unnamedDir)
      .slice(before, after)
      .filter((r) => !r.path.includes('/marker/')),
    [],
    'the unnamed registry never saw the proxy',
  );
});

t.test('a token realm on a loopback port nobody named gets no request, so no credential', async (t) => {
  await markToken('before');
  const pushed = tokensForUser();
  const res = await get(`${proxy.url}/v2/127.0.0.1_${TOKEN_REGISTRY}/team/app/manifests/v1`);
  t.equal(res.status, 502, `refused: ${res.body.slice(0, 300)}`);
  const err = ociError(res.body);
  t.equal(err?.code, 'UNAVAILABLE');
  t.match(err?.message, /token request to 127\.0\.0\.1:15103 failed: .*loopback 127\.0\.0\.1 for 127\.0\.0\.1:15103/);
  await markToken('after');
  t.equal(tokensForUser(), pushed, `the token server never saw ${USER} from the proxy`);
  t.notOk(proxy.logText().includes(PASSWORD), 'and the password is in no log line');

  // Named with its port, the same realm is used, with the credential.
  const named = await startProxy([
    '--data-dir',
    lab.tempDir('pt-egress-realm'),
    '--insecure-registries',
    [TOKEN_REGISTRY, TOKEN_SERVER].map(host).join(','),
    '--registry-credentials',
    credsFile,
  ]);
  others.push(named);
  const ok = await get(`${named.url}/v2/127.0.0.1_${TOKEN_REGISTRY}/team/app/manifests/v1`);
  t.equal(ok.status, 200, `served once the realm is named: ${ok.body.slice(0, 200)}`);
  t.ok(tokensForUser() > pushed, 'the realm issued the proxy a token for its user');
});

t.test('a blob redirect is followed to a named host:port and refused to another loopback port', async (t) => {
  await redirector(t, TO_NAMED, NAMED);
  await redirector(t, TO_UNNAMED, UNNAMED);
  const layer = image.layers[0] as string;

  const followed = await request(`${proxy.url}/v2/127.0.0.1_${TO_NAMED}/team/app/blobs/${layer}`);
  const bytes = Buffer.from(await followed.body.arrayBuffer());
  t.equal(followed.statusCode, 200, 'the redirect to the named registry is followed');
  t.equal(`sha256:${createHash('sha256').update(bytes).digest('hex')}`, layer);

  const before = await mark(unnamedDir, UNNAMED, 'redirect-before');
  const refused = await get(`${proxy.url}/v2/127.0.0.1_${TO_UNNAMED}/team/app/blobs/${layer}`);
  t.equal(refused.status, 502, `the redirect to an unnamed port is refused: ${refused.body.slice(0, 300)}`);
  t.equal(ociError(refused.body)?.code, 'UNAVAILABLE');
  t.match(ociError(refused.body)?.message, /loopback 127\.0\.0\.1 for 127\.0\.0\.1:15101/);
  const after = await mark(unnamedDir, UNNAMED, 'redirect-after');
  t.same(
    registryRequests(unnamedDir)
      .slice(before, after)
      .filter((r) => !r.path.includes('/marker/')),
    [],
    'the unnamed registry never saw the redirected GET',
  );
  await proxy.settle();
});
