/**
 * A collection as the controller runs it, for tests that drive RegistryCollector against a real
 * cache registry: a write hold the test sets (what the Lease does for the proxies) and a collector
 * that holds it around its sweep.
 */
import type { Dispatcher } from 'undici';
import type { WriteHold } from '../../src/cache/write-hold.js';
import { RegistryCollector } from '../../src/controller/registry-collector.js';
import { testRegistryClient } from './registry-client.js';

/** Held while a collection runs; writers wait in clear(). */
export class TestWriteHold implements WriteHold {
  held = false;
  private waiters: (() => void)[] = [];
  async clear(): Promise<void> {
    while (this.held) await new Promise<void>((r) => this.waiters.push(r));
  }
  set(held: boolean): void {
    this.held = held;
    if (!held) for (const w of this.waiters.splice(0)) w();
  }
}

/** A collector of the registry at `url` that holds `hold` while `garbageCollect` runs. */
export function heldCollector(
  url: string,
  hold: TestWriteHold,
  garbageCollect: () => Promise<unknown>,
  opts: { readonly dispatcher: Dispatcher; readonly timeoutMs: number },
): RegistryCollector {
  return new RegistryCollector({
    client: testRegistryClient(url, { name: 'cache', ...opts }),
    host: 'cache',
    holdWriters: async (work) => {
      hold.set(true);
      try {
        return await work(new AbortController().signal);
      } finally {
        hold.set(false);
      }
    },
    settleMs: 0,
    garbageCollect,
    log: { info: () => undefined, warn: () => undefined },
  });
}
