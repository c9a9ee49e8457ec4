/**
 * A wait that ends early, without an error, when its signal aborts: loops that run while they
 * lead (or until stopped) wake at once on the abort instead of after their interval. A signal
 * already aborted ends the wait at once: its abort event has fired and never comes again.
 */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
