/**
 * Waiting on an event a test cannot subscribe to (a log line written, a fill started, an informer
 * synced): polls until the check holds, and fails with what it waited for once the deadline passes.
 */
import { setTimeout as sleep } from 'node:timers/promises';

export async function eventually<T>(
  check: () => T | Promise<T>,
  what: string,
  timeoutMs = 30_000,
): Promise<Exclude<T, undefined | null | false>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v as Exclude<T, undefined | null | false>;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}
