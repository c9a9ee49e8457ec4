/**
 * Which origin repositories are public and which private, as last observed, kept across restarts
 * in a small JSON file under the data directory. "Public" means the origin served the repository
 * to an anonymous request; "private" that it refused one. A repository absent from the book is
 * unknown, and unknown is treated as private whenever the origin cannot be asked.
 *
 * The file holds registry and repository names and a timestamp: no credential, no pod.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

export type Privacy = 'public' | 'private';

interface Entry {
  readonly privacy: Privacy;
  /** When it was last observed (ms since the epoch). */
  readonly at: number;
}

interface FileFormat {
  version: 1;
  repositories: Record<string, Entry>;
}

/** A file read back may have been edited or cut short: every entry is checked before it is used. */
interface StoredFormat {
  repositories?: Record<string, unknown>;
}

function isEntry(e: unknown): e is Entry {
  if (typeof e !== 'object' || e === null) return false;
  const { privacy, at } = e as Partial<Record<keyof Entry, unknown>>;
  return (privacy === 'public' || privacy === 'private') && typeof at === 'number';
}

export interface PrivacyBookOptions {
  /** Where the book is persisted; in memory only without it. */
  readonly file?: string;
  /** Called when the file cannot be read or written (the book keeps working in memory). */
  readonly onError?: (op: 'load' | 'save', err: Error) => void;
  /** Most entries kept; the oldest observations are dropped first. Default 100 000. */
  readonly maxEntries?: number;
  readonly saveDelayMs?: number;
}

export class PrivacyBook {
  private readonly entries = new Map<string, Entry>();
  private readonly opts: PrivacyBookOptions;
  private timer: NodeJS.Timeout | undefined;
  private dirty = false;

  constructor(opts: PrivacyBookOptions = {}) {
    this.opts = opts;
    if (opts.file) this.load(opts.file);
  }

  static key(registry: string, repository: string): string {
    return `${registry}/${repository}`;
  }

  get(registry: string, repository: string): Privacy | undefined {
    return this.entries.get(PrivacyBook.key(registry, repository))?.privacy;
  }

  /** When the privacy of a repository was last observed, or undefined. */
  observedAt(registry: string, repository: string): number | undefined {
    return this.entries.get(PrivacyBook.key(registry, repository))?.at;
  }

  set(registry: string, repository: string, privacy: Privacy, at: number): void {
    const key = PrivacyBook.key(registry, repository);
    const old = this.entries.get(key);
    this.entries.delete(key);
    this.entries.set(key, { privacy, at });
    const max = this.opts.maxEntries ?? 100_000;
    while (this.entries.size > max) {
      const oldest = this.entries.keys().next().value;
      if (oldest === undefined) break;
      this.entries.delete(oldest);
    }
    // A changed verdict is written soon; a mere refresh of the timestamp rides along later.
    if (old?.privacy !== privacy) this.scheduleSave();
    else this.dirty = true;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Writes pending changes now (at shutdown). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.dirty) this.save();
  }

  private scheduleSave(): void {
    this.dirty = true;
    if (!this.opts.file || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.save();
    }, this.opts.saveDelayMs ?? 1000);
    this.timer.unref();
  }

  private load(file: string): void {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.opts.onError?.('load', err as Error);
      return;
    }
    try {
      const parsed = JSON.parse(text) as StoredFormat;
      const repos = parsed.repositories ?? {};
      const sorted = Object.entries(repos)
        .filter((kv): kv is [string, Entry] => isEntry(kv[1]))
        .sort((a, b) => a[1].at - b[1].at);
      for (const [k, e] of sorted) this.entries.set(k, { privacy: e.privacy, at: e.at });
    } catch (err) {
      this.opts.onError?.('load', new Error(`${file} is not a valid privacy record: ${(err as Error).message}`));
    }
  }

  private save(): void {
    const file = this.opts.file;
    this.dirty = false;
    if (!file) return;
    const body: FileFormat = { version: 1, repositories: Object.fromEntries(this.entries) };
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(tmp, `${JSON.stringify(body)}\n`, { mode: 0o600 });
      renameSync(tmp, file);
    } catch (err) {
      this.dirty = true;
      this.opts.onError?.('save', err as Error);
    }
  }
}
