/**
 * `pullthrough node-setup` settings (the DaemonSet's init container). Flags win over their
 * PULLTHROUGH_* variables.
 */
import { ConfigError, helpText, parseFlags, valueOf, type FlagSpec } from './flags.js';

/** Which runtime's registry configuration is written; `auto` looks for --crio-dir. */
export const RUNTIMES = ['auto', 'containerd', 'cri-o'] as const;
export type Runtime = (typeof RUNTIMES)[number];

export interface NodeSetupConfig {
  runtime: Runtime;
  /** Its presence says the node runs CRI-O (with runtime auto). */
  crioDir: string;
  /** containers/image's drop-in directory (CRI-O). */
  registriesConfDir: string;
  hostsDir: string;
  proxyHost: string;
  nodeProxyUrl: string;
  clusterProxyUrl?: string;
  mirrorAll: boolean;
  containerdConfig?: string;
  /** Where the node's root is mounted: stripped from --hosts-dir to compare with containerd's config_path. */
  hostRoot?: string;
  /** The Node labelled and given an Event (the downward API's spec.nodeName). */
  nodeName?: string;
  kubeconfig?: string;
  /** JSON verdict the node proxy reads for pullthrough_node_setup_ok. */
  statusFile?: string;
  remove: boolean;
}

export const nodeSetupFlags: readonly FlagSpec[] = [
  {
    name: 'runtime',
    kind: 'string',
    arg: 'NAME',
    default: 'auto',
    help:
      'containerd (hosts.toml files in --hosts-dir), cri-o (a drop-in in --registries-conf-dir), or auto: ' +
      'cri-o when --crio-dir exists, else containerd.',
  },
  {
    name: 'crio-dir',
    kind: 'string',
    arg: 'DIR',
    default: '/etc/crio',
    help: "CRI-O's configuration directory, as mounted from the node (--runtime=auto looks for it).",
  },
  {
    name: 'registries-conf-dir',
    kind: 'string',
    arg: 'DIR',
    default: '/etc/containers/registries.conf.d',
    help: 'Where the CRI-O drop-in 50-pullthrough.conf is written (containers-registries.conf.d(5)).',
  },
  {
    name: 'hosts-dir',
    kind: 'string',
    arg: 'DIR',
    default: '/etc/containerd/certs.d',
    help: "containerd's registry config_path, where the hosts.toml files are written.",
  },
  {
    name: 'proxy-host',
    kind: 'string',
    arg: 'HOST:PORT',
    default: 'localhost:7439',
    help: "The host rewritten images point at (the webhook's --proxy-host).",
  },
  {
    name: 'node-proxy',
    kind: 'string',
    arg: 'URL',
    default: 'http://127.0.0.1:7439',
    help: 'The node proxy, tried first.',
  },
  {
    name: 'cluster-proxy',
    kind: 'string',
    arg: 'URL',
    help:
      'The cluster proxy, tried when the node proxy is down, e.g. ' +
      'http://pullthrough-cluster-proxy.pullthrough.svc.cluster.local:7439; a name is resolved here ' +
      "(cluster DNS) to the Service IP, since containerd uses the node's resolver.",
  },
  { name: 'mirror-all', kind: 'boolean', help: 'Also write _default/hosts.toml.' },
  {
    name: 'containerd-config',
    kind: 'string',
    arg: 'FILE',
    help: 'Check that its config_path includes --hosts-dir.',
  },
  {
    name: 'host-root',
    kind: 'string',
    arg: 'DIR',
    default: '',
    help:
      "Where the node's root is mounted (e.g. /host): --hosts-dir without it is the path containerd's " +
      'config_path must name.',
  },
  {
    name: 'node-name',
    kind: 'string',
    arg: 'NAME',
    help:
      'Label this Node pullthrough.dev/node-ready=true|false, and record a Warning Event on it when it ' +
      'cannot be served.',
  },
  { name: 'kubeconfig', kind: 'string', arg: 'FILE', help: 'For --node-name; in-cluster configuration without it.' },
  {
    name: 'status-file',
    kind: 'string',
    arg: 'FILE',
    help: "Write the verdict here as JSON (the node proxy's --node-setup-status reads it).",
  },
  { name: 'remove', kind: 'boolean', help: 'Undo: restore backups, remove our files.' },
];

export const NODE_SETUP_HELP = helpText(
  [
    'Usage: pullthrough node-setup [flags]',
    '',
    'Writes containerd hosts.toml files on the node so rewritten images (localhost:7439/...) are pulled',
    'from the node proxy, then from the cluster proxy when the node proxy is down; with --mirror-all the',
    'proxies also become mirrors for every registry, with the origin as the last resort. On CRI-O nodes',
    'it writes a containers registries.conf.d drop-in with the same chain instead.',
  ].join('\n'),
  nodeSetupFlags,
);

export function parseNodeSetupConfig(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): { help: true } | { help: false; config: NodeSetupConfig } {
  // An empty variable is unset here, so a manifest's `value: ""` keeps the default.
  const { values: v, help } = parseFlags(nodeSetupFlags, argv, env, { emptyEnvIsUnset: true });
  if (help) return { help: true };
  const cluster = v['cluster-proxy'];
  const containerdConfig = v['containerd-config'];
  const proxyHost = valueOf(v, 'proxy-host');
  // The name of a directory under --hosts-dir, as containerd looks it up.
  if (!/^[a-z0-9.-]+:\d{1,5}$/i.test(proxyHost)) {
    throw new ConfigError(`--proxy-host: ${JSON.stringify(proxyHost)} is not HOST:PORT`);
  }
  return {
    help: false,
    config: {
      runtime: runtime(valueOf(v, 'runtime')),
      crioDir: valueOf(v, 'crio-dir'),
      registriesConfDir: valueOf(v, 'registries-conf-dir'),
      hostsDir: valueOf(v, 'hosts-dir'),
      proxyHost,
      nodeProxyUrl: httpUrl('node-proxy', valueOf(v, 'node-proxy')),
      ...(cluster ? { clusterProxyUrl: httpUrl('cluster-proxy', cluster) } : {}),
      mirrorAll: isTrue(v['mirror-all']),
      ...(containerdConfig ? { containerdConfig } : {}),
      ...(v['host-root'] ? { hostRoot: v['host-root'].replace(/\/+$/, '') } : {}),
      ...(v['node-name'] ? { nodeName: v['node-name'] } : {}),
      ...(v.kubeconfig ? { kubeconfig: v.kubeconfig } : {}),
      ...(v['status-file'] ? { statusFile: v['status-file'] } : {}),
      remove: isTrue(v.remove),
    },
  };
}

function runtime(v: string): Runtime {
  const r = RUNTIMES.find((x) => x === v);
  if (!r) throw new ConfigError(`--runtime: expected ${RUNTIMES.join(', ')}, got ${JSON.stringify(v)}`);
  return r;
}

function isTrue(v: string | undefined): boolean {
  return /^(true|1)$/i.test(v ?? '');
}

function httpUrl(flag: string, s: string): string {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new ConfigError(`--${flag}: ${JSON.stringify(s)} is not a URL`);
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || (u.pathname !== '/' && u.pathname !== '')) {
    throw new ConfigError(`--${flag}: ${JSON.stringify(s)} must be http(s)://host:port without a path`);
  }
  return `${u.protocol}//${u.host}`;
}
