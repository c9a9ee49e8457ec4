/**
 * mapLimit: results in the items' order, never more than `limit` calls under way, and after a
 * rejection no further call starts.
 */
import t from 'tap';
import { mapLimit } from '../../src/runtime/map-limit.js';

const tick = () => new Promise<void>((r) => setImmediate(r));

t.test('results in order, at most `limit` under way', async (t) => {
  let running = 0;
  let most = 0;
  const out = await mapLimit([5, 1, 4, 2, 3, 0], 3, async (n) => {
    running++;
    most = Math.max(most, running);
    for (let i = 0; i < n; i++) await tick();
    running--;
    return n * 10;
  });
  t.same(out, [50, 10, 40, 20, 30, 0]);
  t.equal(most, 3);
  t.same(await mapLimit([], 4, async () => 1), []);
});

t.test('a rejection rejects the whole and starts no further call', async (t) => {
  const started: number[] = [];
  await t.rejects(
    mapLimit([1, 2, 3, 4, 5, 6, 7, 8], 2, async (n) => {
      started.push(n);
      await tick();
      if (n === 2) throw new Error('two');
      return n;
    }),
    /two/,
  );
  // Let anything still running settle: nothing after the failure may have started.
  for (let i = 0; i < 5; i++) await tick();
  t.ok(started.length <= 3, `started ${JSON.stringify(started)}`);
});
