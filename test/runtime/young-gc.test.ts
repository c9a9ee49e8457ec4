import t from 'tap';
import { setImmediate as tick } from 'node:timers/promises';
import { YoungGcPacer, youngGcFunction } from '../../src/runtime/young-gc.js';

t.test('V8 hands out a young-generation collection without putting gc on the global object', async (t) => {
  const collect = youngGcFunction();
  t.type(collect, 'function');
  collect?.();
  t.equal((globalThis as { gc?: unknown }).gc, undefined, 'the process global has no gc');
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
