/**
 * The kubelet's credential provider plugins against the lab's token-auth registry (Docker-Hub-style
 * Bearer auth, no anonymous access): plugin scripts speaking the exec protocol give the node's
 * credential, the proxy exchanges it for tokens, and a real containerd pulls private images through
 * the node proxy. The plugin's cacheDuration decides how often it runs (a cached answer runs once
 * across two pulls, a `0s` one on each), and a credential the token server refuses makes the node
 * proxy answer 401 so containerd goes on to the next host (a cluster proxy holding a node-wide
 * credential), with nothing of the image stored by the node proxy and no credential in its log.
 * Ports 15363 (registry), 15364 (token server), 15365 (CRI), 15366 (node proxy), 15367 (cluster proxy).
 */
import t from 'tap';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const PORT = 15363;
const REGISTRY = `127.0.0.1:${PORT}`;
const ENCODED = `127.0.0.1_${PORT}`;
/** The registry and its token realm, both plain http on loopback. */
const INSECURE = `${REGISTRY},127.0.0.1:${PORT + 1}`;
const NODE_PROXY = 15366;
const CLUSTER_PROXY = 15367;
const USER = 'node-role';
const PASSWORD = 'Pr0vider-issued-T0ken-tok';
const WRONG = 'Wr0ng-T0ken-from-plugin-tok';
const lab = new Lab('credential-provider-token');
const dir = lab.tempDir('pt-credprov-token');
const binDir = join(dir, 'bin');
const calls = join(dir, 'calls.log');
let node: TestProxy;
let cluster: TestProxy;

t.teardown(async () => {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await node?.stop();
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await cluster?.stop();
  await lab.cleanup();
});

const response = (password: string, extra: Record<string, string>) =>
  JSON.stringify({
    kind: 'CredentialProviderResponse',
    apiVersion: 'credentialprovider.kubelet.k8s.io/v1',
    auth: { [REGISTRY]: { username: USER, password } },
    ...extra,
  });

/** Every plugin records its run (name, then the request it read) in $CALLS, then answers. */
const plugin = (name: string, answer: string) =>
  `#!/bin/sh\nprintf '%s ' ${name} >> "$CALLS"; cat >> "$CALLS"; echo >> "$CALLS"\nprintf '%s' '${answer}'\n`;

const plugins: Record<string, string> = {
  cached: plugin('cached', response(PASSWORD, { cacheKeyType: 'Image', cacheDuration: '10m0s' })),
  uncached: plugin('uncached', response(PASSWORD, { cacheKeyType: 'Image', cacheDuration: '0s' })),
  wrong: plugin('wrong', response(WRONG, { cacheKeyType: 'Image' })),
};

const runs = (name: string) =>
  existsSync(calls)
    ? readFileSync(calls, 'utf8')
        .split('\n')
        .filter((l) => l.split(' ')[0] === name)
    : [];

const ref = (repo: string, tag: string) => `127.0.0.1:${NODE_PROXY}/${ENCODED}/${repo}:${tag}`;

/** Request log lines of a proxy for one repository of the registry. */
const requestsFor = (proxy: TestProxy, repo: string) =>
  proxy.logs().filter((l) => typeof l.path === 'string' && l.path.startsWith(`/v2/${ENCODED}/${repo}/`));

t.before(async () => {
  await lab.registry('tok', PORT, [
    '--token',
    '--no-anon',
    '--htpasswd',
    `${USER}:${PASSWORD}`,
    '--token-port',
    String(PORT + 1),
  ]);
  for (const repo of ['team/app', 'nocache/app', 'refused/app']) {
    for (const tag of ['v1', 'v2']) {
      await lab.image(REGISTRY, repo, tag, ['--layers', '1', '--creds', `${USER}:${PASSWORD}`]);
    }
  }
  mkdirSync(binDir, { recursive: true });
  for (const [name, body] of Object.entries(plugins)) {
    writeFileSync(join(binDir, name), body);
    chmodSync(join(binDir, name), 0o755);
  }
  const provider = (name: string, matchImages: string[]) => ({
    name,
    matchImages,
    defaultCacheDuration: '12h',
    apiVersion: 'credentialprovider.kubelet.k8s.io/v1',
    env: [{ name: 'CALLS', value: calls }],
  });
  writeFileSync(
    join(dir, 'config.yaml'),
    [
      'apiVersion: kubelet.config.k8s.io/v1',
      'kind: CredentialProviderConfig',
      `providers: ${JSON.stringify([
        provider('cached', [`${REGISTRY}/team`]),
        provider('uncached', [`${REGISTRY}/nocache`]),
        provider('wrong', [`${REGISTRY}/refused`]),
      ])}`,
    ].join('\n'),
  );
  // The cluster proxy: no plugins (it serves every node), a node-wide credential instead.
  writeFileSync(
    join(dir, 'cluster-credentials.json'),
    JSON.stringify({ auths: { [REGISTRY]: { username: USER, password: PASSWORD } } }),
  );
  node = await startProxy(
    [
      '--data-dir',
      join(dir, 'node'),
      '--insecure-registries',
      INSECURE,
      '--image-credential-provider-config',
      join(dir, 'config.yaml'),
      '--image-credential-provider-bin-dir',
      binDir,
      '--image-credential-provider-timeout',
      '5s',
    ],
    { port: NODE_PROXY },
  );
  cluster = await startProxy(
    [
      '--data-dir',
      join(dir, 'cluster'),
      '--insecure-registries',
      INSECURE,
      '--registry-credentials',
      join(dir, 'cluster-credentials.json'),
      // containerd names the node proxy's host in ?ns= when it asks the next host.
      '--proxy-hosts',
      `127.0.0.1:${NODE_PROXY}`,
    ],
    { port: CLUSTER_PROXY },
  );
  const { hostsDir } = await lab.containerd('node', 15365);
  // As node-setup writes it: the node proxy first, then the cluster proxy.
  await lab.hostsToml(hostsDir, `127.0.0.1:${NODE_PROXY}`, `http://127.0.0.1:${CLUSTER_PROXY}`, [
    `http://127.0.0.1:${NODE_PROXY}`,
  ]);
});

t.test('a private image pulls through the node proxy on the plugin credential and a real token', async (t) => {
  const r = await lab.criPull('node', ref('team/app', 'v1'));
  t.ok(r.image_ref, `pulled: ${JSON.stringify(r)}`);
  const [first] = runs('cached');
  t.same(JSON.parse(first?.slice('cached '.length) ?? '{}'), {
    kind: 'CredentialProviderRequest',
    apiVersion: 'credentialprovider.kubelet.k8s.io/v1',
    image: `${REGISTRY}/team/app`,
  });
  const tokens = readFileSync(join(lab.dir, 'tok', 'token.log'), 'utf8');
  t.match(tokens, new RegExp(`"user": ?"${USER}"`), 'the token server issued a token to the plugin credential');
  t.same(requestsFor(cluster, 'team/app'), [], 'served by the node proxy, not the next host');
  await node.settle();
});

t.test('cacheDuration: a cached answer runs the plugin once across two pulls, 0s on each', async (t) => {
  t.ok((await lab.criPull('node', ref('team/app', 'v2'))).image_ref, 'a second tag pulls');
  t.equal(runs('cached').length, 1, 'cacheDuration 10m: no second run');
  for (const tag of ['v1', 'v2']) {
    const r = await lab.criPull('node', ref('nocache/app', tag));
    t.ok(r.image_ref, `nocache/app:${tag} pulled`);
  }
  t.ok(runs('uncached').length >= 2, `cacheDuration 0s: run for each pull (${runs('uncached').length} runs)`);
  t.same(requestsFor(cluster, 'nocache/app'), [], 'all served by the node proxy');
  await node.settle();
});

t.test('a credential the token server refuses: the next host serves the pull, the node stores nothing', async (t) => {
  const r = await lab.criPull('node', ref('refused/app', 'v1'));
  t.ok(r.image_ref, `pulled through the cluster proxy: ${JSON.stringify(r)}`);
  t.ok(runs('wrong').length >= 1, 'the plugin ran');
  const refusals = requestsFor(node, 'refused/app').filter((l) => l.status === 401);
  t.ok(refusals.length >= 1, 'the node proxy answered 401, so containerd went on');
  t.ok(requestsFor(cluster, 'refused/app').length > 0, 'the cluster proxy got the requests');
  await node.settle();
  const stored = readdirSync(join(dir, 'node', 'repos'), { recursive: true }).map(String);
  t.ok(
    stored.some((p) => p.includes('team')),
    'the node store holds what it pulled',
  );
  t.notOk(
    stored.some((p) => p.includes('refused')),
    'and nothing of the refused repository',
  );
  const text = node.logText();
  t.notOk(text.includes(WRONG) || text.includes(PASSWORD), 'no credential in the node proxy log');
  t.notOk(cluster.logText().includes(PASSWORD), 'nor in the cluster proxy log');
});

t.test('a refused plugin credential: one log line names the plugin and the reason', async (t) => {
  const lines = node
    .logs()
    .filter((l) => l.plugin === 'wrong' && typeof l.reason === 'string' && JSON.stringify(l).includes('refused'));
  t.equal(lines.length, 1, 'one line for the refused credential of plugin "wrong"');
});
