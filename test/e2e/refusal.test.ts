/**
 * The private-image refusal path against a real origin (a Basic-auth registry): a cached image
 * the origin no longer has is refused 404; with the origin down, `serve-confirmed` serves what was
 * confirmed within --origin-down-grace and `refuse` refuses 503, and past the grace both refuse;
 * a refusal carries no WWW-Authenticate, so a real containerd in mirror mode (the proxy first,
 * then the origin) gets the image from the origin with its own credentials.
 * Pods and secrets come from the fake API server.
 * Ports 15196 (origin), 15197 (proxy, serve-confirmed), 15198 (proxy, refuse), CRI 15199.
 */
import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { FakeApiServer } from '../fake-apiserver/index.js';
import { Lab, registryRequests, type Image } from '../helpers/lab.js';
import { startKubeProxy, type KubeProxy } from '../helpers/kube.js';
import { basicAuth, dockerConfigSecret, eventually, pod } from '../kube/helpers.js';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';

const ORIGIN = 15196;
const SERVE_PORT = 15197;
const REFUSE_PORT = 15198;
const CRI_PORT = 15199;
const AUTH_TTL_MS = 1000;
const GRACE_MS = 15_000;
const origin = `127.0.0.1:${ORIGIN}`;
const enc = origin.replace(':', '_');
const PW = 'Refus4l-pw-bob';

const lab = new Lab('refusal');
let api: FakeApiServer;
let serve: KubeProxy;
let refuse: KubeProxy;
let originDir: string;
let app: Image;
let gone: Image;
let down: Image;

t.teardown(async () => {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await serve?.stop();
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await refuse?.stop();
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await api?.close();
  await lab.cleanup();
});

async function get(
  proxy: KubeProxy,
  repo: string,
  reference: string,
): Promise<{ status: number; json: unknown; challenge: string | null }> {
  const res = await fetch(`${proxy.url}/v2/${enc}/${repo}/manifests/${reference}`, {
    headers: { accept: MANIFEST_ACCEPT },
  });
  const text = await res.text();
  return { status: res.status, json: JSON.parse(text) as unknown, challenge: res.headers.get('www-authenticate') };
}

async function waitUsers(proxy: KubeProxy, repo: string, want: string[]): Promise<void> {
  await eventually(
    () =>
      JSON.stringify(proxy.kube.credentials.podsUsing(origin, repo).map((p) => `${p.namespace}/${p.name}`)) ===
      JSON.stringify(want),
    `pods using ${repo}: ${want.join(',')}`,
  );
}

const refusals = (proxy: KubeProxy) => proxy.logs().filter((l) => String(l.msg).startsWith('private image refused'));

t.before(async () => {
  api = await FakeApiServer.start();
  originDir = (await lab.registry('origin', ORIGIN, ['--htpasswd', `bob:${PW}`])).dir;
  const image = (repo: string) => lab.image(origin, repo, 'v1', ['--layers', '1', '--creds', `bob:${PW}`]);
  [app, gone, down] = await Promise.all([image('team/app'), image('team/gone'), image('team/down')]);
  const flags = (policy: string) => [
    '--data-dir',
    lab.tempDir(`pt-refusal-${policy}`),
    '--insecure-registries',
    origin,
    '--auth-ttl',
    `${AUTH_TTL_MS}ms`,
    '--private-when-origin-down',
    policy,
    '--origin-down-grace',
    `${GRACE_MS}ms`,
  ];
  serve = await startKubeProxy(api, flags('serve-confirmed'), { port: SERVE_PORT });
  refuse = await startKubeProxy(api, flags('refuse'), { port: REFUSE_PORT });
  // Pod a, with a secret the origin accepts, uses every image: both proxies cache them.
  api.putSecret(dockerConfigSecret('team-a', 'regcred', { [origin]: basicAuth('bob', PW) }));
  api.addPod(
    pod('a', {
      namespace: 'team-a',
      images: [`${origin}/team/app:v1`, `${origin}/team/gone:v1`, `${origin}/team/down:v1`],
      pullSecrets: ['regcred'],
    }),
  );
  for (const proxy of [serve, refuse]) {
    for (const repo of ['team/app', 'team/gone', 'team/down']) {
      await waitUsers(proxy, repo, ['team-a/a']);
      const r = await get(proxy, repo, 'v1');
      if (r.status !== 200) throw new Error(`warming ${repo}: ${r.status} ${JSON.stringify(r.json)}`);
    }
    await proxy.settle();
  }
});

t.test('the origin no longer has the object: 404 MANIFEST_UNKNOWN, no challenge', async (t) => {
  const del = await fetch(`http://${origin}/v2/team/gone/manifests/${gone.digest}`, {
    method: 'DELETE',
    headers: { authorization: `Basic ${Buffer.from(`bob:${PW}`).toString('base64')}` },
  });
  t.equal(del.status, 202, 'deleted at the origin');
  await sleep(AUTH_TTL_MS + 100); // the confirmation of the warm-up expires
  const r = await get(serve, 'team/gone', gone.digest);
  t.equal(r.status, 404, '404');
  t.match(r.json, { errors: [{ code: 'MANIFEST_UNKNOWN' }] }, 'MANIFEST_UNKNOWN');
  t.equal(r.challenge, null, 'no WWW-Authenticate');
  const line = refusals(serve).find((l) => l.image === `${origin}/team/gone`);
  t.equal(line?.reason, 'not-found', 'logged as not found at the origin');
  t.match(
    await serve.metrics.registry.getSingleMetricAsString('pullthrough_access_refusals_total'),
    /reason="not-found"} 1\b/,
    'counted once',
  );
});

t.test('refused 401 without a challenge: containerd in mirror mode gets the image from the origin', async (t) => {
  // Pod n uses the image without credentials; pod a (with them) leaves the node.
  api.addPod(pod('n', { namespace: 'team-n', images: [`${origin}/team/app:v1`] }));
  api.deletePod('team-a', 'a');
  await waitUsers(serve, 'team/app', ['team-n/n']);
  await sleep(AUTH_TTL_MS + 100); // the confirmation of the warm-up expires

  const direct = await get(serve, 'team/app', app.digest);
  t.equal(direct.status, 401, 'the proxy refuses it 401');
  t.match(direct.json, { errors: [{ code: 'UNAUTHORIZED' }] }, 'UNAUTHORIZED');
  t.equal(direct.challenge, null, 'with no WWW-Authenticate');

  const { hostsDir } = await lab.containerd('node', CRI_PORT);
  await lab.hostsToml(hostsDir, origin, `http://${origin}`, [serve.url]);
  const refusedBefore = refusals(serve).length;
  const originBefore = registryRequests(originDir).length;
  const r = await lab.criPull('node', `${origin}/team/app:v1`, ['--creds', `bob:${PW}`, '--timeout', '120']);
  t.ok(r.image_ref, `pulled: ${JSON.stringify(r)}`);
  t.ok(refusals(serve).length > refusedBefore, 'the proxy refused it');
  const fromOrigin = registryRequests(originDir)
    .slice(originBefore)
    .filter((q) => q.status === 200);
  t.ok(
    fromOrigin.some((q) => q.path.startsWith('/v2/team/app/manifests/')),
    'the origin served the manifest (only containerd holds the credentials)',
  );
  t.ok(
    app.layers.every((d) => fromOrigin.some((q) => q.path.startsWith(`/v2/team/app/blobs/${d}`))),
    'and every layer',
  );
  api.deletePod('team-n', 'n');
});

t.test('the origin down: serve-confirmed serves within the grace, refuse refuses, both refuse after', async (t) => {
  api.addPod(pod('a', { namespace: 'team-a', images: [`${origin}/team/down:v1`], pullSecrets: ['regcred'] }));
  await waitUsers(serve, 'team/down', ['team-a/a']);
  await waitUsers(refuse, 'team/down', ['team-a/a']);
  // Access confirmed now (the warm-up's has expired: a HEAD with pod a's secret renews it).
  const confirmedAt = Date.now();
  t.equal((await get(serve, 'team/down', down.digest)).status, 200, 'confirmed (serve-confirmed proxy)');
  t.equal((await get(refuse, 'team/down', down.digest)).status, 200, 'confirmed (refuse proxy)');

  await lab.stop('origin');
  await sleep(AUTH_TTL_MS + 100); // past --auth-ttl: the origin must be asked, and cannot answer

  const served = await get(serve, 'team/down', down.digest);
  t.equal(served.status, 200, 'serve-confirmed: served');
  t.ok(
    serve.logs().some((l) => String(l.msg).startsWith('origin cannot confirm access to a private image')),
    'and says why',
  );
  t.ok(Date.now() - confirmedAt < GRACE_MS, 'that was within the grace period');
  const refused = await get(refuse, 'team/down', down.digest);
  t.equal(refused.status, 503, 'refuse: 503');
  t.match(refused.json, { errors: [{ code: 'UNAVAILABLE' }] }, 'UNAVAILABLE');
  t.equal(refused.challenge, null, 'no WWW-Authenticate');

  await sleep(Math.max(0, confirmedAt + GRACE_MS + 200 - Date.now()));
  const late = await get(serve, 'team/down', down.digest);
  t.equal(late.status, 503, 'serve-confirmed past the grace: 503');
  t.match(late.json, { errors: [{ code: 'UNAVAILABLE' }] }, 'UNAVAILABLE');
  t.ok(
    serve.logs().some((l) => l.msg === 'private image refused: the origin cannot confirm access'),
    'logged as a refusal',
  );
});
