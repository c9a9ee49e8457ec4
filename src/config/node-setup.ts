/**
 * `pullthrough node-setup` settings (the DaemonSet's init container). Flags win over their
 * PULLTHROUGH_* variables.
 */
export interface NodeSetupConfig {
  hostsDir: string;
  proxyHost: string;
  nodeProxyUrl: string;
  clusterProxyUrl?: string;
  mirrorAll: boolean;
  containerdConfig?: string;
  remove: boolean;
}

export const NODE_SETUP_HELP = `Usage: pullthrough node-setup [flags]

Writes containerd hosts.toml files on the node so rewritten images (localhost:7439/...) are pulled
from the node proxy, then from the cluster proxy when the node proxy is down; with --mirror-all the
proxies also become mirrors for every registry, with the origin as the last resort.

  --hosts-dir DIR          PULLTHROUGH_HOSTS_DIR          default /etc/containerd/certs.d
  --proxy-host HOST:PORT   PULLTHROUGH_PROXY_HOST         default localhost:7439
  --node-proxy URL         PULLTHROUGH_NODE_PROXY         default http://127.0.0.1:7439
  --cluster-proxy URL      PULLTHROUGH_CLUSTER_PROXY      e.g. http://pullthrough-cluster-proxy.pullthrough.svc.cluster.local:7439;
                                                          a name is resolved here (cluster DNS) to the
                                                          Service IP, since containerd uses the node's resolver
  --mirror-all             PULLTHROUGH_MIRROR_ALL=true    also write _default/hosts.toml
  --containerd-config FILE PULLTHROUGH_CONTAINERD_CONFIG  check that its config_path includes --hosts-dir
  --remove                 PULLTHROUGH_REMOVE=true        undo: restore backups, remove our files
  --help
`;

export class NodeSetupConfigError extends Error {}

const VALUE_FLAGS: Record<string, string> = {
  'hosts-dir': 'PULLTHROUGH_HOSTS_DIR',
  'proxy-host': 'PULLTHROUGH_PROXY_HOST',
  'node-proxy': 'PULLTHROUGH_NODE_PROXY',
  'cluster-proxy': 'PULLTHROUGH_CLUSTER_PROXY',
  'containerd-config': 'PULLTHROUGH_CONTAINERD_CONFIG',
};
const BOOL_FLAGS: Record<string, string> = { 'mirror-all': 'PULLTHROUGH_MIRROR_ALL', remove: 'PULLTHROUGH_REMOVE' };

function httpUrl(flag: string, s: string): string {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new NodeSetupConfigError(`--${flag}: ${JSON.stringify(s)} is not a URL`);
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || (u.pathname !== '/' && u.pathname !== '')) {
    throw new NodeSetupConfigError(`--${flag}: ${JSON.stringify(s)} must be http(s)://host:port without a path`);
  }
  return `${u.protocol}//${u.host}`;
}

export function parseNodeSetupConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): { help: true } | { help: false; config: NodeSetupConfig } {
  const values = new Map<string, string>();
  const bools = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--help' || arg === '-h') return { help: true };
    const eq = arg.indexOf('=');
    const name = arg.startsWith('--') ? (eq >= 0 ? arg.slice(2, eq) : arg.slice(2)) : '';
    if (name in BOOL_FLAGS) {
      if (eq >= 0 ? /^(true|1)$/i.test(arg.slice(eq + 1)) : true) bools.add(name);
      continue;
    }
    if (!(name in VALUE_FLAGS)) throw new NodeSetupConfigError(`unknown argument ${JSON.stringify(arg)}`);
    const v = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
    if (v === undefined) throw new NodeSetupConfigError(`--${name} needs a value`);
    values.set(name, v);
  }
  const get = (n: string) => values.get(n) ?? (env[VALUE_FLAGS[n] as string] || undefined);
  const bool = (n: string) => bools.has(n) || /^(true|1)$/i.test(env[BOOL_FLAGS[n] as string] ?? '');
  const cluster = get('cluster-proxy');
  const containerdConfig = get('containerd-config');
  const proxyHost = get('proxy-host') ?? 'localhost:7439';
  if (!/^[a-z0-9.-]+:\d{1,5}$/i.test(proxyHost)) throw new NodeSetupConfigError(`--proxy-host: ${JSON.stringify(proxyHost)} is not HOST:PORT`);
  return {
    help: false,
    config: {
      hostsDir: get('hosts-dir') ?? '/etc/containerd/certs.d',
      proxyHost,
      nodeProxyUrl: httpUrl('node-proxy', get('node-proxy') ?? 'http://127.0.0.1:7439'),
      ...(cluster ? { clusterProxyUrl: httpUrl('cluster-proxy', cluster) } : {}),
      mirrorAll: bool('mirror-all'),
      ...(containerdConfig ? { containerdConfig } : {}),
      remove: bool('remove'),
    },
  };
}
