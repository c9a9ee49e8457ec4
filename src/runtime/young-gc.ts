/**
 * Frees relayed socket buffers early.
 *
 * Every socket read is a fresh 64 KiB buffer outside V8's heap, held by a small object inside
 * it. V8 frees the buffer only when it collects that object, and relaying a blob allocates so
 * little JS per chunk that, even with a 1 MiB young generation, tens of MiB of dead buffers
 * pile up between collections, and that garbage, not any buffering, is what raises the peak RSS
 * while streaming a blob (docs/performance.md has the figures). A young-generation collection
 * every few MiB received frees them, for little CPU with a 1 MiB young generation.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export type CollectYoung = () => void;

/**
 * V8's `gc` function for young-generation collections, without exposing `gc` to the process's
 * own global: the flag applies to contexts created while it is set. Undefined where V8 refuses.
 */
export function youngGcFunction(): CollectYoung | undefined {
  const exposed = (globalThis as { gc?: unknown }).gc;
  // Started with --expose-gc already: turning the flag off below would take gc from later contexts.
  if (typeof exposed === 'function') return minor(exposed as V8Gc);
  setFlagsFromString('--expose-gc');
  let gc: unknown;
  try {
    gc = runInNewContext('typeof gc === "function" ? gc : undefined');
  } finally {
    setFlagsFromString('--no-expose-gc');
  }
  return typeof gc === 'function' ? minor(gc as V8Gc) : undefined;
}

/** V8's gc extension; `type: 'minor'` collects the young generation only. */
type V8Gc = (opts: { type: 'minor' }) => void;

function minor(gc: V8Gc): CollectYoung {
  return () => gc({ type: 'minor' });
}

/** Runs `collect` once every `everyBytes` noted, outside the caller's stack (a parser callback). */
export class YoungGcPacer {
  private pending = 0;
  private scheduled = false;
  private readonly collect: CollectYoung;
  private readonly everyBytes: number;

  constructor(collect: CollectYoung, everyBytes: number) {
    this.collect = collect;
    this.everyBytes = everyBytes;
  }

  readonly note = (bytes: number): void => {
    this.pending += bytes;
    if (this.pending < this.everyBytes || this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.run);
  };

  private readonly run = (): void => {
    this.scheduled = false;
    this.pending = 0;
    this.collect();
  };
}
