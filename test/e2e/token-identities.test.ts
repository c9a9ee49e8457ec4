/**
 * Identities against the lab's token server (Docker-Hub-style Bearer auth): two pods' credentials
 * each get a token of their own and no request under one carries the other's; several secrets of
 * one pod are tried in order on a refusal; docker config `identitytoken` and `registrytoken`
 * credentials are really used. Credentials come from pods in the fake API server, as a node
 * proxy gets them; requests go to the proxy over HTTP.
 * Ports 15192-15194: the token registry (token server 15193), the proxy.
 */
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FakeApiServer } from '../fake-apiserver/index.js';
import { Lab, registryRequests } from '../helpers/lab.js';
import { startKubeProxy, type KubeProxy } from '../helpers/kube.js';
import { basicAuth, dockerConfigSecret, eventually, pod } from '../kube/helpers.js';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';

const LOCKED = 15192; // only alice, no anonymous access
const PROXY_PORT = 15194;
const locked = `127.0.0.1:${LOCKED}`;
const enc = (host: string) => host.replace(':', '_');
const LOCKED_PW = 'L0cked-alice-pw';

const lab = new Lab('token-identities');
const dataDir = lab.tempDir('pt-token-identities');
let api: FakeApiServer;
let proxy: KubeProxy;
let lockedDir: string;

t.teardown(async () => {
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await proxy?.stop();
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- unset when t.before() failed
  await api?.close();
  await lab.cleanup();
});

interface TokenLine {
  method: string;
  path: string;
  status: number;
  user: string | null;
  access: { name: string; actions: string[] }[] | null;
}

function tokenLog(name: string): TokenLine[] {
  const file = join(lab.dir, name, 'token.log');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as TokenLine);
}

/** The token requests for pulling `repo` (a push asks for pull,push: not ours). */
function pullTokens(name: string, repo: string, from = 0): TokenLine[] {
  const scope = encodeURIComponent(`repository:${repo}:pull`);
  return tokenLog(name)
    .slice(from)
    .filter((l) => l.method === 'POST' || new RegExp(`[?&]scope=${scope}(&|$)`).test(l.path));
}

async function manifest(host: string, repo: string, tag: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`${proxy.url}/v2/${enc(host)}/${repo}/manifests/${tag}`, {
    headers: { accept: MANIFEST_ACCEPT },
  });
  return { status: res.status, body: await res.text() };
}

const users = (host: string, repo: string) =>
  proxy.kube.credentials.podsUsing(host, repo).map((p) => `${p.namespace}/${p.name}`);
async function waitUsers(host: string, repo: string, want: string[]): Promise<void> {
  await eventually(
    () => JSON.stringify(users(host, repo)) === JSON.stringify(want),
    `pods using ${repo}: ${want.join(',')}`,
  );
}

t.before(async () => {
  api = await FakeApiServer.start();
  lockedDir = (
    await lab.registry('locked', LOCKED, [
      '--token',
      '--no-anon',
      '--htpasswd',
      `alice:${LOCKED_PW}`,
      '--token-port',
      String(LOCKED + 1),
    ])
  ).dir;
  await Promise.all(
    [
      ['team/app', 'v1'],
      ['team/app', 'v2'],
      ['team/order', 'v1'],
      ['team/idtok', 'v1'],
      ['team/regtok', 'v1'],
    ].map(([repo, tag]) =>
      lab.image(locked, repo as string, tag as string, ['--layers', '1', '--creds', `alice:${LOCKED_PW}`]),
    ),
  );
  proxy = await startKubeProxy(
    api,
    ['--data-dir', dataDir, '--insecure-registries', [LOCKED, LOCKED + 1].map((p) => `127.0.0.1:${p}`).join(',')],
    { port: PROXY_PORT },
  );
});

t.test('two identities against one token origin: a token each, never the other one', async (t) => {
  api.putSecret(dockerConfigSecret('team-a', 'alice', { [locked]: basicAuth('alice', LOCKED_PW) }));
  api.putSecret(dockerConfigSecret('team-m', 'mallory', { [locked]: basicAuth('mallory', 'Wr0ng-pw') }));
  const mark = tokenLog('locked').length;

  api.addPod(pod('a', { namespace: 'team-a', images: [`${locked}/team/app:v1`], pullSecrets: ['alice'] }));
  await waitUsers(locked, 'team/app', ['team-a/a']);
  t.equal((await manifest(locked, 'team/app', 'v1')).status, 200, 'v1 served under alice');
  await proxy.settle();

  // Alice's token for team/app is cached; mallory's pull of the same repository must not use it.
  api.deletePod('team-a', 'a');
  api.addPod(pod('m', { namespace: 'team-m', images: [`${locked}/team/app:v2`], pullSecrets: ['mallory'] }));
  await waitUsers(locked, 'team/app', ['team-m/m']);
  const requestsBefore = registryRequests(lockedDir).length;
  const refused = await manifest(locked, 'team/app', 'v2');
  t.equal(refused.status, 401, 'v2 refused under mallory');
  t.match(JSON.parse(refused.body), { errors: [{ code: 'UNAUTHORIZED' }] }, 'as UNAUTHORIZED');
  const v2 = registryRequests(lockedDir)
    .slice(requestsBefore)
    .filter((q) => q.path.startsWith('/v2/team/app/manifests/v2'));
  t.ok(v2.length > 0, 'the origin was asked for v2');
  t.same(
    v2.filter((q) => q.status !== 401),
    [],
    "and refused every request: none carried alice's token",
  );

  // Back on the node, alice's pod gets v2 with the token issued to alice earlier.
  api.addPod(pod('a', { namespace: 'team-a', images: [`${locked}/team/app:v2`], pullSecrets: ['alice'] }));
  await waitUsers(locked, 'team/app', ['team-a/a', 'team-m/m']);
  t.equal((await manifest(locked, 'team/app', 'v2')).status, 200, 'v2 served under alice');
  await proxy.settle();

  const tokens = pullTokens('locked', 'team/app', mark).filter((l) => l.user !== null);
  t.same(
    tokens.map((l) => [l.user, l.status]),
    [
      ['alice', 200],
      ['mallory', 401],
    ],
    'the token server got one token request per identity: alice (granted, then reused), mallory (refused)',
  );
  api.deletePod('team-a', 'a');
  api.deletePod('team-m', 'm');
});

t.test('several secrets of a pod: tried in order on a refusal, the right one serves', async (t) => {
  // First the wrong user (the token server refuses it), then the right one.
  api.putSecret(dockerConfigSecret('team-o', 'a-wrong', { [locked]: basicAuth('mallory', 'Wr0ng-pw') }));
  api.putSecret(dockerConfigSecret('team-o', 'b-right', { [locked]: basicAuth('alice', LOCKED_PW) }));
  api.addPod(
    pod('o', { namespace: 'team-o', images: [`${locked}/team/order:v1`], pullSecrets: ['a-wrong', 'b-right'] }),
  );
  await waitUsers(locked, 'team/order', ['team-o/o']);
  const mark = tokenLog('locked').length;
  const r = await manifest(locked, 'team/order', 'v1');
  t.equal(r.status, 200, 'served');
  const tokens = pullTokens('locked', 'team/order', mark).filter((l) => l.user !== null);
  t.same(
    tokens.slice(0, 2).map((l) => [l.user, l.status]),
    [
      ['mallory', 401],
      ['alice', 200],
    ],
    'the token server saw the first secret (refused), then the second (granted)',
  );
  await proxy.settle();
  api.deletePod('team-o', 'o');
});

t.test('an identitytoken is exchanged at the realm with a refresh-token POST', async (t) => {
  // The lab's token server implements the password grant only: it answers a refresh-token POST
  // with 400 unsupported_grant_type, and the pod's next secret is used.
  api.putSecret(
    dockerConfigSecret('team-i', 'a-idtok', {
      [locked]: { username: '<token>', identitytoken: 'refresh-token-of-alice' },
    }),
  );
  api.putSecret(dockerConfigSecret('team-i', 'b-right', { [locked]: basicAuth('alice', LOCKED_PW) }));
  api.addPod(
    pod('i', { namespace: 'team-i', images: [`${locked}/team/idtok:v1`], pullSecrets: ['a-idtok', 'b-right'] }),
  );
  await waitUsers(locked, 'team/idtok', ['team-i/i']);
  const mark = tokenLog('locked').length;
  const r = await manifest(locked, 'team/idtok', 'v1');
  t.equal(r.status, 200, 'served with the next secret');
  const lines = tokenLog('locked').slice(mark);
  const post = lines.findIndex((l) => l.method === 'POST');
  const alice = lines.findIndex((l) => l.method === 'GET' && l.user === 'alice' && l.status === 200);
  t.ok(post >= 0, 'the identity token went to the realm in a POST');
  t.equal(lines[post]?.status, 400, 'which the lab answers unsupported_grant_type (password grant only)');
  t.ok(alice > post, 'then the next secret got the token');
  await proxy.settle();
  api.deletePod('team-i', 'i');
});

t.test('a registrytoken is sent as it is: no token request for it', async (t) => {
  const res = await fetch(
    `http://127.0.0.1:${LOCKED + 1}/token?service=oci-lab-locked&scope=${encodeURIComponent('repository:team/regtok:pull')}`,
    { headers: { authorization: `Basic ${Buffer.from(`alice:${LOCKED_PW}`).toString('base64')}` } },
  );
  const { token } = (await res.json()) as { token: string };
  api.putSecret(dockerConfigSecret('team-r', 'regtok', { [locked]: { registrytoken: token } }));
  api.addPod(pod('r', { namespace: 'team-r', images: [`${locked}/team/regtok:v1`], pullSecrets: ['regtok'] }));
  await waitUsers(locked, 'team/regtok', ['team-r/r']);
  const mark = tokenLog('locked').length;
  const before = registryRequests(lockedDir).length;
  const r = await manifest(locked, 'team/regtok', 'v1');
  t.equal(r.status, 200, 'served');
  await proxy.settle();
  t.same(
    tokenLog('locked')
      .slice(mark)
      .filter((l) => l.user !== null),
    [],
    'the token server got no request with credentials',
  );
  const after = registryRequests(lockedDir)
    .slice(before)
    .filter((q) => q.path.startsWith('/v2/team/regtok/manifests/v1'));
  // No anonymous token opens this registry: the GET it served carried the registry token.
  t.same(
    after.filter((q) => q.method === 'GET').map((q) => q.status),
    [200],
    'the origin served the manifest GET',
  );
  api.deletePod('team-r', 'r');
});

t.test('no credential or token reaches the log', async (t) => {
  const text = proxy.logText();
  for (const s of [LOCKED_PW, 'refresh-token-of-alice']) {
    t.notOk(text.includes(s), `no ${s.slice(0, 5)}...`);
  }
  t.notOk(/eyJ[A-Za-z0-9_-]{10,}\./.test(text), 'no JWT');
});
