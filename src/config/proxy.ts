/**
 * The node proxy's configuration, read in one place from flags and PULLTHROUGH_* variables.
 */
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadYaml } from '@kubernetes/client-node';
import {
  CredentialProviderConfigError,
  parseCredentialProviderConfig,
  type CredentialProviderSpec,
} from '../oci/credential-provider.js';
import { parseDockerConfig, type DockerConfigEntry } from '../oci/credentials.js';
import type { GatePolicy } from '../scan/policy.js';
import { parseScanPolicy, scanPolicyFlags } from './scan.js';
import {
  ConfigError,
  helpText,
  parseDuration,
  parseFlags,
  parseHostPort,
  parseList,
  valueOf,
  type FlagSpec,
} from './flags.js';

export const proxyFlags: readonly FlagSpec[] = [
  {
    name: 'listen',
    kind: 'string',
    default: '127.0.0.1:7439',
    help: 'HOST:PORT the distribution API, /healthz and /readyz listen on.',
  },
  {
    name: 'cache-registry',
    kind: 'string',
    default: '',
    help:
      'URL of the shared cache registry (any OCI distribution registry). ' +
      'Without it, the embedded store in --data-dir is used.',
  },
  {
    name: 'blob-redirect',
    kind: 'string',
    default: 'auto',
    help:
      "auto: a cached blob GET is answered with the --cache-registry's own redirect (a registry on object " +
      'storage: a presigned URL), so clients fetch the bytes from the object store; blobs are relayed when ' +
      'the registry serves them itself. off: always relay (the object store is not reachable from nodes).',
  },
  {
    name: 'data-dir',
    kind: 'string',
    default: './data',
    help: 'Embedded store, and the spool directory for blobs being filled (also with --cache-registry).',
  },
  {
    name: 'max-cache-size',
    kind: 'string',
    default: '',
    arg: 'SIZE',
    help:
      'Bounds the embedded store: bytes (20GiB, 500MiB, 1TB) or a share of the --data-dir volume (80%). ' +
      'Least recently used content is evicted first. Empty: unbounded.',
  },
  {
    name: 'cache-low-water',
    kind: 'string',
    default: '0.9',
    arg: 'FRACTION',
    help: 'Eviction stops once the embedded store holds this fraction of --max-cache-size.',
  },
  {
    name: 'registry-credentials',
    kind: 'string',
    default: '',
    help:
      "A docker config.json whose auths are used for origins (and the cache registry) after the pods' own " +
      'credentials.',
  },
  {
    name: 'image-credential-provider-config',
    kind: 'string',
    default: '',
    arg: 'FILE',
    help:
      "The kubelet's CredentialProviderConfig (YAML or JSON), with --image-credential-provider-bin-dir: the " +
      'proxy runs those plugins for the images they match, and uses what they return as node credentials.',
  },
  {
    name: 'image-credential-provider-bin-dir',
    kind: 'string',
    default: '',
    arg: 'DIR',
    help: "The kubelet's credential provider plugin directory (the binaries --image-credential-provider-config names).",
  },
  {
    name: 'image-credential-provider-timeout',
    kind: 'duration',
    default: '10s',
    help: 'A credential provider plugin that has not answered by then is killed and the pull goes on without it.',
  },
  {
    name: 'insecure-registries',
    kind: 'list',
    default: '',
    help:
      'Registries reached over plain http (host, host:port, *.domain, host:*). ' +
      'A loopback host is reached only on a host:port named literally here or in --allowed-registries ' +
      '(a host without port: its scheme port); so is a token realm or redirect target on loopback.',
  },
  {
    name: 'allowed-registries',
    kind: 'list',
    default: '*',
    help:
      'Registries the proxy may pull from; others get DENIED. * is any public or private-range host. ' +
      'Loopback is reached only on a host:port named literally; link-local never. A redirect or token realm ' +
      'reaches a private range only when named, or when its origin is on a private or loopback address.',
  },
  {
    name: 'proxy-hosts',
    kind: 'list',
    default: 'localhost:7439,127.0.0.1:7439',
    help:
      "The host names rewritten references give the proxy (the webhook's --proxy-host). " +
      'A request whose ?ns= names one of them is in the rewritten form: that is how a rewritten pull ' +
      "reaches the cluster proxy as containerd's next host. The --listen address is added.",
  },
  {
    name: 'tag-ttl',
    kind: 'duration',
    default: '10m',
    help: 'How long a cached tag is served without asking the origin; after that it is revalidated with a HEAD.',
  },
  {
    name: 'platforms',
    kind: 'list',
    default: '',
    help:
      'Platforms of a multi-arch index to complete in the background (e.g. linux/amd64,linux/arm64, or all). ' +
      'Empty: only what clients pull.',
  },
  { name: 'origin-connect-timeout', kind: 'duration', default: '5s', help: 'Connect timeout toward origins.' },
  {
    name: 'origin-timeout',
    kind: 'duration',
    default: '20s',
    help: 'Time an origin has to answer with headers; past it the client gets 504 and containerd tries its next host.',
  },
  {
    name: 'origin-idle-timeout',
    kind: 'duration',
    default: '30s',
    help: 'Longest silence inside an origin body before the transfer is cut (clients then resume with Range).',
  },
  {
    name: 'cache-timeout',
    kind: 'duration',
    default: '5s',
    help: 'Connect and header timeout toward the cache registry.',
  },
  {
    name: 'cache-cooldown',
    kind: 'duration',
    default: '10s',
    help: 'After the cache registry fails to answer, how long it is skipped (pulls go to the origin).',
  },
  {
    name: 'cluster-proxy',
    kind: 'list',
    default: '',
    help:
      'Base URLs of the cluster proxy replicas; a host name stands for every address it resolves to (a ' +
      'headless Service), looked up every 10 s. What the cache is missing is asked of one of them (the same ' +
      'one for the same object, on every node) before the origin, so the cluster fetches it from the origin ' +
      'once; the replica stores it. Empty: straight to the origin.',
  },
  {
    name: 'cluster-self',
    kind: 'string',
    default: '',
    help:
      "A cluster proxy replica's own URL (http://<pod IP>:7439), one of the replicas --cluster-proxy names or " +
      'resolves to: what it owns it fetches from the origin itself; what another replica owns it asks that one for.',
  },
  {
    name: 'cluster-timeout',
    kind: 'duration',
    default: '3s',
    help: 'Connect and header timeout toward a cluster proxy; past it the origin is asked directly.',
  },
  {
    name: 'cluster-cooldown',
    kind: 'duration',
    default: '30s',
    help: 'After a cluster proxy fails to answer (unreachable, slow, 5xx), how long it is skipped.',
  },
  {
    name: 'node-name',
    kind: 'string',
    help:
      "The node this proxy serves; unset: NODE_NAME (the downward API's spec.nodeName), so --node-name= " +
      '(empty) turns pod credentials off where NODE_NAME is set (a cluster proxy). With it, the proxy watches ' +
      "the pods on this node and uses their imagePullSecrets (and their ServiceAccounts') for origins, and " +
      'serves a private image from the cache only while a pod on this node that uses it has credentials the ' +
      'origin accepts. Without it: no pod credentials, no access checks.',
  },
  {
    name: 'private-images',
    kind: 'string',
    default: '',
    help:
      'How cached private images (the origin refuses anonymous requests) are served. pods: only while a pod ' +
      'on this node that uses the image has credentials the origin accepts (needs a node name; the default ' +
      'with one). node-credentials: only when a --registry-credentials credential is accepted, for a proxy ' +
      'with no pods to check, such as the cluster proxy behind a Service. open: every cached copy is served ' +
      '(the default without a node name: a standalone proxy on a workstation).',
  },
  {
    name: 'private-to',
    kind: 'string',
    default: '',
    help:
      'Which clients may be served private images (any repository not known to be public). node: only the ' +
      "node itself, i.e. requests from one of this network namespace's own addresses (loopback or a local " +
      'interface; the node under hostNetwork); other clients get public images only. any: every client that ' +
      'reaches the proxy, as --private-images decides (the cluster proxy, which serves nodes over the pod ' +
      'network). Default: node with --private-images=pods, else any.',
  },
  {
    name: 'kubeconfig',
    kind: 'string',
    default: '',
    help:
      'A kubeconfig file for the API server; empty: the in-cluster ServiceAccount. Only used with a node name ' +
      'or a collection Lease (--gc-lease-namespace).',
  },
  {
    name: 'auth-ttl',
    kind: 'duration',
    default: '5m',
    help:
      "How long an origin's acceptance of a pod's credentials for a private repository is trusted before the " +
      'origin is asked again (a HEAD) on a cache hit.',
  },
  {
    name: 'private-when-origin-down',
    kind: 'string',
    default: 'serve-confirmed',
    help:
      'When the origin cannot confirm access to a private image: serve-confirmed serves it if access was ' +
      'confirmed for a pod still on this node using it within --origin-down-grace; refuse refuses (503).',
  },
  {
    name: 'origin-down-grace',
    kind: 'duration',
    default: '1h',
    help:
      'With --private-when-origin-down=serve-confirmed: how old a confirmation may be and still serve a ' +
      'private image while the origin is unreachable.',
  },
  {
    name: 'gc-lease-namespace',
    kind: 'string',
    help:
      'With --cache-registry: the namespace of the collection Lease (pullthrough-gc) this proxy reads, holding ' +
      'its writes to the cache registry while a collection runs there (docs/garbage-collection.md). Unset: ' +
      'POD_NAMESPACE; empty: writes never wait (no collection may run on that registry).',
  },
  { name: 'log-level', kind: 'string', default: 'info', help: 'pino level: trace, debug, info, warn, error.' },
  {
    name: 'metrics-listen',
    kind: 'string',
    default: '127.0.0.1:7440',
    help: 'HOST:PORT for Prometheus /metrics; empty disables it.',
  },
  {
    name: 'node-setup-status',
    kind: 'string',
    arg: 'FILE',
    help: "node-setup's --status-file: exported as pullthrough_node_setup_ok (the node proxy).",
  },
  ...scanPolicyFlags,
];

export const PROXY_HELP = helpText(
  [
    'Usage: pullthrough proxy [flags]',
    '',
    'The node proxy: serves image pulls from the cache, filling it from the origins.',
    'With --node-name (or NODE_NAME) it uses the pull secrets of the pods on its node, and serves a',
    'private image (one the origin refuses to anonymous requests) from the cache only while a pod on',
    'this node that uses it has credentials the origin accepts (docs/credentials.md).',
  ].join('\n'),
  proxyFlags,
);

/** What the access checks do when the origin cannot confirm a private image (--private-when-origin-down). */
export const ORIGIN_DOWN_POLICIES = ['serve-confirmed', 'refuse'] as const;
export type OriginDownPolicy = (typeof ORIGIN_DOWN_POLICIES)[number];

/** Whether a cached blob GET may be answered with the cache registry's redirect (--blob-redirect). */
export const BLOB_REDIRECT_MODES = ['auto', 'off'] as const;
export type BlobRedirectMode = (typeof BLOB_REDIRECT_MODES)[number];

export interface ProxyConfig {
  readonly listen: { host: string; port: number };
  readonly cacheRegistry: URL | undefined;
  readonly blobRedirect: BlobRedirectMode;
  readonly dataDir: string;
  /** --max-cache-size: bytes, or a share of the --data-dir volume; undefined: unbounded. */
  readonly maxCacheSize: CacheSize | undefined;
  /** --cache-low-water, a fraction in (0, 1]. */
  readonly cacheLowWater: number;
  readonly credentials: readonly DockerConfigEntry[];
  /** The kubelet's credential provider plugins, when configured. */
  readonly credentialProviders: CredentialProvidersConfig | undefined;
  readonly insecureRegistries: readonly string[];
  readonly allowedRegistries: readonly string[];
  readonly proxyHosts: readonly string[];
  readonly tagTtlMs: number;
  readonly platforms: readonly string[] | 'all';
  readonly originConnectTimeoutMs: number;
  readonly originTimeoutMs: number;
  readonly originIdleTimeoutMs: number;
  readonly cacheTimeoutMs: number;
  readonly cacheCooldownMs: number;
  /** The cluster proxy replicas' base URLs; empty: no cluster tier. */
  readonly clusterProxies: readonly URL[];
  /** This replica's own URL among clusterProxies (a cluster proxy); undefined on a node proxy. */
  readonly clusterSelf: URL | undefined;
  readonly clusterTimeoutMs: number;
  readonly clusterCooldownMs: number;
  /** Empty: no pod credentials (standalone). */
  readonly nodeName: string;
  readonly kubeconfig: string | undefined;
  /** The collection Lease's namespace: writes to the cache registry wait while it is held; empty: never. */
  readonly gcLeaseNamespace: string;
  readonly authTtlMs: number;
  readonly privateImages: PrivateImagesMode;
  readonly privateTo: PrivateTo;
  readonly privateWhenOriginDown: OriginDownPolicy;
  readonly originDownGraceMs: number;
  readonly logLevel: string;
  readonly metricsListen: { host: string; port: number } | undefined;
  readonly nodeSetupStatus?: string;
  /** The vulnerability gate (--scan-policy); the proxy refuses what it denies. */
  readonly scanPolicy?: GatePolicy;
}

export interface CredentialProvidersConfig {
  readonly providers: readonly CredentialProviderSpec[];
  readonly binDir: string;
  readonly timeoutMs: number;
}

export function readProxyConfig(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): { config: ProxyConfig; help: boolean } {
  const flags = parseFlags(proxyFlags, argv, env);
  const { values: v, help } = flags;
  let cacheRegistry: URL | undefined;
  if (v['cache-registry']) {
    try {
      cacheRegistry = new URL(v['cache-registry']);
    } catch {
      throw new ConfigError(`--cache-registry: not a URL: ${JSON.stringify(v['cache-registry'])}`);
    }
    if (cacheRegistry.protocol !== 'http:' && cacheRegistry.protocol !== 'https:') {
      throw new ConfigError('--cache-registry: use an http:// or https:// URL');
    }
  }
  const credentials = v['registry-credentials'] ? readCredentials(v['registry-credentials']) : [];
  const platformList = parseList(v.platforms);
  const level = valueOf(v, 'log-level');
  if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(level)) {
    throw new ConfigError(`--log-level: unknown level ${JSON.stringify(level)}`);
  }
  const listen = parseHostPort('listen', v.listen);
  const nodeName = (v['node-name'] ?? env.NODE_NAME ?? '').trim();
  const privateImages = privateImagesMode(v['private-images'], nodeName);
  const clusterProxies = parseList(v['cluster-proxy']).map(clusterProxyUrl);
  const clusterSelf = v['cluster-self'] ? clusterProxyUrl(v['cluster-self']) : undefined;
  if (clusterSelf && clusterProxies.length === 0) {
    throw new ConfigError('--cluster-self: names this replica among --cluster-proxy, which is empty');
  }
  return {
    help,
    config: {
      listen,
      cacheRegistry,
      blobRedirect: blobRedirectMode(v['blob-redirect']),
      dataDir: resolve(valueOf(v, 'data-dir')),
      maxCacheSize: v['max-cache-size'] ? parseCacheSize('max-cache-size', v['max-cache-size']) : undefined,
      cacheLowWater: parseFraction('cache-low-water', valueOf(v, 'cache-low-water')),
      credentials,
      credentialProviders: readCredentialProviders(
        v['image-credential-provider-config'],
        v['image-credential-provider-bin-dir'],
        parseDuration('image-credential-provider-timeout', v['image-credential-provider-timeout']),
      ),
      insecureRegistries: parseList(v['insecure-registries']),
      allowedRegistries: parseList(v['allowed-registries']),
      proxyHosts: [...parseList(v['proxy-hosts']), ...listenNames(listen)],
      tagTtlMs: parseDuration('tag-ttl', v['tag-ttl']),
      platforms: platformList.includes('all') ? 'all' : platformList,
      originConnectTimeoutMs: parseDuration('origin-connect-timeout', v['origin-connect-timeout']),
      originTimeoutMs: parseDuration('origin-timeout', v['origin-timeout']),
      originIdleTimeoutMs: parseDuration('origin-idle-timeout', v['origin-idle-timeout']),
      cacheTimeoutMs: parseDuration('cache-timeout', v['cache-timeout']),
      cacheCooldownMs: parseDuration('cache-cooldown', v['cache-cooldown']),
      clusterProxies,
      clusterSelf,
      clusterTimeoutMs: parseDuration('cluster-timeout', v['cluster-timeout']),
      clusterCooldownMs: parseDuration('cluster-cooldown', v['cluster-cooldown']),
      nodeName,
      kubeconfig: v.kubeconfig ? resolve(v.kubeconfig) : undefined,
      gcLeaseNamespace: cacheRegistry ? (v['gc-lease-namespace'] ?? env.POD_NAMESPACE ?? '').trim() : '',
      authTtlMs: parseDuration('auth-ttl', v['auth-ttl']),
      privateWhenOriginDown: originDownPolicy(v['private-when-origin-down']),
      privateImages,
      privateTo: privateTo(v['private-to'], privateImages),
      scanPolicy: parseScanPolicy(flags),
      originDownGraceMs: parseDuration('origin-down-grace', v['origin-down-grace']),
      logLevel: level,
      metricsListen: v['metrics-listen'] ? parseHostPort('metrics-listen', v['metrics-listen']) : undefined,
      ...(v['node-setup-status'] ? { nodeSetupStatus: v['node-setup-status'] } : {}),
    },
  };
}

export type CacheSize = { readonly bytes: number } | { readonly shareOfVolume: number };

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  m: 1e6,
  mb: 1e6,
  g: 1e9,
  gb: 1e9,
  t: 1e12,
  tb: 1e12,
  ki: 2 ** 10,
  kib: 2 ** 10,
  mi: 2 ** 20,
  mib: 2 ** 20,
  gi: 2 ** 30,
  gib: 2 ** 30,
  ti: 2 ** 40,
  tib: 2 ** 40,
};

/** `20GiB`, `500MB`, `1048576` -> bytes; `80%` -> a share of the volume. */
export function parseCacheSize(name: string, v: string): CacheSize {
  const pct = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(v);
  if (pct) {
    const share = Number(pct[1]) / 100;
    if (share <= 0 || share > 1) throw new ConfigError(`--${name}: a share of the volume is over 0% and at most 100%`);
    return { shareOfVolume: share };
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v);
  const unit = SIZE_UNITS[(m?.[2] ?? '').toLowerCase()];
  if (!m || unit === undefined || Number(m[1]) <= 0) {
    throw new ConfigError(`--${name}: not a size: ${JSON.stringify(v)} (use e.g. 20GiB, 500MB or 80%)`);
  }
  return { bytes: Math.floor(Number(m[1]) * unit) };
}

export function parseFraction(name: string, v: string): number {
  const n = Number(v);
  if (!(n > 0 && n <= 1)) {
    throw new ConfigError(`--${name}: expected a fraction over 0 and at most 1, got ${JSON.stringify(v)}`);
  }
  return n;
}

export type PrivateImagesMode = 'pods' | 'node-credentials' | 'open';

function privateImagesMode(v: string | undefined, nodeName: string): PrivateImagesMode {
  const mode = v || (nodeName ? 'pods' : 'open');
  if (mode !== 'pods' && mode !== 'node-credentials' && mode !== 'open') {
    throw new ConfigError(`--private-images: expected pods, node-credentials or open, got ${JSON.stringify(v)}`);
  }
  if (mode === 'pods' && !nodeName) {
    throw new ConfigError('--private-images=pods needs --node-name (or NODE_NAME): the pods of which node?');
  }
  return mode;
}

export type PrivateTo = 'node' | 'any';

function privateTo(v: string | undefined, mode: PrivateImagesMode): PrivateTo {
  const to = v || (mode === 'pods' ? 'node' : 'any');
  if (to !== 'node' && to !== 'any') {
    throw new ConfigError(`--private-to: expected node or any, got ${JSON.stringify(v)}`);
  }
  if (to === 'node' && mode === 'open') {
    throw new ConfigError(
      '--private-to=node needs --private-images=pods or node-credentials: open serves every cached copy to anyone',
    );
  }
  return to;
}

function originDownPolicy(v: string | undefined): OriginDownPolicy {
  const p = (ORIGIN_DOWN_POLICIES as readonly string[]).find((x) => x === v);
  if (!p) {
    const expected = ORIGIN_DOWN_POLICIES.join(' or ');
    throw new ConfigError(`--private-when-origin-down: expected ${expected}, got ${JSON.stringify(v)}`);
  }
  return p as OriginDownPolicy;
}

function blobRedirectMode(v: string | undefined): BlobRedirectMode {
  const mode = (BLOB_REDIRECT_MODES as readonly string[]).find((x) => x === v);
  if (!mode) throw new ConfigError(`--blob-redirect: expected auto or off, got ${JSON.stringify(v)}`);
  return mode as BlobRedirectMode;
}

function clusterProxyUrl(v: string): URL {
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    throw new ConfigError(`--cluster-proxy: not a URL: ${JSON.stringify(v)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError('--cluster-proxy: use http:// or https:// URLs');
  }
  return url;
}

function readCredentials(file: string): DockerConfigEntry[] {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    // The message names the file and the failure, never the content.
    const reason = (err as NodeJS.ErrnoException).code ?? 'not valid JSON';
    throw new ConfigError(`--registry-credentials: cannot read ${file}: ${reason}`);
  }
  return parseDockerConfig(json, `--registry-credentials`);
}

/** Checked as the kubelet checks it on start: a valid file, the directory, every plugin executable. */
function readCredentialProviders(
  file: string | undefined,
  dir: string | undefined,
  timeoutMs: number,
): CredentialProvidersConfig | undefined {
  if (!file && !dir) return undefined;
  if (!file || !dir) {
    throw new ConfigError('--image-credential-provider-config and --image-credential-provider-bin-dir go together');
  }
  if (timeoutMs <= 0) throw new ConfigError('--image-credential-provider-timeout: must be more than 0');
  let doc: unknown;
  try {
    doc = loadYaml(readFileSync(file, 'utf8'));
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? 'not valid YAML or JSON';
    throw new ConfigError(`--image-credential-provider-config: cannot read ${file}: ${reason}`);
  }
  let providers: CredentialProviderSpec[];
  try {
    providers = parseCredentialProviderConfig(doc);
  } catch (err) {
    if (err instanceof CredentialProviderConfigError) {
      throw new ConfigError(`--image-credential-provider-config: ${file}: ${err.message}`);
    }
    throw err;
  }
  const binDir = resolve(dir);
  try {
    if (!statSync(binDir).isDirectory()) throw new Error('not a directory');
  } catch {
    throw new ConfigError(`--image-credential-provider-bin-dir: ${binDir} is not a directory`);
  }
  for (const p of providers) {
    try {
      accessSync(join(binDir, p.name), constants.X_OK);
    } catch {
      throw new ConfigError(`--image-credential-provider-bin-dir: plugin ${p.name} is not an executable in ${binDir}`);
    }
  }
  return { providers, binDir, timeoutMs };
}

function listenNames(l: { host: string; port: number }): string[] {
  const unspecified = l.host === '0.0.0.0' || l.host === '::';
  return unspecified ? [`localhost:${l.port}`, `127.0.0.1:${l.port}`] : [`${l.host}:${l.port}`];
}
