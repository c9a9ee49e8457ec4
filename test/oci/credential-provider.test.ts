/**
 * The credential provider pieces that need no registry: the kubelet's matchImages semantics, Go
 * durations, the CredentialProviderConfig checks, the proxy flags that read it, and the cache by
 * cacheKeyType and cacheDuration (a plugin script that counts its runs, a clock the test moves).
 */
import t from 'tap';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ExecCredentialProviders,
  imageMatches,
  parseCredentialProviderConfig,
  parseGoDuration,
  type CredentialProviderSpec,
} from '../../src/oci/credential-provider.js';
import { readProxyConfig } from '../../src/config/proxy.js';

const dir = mkdtempSync(join(tmpdir(), 'pt-credprov-unit-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('matchImages as the kubelet matches them', async (t) => {
  const yes: [string, string][] = [
    ['*.dkr.ecr.*.amazonaws.com', '123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app'],
    ['*-docker.pkg.dev', 'europe-west4-docker.pkg.dev/p/r/app'],
    ['gcr.io', 'gcr.io/p/app'],
    ['registry.example:5000/team', 'registry.example:5000/team/app'],
    ['https://*.azurecr.io', 'myreg.azurecr.io/app'],
  ];
  const no: [string, string][] = [
    ['*.azurecr.io', 'a.b.azurecr.io/app'], // one label per `*`
    ['gcr.io', 'eu.gcr.io/p/app'],
    ['registry.example:5000', 'registry.example/app'], // ports must be equal
    ['registry.example/team', 'registry.example/other/app'],
  ];
  for (const [p, i] of yes) t.ok(imageMatches(p, i), `${p} matches ${i}`);
  for (const [p, i] of no) t.notOk(imageMatches(p, i), `${p} does not match ${i}`);
});

t.test('Go durations', async (t) => {
  t.equal(parseGoDuration('10m0s'), 600_000);
  t.equal(parseGoDuration('1h30m'), 5_400_000);
  t.equal(parseGoDuration('0s'), 0);
  t.equal(parseGoDuration('0'), 0);
  t.equal(parseGoDuration('1.5s'), 1500);
  t.equal(parseGoDuration('10'), undefined);
  t.equal(parseGoDuration('ten minutes'), undefined);
});

const valid = {
  apiVersion: 'kubelet.config.k8s.io/v1',
  kind: 'CredentialProviderConfig',
  providers: [
    {
      name: 'ecr-credential-provider',
      matchImages: ['*.dkr.ecr.*.amazonaws.com'],
      defaultCacheDuration: '12h',
      apiVersion: 'credentialprovider.kubelet.k8s.io/v1',
      env: [{ name: 'AWS_PROFILE', value: 'node' }],
    },
  ],
};

t.test('CredentialProviderConfig checks', async (t) => {
  const [p] = parseCredentialProviderConfig(valid);
  t.match(p, { name: 'ecr-credential-provider', defaultCacheDurationMs: 43_200_000, args: [] });
  const bad = (change: Record<string, unknown>, why: RegExp) =>
    t.throws(() => parseCredentialProviderConfig({ ...valid, providers: [{ ...valid.providers[0], ...change }] }), why);
  bad({ name: '../sh' }, /name/);
  bad({ matchImages: [] }, /matchImages/);
  bad({ defaultCacheDuration: undefined }, /defaultCacheDuration/);
  bad({ apiVersion: 'v1' }, /apiVersion/);
  bad({ tokenAttributes: { serviceAccountTokenAudience: 'x' } }, /service account/);
  t.throws(() => parseCredentialProviderConfig({ ...valid, kind: 'KubeletConfiguration' }), /kind/);
  t.throws(() => parseCredentialProviderConfig({ ...valid, providers: [] }), /at least one/);
});

t.test('proxy flags', async (t) => {
  const bin = join(dir, 'flags-bin');
  mkdirSync(bin);
  const file = join(dir, 'config.yaml');
  writeFileSync(file, JSON.stringify(valid));
  const read = (argv: string[]) => readProxyConfig(argv, {}).config.credentialProviders;
  t.equal(read([]), undefined, 'off by default');
  t.throws(() => read(['--image-credential-provider-config', file]), /go together/);
  const both = ['--image-credential-provider-config', file, '--image-credential-provider-bin-dir', bin];
  t.throws(() => read(both), /plugin ecr-credential-provider is not an executable/);
  writeFileSync(join(bin, 'ecr-credential-provider'), '#!/bin/sh\n');
  chmodSync(join(bin, 'ecr-credential-provider'), 0o755);
  t.match(read(both), { binDir: bin, timeoutMs: 10_000, providers: [{ name: 'ecr-credential-provider' }] });
  writeFileSync(file, 'kind: [');
  t.throws(() => read(both), /cannot read .*: not valid YAML or JSON/);
});

t.test('the cache follows cacheKeyType and cacheDuration', async (t) => {
  const bin = join(dir, 'cache-bin');
  mkdirSync(bin);
  const runs = join(dir, 'runs');
  writeFileSync(runs, '');
  // Answers with the key type and duration given as arguments; counts its runs.
  writeFileSync(
    join(bin, 'counter'),
    `#!/bin/sh\ncat > /dev/null; echo run >> "${runs}"\n` +
      `printf '{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1",` +
      `"cacheKeyType":"%s",%s"auth":{"reg.example":{"username":"u","password":"p"}}}' "$1" "$2"\n`,
  );
  chmodSync(join(bin, 'counter'), 0o755);
  const count = () => readFileSync(runs, 'utf8').split('\n').filter(Boolean).length;
  let now = 1_000_000;
  const source = (args: string[], defaultCacheDurationMs = 60_000) => {
    const spec: CredentialProviderSpec = {
      name: 'counter',
      matchImages: ['reg.example'],
      defaultCacheDurationMs,
      apiVersion: 'credentialprovider.kubelet.k8s.io/v1',
      args,
      env: [],
    };
    return new ExecCredentialProviders({ providers: [spec], binDir: bin, timeoutMs: 10_000, now: () => now });
  };
  const ask = (s: ExecCredentialProviders, repository: string) =>
    s.credentialsFor({ registry: 'reg.example', repository });

  const image = source(['Image', '"cacheDuration":"1m",']);
  t.match(await ask(image, 'a'), [{ kind: 'basic', username: 'u', label: 'credential provider counter' }]);
  await ask(image, 'a');
  t.equal(count(), 1, 'Image: the same image is served from the cache');
  await ask(image, 'b');
  t.equal(count(), 2, 'Image: another image runs the plugin');
  now += 61_000;
  await ask(image, 'a');
  t.equal(count(), 3, 'past cacheDuration the plugin runs again');

  const global = source(['Global', '']);
  await ask(global, 'a');
  await ask(global, 'z');
  t.equal(count(), 4, 'Global without cacheDuration: the default duration, one run for every image');
  now += 61_000;
  await ask(global, 'z');
  t.equal(count(), 5, 'until the default duration passes');

  const never = source(['Registry', '"cacheDuration":"0s",']);
  await ask(never, 'a');
  await ask(never, 'a');
  t.equal(count(), 7, 'cacheDuration 0: never cached');

  const concurrent = source(['Image', '"cacheDuration":"0s",']);
  await Promise.all([ask(concurrent, 'c'), ask(concurrent, 'c'), ask(concurrent, 'c')]);
  t.equal(count(), 8, 'concurrent requests for one image share one run');

  const other = await source(['Registry', '']).credentialsFor({ registry: 'other.example', repository: 'a' });
  t.same(other, [], 'an image no matchImages pattern matches: no run, no credential');
  t.equal(count(), 8);
});
