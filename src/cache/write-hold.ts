/**
 * Writes to the shared cache registry wait while a collection runs there
 * (docs/garbage-collection.md): distribution's garbage-collect is unsafe only against concurrent
 * writes, and every writer is pullthrough. The registry store asks before each write that makes
 * content visible (a blob upload's closing PUT, a manifest or tag PUT); uploads of the bytes
 * themselves go on, into the registry's upload area, which collection does not touch.
 */
export interface WriteHold {
  /** Resolves once writes may go on (at once when they may); rejects with the signal's reason. */
  clear(signal?: AbortSignal): Promise<void>;
  /** Whether a collection holds writes now, for a hold that can tell (the collection Lease's reader). */
  readonly held?: boolean;
}
