/**
 * The node-wide bound of background fetches: at most so many blobs and so many declared bytes at
 * once, first come first served, and a blob larger than the byte bound still runs alone.
 */
import t from 'tap';
import { BackgroundBudget } from '../../src/proxy/background-budget.js';

const tick = () => new Promise((r) => setImmediate(r));

t.test('no more than maxFetches at once; a release lets the next one in, in order', async (t) => {
  const budget = new BackgroundBudget({ maxFetches: 2, maxBytes: 1000 });
  const order: number[] = [];
  const releases = [1, 2, 3, 4].map((i) => budget.acquire(10).then((r) => (order.push(i), r)));
  await tick();
  t.same(order, [1, 2], 'two run');
  t.equal(budget.inFlight, 2);
  (await releases[0])?.();
  await tick();
  t.same(order, [1, 2, 3], 'the third starts when the first is done');
  (await releases[1])?.();
  (await releases[2])?.();
  await tick();
  t.same(order, [1, 2, 3, 4]);
  (await releases[3])?.();
  t.equal(budget.inFlight, 0);
});

t.test('no more than maxBytes of declared size at once, but a larger blob runs alone', async (t) => {
  const budget = new BackgroundBudget({ maxFetches: 10, maxBytes: 100 });
  const order: string[] = [];
  const a = await budget.acquire(60);
  const b = budget.acquire(60).then((r) => (order.push('b'), r));
  const huge = budget.acquire(500).then((r) => (order.push('huge'), r));
  await tick();
  t.same(order, [], 'b would pass the byte bound; the huge one waits its turn behind it');
  a();
  await tick();
  t.same(order, ['b']);
  (await b)();
  await tick();
  t.same(order, ['b', 'huge'], 'alone, the huge blob runs');
  const release = await huge;
  release();
  release();
  t.equal(budget.inFlight, 0, 'a release counts once');
});
