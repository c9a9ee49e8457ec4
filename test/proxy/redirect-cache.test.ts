/**
 * The remembered redirects: how long a presigned URL is kept (less than its own validity, never
 * more than the cap, not at all without a parsable expiry), the bound on entries, and a write
 * hold (a collection) emptying the cache.
 */
import t from 'tap';
import { presignedExpiry, REDIRECT_CACHE_MAX_MS, RedirectCache } from '../../src/proxy/redirect-cache.js';

const T0 = Date.UTC(2026, 11, 7, 2, 3, 19);
const sigV4 = (date: string, expires: number) =>
  `http://127.0.0.1:15570/registry/cache/docker/registry/v2/blobs/sha256/ee/ee/data?X-Amz-Algorithm=AWS4-HMAC-SHA256` +
  `&X-Amz-Credential=K%2F20261207%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=${date}&X-Amz-Expires=${expires}` +
  `&X-Amz-SignedHeaders=host&X-Amz-Signature=abc`;
const V4 = sigV4('20261207T020319Z', 1200);

t.test('presignedExpiry: SigV4, GCS V4, SigV2; nothing without a parsable expiry', async (t) => {
  t.equal(presignedExpiry(V4), T0 + 1_200_000, 'X-Amz-Date + X-Amz-Expires');
  t.equal(
    presignedExpiry(
      'https://storage.googleapis.com/b/o?X-Goog-Date=20261207T020319Z&X-Goog-Expires=600&X-Goog-Signature=x',
    ),
    T0 + 600_000,
  );
  t.equal(
    presignedExpiry('https://b.s3.amazonaws.com/o?AWSAccessKeyId=K&Expires=1796601600&Signature=x'),
    1796601600_000,
  );
  t.equal(presignedExpiry('http://127.0.0.1/o'), undefined, 'no expiry');
  t.equal(presignedExpiry(sigV4('2026-12-07', 1200)), undefined, 'a date in another form');
  t.equal(presignedExpiry(V4.replace('X-Amz-Expires=1200', 'X-Amz-Expires=soon')), undefined);
  t.equal(presignedExpiry('not a url'), undefined);
});

t.test('kept for the cap at most, and for less than the URL stays valid', async (t) => {
  let now = T0;
  const c = new RedirectCache({ now: () => now });
  c.set('r', 'sha256:a', V4);
  t.equal(c.get('r', 'sha256:a'), V4);
  t.equal(c.get('r', 'sha256:b'), undefined, 'per digest');
  t.equal(c.get('q', 'sha256:a'), undefined, 'per repository');
  now = T0 + REDIRECT_CACHE_MAX_MS - 1;
  t.equal(c.get('r', 'sha256:a'), V4, 'within the cap');
  now = T0 + REDIRECT_CACHE_MAX_MS;
  t.equal(c.get('r', 'sha256:a'), undefined, 'not after the cap');
  t.equal(c.size, 0, 'and dropped');

  // Signed 19 min 30 s ago: 30 s of validity left, under the margin kept for the client's request.
  now = T0 + 1_170_000;
  c.set('r', 'sha256:a', V4);
  t.equal(c.get('r', 'sha256:a'), undefined, 'a URL about to expire is not kept');
  // Signed 18 min 30 s ago: 90 s left, kept until 60 s before it expires.
  now = T0 + 1_110_000;
  c.set('r', 'sha256:a', V4);
  now = T0 + 1_139_999;
  t.equal(c.get('r', 'sha256:a'), V4);
  now = T0 + 1_140_000;
  t.equal(c.get('r', 'sha256:a'), undefined, 'not within a minute of its expiry');

  c.set('r', 'sha256:a', 'http://127.0.0.1/o?X-Amz-Signature=abc');
  t.equal(c.get('r', 'sha256:a'), undefined, 'a URL without a parsable expiry is not kept');
});

t.test('bounded in entries: the oldest goes first', async (t) => {
  const c = new RedirectCache({ now: () => T0, maxEntries: 2 });
  c.set('r', 'sha256:1', V4);
  c.set('r', 'sha256:2', V4);
  c.set('r', 'sha256:3', V4);
  t.equal(c.size, 2);
  t.equal(c.get('r', 'sha256:1'), undefined);
  t.equal(c.get('r', 'sha256:3'), V4);
  c.set('r', 'sha256:2', V4);
  c.set('r', 'sha256:4', V4);
  t.equal(c.get('r', 'sha256:3'), undefined, 'set again counts as new');
  t.equal(c.get('r', 'sha256:2'), V4);
});

t.test('while the write hold is held (a collection may remove blobs): emptied, neither read nor filled', async (t) => {
  let held = false;
  const c = new RedirectCache({ now: () => T0, paused: () => held });
  c.set('r', 'sha256:a', V4);
  held = true;
  t.equal(c.get('r', 'sha256:a'), undefined);
  t.equal(c.size, 0);
  c.set('r', 'sha256:a', V4);
  t.equal(c.size, 0);
  held = false;
  t.equal(c.get('r', 'sha256:a'), undefined, 'what was remembered before the hold stays forgotten');
  c.set('r', 'sha256:a', V4);
  t.equal(c.get('r', 'sha256:a'), V4);
});
