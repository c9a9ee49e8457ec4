/** `spec.refresh` as the controller reads it: Never, or the intervals the CRD's pattern admits. */
import t from 'tap';
import { refreshIntervalMs } from '../../src/controller/refresh-interval.js';

t.test('intervals', async (t) => {
  t.equal(refreshIntervalMs('45s'), 45_000);
  t.equal(refreshIntervalMs('30m'), 1_800_000);
  t.equal(refreshIntervalMs('6h'), 21_600_000);
  t.equal(refreshIntervalMs('1h30m'), 5_400_000);
  t.equal(refreshIntervalMs('1h0m5s'), 3_605_000);
});

t.test('Never, unset, zero and what the schema rejects are not refreshed', async (t) => {
  for (const v of [undefined, 'Never', '', '0s', '0h0m', '5d', '1.5h', 'never', 'h', '30m1h']) {
    t.equal(refreshIntervalMs(v), undefined, JSON.stringify(v));
  }
});
