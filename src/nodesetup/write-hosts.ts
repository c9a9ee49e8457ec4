/**
 * Writes the planned hosts.toml files into the node's hosts directory: atomically (containerd
 * reads them on every pull), keeping any file that pullthrough did not write as
 * `hosts.toml.pullthrough-backup` the first time, and able to undo all of it.
 */
import { mkdir, rename, rm, copyFile, readdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { readOrUndefined, writeAtomically } from './files.js';
import { MARKER, type HostsPlan } from './hosts-toml.js';

export const BACKUP_NAME = 'hosts.toml.pullthrough-backup';

export type WriteOutcome = 'written' | 'unchanged' | 'replaced-with-backup';

async function exists(path: string): Promise<boolean> {
  return (await readOrUndefined(path)) !== undefined;
}

export async function writeHostsFiles(
  hostsDir: string,
  plans: readonly HostsPlan[],
): Promise<Record<string, WriteOutcome>> {
  const out: Record<string, WriteOutcome> = {};
  for (const p of plans) {
    const dir = join(hostsDir, p.dir);
    const file = join(dir, 'hosts.toml');
    await mkdir(dir, { recursive: true });
    const current = await readOrUndefined(file);
    if (current === p.content) {
      out[p.dir] = 'unchanged';
      continue;
    }
    let outcome: WriteOutcome = 'written';
    if (current !== undefined && !current.startsWith(MARKER) && !(await exists(join(dir, BACKUP_NAME)))) {
      await copyFile(file, join(dir, BACKUP_NAME));
      outcome = 'replaced-with-backup';
    }
    await writeAtomically(file, p.content);
    out[p.dir] = outcome;
  }
  return out;
}

/** Undoes writeHostsFiles for these directories: restores a backup, else removes our file. */
export async function removeHostsFiles(
  hostsDir: string,
  dirs: readonly string[],
): Promise<Record<string, 'restored' | 'removed' | 'foreign' | 'absent'>> {
  const out: Record<string, 'restored' | 'removed' | 'foreign' | 'absent'> = {};
  for (const d of dirs) {
    const dir = join(hostsDir, d);
    const file = join(dir, 'hosts.toml');
    const current = await readOrUndefined(file);
    const backup = join(dir, BACKUP_NAME);
    if (current !== undefined && !current.startsWith(MARKER)) {
      out[d] = 'foreign';
      continue;
    }
    if (await exists(backup)) {
      await rename(backup, file);
      out[d] = 'restored';
      continue;
    }
    if (current === undefined) {
      out[d] = 'absent';
      continue;
    }
    await rm(file);
    if ((await readdir(dir)).length === 0) await rmdir(dir);
    out[d] = 'removed';
  }
  return out;
}
