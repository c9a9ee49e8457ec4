/**
 * After --tag-ttl a cached tag is revalidated with exactly one HEAD at the origin, however many
 * clients ask for it at once, and the manifest is not downloaded again while its digest is
 * unchanged. Counted in the access log of a logproxy-up.sh nginx in front of a real registry,
 * read after a marker request that nginx logs later.
 */
import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { accessLog, Lab, type AccessEntry, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { eventually } from '../helpers/wait.js';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';

const lab = new Lab('revalidate');
const dataDir = lab.tempDir('pt-revalidate');
const ORIGIN = 15172;
const FRONT = 15173;
const TTL_MS = 1000;
const TAGS = ['v1', 'v2'] as const;
const repo = `127.0.0.1_${FRONT}/library/app`;
let proxy: TestProxy;
let frontUrl: string;
let frontLog: string;
const images = new Map<string, Image>();

t.teardown(async () => {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await proxy?.stop();
  await lab.cleanup();
});

t.before(async () => {
  const origin = await lab.registry('origin', ORIGIN);
  for (const tag of TAGS)
    images.set(tag, await lab.image(`127.0.0.1:${ORIGIN}`, 'library/app', tag, ['--layers', '1']));
  ({ url: frontUrl, log: frontLog } = await lab.logproxy('front', FRONT, origin.url));
  proxy = await startProxy([
    '--data-dir',
    dataDir,
    '--insecure-registries',
    `127.0.0.1:${FRONT}`,
    '--tag-ttl',
    `${TTL_MS}ms`,
  ]);
  for (const tag of TAGS) {
    const res = await request(manifestUrl(tag), { headers: { accept: MANIFEST_ACCEPT } });
    await res.body.dump();
    if (res.statusCode !== 200) throw new Error(`first pull of ${tag}: ${res.statusCode}`);
  }
  await proxy.settle();
});

const manifestUrl = (tag: string) => `${proxy.url}/v2/library/app/manifests/${tag}?ns=127.0.0.1%3A${FRONT}`;

let markers = 0;
/** The origin's access log up to now: a request nginx logs after every earlier one has been logged. */
async function originLogSoFar(): Promise<AccessEntry[]> {
  const marker = `marker-${++markers}`;
  const res = await request(`${frontUrl}/v2/?${marker}`);
  await res.body.dump();
  return eventually(() => {
    const log = accessLog(frontLog);
    return log.some((e) => e.uri.endsWith(marker)) ? log : undefined;
  }, `the marker ${marker} in the origin log`);
}

/** Lets every stored tag's TTL pass (the proxy counts from when the origin last confirmed it). */
async function ttlPassed(): Promise<void> {
  for (const tag of TAGS) {
    // The tag is written after the client's answer, behind the manifest it points to.
    const rec = await eventually(() => proxy.store.getTag(repo, tag), `tag ${tag} stored`);
    await sleep(Math.max(0, rec.confirmedAt + TTL_MS + 50 - Date.now()));
  }
}

function manifestRequests(log: AccessEntry[], from: number, tag: string) {
  const image = images.get(tag) as Image;
  const after = log.slice(from);
  return {
    heads: after.filter((e) => e.method === 'HEAD' && e.uri.startsWith(`/v2/library/app/manifests/${tag}`)),
    gets: after.filter(
      (e) =>
        e.method === 'GET' &&
        (e.uri.startsWith(`/v2/library/app/manifests/${tag}`) ||
          e.uri.startsWith(`/v2/library/app/manifests/${image.digest}`)),
    ),
  };
}

async function pull(tag: string): Promise<{ status: number; digest: unknown }> {
  const res = await request(manifestUrl(tag), { headers: { accept: MANIFEST_ACCEPT } });
  await res.body.dump();
  return { status: res.statusCode, digest: res.headers['docker-content-digest'] };
}

t.test('after the TTL, one pull: one HEAD at the origin, no GET of the unchanged manifest', async (t) => {
  await ttlPassed();
  const confirmed = (await proxy.store.getTag(repo, 'v1'))?.confirmedAt ?? 0;
  const from = (await originLogSoFar()).length;
  const answer = await pull('v1');
  t.same(answer, { status: 200, digest: images.get('v1')?.digest }, 'the client gets the cached manifest');
  const { heads, gets } = manifestRequests(await originLogSoFar(), from, 'v1');
  t.equal(heads.length, 1, `exactly one HEAD revalidated the tag (${heads.length})`);
  t.equal(gets.length, 0, 'and the manifest was not fetched again');
  await eventually(
    async () => ((await proxy.store.getTag(repo, 'v1'))?.confirmedAt ?? 0) > confirmed,
    'the stored tag confirmed anew',
  );
  t.pass('the stored tag is confirmed anew');
});

t.test('after the TTL, 8 concurrent pulls of each of two tags: one HEAD per tag, no GET', async (t) => {
  await ttlPassed();
  const from = (await originLogSoFar()).length;
  const answers = await Promise.all(
    TAGS.flatMap((tag) => Array.from({ length: 8 }, async () => [tag, await pull(tag)] as const)),
  );
  for (const [tag, answer] of answers) {
    t.same(answer, { status: 200, digest: images.get(tag)?.digest }, `${tag}: the cached manifest`);
  }
  const log = await originLogSoFar();
  for (const tag of TAGS) {
    const { heads, gets } = manifestRequests(log, from, tag);
    t.equal(heads.length, 1, `${tag}: exactly one HEAD revalidated the tag (${heads.length})`);
    t.equal(gets.length, 0, `${tag}: the manifest was not fetched again`);
  }
});
