/**
 * The containerd registry host files (`config_path` layout, `<dir>/<host>/hosts.toml`) that make
 * a dead node proxy survivable:
 *
 * - `<proxy host>/hosts.toml` (e.g. `localhost:7439`), for the rewritten references: the node
 *   proxy first, then the cluster proxy Service as `server`. containerd moves on to the next
 *   host on a refused connection or any error status, so a node whose proxy is down, starting or
 *   being upgraded still pulls.
 * - optionally `_default/hosts.toml`, for every registry without a directory of its own: the node
 *   proxy (then the cluster proxy) as pull+resolve mirrors, and no `server` line, so containerd's
 *   last resort is the origin registry itself. Covers images the webhook did not rewrite, and
 *   pulls when both proxies are down.
 */
export const MARKER =
  '# Written by pullthrough node-setup; a replaced file is kept beside it as hosts.toml.pullthrough-backup.';

export interface HostsPlan {
  /** Directory name under config_path, e.g. `localhost:7439` or `_default`. */
  dir: string;
  content: string;
}

export interface HostsOptions {
  /** The registry host rewritten images name, e.g. `localhost:7439`. */
  proxyHost: string;
  /** How containerd reaches the node proxy, e.g. `http://127.0.0.1:7439`. */
  nodeProxyUrl: string;
  /** The cluster-wide proxy, reachable from the node (an IP: the host resolver knows no Service names). */
  clusterProxyUrl?: string;
  /** Also write `_default/hosts.toml`. */
  mirrorAll: boolean;
}

const q = (s: string) => JSON.stringify(s);

function hostBlock(url: string): string {
  return `[host.${q(url)}]\n  capabilities = ["pull", "resolve"]\n`;
}

export function renderHostsFiles(o: HostsOptions): HostsPlan[] {
  const rewritten = [
    MARKER,
    '# Rewritten images: node proxy first, then the cluster proxy (the server is tried last).',
    `server = ${q(o.clusterProxyUrl ?? o.nodeProxyUrl)}`,
    '',
    hostBlock(o.nodeProxyUrl),
  ].join('\n');
  const plans: HostsPlan[] = [{ dir: o.proxyHost, content: rewritten }];
  if (o.mirrorAll) {
    const mirrors = [o.nodeProxyUrl, ...(o.clusterProxyUrl ? [o.clusterProxyUrl] : [])];
    plans.push({
      dir: '_default',
      content: [
        MARKER,
        '# Every registry without its own directory: the proxies as mirrors (they get ?ns=<registry>),',
        '# then, with no server line, the origin registry itself.',
        '',
        mirrors.map(hostBlock).join('\n'),
      ].join('\n'),
    });
  }
  return plans;
}

/**
 * The path as containerd on the node sees it: node-setup and the doctor run in a pod with the
 * node's root mounted at `hostRoot` (e.g. `/host`), and containerd's `config_path` names node paths.
 */
export function nodePath(path: string, hostRoot: string | undefined): string {
  return hostRoot && path.startsWith(`${hostRoot}/`) ? path.slice(hostRoot.length) : path;
}

/**
 * containerd 2.x's built-in registry `config_path` (what `containerd config default` prints for
 * `[plugins.'io.containerd.cri.v1.images'.registry]`); 1.x has none.
 */
export const CONTAINERD2_DEFAULT_CONFIG_PATH = '/etc/containerd/certs.d:/etc/docker/certs.d';

/** Does containerd's config.toml point the CRI registry at a hosts directory? */
export function checkContainerdConfig(text: string, hostsDir: string): { ok: boolean; message: string } {
  // A basic or a literal string: containerd 2.x's `config dump` writes the latter.
  const m = /^\s*config_path\s*=\s*(?:"([^"]*)"|'([^']*)')/m.exec(text);
  // A 2.x config (version 3) that does not set config_path runs with the built-in default.
  if (!m && /^\s*version\s*=\s*3\s*$/m.test(text)) {
    return CONTAINERD2_DEFAULT_CONFIG_PATH.split(':').includes(hostsDir)
      ? { ok: true, message: `containerd 2.x's default config_path includes ${hostsDir}` }
      : {
          ok: false,
          message:
            `containerd 2.x's default config_path ${JSON.stringify(CONTAINERD2_DEFAULT_CONFIG_PATH)} ` +
            `does not include ${hostsDir}`,
        };
  }
  if (!m) {
    return {
      ok: false,
      message:
        `containerd config has no registry config_path: hosts.toml files under ${hostsDir} are ignored ` +
        `(set [plugins."io.containerd.grpc.v1.cri".registry] config_path = "${hostsDir}")`,
    };
  }
  const path = m[1] ?? m[2] ?? '';
  const paths = path.split(':');
  if (!paths.includes(hostsDir))
    return {
      ok: false,
      message: `containerd config_path is ${JSON.stringify(path)}, which does not include ${hostsDir}`,
    };
  return { ok: true, message: `containerd config_path includes ${hostsDir}` };
}
