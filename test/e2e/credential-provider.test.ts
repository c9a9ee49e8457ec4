/**
 * The kubelet's credential provider plugins run by the proxy: real plugin executables (shell
 * scripts speaking the exec protocol) named by a CredentialProviderConfig, against a Basic-auth
 * registry. A private image pulls through the proxy with a real containerd on credentials from the
 * plugin alone; the answer is cached for its cacheDuration and cacheKeyType (the plugin runs once
 * for two repositories of the registry); plugins that hang, print garbage, exit non-zero or return
 * a credential the origin refuses make the pull fail, each with one log line naming the plugin and
 * the reason, never the credential.
 * Ports 15260 (registry), CRI 15261.
 */
import t from 'tap';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';

const PORT = 15260;
const REGISTRY = `127.0.0.1:${PORT}`;
const USER = 'node-role';
const PASSWORD = 'Pr0vider-issued-T0ken';
const WRONG = 'Wr0ng-T0ken-from-plugin';
const lab = new Lab('credential-provider');
const dir = lab.tempDir('pt-credprov');
const binDir = join(dir, 'bin');
const calls = join(dir, 'calls.log');
let proxy: TestProxy;

t.teardown(async () => {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await proxy?.stop();
  await lab.cleanup();
});

const response = (password: string, extra: string) =>
  JSON.stringify({
    kind: 'CredentialProviderResponse',
    apiVersion: 'credentialprovider.kubelet.k8s.io/v1',
    auth: { [REGISTRY]: { username: USER, password } },
    ...JSON.parse(extra),
  });

/** Every plugin records its run (name, then the request it read) in $CALLS. */
const plugins: Record<string, string> = {
  good: `printf '%s ' good >> "$CALLS"; cat >> "$CALLS"; echo >> "$CALLS"
printf '%s' '${response(PASSWORD, '{"cacheKeyType":"Registry","cacheDuration":"10m0s"}')}'`,
  hang: `echo hang >> "$CALLS"; exec sleep 600`,
  garbage: `echo garbage >> "$CALLS"; echo '{"auth": {"${REGISTRY}": {"password": "${PASSWORD}"' ; echo 'oops'`,
  fails: `echo fails >> "$CALLS"; echo 'no instance role attached' >&2; exit 3`,
  wrong: `echo wrong >> "$CALLS"
printf '%s' '${response(WRONG, '{"cacheKeyType":"Image"}')}'`,
};

t.before(async () => {
  await lab.registry('basic', PORT, ['--htpasswd', `${USER}:${PASSWORD}`]);
  for (const repo of ['team/app', 'team/other', 'bad/app', 'refused/app']) {
    await lab.image(REGISTRY, repo, 'v1', ['--layers', '1', '--creds', `${USER}:${PASSWORD}`]);
  }
  mkdirSync(binDir, { recursive: true });
  for (const [name, body] of Object.entries(plugins)) {
    writeFileSync(join(binDir, name), `#!/bin/sh\n${body}\n`);
    chmodSync(join(binDir, name), 0o755);
  }
  const provider = (name: string, matchImages: string[]) => ({
    name,
    matchImages,
    defaultCacheDuration: '12h',
    apiVersion: 'credentialprovider.kubelet.k8s.io/v1',
    env: [{ name: 'CALLS', value: calls }],
  });
  // YAML, as the kubelet's config usually is (JSON is YAML too).
  const config = [
    'apiVersion: kubelet.config.k8s.io/v1',
    'kind: CredentialProviderConfig',
    `providers: ${JSON.stringify([
      provider('good', [`${REGISTRY}/team`]),
      ...['hang', 'garbage', 'fails'].map((n) => provider(n, [`127.0.0.*:${PORT}/bad`])),
      provider('wrong', [`*.0.0.1:${PORT}/refused`]),
    ])}`,
  ].join('\n');
  writeFileSync(join(dir, 'config.yaml'), config);
  proxy = await startProxy([
    '--data-dir',
    join(dir, 'data'),
    '--insecure-registries',
    REGISTRY,
    '--image-credential-provider-config',
    join(dir, 'config.yaml'),
    '--image-credential-provider-bin-dir',
    binDir,
    '--image-credential-provider-timeout',
    '3s',
  ]);
  await lab.containerd('node', 15261);
});

const runs = (name: string) =>
  existsSync(calls)
    ? readFileSync(calls, 'utf8')
        .split('\n')
        .filter((l) => l.split(' ')[0] === name)
    : [];

t.test('a private image pulls on the plugin credentials alone; its answer is cached by registry', async (t) => {
  const r = await lab.criPull('node', `${proxy.host}/127.0.0.1_${PORT}/team/app:v1`);
  t.ok(r.image_ref, `pulled: ${JSON.stringify(r)}`);
  const first = runs('good');
  t.equal(first.length, 1, 'the plugin ran once');
  const request = JSON.parse(first[0]?.slice('good '.length) ?? '{}') as Record<string, unknown>;
  t.same(request, {
    kind: 'CredentialProviderRequest',
    apiVersion: 'credentialprovider.kubelet.k8s.io/v1',
    image: `${REGISTRY}/team/app`,
  });
  const other = await lab.criPull('node', `${proxy.host}/127.0.0.1_${PORT}/team/other:v1`);
  t.ok(other.image_ref, 'another repository of the registry pulls');
  t.equal(runs('good').length, 1, 'within cacheDuration the Registry-keyed answer serves it: no second run');
  await proxy.settle();
});

t.test('plugins that hang, print garbage or fail: the pull is refused, one line each, no crash', async (t) => {
  const r = await lab.criPull('node', `${proxy.host}/127.0.0.1_${PORT}/bad/app:v1`);
  t.ok(r.error, `refused: ${r.details ?? ''}`);
  const failures = proxy
    .logs()
    .filter((l) => l.msg === 'credential provider plugin failed; pulling without its credentials');
  const reasonOf = (plugin: string) => failures.find((l) => l.plugin === plugin)?.reason;
  t.match(reasonOf('hang'), /no answer within 3000 ms; killed/);
  t.match(reasonOf('garbage'), /no JSON CredentialProviderResponse/);
  t.match(reasonOf('fails'), /exited with status 3: no instance role attached/);
  for (const name of ['hang', 'garbage', 'fails']) {
    const lines = failures.filter((l) => l.plugin === name && l.image === `${REGISTRY}/bad/app`);
    t.ok(lines.length >= 1 && lines.length === runs(name).length, `${name}: one line per run (${lines.length})`);
  }
  const health = await fetch(`${proxy.url}/healthz`);
  t.equal(health.status, 200, 'the proxy still answers');
});

t.test('a credential the origin refuses: the pull fails and nothing is cached', async (t) => {
  const r = await lab.criPull('node', `${proxy.host}/127.0.0.1_${PORT}/refused/app:v1`);
  t.ok(r.error, `refused: ${r.details ?? ''}`);
  t.ok(runs('wrong').length >= 1, 'the plugin ran');
  const stored = readdirSync(join(dir, 'data', 'repos'), { recursive: true }).map(String);
  t.ok(
    stored.some((p) => p.includes('team')),
    'the store holds what was pulled',
  );
  t.notOk(
    stored.some((p) => p.includes('refused')),
    'and nothing of the refused repository',
  );
  await proxy.settle();
});

t.test('no credential reaches the log', async (t) => {
  const text = proxy.logText();
  for (const secret of [PASSWORD, WRONG, Buffer.from(`${USER}:${PASSWORD}`).toString('base64')]) {
    t.notOk(text.includes(secret), `the log never contains ${secret.slice(0, 6)}…`);
  }
});
