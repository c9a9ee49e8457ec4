/**
 * `pullthrough node-setup`: the DaemonSet's init container. Resolves the cluster proxy to an
 * address the node's containerd can reach, writes the hosts.toml files, checks containerd's
 * config_path when it can see the config. A missing cluster proxy is a warning, not a failure:
 * the node proxy must start either way. A node the runtime will not route through the proxies (no
 * config_path naming the hosts dir, no runtime config, a write that fails, a foreign drop-in) is
 * "not ready": the result says why, the status file records it, and the injected reporter tells
 * the cluster (a label and an Event on the Node); the command still succeeds.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { writeAtomically } from './files.js';
import { dirname } from 'node:path';
import type { NodeSetupConfig } from '../config/node-setup.js';
import { checkContainerdConfig, nodePath, renderHostsFiles } from './hosts-toml.js';
import { removeDropIn, renderRegistriesConf, writeDropIn } from './registries-conf.js';
import { removeHostsFiles, writeHostsFiles } from './write-hosts.js';

export interface NodeSetupDeps {
  /** Name -> IPv4 address; cluster DNS inside the pod. */
  lookup?: (host: string) => Promise<string>;
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: object) => void;
  /** Tells the cluster the verdict (src/kube's reportNodeReadiness); must not throw. */
  report?: (readiness: NodeReadiness) => Promise<void>;
}

export interface NodeReadiness {
  ready: boolean;
  /** Each names the failed check and its fix. */
  problems: string[];
}

/** The status file's content: what the node proxy's pullthrough_node_setup_ok gauge reads. */
export interface NodeSetupStatus extends NodeReadiness {
  runtime: 'containerd' | 'cri-o';
  at: string;
}

export interface NodeSetupResult {
  runtime: 'containerd' | 'cri-o';
  files: Record<string, string>;
  clusterProxyUrl?: string;
  warnings: string[];
  ready: boolean;
  problems: string[];
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

type Outcome = Omit<NodeSetupResult, 'ready' | 'problems'>;

export async function runNodeSetup(config: NodeSetupConfig, deps: NodeSetupDeps = {}): Promise<NodeSetupResult> {
  const log = deps.log ?? ((level, msg, fields) => console.log(JSON.stringify({ level, msg, ...fields })));
  const lookup = deps.lookup ?? (async (h: string) => (await dnsLookup(h, { family: 4 })).address);
  const warnings: string[] = [];
  const problems: string[] = [];
  const warn = (msg: string) => {
    warnings.push(msg);
    log('warn', msg);
  };
  const problem = (msg: string) => {
    problems.push(msg);
    warn(msg);
  };
  const runtime = await detectRuntime(config);
  let outcome: Outcome;
  try {
    outcome =
      runtime === 'cri-o'
        ? await setupCrio(config, lookup, log, warn, problem, warnings)
        : await setupContainerd(config, lookup, log, warn, problem, warnings);
  } catch (err) {
    // An undo that fails is the operator's error to see; a setup write that fails (read-only or
    // full host path, permissions) is a node that cannot be served, reported like the others.
    if (config.remove) throw err;
    problem(`${runtime} registry configuration not written: ${(err as Error).message} (check the hostPath mount)`);
    outcome = { runtime, files: {}, warnings };
  }
  if (config.remove) return { ...outcome, ready: true, problems: [] };
  const readiness = { ready: problems.length === 0, problems };
  if (readiness.ready) log('info', 'node ready: image pulls go through pullthrough', { node: config.nodeName });
  else
    log('error', 'node NOT ready: its image pulls do not go through pullthrough', { node: config.nodeName, problems });
  if (config.statusFile)
    await writeStatus(config.statusFile, { ...readiness, runtime, at: new Date().toISOString() }, warn);
  if (deps.report) await deps.report(readiness);
  return { ...outcome, ...readiness };
}

async function writeStatus(file: string, status: NodeSetupStatus, warn: (msg: string) => void): Promise<void> {
  try {
    await mkdir(dirname(file), { recursive: true });
    // Whole or absent: the node proxy may read it at any moment.
    await writeAtomically(file, `${JSON.stringify(status)}\n`);
  } catch (err) {
    warn(`status file ${file} not written: ${(err as Error).message}`);
  }
}

async function setupContainerd(
  config: NodeSetupConfig,
  lookup: (host: string) => Promise<string>,
  log: NonNullable<NodeSetupDeps['log']>,
  warn: (msg: string) => void,
  problem: (msg: string) => void,
  warnings: string[],
): Promise<Outcome> {
  const runtime = 'containerd';
  if (config.containerdConfig && !config.remove) {
    // containerd reads config_path on the node, where the host root is /.
    const nodeHostsDir = nodePath(config.hostsDir, config.hostRoot);
    let text: string | undefined;
    try {
      text = await readFile(config.containerdConfig, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
      problem(
        `cannot read containerd config ${config.containerdConfig} (${code}): ` +
          'no supported runtime found on this node (pullthrough serves containerd with config_path, and CRI-O)',
      );
    }
    if (text !== undefined) {
      const c = checkContainerdConfig(text, nodeHostsDir);
      if (c.ok) log('info', c.message);
      else problem(c.message);
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
  problem: (msg: string) => void,
  warnings: string[],
): Promise<Outcome> {
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
  if (outcome === 'foreign') problem(`${dir}/50-pullthrough.conf was not written by pullthrough: left alone`);
  log('info', 'CRI-O registries.conf.d drop-in written', { dir, outcome, clusterProxyUrl });
  return {
    runtime: 'cri-o',
    files: { '50-pullthrough.conf': outcome },
    ...(clusterProxyUrl ? { clusterProxyUrl } : {}),
    warnings,
  };
}
