/**
 * `pullthrough doctor` settings: node-setup's own flags (the same runtime detection, directories,
 * proxy host and proxies, so the doctor checks what node-setup wrote) and what else it checks on
 * a node. Flags win over their PULLTHROUGH_* variables.
 */
import { ConfigError, helpText, parseDuration, parseFlags, valueOf, type FlagSpec } from './flags.js';
import { nodeSetupFlags, RUNTIMES, type Runtime } from './node-setup.js';

export interface DoctorConfig {
  runtime: Runtime;
  crioDir: string;
  registriesConfDir: string;
  hostsDir: string;
  /** Where the node's root is mounted when the doctor runs in a pod (--host-root). */
  hostRoot?: string;
  proxyHost: string;
  nodeProxyUrl: string;
  clusterProxyUrl?: string;
  /** Empty: the containerd config is not checked. */
  containerdConfig: string;
  cacheRegistryUrl?: string;
  /** The kubelet's CredentialProviderConfig, where mounted; empty: not checked. */
  credentialProviderConfig: string;
  timeoutMs: number;
  maxClockSkewMs: number;
}

/** node-setup's flags the checks read; `containerd-config` defaults to where containerd keeps it. */
const shared = [
  'runtime',
  'crio-dir',
  'registries-conf-dir',
  'hosts-dir',
  'host-root',
  'proxy-host',
  'node-proxy',
  'cluster-proxy',
];

export const doctorFlags: readonly FlagSpec[] = [
  ...nodeSetupFlags.filter((f) => shared.includes(f.name)),
  {
    name: 'containerd-config',
    kind: 'string',
    arg: 'FILE',
    default: '/etc/containerd/config.toml',
    help: "containerd's config.toml, whose registry config_path must include --hosts-dir; empty: not checked.",
  },
  {
    name: 'cache-registry',
    kind: 'string',
    arg: 'URL',
    help: "The cache registry the proxies use (the proxy's --cache-registry); its /v2/ must answer.",
  },
  {
    name: 'image-credential-provider-config',
    kind: 'string',
    arg: 'FILE',
    default: '',
    help:
      "The kubelet's CredentialProviderConfig, where mounted: the registries its plugins give the node " +
      'an identity for.',
  },
  {
    name: 'timeout',
    kind: 'duration',
    default: '3s',
    help: 'How long each network check waits for an answer.',
  },
  {
    name: 'max-clock-skew',
    kind: 'duration',
    default: '30s',
    help: "How far this node's clock may be from the cache registry's and the cluster proxy's (their Date header).",
  },
];

export const DOCTOR_HELP = helpText(
  [
    'Usage: pullthrough doctor [flags]',
    '',
    'Checks that this node can pull through pullthrough, one line per check (ok, warn or fail, why, and',
    'the fix): the container runtime and where it reads registry configuration, the files node-setup',
    'wrote there, the node proxy on its port and ready, what the proxy host name resolves to, the cache',
    'registry and the cluster proxy reachable, and clock skew. Exits 1 when a check fails.',
  ].join('\n'),
  doctorFlags,
);

export function parseDoctorConfig(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): { help: true } | { help: false; config: DoctorConfig } {
  const { values: v, help } = parseFlags(doctorFlags, argv, env, { emptyEnvIsUnset: true });
  if (help) return { help: true };
  const runtime = RUNTIMES.find((x) => x === valueOf(v, 'runtime'));
  if (!runtime) throw new ConfigError(`--runtime: expected ${RUNTIMES.join(', ')}, got ${JSON.stringify(v.runtime)}`);
  const proxyHost = valueOf(v, 'proxy-host');
  if (!/^[a-z0-9.-]+:\d{1,5}$/i.test(proxyHost)) {
    throw new ConfigError(`--proxy-host: ${JSON.stringify(proxyHost)} is not HOST:PORT`);
  }
  const cluster = v['cluster-proxy'];
  const cache = v['cache-registry'];
  return {
    help: false,
    config: {
      runtime,
      crioDir: valueOf(v, 'crio-dir'),
      registriesConfDir: valueOf(v, 'registries-conf-dir'),
      hostsDir: valueOf(v, 'hosts-dir'),
      ...(v['host-root'] ? { hostRoot: v['host-root'].replace(/\/+$/, '') } : {}),
      proxyHost,
      nodeProxyUrl: baseUrl('node-proxy', valueOf(v, 'node-proxy')),
      ...(cluster ? { clusterProxyUrl: baseUrl('cluster-proxy', cluster) } : {}),
      containerdConfig: v['containerd-config'] ?? '',
      ...(cache ? { cacheRegistryUrl: baseUrl('cache-registry', cache) } : {}),
      credentialProviderConfig: v['image-credential-provider-config'] ?? '',
      timeoutMs: parseDuration('timeout', v.timeout),
      maxClockSkewMs: parseDuration('max-clock-skew', v['max-clock-skew']),
    },
  };
}

function baseUrl(flag: string, s: string): string {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new ConfigError(`--${flag}: ${JSON.stringify(s)} is not a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new ConfigError(`--${flag}: ${JSON.stringify(s)} is not an http(s) URL`);
  }
  return `${u.protocol}//${u.host}`;
}
