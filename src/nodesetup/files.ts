/**
 * The file steps node-setup shares between containerd's hosts.toml and CRI-O's drop-in: read a file
 * that may be absent, and replace one atomically, since the runtime may read it at any moment.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export async function readOrUndefined(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Writes beside the file, then renames over it: a reader sees the old content or the new. */
export async function writeAtomically(file: string, content: string): Promise<void> {
  const tmp = join(dirname(file), `.${basename(file)}.${String(process.pid)}.tmp`);
  await writeFile(tmp, content, { mode: 0o644 });
  await rename(tmp, file);
}
