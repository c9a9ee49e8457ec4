/**
 * `pullthrough controller` settings: every flag has a PULLTHROUGH_* environment variable (flags
 * win). The identity defaults to the pod's name (POD_NAME from the downward API), so two replicas
 * never share one.
 */
import { hostname } from 'node:os';
import type { GatePolicy } from '../scan/policy.js';
import { parseScannerConfig, parseScanPolicy, scanPolicyFlags, scannerFlags, type ScannerConfig } from './scan.js';
import { parseCacheSize, parseFraction, type CacheSize } from './proxy.js';
import { ConfigError, helpText, parseDuration, parseFlags, parseHostPort, valueOf, type FlagSpec } from './flags.js';

export interface ControllerConfig {
  readonly kubeconfig?: string;
  /** Where the Lease lives. */
  readonly namespace: string;
  readonly leaseName: string;
  readonly identity: string;
  readonly leaseDurationMs: number;
  readonly renewDeadlineMs: number;
  readonly retryPeriodMs: number;
  readonly expireAfterMs: number;
  readonly statusWritesPerSecond: number;
  /** Between passes over what changed. */
  readonly syncIntervalMs: number;
  /**
   * Pre-warm: the proxy flags its pull path runs with (cache registry, spool, which registries);
   * undefined without --cache-registry (nothing is fetched then).
   */
  readonly warmProxyArgs?: readonly string[];
  readonly logLevel: string;
  /** Plain-HTTP /metrics; undefined: off. */
  readonly metricsListen?: { host: string; port: number };
  /** The cache registry (--cache-registry), which scans read from. */
  readonly cacheRegistry?: string;
  /** Scanning (--scanner-url); undefined: nothing is scanned. */
  readonly scanner?: ScannerConfig;
  /** Classifies scan Events (ScanBlocked). */
  readonly scanPolicy?: GatePolicy;
  /** Collections of the cache registry (docs/garbage-collection.md); undefined: none. */
  readonly collection?: CollectionConfig;
}

export interface CollectionConfig {
  readonly intervalMs: number;
  /** The gc-runner sidecar's base URL (POST /collect). */
  readonly runnerUrl: string;
  /**
   * --max-cache-size (bytes, or a share of the registry's volume, resolved each pass from the
   * gc-runner's answer) and --cache-low-water; undefined: only expired images are removed.
   */
  readonly budget?: { readonly size: CacheSize; readonly lowWater: number };
  /** After the writers' hold is taken, before the sweep. */
  readonly settleMs: number;
}

export const controllerFlags: readonly FlagSpec[] = [
  { name: 'kubeconfig', kind: 'string', arg: 'FILE', help: 'A kubeconfig file; in-cluster configuration without it.' },
  {
    name: 'namespace',
    kind: 'string',
    arg: 'NS',
    help: "The namespace of the leader-election Lease (default: POD_NAMESPACE, else 'pullthrough').",
  },
  { name: 'lease-name', kind: 'string', arg: 'NAME', default: 'pullthrough-controller', help: 'The Lease.' },
  {
    name: 'identity',
    kind: 'string',
    arg: 'NAME',
    help: 'This replica in the Lease (default: POD_NAME, else the host name).',
  },
  { name: 'lease-duration', kind: 'duration', default: '15s', help: 'How long a silent leader keeps the Lease.' },
  { name: 'renew-deadline', kind: 'duration', default: '10s', help: 'A leader that cannot renew for this long stops.' },
  { name: 'retry-period', kind: 'duration', default: '2s', help: 'Between attempts to acquire or renew the Lease.' },
  {
    name: 'expire-after',
    kind: 'duration',
    default: '30d',
    help: 'An image no pod has used for this long, not retained, is shown as Expiring.',
  },
  {
    name: 'status-writes-per-second',
    kind: 'string',
    arg: 'N',
    default: '5',
    help: 'CachedImage creates and status writes per second, at most.',
  },
  { name: 'sync-interval', kind: 'duration', default: '1s', help: 'Between passes over the images whose use changed.' },
  {
    name: 'cache-registry',
    kind: 'string',
    arg: 'URL',
    help: 'The cache registry CachedImages are fetched into (pre-warm); without it nothing is fetched.',
  },
  {
    name: 'spool-dir',
    kind: 'string',
    arg: 'DIR',
    default: '/tmp/pullthrough',
    help: 'Where pre-warm spools blobs while verifying them.',
  },
  {
    name: 'allowed-registries',
    kind: 'string',
    arg: 'LIST',
    default: '*',
    help: 'Registries a CachedImage may name, as the proxy takes them.',
  },
  { name: 'insecure-registries', kind: 'string', arg: 'LIST', default: '', help: 'Registries reached over http.' },
  { name: 'log-level', kind: 'string', arg: 'LEVEL', default: 'info', help: 'pino level.' },
  {
    name: 'metrics-listen',
    kind: 'string',
    arg: 'HOST:PORT',
    default: '0.0.0.0:7440',
    help: 'Where Prometheus /metrics is served (leader, writes, backlog); empty disables it.',
  },
  {
    name: 'gc-interval',
    kind: 'duration',
    default: '1h',
    help:
      'Between collections of the cache registry (expired images, then the least recently pulled over ' +
      '--max-cache-size); 0 turns collection off. Needs --cache-registry and --gc-runner.',
  },
  {
    name: 'gc-runner',
    kind: 'string',
    arg: 'URL',
    help: "The registry pod's gc-runner sidecar (POST /collect runs garbage-collect); without it nothing is collected.",
  },
  {
    name: 'max-cache-size',
    kind: 'string',
    arg: 'SIZE',
    help:
      'The cache registry budget (e.g. 40GiB, or 80% of its volume as the gc-runner measures it; not on S3): ' +
      'above it the least recently pulled images are removed.',
  },
  {
    name: 'cache-low-water',
    kind: 'string',
    arg: 'FRACTION',
    default: '0.9',
    help: 'A collection over --max-cache-size removes images until usage is under this share of it.',
  },
  {
    name: 'gc-settle',
    kind: 'duration',
    default: '15s',
    help:
      "After taking the collection Lease, before the sweep: a writer's poll period (5s) plus the longest " +
      'a write started before it saw the Lease may take.',
  },
  ...scanPolicyFlags,
  ...scannerFlags,
];

export const CONTROLLER_HELP = helpText(
  [
    'Usage: pullthrough controller [flags]',
    '',
    'Keeps a CachedImage for every image pods use (usedBy, lastUsed, Expiring), pre-warms the ones',
    'made by hand and refreshes tags that ask for it (--cache-registry); one leader at a time on a Lease.',
  ].join('\n'),
  controllerFlags,
);

export type ParsedControllerArgs = { help: true } | { help: false; config: ControllerConfig };

export function parseControllerConfig(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): ParsedControllerArgs {
  const flags = parseFlags(controllerFlags, argv, env, { emptyEnvIsUnset: true });
  const { values: v, help } = flags;
  if (help) return { help: true };
  const duration = (name: string): number => parseDuration(name, valueOf(v, name));
  const leaseDurationMs = duration('lease-duration');
  const renewDeadlineMs = duration('renew-deadline');
  if (renewDeadlineMs >= leaseDurationMs)
    throw new ConfigError('--renew-deadline must be shorter than --lease-duration');
  const writes = Number(valueOf(v, 'status-writes-per-second'));
  if (!Number.isFinite(writes) || writes <= 0) {
    throw new ConfigError(
      `--status-writes-per-second: ${JSON.stringify(v['status-writes-per-second'])} is not a positive number`,
    );
  }
  const scanner = parseScannerConfig(v, v['cache-registry']);
  const identity = (v.identity ?? (env.POD_NAME || hostname())).trim();
  if (identity === '') throw new ConfigError('--identity: empty');
  return {
    help: false,
    config: {
      ...(v.kubeconfig !== undefined ? { kubeconfig: v.kubeconfig } : {}),
      namespace: v.namespace ?? (env.POD_NAMESPACE || 'pullthrough'),
      leaseName: valueOf(v, 'lease-name'),
      identity,
      leaseDurationMs,
      renewDeadlineMs,
      retryPeriodMs: duration('retry-period'),
      expireAfterMs: duration('expire-after'),
      statusWritesPerSecond: writes,
      syncIntervalMs: duration('sync-interval'),
      ...(v['cache-registry']
        ? {
            warmProxyArgs: [
              '--cache-registry',
              v['cache-registry'],
              '--data-dir',
              valueOf(v, 'spool-dir'),
              '--allowed-registries',
              valueOf(v, 'allowed-registries'),
              '--insecure-registries',
              valueOf(v, 'insecure-registries'),
              '--metrics-listen',
              '',
              '--log-level',
              valueOf(v, 'log-level'),
            ],
          }
        : {}),
      logLevel: valueOf(v, 'log-level'),
      ...(v['metrics-listen'] ? { metricsListen: parseHostPort('metrics-listen', v['metrics-listen']) } : {}),
      ...(v['cache-registry'] ? { cacheRegistry: v['cache-registry'] } : {}),
      ...(scanner ? { scanner } : {}),
      scanPolicy: parseScanPolicy(flags),
      ...collectionConfig(v, duration),
    },
  };
}

function collectionConfig(
  v: Record<string, string | undefined>,
  duration: (name: string) => number,
): { collection?: CollectionConfig } {
  const intervalMs = duration('gc-interval');
  const runnerUrl = v['gc-runner'];
  if (intervalMs === 0 || !runnerUrl) return {};
  if (!v['cache-registry'])
    throw new ConfigError('--gc-runner: collection removes images from --cache-registry; set it');
  const size = v['max-cache-size'] ? parseCacheSize('max-cache-size', v['max-cache-size']) : undefined;
  const lowWater = parseFraction('cache-low-water', valueOf(v, 'cache-low-water'));
  return {
    collection: {
      intervalMs,
      runnerUrl,
      ...(size ? { budget: { size, lowWater } } : {}),
      settleMs: duration('gc-settle'),
    },
  };
}
