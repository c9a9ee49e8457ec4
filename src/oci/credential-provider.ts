/**
 * The kubelet's credential provider plugins, run by the proxy as the kubelet runs them: the
 * kubelet's CredentialProviderConfig, the plugin binaries of its directory, the exec protocol
 * (credentialprovider.kubelet.k8s.io CredentialProviderRequest on stdin, CredentialProviderResponse
 * on stdout), `matchImages` and the response's `auth` keys matched as the kubelet's keyring matches
 * them, and the response cached by `cacheKeyType` for `cacheDuration` (else the provider's
 * `defaultCacheDuration`). Semantics follow the kubelet's pkg/credentialprovider/plugin.
 *
 * What a plugin returns are node credentials (the node's cloud identity): they carry no pods, so
 * the access checks treat them as node-wide, like `--registry-credentials`. A plugin that fails
 * yields no credential and one event naming the plugin and the reason; its output never appears
 * in an error, since it holds the secret.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import {
  globLabel,
  matchDockerConfig,
  type Credential,
  type CredentialRequest,
  type CredentialSource,
} from './credentials.js';

export const PROVIDER_API_VERSIONS = [
  'credentialprovider.kubelet.k8s.io/v1',
  'credentialprovider.kubelet.k8s.io/v1beta1',
  'credentialprovider.kubelet.k8s.io/v1alpha1',
] as const;
const CONFIG_API_VERSIONS = [
  'kubelet.config.k8s.io/v1',
  'kubelet.config.k8s.io/v1beta1',
  'kubelet.config.k8s.io/v1alpha1',
];
const CACHE_KEY_TYPES = ['Image', 'Registry', 'Global'] as const;
type CacheKeyType = (typeof CACHE_KEY_TYPES)[number];
/** A response larger than this is not a credential answer. */
const MAX_STDOUT_BYTES = 1024 * 1024;
const MAX_STDERR_CHARS = 300;

export interface CredentialProviderSpec {
  readonly name: string;
  readonly matchImages: readonly string[];
  readonly defaultCacheDurationMs: number;
  readonly apiVersion: string;
  readonly args: readonly string[];
  readonly env: readonly { readonly name: string; readonly value: string }[];
}

/** The CredentialProviderConfig file is invalid; the message names the field, never a value from `env`. */
export class CredentialProviderConfigError extends Error {
  readonly code = 'CREDENTIAL_PROVIDER_CONFIG';
}

/** One plugin run failed: the message names the plugin and the reason. */
export class CredentialProviderError extends Error {
  readonly code = 'CREDENTIAL_PROVIDER_FAILED';
  constructor(
    readonly plugin: string,
    readonly reason: string,
  ) {
    super(`credential provider ${plugin}: ${reason}`);
  }
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

const GO_UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A Go duration as metav1.Duration writes it (`1h30m`, `5m0s`, `0s`, `0`), in milliseconds. */
export function parseGoDuration(text: string): number | undefined {
  if (text === '0') return 0;
  if (!/^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$/.test(text)) return undefined;
  let ms = 0;
  for (const m of text.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) {
    ms += Number(m[1]) * (GO_UNITS[m[2] as string] as number);
  }
  return ms;
}

/**
 * A CredentialProviderConfig (kubelet.config.k8s.io v1, v1beta1 or v1alpha1), validated as the
 * kubelet validates it. Providers that need service account tokens (`tokenAttributes`) are
 * refused: the proxy pulls for the node, not for one pod's service account.
 */
export function parseCredentialProviderConfig(doc: unknown): CredentialProviderSpec[] {
  const fail = (msg: string): never => {
    throw new CredentialProviderConfigError(msg);
  };
  if (!isObject(doc)) return fail('not a CredentialProviderConfig object');
  if (doc.kind !== 'CredentialProviderConfig') return fail(`kind: expected CredentialProviderConfig`);
  if (typeof doc.apiVersion !== 'string' || !CONFIG_API_VERSIONS.includes(doc.apiVersion)) {
    return fail(`apiVersion: expected one of ${CONFIG_API_VERSIONS.join(', ')}`);
  }
  if (!Array.isArray(doc.providers) || doc.providers.length === 0) return fail('providers: at least one is required');
  const names = new Set<string>();
  return doc.providers.map((p: unknown, i): CredentialProviderSpec => {
    const at = `providers[${i}]`;
    if (!isObject(p)) return fail(`${at}: not an object`);
    const name = p.name;
    if (typeof name !== 'string' || name === '' || name === '.' || name === '..' || /[/\\ ]/.test(name)) {
      return fail(`${at}.name: a file name in the plugin directory is required`);
    }
    if (names.has(name)) return fail(`${at}.name: ${name} is listed twice`);
    names.add(name);
    const matchImages = p.matchImages;
    if (
      !Array.isArray(matchImages) ||
      matchImages.length === 0 ||
      !matchImages.every((m) => typeof m === 'string' && m !== '')
    ) {
      return fail(`${at}.matchImages: at least one image pattern is required`);
    }
    const durationText = p.defaultCacheDuration;
    const defaultCacheDurationMs = typeof durationText === 'string' ? parseGoDuration(durationText) : undefined;
    if (defaultCacheDurationMs === undefined)
      return fail(`${at}.defaultCacheDuration: a duration (e.g. 12h) is required`);
    const apiVersion = p.apiVersion;
    if (typeof apiVersion !== 'string' || !(PROVIDER_API_VERSIONS as readonly string[]).includes(apiVersion)) {
      return fail(`${at}.apiVersion: expected one of ${PROVIDER_API_VERSIONS.join(', ')}`);
    }
    if (p.tokenAttributes !== undefined) {
      return fail(`${at}.tokenAttributes: service account token providers are not supported (no pod to pull for)`);
    }
    const args = p.args ?? [];
    if (!Array.isArray(args) || !args.every((a) => typeof a === 'string')) return fail(`${at}.args: strings expected`);
    const env = p.env ?? [];
    if (
      !Array.isArray(env) ||
      !env.every((e) => isObject(e) && typeof e.name === 'string' && e.name !== '' && typeof e.value === 'string')
    ) {
      return fail(`${at}.env: name/value pairs expected`);
    }
    return {
      name,
      matchImages: matchImages as string[],
      defaultCacheDurationMs,
      apiVersion,
      args: args,
      env: (env as { name: string; value: string }[]).map((e) => ({ name: e.name, value: e.value })),
    };
  });
}

/**
 * The kubelet's URLsMatchStr for `matchImages`: the same number of host labels, each matched as a
 * glob, the same port, and the pattern's path a prefix of the image's.
 */
export function imageMatches(pattern: string, image: string): boolean {
  const split = (s: string) => {
    const rest = s.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
    const slash = rest.indexOf('/');
    const hostPort = slash < 0 ? rest : rest.slice(0, slash);
    const path = slash < 0 ? '' : rest.slice(slash);
    const colon = hostPort.lastIndexOf(':');
    return colon < 0
      ? { host: hostPort, port: '', path }
      : { host: hostPort.slice(0, colon), port: hostPort.slice(colon + 1), path };
  };
  const g = split(pattern);
  const t = split(image);
  if (g.port !== t.port || !t.path.startsWith(g.path)) return false;
  const gl = g.host.split('.');
  const tl = t.host.split('.');
  return gl.length === tl.length && gl.every((label, i) => globLabel(label, tl[i] ?? ''));
}

interface ProviderAnswer {
  readonly cacheKeyType: CacheKeyType;
  /** undefined: the provider's default. */
  readonly cacheDurationMs: number | undefined;
  readonly auth: readonly { readonly key: string; readonly credential: Credential }[];
}

/** Reads stdout; every failure reason leaves the content out (it holds the secret). */
function parseAnswer(spec: CredentialProviderSpec, stdout: string): ProviderAnswer {
  const fail = (reason: string): never => {
    throw new CredentialProviderError(spec.name, reason);
  };
  let doc: unknown;
  try {
    doc = JSON.parse(stdout);
  } catch {
    return fail('printed no JSON CredentialProviderResponse on stdout');
  }
  if (!isObject(doc)) return fail('printed no JSON CredentialProviderResponse on stdout');
  if (doc.apiVersion !== spec.apiVersion) return fail(`answered an apiVersion other than ${spec.apiVersion}`);
  if (doc.kind !== 'CredentialProviderResponse') return fail('answered a kind other than CredentialProviderResponse');
  const cacheKeyType = CACHE_KEY_TYPES.find((k) => k === doc.cacheKeyType);
  if (!cacheKeyType) return fail(`answered no valid cacheKeyType (${CACHE_KEY_TYPES.join(', ')})`);
  let cacheDurationMs: number | undefined;
  if (doc.cacheDuration !== undefined && doc.cacheDuration !== null) {
    cacheDurationMs = typeof doc.cacheDuration === 'string' ? parseGoDuration(doc.cacheDuration) : undefined;
    if (cacheDurationMs === undefined) return fail('answered a cacheDuration that is not a duration');
  }
  const auth = doc.auth ?? {};
  if (!isObject(auth)) return fail('answered an auth that is not a map');
  const entries: ProviderAnswer['auth'][number][] = [];
  for (const [key, value] of Object.entries(auth)) {
    if (!isObject(value)) return fail('answered an auth entry that is not an object');
    const username = typeof value.username === 'string' ? value.username : '';
    const password = typeof value.password === 'string' ? value.password : '';
    if (username === '' && password === '') continue;
    entries.push({ key, credential: { kind: 'basic', username, password, label: `credential provider ${spec.name}` } });
  }
  return { cacheKeyType, cacheDurationMs, auth: entries };
}

export interface ProviderEvents {
  /** A plugin was started (for its invocation count). */
  readonly invoked?: (plugin: string) => void;
  /** A plugin failed: the pull goes on without its credentials. */
  readonly failed?: (err: CredentialProviderError, image: string) => void;
}

export interface ExecCredentialProvidersOptions {
  readonly providers: readonly CredentialProviderSpec[];
  readonly binDir: string;
  readonly timeoutMs: number;
  readonly events?: ProviderEvents;
  readonly now?: () => number;
}

interface CacheEntry {
  readonly auth: ProviderAnswer['auth'];
  readonly expiresAt: number;
}

/** The configured plugins as a CredentialSource of node credentials. */
export class ExecCredentialProviders implements CredentialSource {
  private readonly opts: ExecCredentialProvidersOptions;
  private readonly now: () => number;
  /** provider name -> cache key (image, registry or `global`) -> answer. */
  private readonly cache = new Map<string, Map<string, CacheEntry>>();
  /** Concurrent requests for one image share one run, as the kubelet's singleflight does. */
  private readonly running = new Map<string, Promise<ProviderAnswer['auth']>>();

  constructor(opts: ExecCredentialProvidersOptions) {
    this.opts = opts;
    this.now = opts.now ?? Date.now;
  }

  async credentialsFor(req: CredentialRequest): Promise<readonly Credential[]> {
    const image = `${req.registry}/${req.repository}`;
    // Every matching plugin is asked, as the kubelet asks them, at once: a hanging one costs one timeout.
    const matching = this.opts.providers.filter((spec) => spec.matchImages.some((m) => imageMatches(m, image)));
    const answers = await Promise.all(
      matching.map(async (spec) => {
        try {
          return this.cached(spec, image, req.registry) ?? (await this.runOnce(spec, image, req.registry));
        } catch (err) {
          const failure =
            err instanceof CredentialProviderError
              ? err
              : new CredentialProviderError(spec.name, (err as Error).message);
          this.opts.events?.failed?.(failure, image);
          return [];
        }
      }),
    );
    // The kubelet adds the answers to its keyring and matches the image against their keys.
    return answers.flatMap((auth) => matchDockerConfig(auth, req.registry, req.repository));
  }

  private cached(spec: CredentialProviderSpec, image: string, registry: string): ProviderAnswer['auth'] | undefined {
    const entries = this.cache.get(spec.name);
    if (!entries) return undefined;
    const now = this.now();
    for (const [key, e] of entries) if (e.expiresAt <= now) entries.delete(key);
    return (entries.get(image) ?? entries.get(registry) ?? entries.get('global'))?.auth;
  }

  private runOnce(spec: CredentialProviderSpec, image: string, registry: string): Promise<ProviderAnswer['auth']> {
    const key = `${spec.name}\0${image}`;
    const running = this.running.get(key);
    if (running) return running;
    const run = this.exec(spec, image)
      .then((answer) => {
        const ttl = answer.cacheDurationMs ?? spec.defaultCacheDurationMs;
        if (ttl > 0) {
          const cacheKey =
            answer.cacheKeyType === 'Image' ? image : answer.cacheKeyType === 'Registry' ? registry : 'global';
          const entries = this.cache.get(spec.name) ?? new Map<string, CacheEntry>();
          entries.set(cacheKey, { auth: answer.auth, expiresAt: this.now() + ttl });
          this.cache.set(spec.name, entries);
        }
        return answer.auth;
      })
      .finally(() => this.running.delete(key));
    this.running.set(key, run);
    return run;
  }

  private exec(spec: CredentialProviderSpec, image: string): Promise<ProviderAnswer> {
    this.opts.events?.invoked?.(spec.name);
    const request = JSON.stringify({ kind: 'CredentialProviderRequest', apiVersion: spec.apiVersion, image });
    return new Promise((resolve, reject) => {
      const fail = (reason: string) => reject(new CredentialProviderError(spec.name, reason));
      const env = { ...process.env, ...Object.fromEntries(spec.env.map((e) => [e.name, e.value])) };
      const child = spawn(join(this.opts.binDir, spec.name), [...spec.args], { env, stdio: 'pipe' });
      const stdout: Buffer[] = [];
      let stdoutBytes = 0;
      let stderr = '';
      let settled = false;
      const finish = (f: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        f();
      };
      const timer = setTimeout(() => {
        finish(() => fail(`gave no answer within ${this.opts.timeoutMs} ms; killed`));
        child.kill('SIGKILL');
      }, this.opts.timeoutMs);
      child.stdout.on('data', (b: Buffer) => {
        stdoutBytes += b.length;
        if (stdoutBytes > MAX_STDOUT_BYTES) {
          finish(() => fail(`printed more than ${MAX_STDOUT_BYTES} bytes; killed`));
          child.kill('SIGKILL');
          return;
        }
        stdout.push(b);
      });
      child.stderr.on('data', (b: Buffer) => {
        if (stderr.length < MAX_STDERR_CHARS) stderr += b.toString('utf8');
      });
      // A plugin that exits without reading its request must not crash the proxy with EPIPE.
      child.stdin.on('error', () => undefined);
      child.on('error', (err: NodeJS.ErrnoException) =>
        finish(() => fail(`cannot be run: ${err.code ?? err.message}`)),
      );
      child.on('close', (code, signal) => {
        finish(() => {
          if (code !== 0) {
            const said = stderr.trim().split('\n')[0]?.slice(0, MAX_STDERR_CHARS) ?? '';
            const how = signal ? `was killed by ${signal}` : `exited with status ${code}`;
            fail(said ? `${how}: ${said}` : how);
            return;
          }
          try {
            resolve(parseAnswer(spec, Buffer.concat(stdout).toString('utf8')));
          } catch (err) {
            reject(err instanceof Error ? err : new CredentialProviderError(spec.name, String(err)));
          }
        });
      });
      child.stdin.end(request);
    });
  }
}
