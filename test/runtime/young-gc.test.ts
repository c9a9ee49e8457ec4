import t from 'tap';
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { setImmediate as tick } from 'node:timers/promises';
import { runInNewContext } from 'node:vm';
import { YoungGcPacer, youngGcFunction } from '../../src/runtime/young-gc.js';

t.test('V8 hands out a young-generation collection without putting gc on any global', async (t) => {
  const kinds: number[] = [];
  let sawMinor!: () => void;
  const minorSeen = new Promise<void>((r) => (sawMinor = r));
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) kinds.push((e as unknown as { detail: { kind: number } }).detail.kind);
    if (kinds.includes(constants.NODE_PERFORMANCE_GC_MINOR)) sawMinor();
  });
  observer.observe({ entryTypes: ['gc'] });
  const collect = youngGcFunction();
  t.type(collect, 'function');
  collect?.();
  // The call collects synchronously, so every collection it ran is queued before the observer's
  // first callback: once the minor one is here, a full one would be too.
  await minorSeen;
  observer.disconnect();
  t.ok(kinds.includes(constants.NODE_PERFORMANCE_GC_MINOR), `a minor collection ran (kinds seen: ${kinds.join(',')})`);
  t.notOk(kinds.includes(constants.NODE_PERFORMANCE_GC_MAJOR), 'and no full one');
  t.equal((globalThis as { gc?: unknown }).gc, undefined, 'the process global has no gc');
  t.equal(runInNewContext('typeof gc'), 'undefined', 'nor do contexts created afterwards: the flag is off again');
});

t.test('one collection per threshold of bytes, run after the caller returns, never stacked', async (t) => {
  let runs = 0;
  let inCaller = false;
  const pacer = new YoungGcPacer(() => {
    t.notOk(inCaller, 'not inside the call that crossed the threshold');
    runs++;
  }, 100);
  inCaller = true;
  pacer.note(60);
  pacer.note(60);
  pacer.note(500);
  inCaller = false;
  t.equal(runs, 0, 'nothing yet');
  await tick();
  t.equal(runs, 1, 'bytes noted while one was pending led to a single collection');
  pacer.note(99);
  await tick();
  t.equal(runs, 1, 'the count started again after it');
  pacer.note(1);
  await tick();
  t.equal(runs, 2);
});
