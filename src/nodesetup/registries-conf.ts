/**
 * The CRI-O side of node setup: a containers-registries.conf(5) drop-in
 * (`/etc/containers/registries.conf.d/50-pullthrough.conf`) read by containers/image, the pull
 * library of CRI-O, podman and skopeo. For the proxy host that rewritten images name, the node
 * proxy and then the cluster proxy are mirrors; the proxy host itself is the last location.
 * containers/image tries the mirrors in order per image and falls back when one refuses the
 * connection or cannot serve the manifest, so a node whose proxy is down pulls from the cluster
 * proxy. There is no mirror for every registry here: a mirror location replaces the registry's
 * name, and the proxies need it in the path, so it would take one entry per registry.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { readOrUndefined, writeAtomically } from './files.js';

export const DROP_IN_NAME = '50-pullthrough.conf';
export const DROP_IN_MARKER = '# Written by pullthrough node-setup; removed by node-setup --remove.';

export interface RegistriesConfOptions {
  /** The registry host rewritten images name, e.g. `localhost:7439`. */
  proxyHost: string;
  nodeProxyUrl: string;
  clusterProxyUrl?: string;
}

/** `http://h:p` -> location `h:p`, insecure (containers/image tries https, then http). */
function mirror(url: string): string {
  const u = new URL(url);
  return ['[[registry.mirror]]', `location = "${u.host}"`, `insecure = ${u.protocol === 'http:'}`].join('\n');
}

export function renderRegistriesConf(o: RegistriesConfOptions): string {
  return [
    DROP_IN_MARKER,
    '',
    '[[registry]]',
    `prefix = "${o.proxyHost}"`,
    `location = "${o.proxyHost}"`,
    'insecure = true',
    '',
    mirror(o.nodeProxyUrl),
    ...(o.clusterProxyUrl ? ['', mirror(o.clusterProxyUrl)] : []),
    '',
  ].join('\n');
}

export type DropInOutcome = 'written' | 'unchanged' | 'removed' | 'absent' | 'foreign';

/** Atomically: CRI-O may read the directory at any time. A file we did not write is left alone. */
export async function writeDropIn(dir: string, content: string): Promise<DropInOutcome> {
  const file = join(dir, DROP_IN_NAME);
  const current = await readOrUndefined(file);
  if (current === content) return 'unchanged';
  if (current !== undefined && !current.startsWith(DROP_IN_MARKER)) return 'foreign';
  await mkdir(dir, { recursive: true });
  await writeAtomically(file, content);
  return 'written';
}

export async function removeDropIn(dir: string): Promise<DropInOutcome> {
  const file = join(dir, DROP_IN_NAME);
  const current = await readOrUndefined(file);
  if (current === undefined) return 'absent';
  if (!current.startsWith(DROP_IN_MARKER)) return 'foreign';
  await rm(file);
  return 'removed';
}
