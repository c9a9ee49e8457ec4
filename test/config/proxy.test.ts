import t from 'tap';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  ConfigError,
  envName,
  helpText,
  parseDuration,
  parseFlags,
  parseHostPort,
  parseList,
  type FlagSpec,
} from '../../src/config/flags.js';
import { proxyFlags, readProxyConfig } from '../../src/config/proxy.js';

/** The ConfigError `f` throws (undefined when it throws nothing or something else). */
function configError(f: () => unknown): ConfigError | undefined {
  try {
    f();
  } catch (e) {
    if (e instanceof ConfigError) return e;
  }
  return undefined;
}

t.test('flags: a flag wins over its variable, the variable over the default', async (t) => {
  const specs: FlagSpec[] = [
    { name: 'alpha-beta', kind: 'string', default: 'd', help: 'h' },
    { name: 'on', kind: 'boolean', help: 'h' },
    { name: 'no-default', kind: 'list', help: 'h' },
  ];
  t.equal(envName('alpha-beta'), 'PULLTHROUGH_ALPHA_BETA');
  t.same(parseFlags(specs, [], {}).values, { 'alpha-beta': 'd', on: undefined, 'no-default': undefined });
  t.same(parseFlags(specs, [], { PULLTHROUGH_ALPHA_BETA: 'env', PULLTHROUGH_ON: 'true' }).values, {
    'alpha-beta': 'env',
    on: 'true',
    'no-default': undefined,
  });
  t.same(parseFlags(specs, ['--alpha-beta', 'flag', '--on'], { PULLTHROUGH_ALPHA_BETA: 'env' }).values, {
    'alpha-beta': 'flag',
    on: 'true',
    'no-default': undefined,
  });
  t.same(parseFlags(specs, ['--alpha-beta=x=y'], {}).values['alpha-beta'], 'x=y');
  t.equal(
    parseFlags(specs, ['--alpha-beta', ''], { PULLTHROUGH_ALPHA_BETA: 'env' }).values['alpha-beta'],
    '',
    'an empty flag is still a flag',
  );
  t.equal(parseFlags(specs, ['--help'], {}).help, true);
  t.same(parseFlags(specs, ['p1'], {}, { positionals: true }).positionals, ['p1']);
  for (const argv of [['--nope'], ['--alpha-beta'], ['positional'], ['--on=maybe'], ['-x']]) {
    t.ok(
      configError(() => parseFlags(specs, argv, {})),
      argv.join(' '),
    );
  }
  const help = helpText('Usage: x', specs);
  t.match(help, /--alpha-beta VALUE\n\s+h\n\s+env PULLTHROUGH_ALPHA_BETA; default d/);
  t.match(help, /--no-default A,B,\.\.\.\n\s+h\n\s+env PULLTHROUGH_NO_DEFAULT\n/);
  t.match(help, /--help/);
});

t.test('values: lists, durations, HOST:PORT', async (t) => {
  t.same(parseList('a, b,,c\n d'), ['a', 'b', 'c', 'd']);
  t.same(parseList(undefined), []);
  t.same(parseList(' '), []);
  const d: [string, number][] = [
    ['90', 90_000],
    ['90s', 90_000],
    ['15m', 900_000],
    ['2h', 7_200_000],
    ['1d', 86_400_000],
    ['500ms', 500],
    ['1.5s', 1500],
    [' 5 s ', 5000],
    ['0', 0],
  ];
  for (const [v, ms] of d) t.equal(parseDuration('x', v), ms, v);
  for (const v of [undefined, '', 's', '-1s', '5 minutes', '5S', '1e3', '1h30m', 'NaN']) {
    t.throws(() => parseDuration('tag-ttl', v), { message: /--tag-ttl: not a duration/ }, JSON.stringify(v));
  }
  t.same(parseHostPort('listen', '127.0.0.1:7439'), { host: '127.0.0.1', port: 7439 });
  t.same(parseHostPort('listen', '[::1]:80'), { host: '::1', port: 80 });
  t.same(parseHostPort('listen', '0.0.0.0:0'), { host: '0.0.0.0', port: 0 });
  t.same(parseHostPort('listen', 'localhost:65535'), { host: 'localhost', port: 65535 });
  for (const v of [
    undefined,
    '',
    '7439',
    ':7439',
    '127.0.0.1',
    '127.0.0.1:',
    '127.0.0.1:65536',
    '127.0.0.1:123456',
    'a:b:1',
    '::1:80',
    '127.0.0.1:x',
  ]) {
    t.throws(() => parseHostPort('listen', v), { message: /--listen: expected HOST:PORT/ }, JSON.stringify(v));
  }
});

t.test('readProxyConfig: defaults', async (t) => {
  const { config, help } = readProxyConfig([], {});
  t.equal(help, false);
  t.match(config, {
    listen: { host: '127.0.0.1', port: 7439 },
    cacheRegistry: undefined,
    dataDir: resolve('./data'),
    insecureRegistries: [],
    allowedRegistries: ['*'],
    tagTtlMs: 600_000,
    platforms: [],
    originConnectTimeoutMs: 5000,
    originTimeoutMs: 20_000,
    originIdleTimeoutMs: 30_000,
    cacheTimeoutMs: 5000,
    cacheCooldownMs: 10_000,
    logLevel: 'info',
    metricsListen: { host: '127.0.0.1', port: 7440 },
  });
  t.same(config.credentials, []);
  t.same(config.insecureRegistries, []);
  t.same(config.allowedRegistries, ['*']);
  t.same(config.platforms, []);
  t.equal(readProxyConfig(['--help'], {}).help, true);
  // Every flag has a help line and its variable.
  const text = helpText('u', proxyFlags);
  for (const f of proxyFlags) t.match(text, `env ${envName(f.name)}`, f.name);
});

t.test('readProxyConfig: flags and PULLTHROUGH_* variables', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pt-config-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const { config } = readProxyConfig(
    [
      '--listen',
      '0.0.0.0:17439',
      '--cache-registry',
      'http://cache.svc:5000/',
      '--insecure-registries',
      'cache.svc:5000, 127.0.0.1:*',
      '--platforms',
      'linux/amd64,linux/arm64',
      '--metrics-listen',
      '',
      '--log-level',
      'debug',
      '--data-dir',
      dir,
    ],
    {
      PULLTHROUGH_ALLOWED_REGISTRIES: 'quay.io\nghcr.io',
      PULLTHROUGH_TAG_TTL: '1h',
      PULLTHROUGH_LISTEN: '1.2.3.4:1',
      PULLTHROUGH_ORIGIN_TIMEOUT: '500ms',
    },
  );
  t.same(config.listen, { host: '0.0.0.0', port: 17439 }, 'the flag wins over PULLTHROUGH_LISTEN');
  t.equal(config.cacheRegistry?.href, 'http://cache.svc:5000/');
  t.same(config.insecureRegistries, ['cache.svc:5000', '127.0.0.1:*']);
  t.same(config.allowedRegistries, ['quay.io', 'ghcr.io']);
  t.equal(config.tagTtlMs, 3_600_000);
  t.equal(config.originTimeoutMs, 500);
  t.same(config.platforms, ['linux/amd64', 'linux/arm64']);
  t.equal(config.metricsListen, undefined, 'an empty --metrics-listen disables metrics');
  t.equal(config.logLevel, 'debug');
  t.equal(config.dataDir, dir);
  t.equal(readProxyConfig(['--platforms', 'linux/amd64,all'], {}).config.platforms, 'all');
  t.equal(readProxyConfig([], { PULLTHROUGH_METRICS_LISTEN: '' }).config.metricsListen, undefined);
});

t.test('readProxyConfig: every bad value is a ConfigError naming the flag', async (t) => {
  const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
    [['--nope'], {}, /nope/],
    [['--listen', 'nohost'], {}, /--listen: expected HOST:PORT/],
    [[], { PULLTHROUGH_LISTEN: '1.2.3.4' }, /--listen: expected HOST:PORT/],
    [['--metrics-listen', 'x'], {}, /--metrics-listen: expected HOST:PORT/],
    [['--cache-registry', 'not a url'], {}, /--cache-registry: not a URL/],
    [['--cache-registry', 'ftp://x/'], {}, /--cache-registry: use an http/],
    [['--tag-ttl', 'forever'], {}, /--tag-ttl: not a duration/],
    [[], { PULLTHROUGH_ORIGIN_CONNECT_TIMEOUT: '5 s s' }, /--origin-connect-timeout: not a duration/],
    [['--origin-idle-timeout', '-1'], {}, /--origin-idle-timeout/],
    [['--cache-timeout', 'x'], {}, /--cache-timeout/],
    [['--cache-cooldown', 'x'], {}, /--cache-cooldown/],
    [['--log-level', 'loud'], {}, /--log-level: unknown level "loud"/],
    [
      ['--registry-credentials', '/nonexistent/config.json'],
      {},
      /--registry-credentials: cannot read \/nonexistent\/config\.json: ENOENT/,
    ],
  ];
  for (const [argv, env, re] of cases) {
    const e = configError(() => readProxyConfig(argv, env));
    t.ok(e, `${argv.join(' ') || JSON.stringify(env)}: a ConfigError`);
    t.match(e?.message, re);
  }
});

t.test('readProxyConfig: --registry-credentials', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pt-creds-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const good = join(dir, 'config.json');
  await writeFile(good, JSON.stringify({ auths: { 'quay.io': { auth: Buffer.from('u:s3cret').toString('base64') } } }));
  const { config } = readProxyConfig(['--registry-credentials', good], {});
  t.same(config.credentials, [
    {
      key: 'quay.io',
      credential: { kind: 'basic', username: 'u', password: 's3cret', label: '--registry-credentials quay.io' },
    },
  ]);
  t.same(readProxyConfig([], { PULLTHROUGH_REGISTRY_CREDENTIALS: good }).config.credentials.length, 1);
  // A broken file: the message names the file, never its content.
  const bad = join(dir, 'broken.json');
  await writeFile(bad, '{"auths": {"quay.io": {"password": "hunter2-secret"');
  let message = '';
  try {
    readProxyConfig(['--registry-credentials', bad], {});
  } catch (e) {
    t.ok(e instanceof ConfigError);
    message = (e as Error).message;
  }
  t.match(message, /--registry-credentials: cannot read .*broken\.json: not valid JSON/);
  t.notMatch(message, /hunter2/);
  t.throws(() => readProxyConfig(['--registry-credentials', dir], {}), { message: /EISDIR/ });
});

t.test('--blob-redirect: auto by default, off, and anything else refused by name', async (t) => {
  t.equal(readProxyConfig([], {}).config.blobRedirect, 'auto');
  t.equal(readProxyConfig(['--blob-redirect=off'], {}).config.blobRedirect, 'off');
  t.equal(readProxyConfig([], { PULLTHROUGH_BLOB_REDIRECT: 'off' }).config.blobRedirect, 'off');
  for (const bad of ['on', 'AUTO', '', 'true']) {
    const e = configError(() => readProxyConfig([`--blob-redirect=${bad}`], {}));
    t.match(e?.message, /--blob-redirect/, `${JSON.stringify(bad)} is refused, naming the flag`);
  }
});
