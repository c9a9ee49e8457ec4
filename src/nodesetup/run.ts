/**
 * `pullthrough node-setup`: the DaemonSet's init container. Resolves the cluster proxy to an
 * address the node's containerd can reach, writes the hosts.toml files, checks containerd's
 * config_path when it can see the config. A missing cluster proxy is a warning, not a failure:
 * the node proxy must start either way.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { readFile, stat } from 'node:fs/promises';
import type { NodeSetupConfig } from '../config/node-setup.js';
import { checkContainerdConfig, renderHostsFiles } from './hosts-toml.js';
import { removeDropIn, renderRegistriesConf, writeDropIn } from './registries-conf.js';
import { removeHostsFiles, writeHostsFiles } from './write-hosts.js';

export interface NodeSetupDeps {
  /** Name -> IPv4 address; cluster DNS inside the pod. */
  lookup?: (host: string) => Promise<string>;
  log?: (level: 'info' | 'warn', msg: string, fields?: object) => void;
}

export interface NodeSetupResult {
  runtime: 'containerd' | 'cri-o';
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

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/** The runtime whose registry configuration is written (and checked by `pullthrough doctor`). */
export async function detectRuntime(
  config: Pick<NodeSetupConfig, 'runtime' | 'crioDir'>,
): Promise<'containerd' | 'cri-o'> {
  if (config.runtime !== 'auto') return config.runtime;
  return (await isDirectory(config.crioDir)) ? 'cri-o' : 'containerd';
}

export async function runNodeSetup(config: NodeSetupConfig, deps: NodeSetupDeps = {}): Promise<NodeSetupResult> {
  const log = deps.log ?? ((level, msg, fields) => console.log(JSON.stringify({ level, msg, ...fields })));
  const lookup = deps.lookup ?? (async (h: string) => (await dnsLookup(h, { family: 4 })).address);
  const warnings: string[] = [];
  const warn = (msg: string) => {
    warnings.push(msg);
    log('warn', msg);
  };
  const runtime = await detectRuntime(config);
  if (runtime === 'cri-o') return setupCrio(config, lookup, log, warn, warnings);
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
    return { runtime, files, warnings };
  }
  const clusterProxyUrl = await clusterProxy(config, lookup, warn, 'hosts.toml');
  const plans = renderHostsFiles({
    proxyHost: config.proxyHost,
    nodeProxyUrl: config.nodeProxyUrl,
    ...(clusterProxyUrl ? { clusterProxyUrl } : {}),
    mirrorAll: config.mirrorAll,
  });
  const files = await writeHostsFiles(config.hostsDir, plans);
  log('info', 'hosts.toml files written', { hostsDir: config.hostsDir, files, clusterProxyUrl });
  return { runtime, files, ...(clusterProxyUrl ? { clusterProxyUrl } : {}), warnings };
}

async function clusterProxy(
  config: NodeSetupConfig,
  lookup: (host: string) => Promise<string>,
  warn: (msg: string) => void,
  what: string,
): Promise<string | undefined> {
  if (!config.clusterProxyUrl) return undefined;
  try {
    return await resolveUrl(config.clusterProxyUrl, lookup);
  } catch (err) {
    warn(
      `cluster proxy ${config.clusterProxyUrl} not resolvable (${(err as Error).message}): writing ${what} without it`,
    );
    return undefined;
  }
}

async function setupCrio(
  config: NodeSetupConfig,
  lookup: (host: string) => Promise<string>,
  log: NonNullable<NodeSetupDeps['log']>,
  warn: (msg: string) => void,
  warnings: string[],
): Promise<NodeSetupResult> {
  const dir = config.registriesConfDir;
  if (config.remove) {
    const outcome = await removeDropIn(dir);
    if (outcome === 'foreign') warn(`${dir}/50-pullthrough.conf was not written by pullthrough: left alone`);
    log('info', 'CRI-O registries.conf.d drop-in removed', { dir, outcome });
    return { runtime: 'cri-o', files: { '50-pullthrough.conf': outcome }, warnings };
  }
  if (config.mirrorAll) {
    warn('--mirror-all is not available on CRI-O: a registries.conf mirror would need one entry per registry');
  }
  const clusterProxyUrl = await clusterProxy(config, lookup, warn, 'the drop-in');
  const content = renderRegistriesConf({
    proxyHost: config.proxyHost,
    nodeProxyUrl: config.nodeProxyUrl,
    ...(clusterProxyUrl ? { clusterProxyUrl } : {}),
  });
  const outcome = await writeDropIn(dir, content);
  if (outcome === 'foreign') warn(`${dir}/50-pullthrough.conf was not written by pullthrough: left alone`);
  log('info', 'CRI-O registries.conf.d drop-in written', { dir, outcome, clusterProxyUrl });
  return {
    runtime: 'cri-o',
    files: { '50-pullthrough.conf': outcome },
    ...(clusterProxyUrl ? { clusterProxyUrl } : {}),
    warnings,
  };
}
