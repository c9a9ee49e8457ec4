/**
 * The access model for private cached images, against a fake origin probe and a fake pod
 * directory: public repositories cost nothing, confirmations last --auth-ttl and belong to pods
 * that still use the repository, refusals name the pods and never a credential, the origin-down
 * policies, the privacy record across restarts, one probe for concurrent requests; "public"
 * itself lasts --auth-ttl; with a peer policy, clients other than the node get public images only.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AccessControl,
  LocalPeers,
  PrivacyBook,
  type PeerPolicy,
  type PodDirectory,
  type PodRef,
  type ProbeAnswer,
  type ProbeRequest,
} from '../../src/access/index.js';
import type { OriginDownPolicy } from '../../src/config/proxy.js';
import type { Credential } from '../../src/oci/credentials.js';
import { OciError, UpstreamError } from '../../src/oci/errors.js';

const T = { registry: 'reg.example.com', repository: 'team/app' };
const A: PodRef = { namespace: 'team-a', name: 'a' };
const B: PodRef = { namespace: 'team-b', name: 'b' };
const credA = {
  kind: 'basic',
  username: 'alice',
  password: 'S3cret-A',
  label: 'secret team-a/regcred reg.example.com',
  pod: A,
  pods: [A],
} as Credential;
const nodeWide: Credential = {
  kind: 'basic',
  username: 'ops',
  password: 'S3cret-N',
  label: '--registry-credentials reg.example.com',
};

function world(opts: { policy?: OriginDownPolicy; file?: string; peers?: PeerPolicy } = {}) {
  let now = 1_000_000;
  const users: PodRef[] = [];
  const creds = new Map<string, Credential[]>();
  const skipped = new Map<string, { source: string; reason: string }[]>();
  const pods: PodDirectory = {
    podsUsing: () => [...users],
    lookup: async (p) => ({
      known: users.some((u) => u.name === p.name),
      credentials: creds.get(p.name) ?? [],
      skipped: skipped.get(p.name) ?? [],
    }),
  };
  const probes: ProbeRequest[] = [];
  let answer: (req: ProbeRequest) => ProbeAnswer | Error = () => new Error('no origin');
  const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  const at = (level: string) => (obj: object, msg?: string) =>
    void lines.push({ level, obj: obj as Record<string, unknown>, msg: msg ?? '' });
  const log = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } as never;
  const counts: Record<string, number> = {};
  const privacy = new PrivacyBook(opts.file ? { file: opts.file, saveDelayMs: 1 } : {});
  const access = new AccessControl({
    pods,
    privacy,
    probe: async (req) => {
      probes.push(req);
      await new Promise((r) => setTimeout(r, 5));
      const a = answer(req);
      if (a instanceof Error) throw a;
      return a;
    },
    authTtlMs: 60_000,
    originDown: opts.policy ?? 'serve-confirmed',
    originDownGraceMs: 600_000,
    log,
    metrics: {
      refused: (r) => void (counts[`refused ${r}`] = (counts[`refused ${r}`] ?? 0) + 1),
      probed: (r) => void (counts[`probed ${r}`] = (counts[`probed ${r}`] ?? 0) + 1),
      servedWhileOriginDown: () => void (counts.servedDown = (counts.servedDown ?? 0) + 1),
    },
    now: () => now,
    ...(opts.peers ? { peers: opts.peers } : {}),
  });
  t.teardown(() => access.close());
  return {
    access,
    privacy,
    users,
    creds,
    skipped,
    probes,
    lines,
    counts,
    log,
    answer: (f: (req: ProbeRequest) => ProbeAnswer | Error) => (answer = f),
    advance: (ms: number) => (now += ms),
    authorize: (hint?: { originUnreachable?: string }, peer?: string) =>
      access.authorize(T, 'manifest', 'v1', { log, peer }, hint),
    admit: (peer: string) => access.admit(T, 'manifest', 'v1', { log, peer }),
  };
}

const refusedWith = async (p: Promise<unknown>): Promise<OciError> => {
  try {
    await p;
  } catch (err) {
    if (err instanceof OciError) return err;
    throw err;
  }
  throw new Error('was served');
};

t.test('public: learned from an anonymous 200, then no request at all', async (t) => {
  const w = world();
  w.access.observe(T, 'manifest', 'v1', undefined);
  await w.authorize();
  await w.access.authorize(T, 'blob', 'sha256:' + 'a'.repeat(64), { log: w.log });
  t.equal(w.probes.length, 0, 'no probe for a public repository');
});

t.test('unknown (e.g. cached before, or by another node): one anonymous HEAD decides, and is remembered', async (t) => {
  const w = world();
  w.answer((req) => ({ status: req.anonymousOnly ? 200 : 500, credential: undefined }));
  await w.authorize();
  await w.authorize();
  t.same(
    w.probes.map((p) => [p.kind, p.reference, p.anonymousOnly]),
    [['manifest', 'v1', true]],
  );
  t.equal(w.privacy.get(T.registry, T.repository), 'public');
});

t.test(
  'private: a confirmation for a pod using the repository lasts --auth-ttl, then the origin is asked again',
  async (t) => {
    const w = world();
    w.users.push(A);
    w.privacy.set(T.registry, T.repository, 'private', 0);
    // A cache miss fetched with pod A's credential: that is a confirmation, no probe needed.
    w.access.observe(T, 'manifest', 'v1', credA);
    await w.authorize();
    t.equal(w.probes.length, 0, 'confirmed by the fetch itself');
    w.advance(61_000);
    w.answer(() => ({ status: 200, credential: credA }));
    await w.authorize();
    t.same(
      w.probes.map((p) => [p.anonymousOnly, p.reference]),
      [[false, 'v1']],
      'after --auth-ttl: one HEAD with the pods’ credentials',
    );
    await w.authorize();
    t.equal(w.probes.length, 1, 'and the new confirmation is used');
    t.equal(w.counts['probed granted'], 1);
  },
);

t.test('a confirmation belongs to its pod: when only pod B (no secret) uses the image, it is refused', async (t) => {
  const w = world();
  w.privacy.set(T.registry, T.repository, 'private', 0);
  w.users.push(A);
  w.access.observe(T, 'manifest', 'v1', credA);
  w.users.splice(0, 1, B);
  w.skipped.set('b', [{ source: 'serviceaccount team-b/default', reason: 'NotFound' }]);
  w.answer(
    () => new UpstreamError(T.registry, 'no credential could be used for the registry challenge', { status: 401 }),
  );
  const err = await refusedWith(w.authorize());
  t.equal(err.status, 401);
  t.equal(err.code, 'UNAUTHORIZED');
  t.match(err.message, /private and no pod on this node that uses it has credentials the origin accepts/);
  const line = w.lines.find((l) => l.msg.startsWith('private image refused'));
  t.ok(line, 'a log line');
  t.same(
    line?.obj.pods,
    [{ pod: 'team-b/b', why: ['serviceaccount team-b/default: NotFound', 'no credentials for this registry'] }],
    'names the pod and why',
  );
  t.equal(line?.obj.reason, 'rejected');
  t.equal(w.counts['refused rejected'], 1);
});

t.test('a wrong password: refused, "credentials rejected by the origin"; no secret in logs or errors', async (t) => {
  const w = world();
  w.privacy.set(T.registry, T.repository, 'private', 0);
  w.users.push(B);
  w.creds.set('b', [
    {
      kind: 'basic',
      username: 'alice',
      password: 'S3cret-wrong',
      label: 'secret team-b/regcred reg.example.com',
      pod: B,
      pods: [B],
    } as Credential,
  ]);
  w.answer(() => ({ status: 401, credential: credA }));
  const err = await refusedWith(w.authorize());
  t.equal(err.status, 401);
  t.equal(err.code, 'UNAUTHORIZED');
  t.same(err.headers, {}, 'no WWW-Authenticate: containerd moves on to its next host');
  const text = JSON.stringify(w.lines) + err.message;
  t.match(text, 'credentials rejected by the origin');
  for (const s of ['S3cret', 'alice']) t.notOk(text.includes(s), `no ${s}`);
});

t.test(
  'no pod uses the repository: refused as no-pod; a node-wide credential the origin accepts serves it',
  async (t) => {
    const w = world();
    w.privacy.set(T.registry, T.repository, 'private', 0);
    w.answer(() => ({ status: 401, credential: undefined }));
    const err = await refusedWith(w.authorize());
    t.equal(err.status, 401);
    t.equal(err.code, 'UNAUTHORIZED');
    t.match(err.message, /no pod on this node uses it/);
    t.equal(w.counts['refused no-pod'], 1);
    w.answer(() => ({ status: 200, credential: nodeWide }));
    await w.authorize();
    await w.authorize();
    t.equal(w.probes.length, 2, 'the node-wide confirmation is remembered');
  },
);

t.test('404 at the origin: not confirmed, 404', async (t) => {
  const w = world();
  w.privacy.set(T.registry, T.repository, 'private', 0);
  w.users.push(A);
  w.answer(() => ({ status: 404, credential: credA }));
  const err = await refusedWith(w.authorize());
  t.equal(err.status, 404);
  t.equal(err.code, 'MANIFEST_UNKNOWN');
});

t.test('concurrent requests share one check', async (t) => {
  const w = world();
  w.privacy.set(T.registry, T.repository, 'private', 0);
  w.users.push(A);
  w.answer(() => ({ status: 200, credential: credA }));
  await Promise.all([1, 2, 3, 4, 5].map(() => w.authorize()));
  t.equal(w.probes.length, 1);
});

t.test(
  'a shared check that found its object missing does not refuse a concurrent request for another one',
  async (t) => {
    const w = world();
    w.privacy.set(T.registry, T.repository, 'private', 0);
    w.users.push(A);
    w.answer((req) => ({ status: req.reference === 'gone' ? 404 : 200, credential: credA }));
    const [gone, blob] = await Promise.allSettled([
      w.access.authorize(T, 'manifest', 'gone', { log: w.log }),
      w.access.authorize(T, 'blob', 'sha256:' + 'a'.repeat(64), { log: w.log }),
    ]);
    t.equal(gone.status, 'rejected', 'the missing tag: refused');
    const reason = (gone as PromiseRejectedResult).reason as OciError;
    t.ok(reason instanceof OciError, 'an OciError');
    t.equal(reason.status, 404);
    t.equal(reason.code, 'MANIFEST_UNKNOWN');
    t.equal(blob.status, 'fulfilled', 'the blob: its own check, allowed');
    t.same(
      w.probes.map((p) => p.reference),
      ['gone', 'sha256:' + 'a'.repeat(64)],
    );
  },
);

t.test('origin down, serve-confirmed: recently confirmed pods keep access; never-confirmed ones do not', async (t) => {
  const w = world();
  w.privacy.set(T.registry, T.repository, 'private', 0);
  w.users.push(A);
  w.answer(() => new UpstreamError(T.registry, 'HEAD http://reg.example.com/v2/...: ECONNREFUSED'));
  const never = await refusedWith(w.authorize());
  t.equal(never.status, 503, 'never confirmed: 503');
  t.equal(never.code, 'UNAVAILABLE');
  t.equal(w.counts['refused origin-unreachable'], 1);
  w.access.observe(T, 'manifest', 'v1', credA);
  w.advance(120_000);
  await w.authorize();
  t.equal(w.counts.servedDown, 1, 'confirmed 2 minutes ago, within the grace: served');
  t.ok(
    w.lines.some((l) => l.msg.includes('serving it to this node')),
    'and logged',
  );
  // A hint from the pull path (the revalidation just failed) skips the probe.
  const before = w.probes.length;
  await w.authorize({ originUnreachable: 'origin timed out' });
  t.equal(w.probes.length, before, 'no second probe when the origin is known to be down');
  w.users.splice(0, 1, B);
  const other = await refusedWith(w.authorize());
  t.same([other.status, other.code], [503, 'UNAVAILABLE'], 'a pod that never had access gets nothing');
  w.users.splice(0, 1, A);
  w.advance(600_000);
  const late = await refusedWith(w.authorize());
  t.same([late.status, late.code], [503, 'UNAVAILABLE'], 'past the grace: refused');
});

t.test('origin down, refuse: refused once the confirmation is older than --auth-ttl', async (t) => {
  const w = world({ policy: 'refuse' });
  w.privacy.set(T.registry, T.repository, 'private', 0);
  w.users.push(A);
  w.access.observe(T, 'manifest', 'v1', credA);
  w.answer(() => ({ status: 503, credential: undefined }));
  await w.authorize();
  t.equal(w.probes.length, 0, 'within --auth-ttl the origin is not asked');
  w.advance(61_000);
  const err = await refusedWith(w.authorize());
  t.equal(err.status, 503);
  t.equal(err.code, 'UNAVAILABLE');
  t.match(err.message, /refuses private images while the origin cannot confirm access/);
});

t.test('unknown privacy with the origin down counts as private', async (t) => {
  const w = world();
  w.users.push(A);
  w.answer(() => new UpstreamError(T.registry, 'ECONNREFUSED'));
  const err = await refusedWith(w.authorize());
  t.same([err.status, err.code], [503, 'UNAVAILABLE']);
  t.equal(w.privacy.get(T.registry, T.repository), undefined, 'still unknown');
});

t.test('a credential accepted for a repository of unknown privacy: one anonymous HEAD in the background', async (t) => {
  const w = world();
  w.users.push(A);
  w.answer((req) => ({ status: req.anonymousOnly ? 401 : 200, credential: undefined }));
  w.access.observe(T, 'manifest', 'sha256:' + 'b'.repeat(64), credA);
  w.access.observe(T, 'blob', 'sha256:' + 'c'.repeat(64), credA);
  await new Promise((r) => setTimeout(r, 30));
  t.same(
    w.probes.map((p) => p.anonymousOnly),
    [true],
  );
  t.equal(w.privacy.get(T.registry, T.repository), 'private');
});

t.test('the privacy record survives a restart', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pt-privacy-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'access', 'privacy.json');
  const one = new PrivacyBook({ file, saveDelayMs: 1 });
  one.set('reg.example.com', 'team/app', 'private', 1);
  one.set('docker.io', 'library/nginx', 'public', 2);
  one.flush();
  const two = new PrivacyBook({ file });
  t.equal(two.get('reg.example.com', 'team/app'), 'private');
  t.equal(two.get('docker.io', 'library/nginx'), 'public');
  t.equal(two.get('docker.io', 'library/alpine'), undefined);
  t.notMatch(readFileSync(file, 'utf8'), /password|auth/i);
  const errors: string[] = [];
  const broken = join(dir, 'broken.json');
  const { writeFileSync } = await import('node:fs');
  writeFileSync(broken, '{not json');
  const three = new PrivacyBook({ file: broken, onError: (op) => errors.push(op) });
  t.equal(three.size, 0);
  t.same(errors, ['load'], 'a broken file is reported, not fatal');
});

t.test('public lasts --auth-ttl: then one anonymous HEAD, and a repository made private is refused', async (t) => {
  const w = world();
  const digest = 'sha256:' + 'd'.repeat(64);
  w.access.observe(T, 'manifest', 'v1', undefined);
  w.advance(59_000);
  await w.access.authorize(T, 'blob', digest, { log: w.log });
  t.equal(w.probes.length, 0, 'within --auth-ttl: no request');
  w.advance(2_000);
  // The owner made it private: anonymous is refused, and this node has no pod with credentials.
  w.answer(
    () => new UpstreamError(T.registry, 'no credential could be used for the registry challenge', { status: 401 }),
  );
  const err = await refusedWith(w.access.authorize(T, 'blob', digest, { log: w.log }));
  t.same([err.status, err.code], [401, 'UNAUTHORIZED'], 'a digest pull is refused');
  t.same(
    w.probes.map((p) => [p.kind, p.reference, p.anonymousOnly]),
    [
      ['blob', digest, true],
      ['blob', digest, false],
    ],
    'one anonymous HEAD, then one with the pods’ credentials',
  );
  t.equal(w.privacy.get(T.registry, T.repository), 'private', 'recorded as private');
  // A pod holding a credential the origin accepts is served.
  w.users.push(A);
  w.answer((req) => (req.anonymousOnly ? { status: 401, credential: undefined } : { status: 200, credential: credA }));
  await w.access.authorize(T, 'blob', digest, { log: w.log });
  t.equal(w.counts['probed granted'], 1);
});

t.test('public, older than --auth-ttl, origin down: still served as public', async (t) => {
  const w = world();
  w.access.observe(T, 'manifest', 'v1', undefined);
  w.advance(120_000);
  w.answer(() => new UpstreamError(T.registry, 'ECONNREFUSED'));
  await w.authorize();
  await w.authorize({ originUnreachable: 'origin timed out' });
  t.equal(w.privacy.get(T.registry, T.repository), 'public');
  t.equal(w.counts['refused origin-unreachable'], undefined, 'no refusal');
});

t.test('a tag answered to a credential while "public" is fresh: one anonymous HEAD re-checks it', async (t) => {
  const w = world();
  w.access.observe(T, 'manifest', 'v1', undefined);
  w.answer((req) => ({ status: req.anonymousOnly ? 401 : 200, credential: undefined }));
  w.access.observe(T, 'blob', 'sha256:' + 'e'.repeat(64), credA);
  await new Promise((r) => setTimeout(r, 30));
  t.equal(w.probes.length, 0, 'a blob answer does not (public is fresh)');
  w.access.observe(T, 'manifest', 'v1', credA);
  await new Promise((r) => setTimeout(r, 30));
  t.same(
    w.probes.map((p) => [p.reference, p.anonymousOnly]),
    [['v1', true]],
  );
  t.equal(w.privacy.get(T.registry, T.repository), 'private', 'made private by its owner: recorded');
});

t.test('every credential refused, anonymous included: private at once', async (t) => {
  const w = world();
  w.access.observe(T, 'manifest', 'v1', undefined);
  w.access.observeRefused(T);
  t.equal(w.privacy.get(T.registry, T.repository), 'private');
  w.answer(() => ({ status: 401, credential: undefined }));
  const err = await refusedWith(w.authorize());
  t.same([err.status, err.code], [401, 'UNAUTHORIZED']);
});

const NS_PEER = '10.99.0.2';
const nodeOnly: PeerPolicy = { isNode: (a) => a === '127.0.0.1' || a === '10.99.0.1' };

t.test('--private-to=node: a peer that is not the node gets public images only', async (t) => {
  const w = world({ peers: nodeOnly });
  w.users.push(A);
  w.privacy.set(T.registry, T.repository, 'private', 999_000);
  w.access.observe(T, 'manifest', 'v1', credA);
  await w.authorize(undefined, '127.0.0.1');
  await w.authorize(undefined, '10.99.0.1');
  await w.admit('127.0.0.1');
  t.equal(w.probes.length, 0, 'the node: confirmed, served');
  for (const attempt of [() => w.authorize(undefined, NS_PEER), () => w.admit(NS_PEER), () => w.authorize()]) {
    const err = await refusedWith(attempt());
    t.same([err.status, err.code], [401, 'UNAUTHORIZED'], 'another peer (or none known): refused');
    t.match(err.message, /served only to this node itself/);
    t.same(err.headers, {}, 'no WWW-Authenticate');
  }
  t.equal(w.probes.length, 0, 'a fresh "private" record decides without asking the origin');
  const line = w.lines.find((l) => l.msg.includes('does not come from this node'));
  t.equal(line?.obj.peer, NS_PEER, 'the log line names the peer');
  t.equal(line?.obj.reason, 'not-node');
  t.equal(w.counts['refused not-node'], 3);

  const P = { registry: T.registry, repository: 'library/pub' };
  w.access.observe(P, 'manifest', 'v1', undefined);
  await w.access.admit(P, 'manifest', 'v1', { log: w.log, peer: NS_PEER });
  await w.access.authorize(P, 'blob', 'sha256:' + 'f'.repeat(64), { log: w.log, peer: NS_PEER });
  t.equal(w.probes.length, 0, 'public: served to anyone, no request');
});

t.test('--private-to=node, unknown privacy: one anonymous HEAD for concurrent requests decides', async (t) => {
  const w = world({ peers: nodeOnly });
  w.answer(() => ({ status: 200, credential: undefined }));
  await Promise.all([1, 2, 3].map(() => w.admit(NS_PEER)));
  t.same(
    w.probes.map((p) => p.anonymousOnly),
    [true],
  );
  w.advance(61_000);
  w.answer(() => ({ status: 401, credential: undefined }));
  const err = await refusedWith(w.admit(NS_PEER));
  t.same([err.status, err.code], [401, 'UNAUTHORIZED'], 'made private: refused after --auth-ttl');
  w.advance(61_000);
  w.answer(() => new UpstreamError(T.registry, 'ECONNREFUSED'));
  t.same((await refusedWith(w.admit(NS_PEER))).code, 'UNAUTHORIZED', 'private when last seen, origin down: refused');
});

t.test('LocalPeers: loopback, the interfaces’ addresses (re-read when one is unknown), nothing else', async (t) => {
  let now = 0;
  let addresses = ['127.0.0.1', '::1', '192.168.7.3', 'fe80::1'];
  let reads = 0;
  const peers = new LocalPeers({
    read: () => {
      reads++;
      return addresses;
    },
    refreshMs: 1000,
    now: () => now,
  });
  t.ok(peers.isNode('127.0.0.1'));
  t.ok(peers.isNode('127.3.4.5'), 'all of 127/8');
  t.ok(peers.isNode('::ffff:127.0.0.1'), 'IPv4-mapped');
  t.ok(peers.isNode('::1'));
  t.equal(reads, 0, 'loopback needs no interface list');
  t.ok(peers.isNode('192.168.7.3'));
  t.ok(peers.isNode('::ffff:192.168.7.3'));
  t.ok(peers.isNode('FE80::1%eth0'), 'case and zone ignored');
  t.notOk(peers.isNode('192.168.7.4'));
  t.notOk(peers.isNode(undefined), 'an unknown peer is not the node');
  t.notOk(peers.isNode('::ffff:10.0.0.9'));
  t.equal(reads, 1, 'read once within the refresh interval');
  addresses = [...addresses, '10.0.0.9'];
  now = 1500;
  t.ok(peers.isNode('10.0.0.9'), 'a new interface address, after the refresh interval');
  t.equal(reads, 2);
});
