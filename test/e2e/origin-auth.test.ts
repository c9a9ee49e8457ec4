/**
 * Origins that want credentials, with credentials from --registry-credentials (the pods' own come
 * in the credentials suite): Basic auth, Docker-Hub-style Bearer tokens with and without
 * anonymous pull. A real containerd pulls through the proxy; the token is fetched once per
 * repository and reused; no credential reaches the log.
 * Ports 15050-15054 (registries and token servers), CRI 15035-15036.
 */
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const BASIC = 15050;
const TOKEN_PRIVATE = 15051;
const TOKEN_PUBLIC = 15053;
const USER = 'bob';
const PASSWORD = 'S3cr3t-pullthrough-Pw';
const lab = new Lab('origin-auth');
const dataDir = lab.tempDir('pt-origin-auth');
const bareDir = lab.tempDir('pt-origin-auth-bare');
const credsFile = join(dataDir, 'config.json');
let proxy: TestProxy;
let bare: TestProxy;

t.teardown(async () => {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await proxy?.stop();
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await bare?.stop();
  await lab.cleanup();
});

// The token servers (15052, 15054) are named too: a realm on loopback is reached only on a named port.
const hosts = [BASIC, TOKEN_PRIVATE, TOKEN_PUBLIC, 15052, 15054].map((p) => `127.0.0.1:${p}`).join(',');

t.before(async () => {
  await Promise.all([
    lab.registry('basic', BASIC, ['--htpasswd', `${USER}:${PASSWORD}`]),
    lab.registry('token-private', TOKEN_PRIVATE, [
      '--token',
      '--htpasswd',
      `${USER}:${PASSWORD}`,
      '--no-anon',
      '--token-port',
      '15052',
    ]),
    lab.registry('token-public', TOKEN_PUBLIC, [
      '--token',
      '--htpasswd',
      `${USER}:${PASSWORD}`,
      '--token-port',
      '15054',
    ]),
  ]);
  await Promise.all(
    [BASIC, TOKEN_PRIVATE, TOKEN_PUBLIC].map((p) =>
      lab.image(`127.0.0.1:${p}`, 'team/app', 'v1', ['--layers', '2', '--creds', `${USER}:${PASSWORD}`]),
    ),
  );
  writeFileSync(
    credsFile,
    JSON.stringify({
      auths: {
        [`127.0.0.1:${BASIC}`]: { auth: Buffer.from(`${USER}:${PASSWORD}`).toString('base64') },
        [`http://127.0.0.1:${TOKEN_PRIVATE}`]: { username: USER, password: PASSWORD },
      },
    }),
  );
  proxy = await startProxy([
    '--data-dir',
    dataDir,
    '--insecure-registries',
    hosts,
    '--registry-credentials',
    credsFile,
  ]);
  bare = await startProxy(['--data-dir', bareDir, '--insecure-registries', hosts]);
  await lab.containerd('node', 15035);
});

t.test('Basic, private token and public token origins pull through the proxy', async (t) => {
  for (const port of [BASIC, TOKEN_PRIVATE, TOKEN_PUBLIC]) {
    const r = await lab.criPull('node', `${proxy.host}/127.0.0.1_${port}/team/app:v1`);
    t.ok(r.image_ref, `127.0.0.1:${port}: ${JSON.stringify(r)}`);
  }
  await proxy.settle();
});

t.test('without credentials the private origins refuse, the public one serves', async (t) => {
  await lab.containerd('node-bare', 15036);
  const basic = await lab.criPull('node-bare', `${bare.host}/127.0.0.1_${BASIC}/team/app:v1`);
  t.ok(basic.error, `Basic origin: refused (${basic.details ?? ''})`);
  t.match(basic.details ?? '', /401 Unauthorized/, 'as the 401 the proxy passed on');
  const priv = await lab.criPull('node-bare', `${bare.host}/127.0.0.1_${TOKEN_PRIVATE}/team/app:v1`);
  t.ok(priv.error, 'token origin without anonymous pull: refused');
  const pub = await lab.criPull('node-bare', `${bare.host}/127.0.0.1_${TOKEN_PUBLIC}/team/app:v1`);
  t.ok(pub.image_ref, `token origin with anonymous pull (Docker Hub public): ${JSON.stringify(pub)}`);
});

t.test(
  'a proxy with no pods to check (the cluster proxy) refuses a cached private image without node-wide credentials',
  async (t) => {
    // Same embedded store as the proxy that cached the image with --registry-credentials.
    const cluster = await startProxy([
      '--data-dir',
      dataDir,
      '--insecure-registries',
      hosts,
      '--private-images',
      'node-credentials',
    ]);
    try {
      const r = await lab.criPull('node-bare', `${cluster.host}/127.0.0.1_${BASIC}/team/app:v1`);
      t.ok(r.error, `refused: ${r.details ?? ''}`);
      const pub = await lab.criPull('node-bare', `${cluster.host}/127.0.0.1_${TOKEN_PUBLIC}/team/app:v1`);
      t.ok(pub.image_ref, 'a public image is still served');
      t.notOk(cluster.logText().includes(PASSWORD), 'and nothing leaks into its log');
    } finally {
      await cluster.stop();
    }
  },
);

t.test('one token per repository and identity, reused for every request', async (t) => {
  const tokenLog = readFileSync(join(lab.dir, 'token-private', 'token.log'), 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'));
  // Lines for the proxy: pull scope (the image push before asked for pull,push) and our user.
  const forRepo = tokenLog.filter(
    (l) =>
      l.includes('team%2Fapp%3Apull&') ||
      l.endsWith('team%2Fapp%3Apull", "status": 200') ||
      /team%2Fapp%3Apull(?!%2C)/.test(l),
  );
  const proxyTokens = forRepo.filter((l) => l.includes(`"user": "${USER}"`));
  t.equal(proxyTokens.length, 1, `the private origin issued the proxy one token for team/app (${proxyTokens.length})`);
});

t.test('no credential reaches the log', async (t) => {
  const text = proxy.logText() + bare.logText();
  t.ok(text.length > 0);
  for (const secret of [PASSWORD, Buffer.from(`${USER}:${PASSWORD}`).toString('base64'), 'Bearer ', 'Basic ']) {
    t.notOk(text.includes(secret), `the log never contains ${secret.slice(0, 6)}…`);
  }
});
