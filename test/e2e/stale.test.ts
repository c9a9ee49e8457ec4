/**
 * Stale-if-error beyond a refused connection: a cached tag whose --tag-ttl has passed is served
 * stale, with the reason logged, when the origin answers 5xx or 429, does not answer its headers in
 * time, or has deleted the tag; 401 and 403 are never papered over. Each fault is real: a
 * logproxy-up.sh nginx (or its blackhole) in front of a real registry.
 */
import t from 'tap';
import { request } from 'undici';
import { Lab, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { eventually } from '../helpers/wait.js';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';

const lab = new Lab('stale');
const dataDir = lab.tempDir('pt-stale');
const ORIGIN = 15170;
const FRONT = 15171;
const url = `/v2/library/app/manifests/v1?ns=127.0.0.1%3A${FRONT}`;
let proxy: TestProxy;
let image: Image;
let originUrl: string;

t.teardown(async () => {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await proxy?.stop();
  await lab.cleanup();
});

t.before(async () => {
  originUrl = (await lab.registry('origin', ORIGIN)).url;
  image = await lab.image(`127.0.0.1:${ORIGIN}`, 'library/app', 'v1', ['--layers', '1']);
  await lab.logproxy('front', FRONT, originUrl);
  proxy = await startProxy([
    '--data-dir',
    dataDir,
    '--insecure-registries',
    `127.0.0.1:${FRONT}`,
    '--tag-ttl',
    '1s',
    '--origin-timeout',
    '2s',
  ]);
});

/** The origin as the fault makes it: the front nginx started again with `flags`. */
async function front(flags: string[]): Promise<void> {
  await lab.down('front');
  await lab.logproxy('front', FRONT, originUrl, flags);
}

interface Pull {
  status: number;
  digest: string | undefined;
  code: string | undefined;
  /** The proxy's request log line, and what else it logged for the same request. */
  line: Record<string, unknown>;
  related: Record<string, unknown>[];
}

async function pullTag(): Promise<Pull> {
  const seen = proxy.logs().filter((l) => l.msg === 'request').length;
  const res = await request(`${proxy.url}${url}`, { headers: { accept: MANIFEST_ACCEPT } });
  const text = await res.body.text();
  const lines = await eventually(() => {
    const all = proxy.logs().filter((l) => l.msg === 'request');
    return all.length > seen ? all : undefined;
  }, 'the request log line');
  const line = lines.at(-1) as Record<string, unknown>;
  return {
    status: res.statusCode,
    digest: res.headers['docker-content-digest'] as string | undefined,
    code: res.statusCode === 200 ? undefined : (JSON.parse(text) as { errors: { code: string }[] }).errors[0]?.code,
    line,
    related: proxy.logs().filter((l) => l.reqId === line.reqId && l !== line && l.msg !== 'request'),
  };
}

const STALE = 'origin could not confirm tag; serving the cached copy (stale-if-error)';

t.test('the tag is cached from the origin first', async (t) => {
  const first = await pullTag();
  t.equal(first.status, 200);
  t.equal(first.line.source, 'origin');
  await proxy.settle();
  t.equal(
    (await proxy.store.getTag(`127.0.0.1_${FRONT}/library/app`, 'v1'))?.digest,
    image.digest,
    'the tag is stored',
  );
});

for (const [what, flags, reason] of [
  ['answers 500', ['--status', '500'], /answered 500/],
  ['answers 503', ['--status', '503'], /answered 503/],
  ['rate-limits (429)', ['--status', '429'], /rate-limited/],
  ['does not answer its headers in time', ['--hang'], /timed out/],
] as const) {
  t.test(`the origin ${what}: the cached tag is served stale, and the log says why`, async (t) => {
    await front([...flags]);
    const p = await pullTag();
    t.equal(p.status, 200, 'the client gets the manifest');
    t.equal(p.digest, image.digest, 'the cached one');
    t.equal(p.line.source, 'stale', 'the request log line says stale');
    const warn = p.related.find((l) => l.msg === STALE);
    t.ok(warn, 'a stale-if-error line for this request');
    t.match(warn?.reason, reason, `with the reason (${String(warn?.reason)})`);
  });
}

for (const [status, code] of [
  [401, 'UNAUTHORIZED'],
  [403, 'DENIED'],
] as const) {
  t.test(`the origin answers ${status}: never served stale, the client gets the refusal`, async (t) => {
    await front(['--status', String(status)]);
    const p = await pullTag();
    t.equal(p.status, status, `the client gets ${status}`);
    t.equal(p.code, code);
    t.not(p.line.source, 'stale', 'nothing was served stale');
    t.notOk(
      p.related.some((l) => l.msg === STALE),
      'no stale-if-error line for this request',
    );
  });
}

t.test('the origin deleted the tag (404): the cached tag is served stale, and the log says why', async (t) => {
  await front([]);
  const del = await request(`${originUrl}/v2/library/app/manifests/${image.digest}`, { method: 'DELETE' });
  await del.body.dump();
  t.equal(del.statusCode, 202, 'the origin deleted the manifest and its tag');
  const gone = await request(`${originUrl}/v2/library/app/manifests/v1`, { method: 'HEAD' });
  await gone.body.dump();
  t.equal(gone.statusCode, 404, 'the origin no longer has the tag');

  const p = await pullTag();
  t.equal(p.status, 200, 'the client gets the manifest');
  t.equal(p.digest, image.digest, 'the cached one');
  t.equal(p.line.source, 'stale', 'the request log line says stale');
  const warn = p.related.find((l) => l.msg === STALE);
  t.match(warn?.reason, /origin has no manifest v1/, `with the reason (${String(warn?.reason)})`);
});
