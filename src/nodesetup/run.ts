/**
 * `pullthrough node-setup`: the DaemonSet's init container. Resolves the cluster proxy to an
 * address the node's containerd can reach, writes the hosts.toml files, checks containerd's
 * config_path when it can see the config. A missing cluster proxy is a warning, not a failure:
 * the node proxy must start either way.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { readFile } from 'node:fs/promises';
import type { NodeSetupConfig } from '../config/node-setup.js';
import { checkContainerdConfig, renderHostsFiles } from './hosts-toml.js';
import { removeHostsFiles, writeHostsFiles } from './write-hosts.js';

export interface NodeSetupDeps {
  /** Name -> IPv4 address; cluster DNS inside the pod. */
  lookup?: (host: string) => Promise<string>;
  log?: (level: 'info' | 'warn', msg: string, fields?: object) => void;
}

export interface NodeSetupResult {
  files: Record<string, string>;
  clusterProxyUrl?: string;
  warnings: string[];
}

async function resolveUrl(url: string, lookup: (host: string) => Promise<string>): Promise<string> {
  const u = new URL(url);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (isIP(host)) return url;
  u.hostname = await lookup(host);
  return `${u.protocol}//${u.host}`;
}

export async function runNodeSetup(config: NodeSetupConfig, deps: NodeSetupDeps = {}): Promise<NodeSetupResult> {
  const log = deps.log ?? ((level, msg, fields) => console.log(JSON.stringify({ level, msg, ...fields })));
  const lookup = deps.lookup ?? (async (h: string) => (await dnsLookup(h, { family: 4 })).address);
  const warnings: string[] = [];
  const warn = (msg: string) => {
    warnings.push(msg);
    log('warn', msg);
  };
  if (config.containerdConfig) {
    try {
      const c = checkContainerdConfig(await readFile(config.containerdConfig, 'utf8'), config.hostsDir);
      if (c.ok) log('info', c.message);
      else warn(c.message);
    } catch (err) {
      warn(`cannot read ${config.containerdConfig}: ${(err as Error).message}`);
    }
  }
  if (config.remove) {
    const files = await removeHostsFiles(config.hostsDir, [config.proxyHost, '_default']);
    log('info', 'hosts.toml files removed', { files });
    return { files, warnings };
  }
  let clusterProxyUrl: string | undefined;
  if (config.clusterProxyUrl) {
    try {
      clusterProxyUrl = await resolveUrl(config.clusterProxyUrl, lookup);
    } catch (err) {
      warn(
        `cluster proxy ${config.clusterProxyUrl} not resolvable (${(err as Error).message}): ` +
          'writing hosts.toml without it',
      );
    }
  }
  const plans = renderHostsFiles({
    proxyHost: config.proxyHost,
    nodeProxyUrl: config.nodeProxyUrl,
    ...(clusterProxyUrl ? { clusterProxyUrl } : {}),
    mirrorAll: config.mirrorAll,
  });
  const files = await writeHostsFiles(config.hostsDir, plans);
  log('info', 'hosts.toml files written', { hostsDir: config.hostsDir, files, clusterProxyUrl });
  return { files, ...(clusterProxyUrl ? { clusterProxyUrl } : {}), warnings };
}
