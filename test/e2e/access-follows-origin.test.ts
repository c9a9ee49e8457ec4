/**
 * Access follows the origin (issue 22, bug 3): a repository first served anonymously, then put
 * behind Basic auth on the same storage and port. After --tag-ttl and --auth-ttl the cached image
 * is refused, by tag and by digest, on a node whose pods hold no credential, and served from the
 * cache on a node whose pod holds one the origin accepts.
 */
import t from 'tap';
import { appendFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { FakeApiServer } from '../fake-apiserver/index.js';
import { Lab, labAvailable, registryRequests, restartRegistry, type Image } from '../helpers/lab.js';
import { startKubeProxy, type KubeProxy } from '../helpers/kube.js';
import { basicAuth, dockerConfigSecret, eventually, pod } from '../kube/helpers.js';

const run = promisify(execFile);
const ORIGIN_PORT = 15120;
const PROXY_PORT = 15121;
const TTL_MS = 1000;
const origin = `127.0.0.1:${ORIGIN_PORT}`;
const PW = 'Sw1tch-pw-bob';
const MANIFEST_ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json';

if (!labAvailable()) {
  t.plan(0, 'oci-lab is not installed (registry-up.sh, docker-registry, containerd)');
} else {
  const lab = new Lab('access-follows-origin');
  const dataDir = lab.tempDir('pt-access-follows');
  let api: FakeApiServer | undefined;
  let proxy: KubeProxy | undefined;
  let originDir = '';
  let img: Image;

  t.teardown(async () => {
    await proxy?.stop();
    await api?.close();
    await lab.cleanup();
  });

  const base = () => `${proxy?.url ?? ''}/v2/${origin.replace(':', '_')}/team/app`;
  const get = async (path: string) => {
    const res = await fetch(`${base()}/${path}`, { headers: { accept: MANIFEST_ACCEPT } });
    const text = await res.text();
    return { status: res.status, text, auth: res.headers.get('www-authenticate') };
  };
  const code = (text: string) => (JSON.parse(text) as { errors: { code: string }[] }).errors[0]?.code;
  const users = () => proxy?.kube.credentials.podsUsing(origin, 'team/app').map((p) => `${p.namespace}/${p.name}`);
  const waitUsers = (want: string[]) =>
    eventually(() => JSON.stringify(users()) === JSON.stringify(want), `pods using team/app: ${want.join(',')}`);

  t.before(async () => {
    api = await FakeApiServer.start();
    originDir = (await lab.registry('origin', ORIGIN_PORT)).dir;
    img = await lab.image(origin, 'team/app', 'v1', ['--layers', '1']);
    proxy = await startKubeProxy(
      api,
      ['--data-dir', dataDir, '--tag-ttl', `${TTL_MS}ms`, '--auth-ttl', `${TTL_MS}ms`, '--insecure-registries', origin],
      { port: PROXY_PORT, secretTtlSeconds: 1 },
    );
  });

  t.test('an anonymous origin: the image is public, pulled and cached for a pod without credentials', async (t) => {
    api?.addPod(pod('b', { namespace: 'team-b', images: [`${origin}/team/app:v1`] }));
    await waitUsers(['team-b/b']);
    t.equal((await get('manifests/v1')).status, 200);
    t.equal((await get(`manifests/${img.digest}`)).status, 200);
    for (const d of img.layers) t.equal((await get(`blobs/${d}`)).status, 200, `layer ${d.slice(7, 19)}`);
    await proxy?.settle();
    for (const d of img.layers)
      t.ok(await proxy?.store.inner.statBlob(`${origin.replace(':', '_')}/team/app`, d), 'cached');
  });

  t.test('the owner puts it behind Basic auth: after the TTLs, a node without credentials is refused', async (t) => {
    await lab.stop('origin');
    const { stdout } = await run('htpasswd', ['-Bbn', 'bob', PW]);
    appendFileSync(`${originDir}/htpasswd`, stdout);
    appendFileSync(
      `${originDir}/config.yml`,
      `auth:\n  htpasswd: {realm: oci-lab-origin, path: ${originDir}/htpasswd}\n`,
    );
    await restartRegistry(lab, 'origin', ORIGIN_PORT);
    const anon = await fetch(`http://${origin}/v2/team/app/manifests/v1`, { method: 'HEAD' });
    t.equal(anon.status, 401, 'the origin now refuses anonymous requests');
    // Both TTLs pass: the tag must be revalidated and "public" is no longer current.
    await new Promise((r) => setTimeout(r, TTL_MS + 200));
    for (const [what, path] of [
      ['a blob by digest', `blobs/${img.layers[0] ?? ''}`],
      ['the manifest by digest', `manifests/${img.digest}`],
      ['the tag', 'manifests/v1'],
    ] as const) {
      const r = await get(path);
      t.equal(r.status, 401, `${what}: 401`);
      t.equal(code(r.text), 'UNAUTHORIZED', `${what}: UNAUTHORIZED`);
      t.equal(r.auth, null, `${what}: no WWW-Authenticate, so containerd tries its next host`);
    }
    t.ok(
      proxy?.logs().some((l) => String(l.msg).startsWith('private image refused')),
      'the refusal is logged',
    );
  });

  t.test('a pod holding a credential the origin accepts: the cached image is served', async (t) => {
    api?.putSecret(dockerConfigSecret('team-a', 'regcred', { [origin]: basicAuth('bob', PW) }));
    api?.addPod(pod('a', { namespace: 'team-a', images: [`${origin}/team/app:v1`], pullSecrets: ['regcred'] }));
    await waitUsers(['team-a/a', 'team-b/b']);
    const blobGets = () => registryRequests(originDir).filter((q) => q.method === 'GET' && q.path.includes('/blobs/'));
    const before = blobGets().length;
    t.equal((await get('manifests/v1')).status, 200, 'the tag');
    t.equal((await get(`manifests/${img.digest}`)).status, 200, 'the manifest by digest');
    for (const d of img.layers) t.equal((await get(`blobs/${d}`)).status, 200, `layer ${d.slice(7, 19)}`);
    t.equal(blobGets().length, before, 'from the cache: no blob fetched from the origin');
  });
}
