/**
 * Pod credentials and the access model end to end: a token-auth origin (no anonymous access), a
 * Basic-auth origin and a public one from oci-lab, a fake API server holding the node's pods,
 * secrets and ServiceAccounts, and a real containerd pulling through the proxy as the kubelet
 * does. Each step names the case it covers; the last one reads the whole log.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { request } from 'undici';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { FakeApiServer } from '../fake-apiserver/index.js';
import { Lab, registryRequests, type Image } from '../helpers/lab.js';
import { startKubeProxy, type KubeProxy } from '../helpers/kube.js';
import { basicAuth, dockerConfigSecret, eventually, pod, serviceAccount } from '../kube/helpers.js';

const run = promisify(execFile);
const TOKEN_PORT = 15040; // token server on 15041
const BASIC_PORT = 15042;
const PUBLIC_PORT = 15043;
const CRI_PORT = 15044;
const PROXY_PORT = 15045;
const COLD_PROXY_PORT = 15046;
/** --auth-ttl here: how long the origin's acceptance of a pod's credentials is trusted. */
const AUTH_TTL_MS = 2000;

const tok = `127.0.0.1:${TOKEN_PORT}`;
const basic = `127.0.0.1:${BASIC_PORT}`;
const pub = `127.0.0.1:${PUBLIC_PORT}`;
const enc = (host: string) => host.replace(':', '_');
const TOK_PW = 'Tok3n-pw-alice';
const BASIC_PW = 'Bas1c-pw-bob';
const BASIC_PW_2 = 'Bas1c-pw-bob-rotated';
const WRONG_PW = 'Wr0ng-pw-carol';
const SECRETS = [TOK_PW, BASIC_PW, BASIC_PW_2, WRONG_PW];

const lab = new Lab('credentials');
const dataDir = lab.tempDir('pt-credentials');
const coldDir = lab.tempDir('pt-credentials-cold');
let api: FakeApiServer;
let proxy: KubeProxy;
let cold: KubeProxy | undefined;
let basicDir: string;
let pubDir: string;
let tokDir: string;
let app: Image;
let saApp: Image;
let basicImg: Image;
/** Every error containerd reported and the metrics text: checked for secrets at the end. */
const seen: string[] = [];

t.teardown(async () => {
  await cold?.stop();
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await proxy?.stop();
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await api?.close();
  await lab.cleanup();
});

const proxied = (host: string, repo: string, tag = 'v1') => `${proxy.host}/${enc(host)}/${repo}:${tag}`;

/** The proxy's own answer for the manifest containerd was refused: status, OCI code, challenge. */
async function refusalOverHttp(host: string, repo: string): Promise<[number, string | undefined, unknown]> {
  const res = await request(`${proxy.url}/v2/${enc(host)}/${repo}/manifests/v1`, {
    headers: { accept: MANIFEST_ACCEPT },
  });
  const body = (await res.body.json()) as { errors?: { code?: string }[] };
  return [res.statusCode, body.errors?.[0]?.code, res.headers['www-authenticate']];
}

async function pull(ref: string): Promise<{ image_ref?: string; error?: string; details?: string }> {
  await lab.removeImage('node', ref);
  const r = await lab.criPull('node', ref, ['--timeout', '60']);
  seen.push(JSON.stringify(r));
  return r;
}

const refusals = () => proxy.logs().filter((l) => String(l.msg).startsWith('private image refused'));
const users = (host: string, repo: string) =>
  proxy.kube.credentials.podsUsing(host, repo).map((p) => `${p.namespace}/${p.name}`);
async function waitUsers(host: string, repo: string, want: string[]): Promise<void> {
  await eventually(
    () => JSON.stringify(users(host, repo)) === JSON.stringify(want),
    `pods using ${repo}: ${want.join(',')}`,
  );
}

t.before(async () => {
  api = await FakeApiServer.start();
  const [t1, b1, p1] = await Promise.all([
    lab.registry('tok', TOKEN_PORT, [
      '--token',
      '--no-anon',
      '--htpasswd',
      `alice:${TOK_PW}`,
      '--token-port',
      String(TOKEN_PORT + 1),
    ]),
    lab.registry('basic', BASIC_PORT, ['--htpasswd', `bob:${BASIC_PW}`]),
    lab.registry('pub', PUBLIC_PORT),
  ]);
  tokDir = t1.dir;
  basicDir = b1.dir;
  pubDir = p1.dir;
  [app, saApp, basicImg] = await Promise.all([
    lab.image(tok, 'team/app', 'v1', ['--layers', '2', '--creds', `alice:${TOK_PW}`]),
    lab.image(tok, 'team/sa-app', 'v1', ['--layers', '1', '--creds', `alice:${TOK_PW}`]),
    lab.image(basic, 'team/basic', 'v1', ['--layers', '2', '--creds', `bob:${BASIC_PW}`]),
    lab.image(pub, 'library/pub', 'v1', ['--layers', '1']),
    lab.image(pub, 'library/pub2', 'v1', ['--layers', '1']),
  ]);
  await lab.containerd('node', CRI_PORT);
  proxy = await startKubeProxy(
    api,
    [
      '--data-dir',
      dataDir,
      '--auth-ttl',
      `${AUTH_TTL_MS}ms`,
      '--insecure-registries',
      `${tok},127.0.0.1:${TOKEN_PORT + 1},${basic},${pub}`,
    ],
    {
      port: PROXY_PORT,
      secretTtlSeconds: 1,
    },
  );
});

t.test('pod A on this node with a valid secret: the pull succeeds and fills the cache', async (t) => {
  api.putSecret(dockerConfigSecret('team-a', 'regcred', { [tok]: basicAuth('alice', TOK_PW) }));
  // As the webhook leaves it: the rewritten reference.
  api.addPod(pod('a', { namespace: 'team-a', images: [proxied(tok, 'team/app')], pullSecrets: ['regcred'] }));
  await waitUsers(tok, 'team/app', ['team-a/a']);
  const r = await pull(proxied(tok, 'team/app'));
  t.ok(r.image_ref, `pulled: ${JSON.stringify(r)}`);
  await proxy.settle();
  t.ok(await proxy.store.inner.getManifest(`${enc(tok)}/team/app`, app.digest), 'the manifest is cached');
  for (const d of app.layers)
    t.ok(await proxy.store.inner.statBlob(`${enc(tok)}/team/app`, d), `layer ${d.slice(7, 19)} is cached`);
});

t.test('pod B in another namespace, without a secret, same image: refused from the cache', async (t) => {
  api.addPod(pod('b', { namespace: 'team-b', images: [`${tok}/team/app:v1`] }));
  api.deletePod('team-a', 'a');
  await waitUsers(tok, 'team/app', ['team-b/b']);
  const blobsBefore = registryRequests(tokDir).filter((q) => q.path.includes('/blobs/')).length;
  const r = await pull(proxied(tok, 'team/app'));
  t.ok(r.error, `refused: ${JSON.stringify(r)}`);
  t.match(r.details ?? r.error ?? '', /401|nauthorized/, 'as 401');
  t.same(await refusalOverHttp(tok, 'team/app'), [401, 'UNAUTHORIZED', undefined], '401 UNAUTHORIZED, no challenge');
  const line = refusals().find((l) => JSON.stringify(l.pods).includes('team-b/b'));
  t.ok(line, 'a log line names pod B');
  t.match(JSON.stringify(line?.pods), /no credentials for this registry/, 'and why');
  t.equal(
    registryRequests(tokDir).filter((q) => q.path.includes('/blobs/')).length,
    blobsBefore,
    'nothing was fetched from the origin',
  );
  t.match(
    await proxy.metrics.registry.getSingleMetricAsString('pullthrough_access_refusals_total'),
    /reason="rejected"} [1-9]/,
    'counted',
  );

  // The model is per node: with A back on the node, the cached image is served (to whichever pod).
  api.addPod(pod('a', { namespace: 'team-a', images: [proxied(tok, 'team/app')], pullSecrets: ['regcred'] }));
  await waitUsers(tok, 'team/app', ['team-a/a', 'team-b/b']);
  const again = await pull(proxied(tok, 'team/app'));
  t.ok(again.image_ref, `served again while A (with access) is on the node: ${JSON.stringify(again)}`);
  api.deletePod('team-a', 'a');
  api.deletePod('team-b', 'b');
});

t.test('pod C with a wrong password: refused', async (t) => {
  api.putSecret(dockerConfigSecret('team-c', 'good', { [basic]: basicAuth('bob', BASIC_PW) }));
  api.addPod(pod('d', { namespace: 'team-c', images: [`${basic}/team/basic:v1`], pullSecrets: ['good'] }));
  await waitUsers(basic, 'team/basic', ['team-c/d']);
  const filled = await pull(proxied(basic, 'team/basic'));
  t.ok(filled.image_ref, `pod D (right password) fills the cache from the Basic origin: ${JSON.stringify(filled)}`);
  await proxy.settle();
  t.ok(await proxy.store.inner.getManifest(`${enc(basic)}/team/basic`, basicImg.digest), 'cached');

  api.putSecret(dockerConfigSecret('team-c', 'wrong', { [basic]: basicAuth('bob', WRONG_PW) }));
  api.addPod(pod('c', { namespace: 'team-c', images: [`${basic}/team/basic:v1`], pullSecrets: ['wrong'] }));
  api.deletePod('team-c', 'd');
  await waitUsers(basic, 'team/basic', ['team-c/c']);
  const r = await pull(proxied(basic, 'team/basic'));
  t.ok(r.error, `refused: ${JSON.stringify(r)}`);
  t.same(await refusalOverHttp(basic, 'team/basic'), [401, 'UNAUTHORIZED', undefined], '401 UNAUTHORIZED');
  const line = refusals().find((l) => JSON.stringify(l.pods).includes('team-c/c'));
  t.match(JSON.stringify(line?.pods), /credentials rejected by the origin/, 'the log says the origin rejected pod C');
});

t.test('the secret rotated: pulls work with the new one', async (t) => {
  // The origin's password changes, and so does pod C's secret.
  const { stdout } = await run('htpasswd', ['-Bbn', 'bob', BASIC_PW_2]);
  const { writeFileSync } = await import('node:fs');
  writeFileSync(`${basicDir}/htpasswd`, stdout);
  api.putSecret(dockerConfigSecret('team-c', 'wrong', { [basic]: basicAuth('bob', BASIC_PW_2) }));
  await new Promise((r) => setTimeout(r, 1100)); // the secret cache (1 s here, 30 s by default)
  const r = await pull(proxied(basic, 'team/basic'));
  t.ok(r.image_ref, `served with the rotated secret: ${JSON.stringify(r)}`);
  // The old password no longer opens it once D's last confirmation is older than --auth-ttl: pod D
  // is back with the old secret, alone.
  await new Promise((r) => setTimeout(r, AUTH_TTL_MS + 100));
  api.addPod(pod('d', { namespace: 'team-c', images: [`${basic}/team/basic:v1`], pullSecrets: ['good'] }));
  api.deletePod('team-c', 'c');
  await waitUsers(basic, 'team/basic', ['team-c/d']);
  const old = await pull(proxied(basic, 'team/basic'));
  t.ok(old.error, `the old password is refused: ${JSON.stringify(old)}`);
  t.same(await refusalOverHttp(basic, 'team/basic'), [401, 'UNAUTHORIZED', undefined], '401 UNAUTHORIZED');
  api.deletePod('team-c', 'd');
});

t.test('a secret on the ServiceAccount only: works', async (t) => {
  api.putSecret(dockerConfigSecret('team-e', 'sa-cred', { [tok]: basicAuth('alice', TOK_PW) }));
  api.putServiceAccount(serviceAccount('team-e', 'builder', ['sa-cred']));
  api.addPod(
    pod('e', {
      namespace: 'team-e',
      serviceAccount: 'builder',
      images: [`${tok}/team/sa-app:v1`, `${tok}/team/app:v1`],
    }),
  );
  await waitUsers(tok, 'team/sa-app', ['team-e/e']);
  await waitUsers(tok, 'team/app', ['team-e/e']);
  const cold = await pull(proxied(tok, 'team/sa-app'));
  t.ok(cold.image_ref, `from the origin: ${JSON.stringify(cold)}`);
  const cached = await pull(proxied(tok, 'team/app'));
  t.ok(
    cached.image_ref,
    `from the cache, access confirmed with the ServiceAccount's secret: ${JSON.stringify(cached)}`,
  );
  await proxy.settle();
  t.ok(await proxy.store.inner.getManifest(`${enc(tok)}/team/sa-app`, saApp.digest), 'cached');
});

t.test('the API server stopped: public images still pulled; the proxy starts without it', async (t) => {
  const first = await pull(proxied(pub, 'library/pub'));
  t.ok(first.image_ref, 'a public image, API server up');
  await proxy.settle();
  await api.stop();
  await eventually(() => !proxy.kube.informer.connected, 'the informer notices');
  const pubBefore = registryRequests(pubDir).length;
  const cached = await pull(proxied(pub, 'library/pub'));
  t.ok(cached.image_ref, `public, from the cache: ${JSON.stringify(cached)}`);
  // At most the public re-check: one anonymous HEAD once the record is older than --auth-ttl.
  const made = registryRequests(pubDir).slice(pubBefore);
  t.ok(
    made.length <= 1 && made.every((q) => q.method === 'HEAD'),
    `a cached public image costs no origin GET, at most one HEAD: ${JSON.stringify(made)}`,
  );
  const fresh = await pull(proxied(pub, 'library/pub2'));
  t.ok(fresh.image_ref, `public, from the origin: ${JSON.stringify(fresh)}`);
  await new Promise((r) => setTimeout(r, AUTH_TTL_MS + 100));
  const priv = await pull(proxied(tok, 'team/sa-app'));
  t.ok(
    priv.image_ref,
    `private: the origin accepts pod E's last known ServiceAccount secret again: ${JSON.stringify(priv)}`,
  );

  const started = Date.now();
  cold = await startKubeProxy(api, ['--data-dir', coldDir, '--insecure-registries', pub], { port: COLD_PROXY_PORT });
  t.ok(Date.now() - started < 5000, 'a proxy starts with the API server down');
  const viaCold = await lab.criPull('node', `${cold.host}/${enc(pub)}/library/pub:v1`, ['--timeout', '60']);
  seen.push(JSON.stringify(viaCold));
  t.ok(viaCold.image_ref, `and serves public images: ${JSON.stringify(viaCold)}`);
  await cold.stop();
  await api.restart();
});

t.test('the log of the whole suite contains no credential', async (t) => {
  const text = [proxy.logText(), cold?.logText() ?? '', ...seen, await proxy.metrics.registry.metrics()].join('\n');
  if (process.env.CREDENTIALS_TEST_LOG) (await import('node:fs')).writeFileSync(process.env.CREDENTIALS_TEST_LOG, text);
  t.ok(text.length > 10_000, `${text.length} characters of log`);
  t.ok(
    proxy.logs().some((l) => l.component === 'kube'),
    'the kube module logged into it',
  );
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  for (const s of SECRETS) {
    t.notOk(text.includes(s), `no ${s.slice(0, 5)}...`);
    for (const user of ['alice', 'bob'])
      t.notOk(text.includes(b64(`${user}:${s}`)), `no base64 ${user}:${s.slice(0, 5)}...`);
  }
  t.notOk(/authorization/i.test(text), 'no Authorization header');
  t.notOk(/\b(basic|bearer) [A-Za-z0-9+/=._-]{8,}/i.test(text), 'no Basic or Bearer value');
  t.notOk(/eyJ[A-Za-z0-9_-]{10,}\./.test(text), 'no JWT (registry token)');
});
