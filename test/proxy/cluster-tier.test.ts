/**
 * The cluster tier's choice of replica: rendezvous hashing (every node picks the same owner, and
 * losing a replica moves only its own objects), replicas cooling down are skipped, and a headless
 * Service's name stands for every address it resolves to. A private object (the replica answers
 * 401 without a credential) is asked again with the node's own credential for that request, and
 * at once for that repository afterwards; a HEAD never carries one. The replica here is a small
 * HTTP server that answers as a cluster proxy does (test/e2e/cluster-tier-hop.test.ts runs real
 * ones).
 */
import t from 'tap';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent } from 'undici';
import {
  baseUrl,
  ClusterTier,
  HOP_AUTHORIZATION_HEADER,
  ReplicaList,
  SOURCE_HEADER,
} from '../../src/proxy/cluster-tier.js';
import { resolveTarget } from '../../src/proxy/target.js';
import { parseHostList } from '../../src/oci/host-pattern.js';

const replicas = ['http://10.0.0.1:7439', 'http://10.0.0.2:7439', 'http://10.0.0.3:7439'];
const keys = Array.from({ length: 300 }, (_, i) => `docker.io/library/app@sha256:${String(i).padStart(64, '0')}`);

const tier = (now = () => 0) =>
  new ClusterTier({ replicas: new ReplicaList([]), dispatcher: new Agent(), cooldownMs: 1000, now });

t.test('every node picks the same owner, and the objects spread over the replicas', async (t) => {
  const a = tier();
  const b = tier();
  const owners = keys.map((k) => a.pick(replicas, k));
  t.same(
    keys.map((k) => b.pick([...replicas].reverse(), k)),
    owners,
    'the same owner whatever the order of the list',
  );
  for (const r of replicas) {
    const share = owners.filter((o) => o === r).length;
    t.ok(share > 50, `${r} owns ${share} of ${keys.length}`);
  }
});

t.test('losing a replica moves only the objects it owned', async (t) => {
  const a = tier();
  const lost = replicas[1] as string;
  const rest = replicas.filter((r) => r !== lost);
  for (const k of keys) {
    const before = a.pick(replicas, k);
    const after = a.pick(rest, k);
    if (before !== lost) t.equal(after, before, `${k.slice(-6)} stays`);
  }
  t.end();
});

t.test('a replica list resolves host names to every address, and keeps IP addresses as given', async (t) => {
  const asked: string[] = [];
  const list = new ReplicaList(
    [new URL('http://peers.pullthrough.svc:7439'), new URL('http://10.9.9.9:7000/')],
    async (host) => {
      asked.push(host);
      return ['10.0.0.2', 'fd00::5'];
    },
  );
  t.same(await list.current(), ['http://10.0.0.2:7439', 'http://[fd00::5]:7439', 'http://10.9.9.9:7000']);
  t.same(asked, ['peers.pullthrough.svc']);
  t.equal(baseUrl(new URL('http://10.0.0.7:7439/')), 'http://10.0.0.7:7439', 'a self URL compares as a replica');
});

t.test(
  'a private object is asked again with the node credential, at once next time; a HEAD never with one',
  async (t) => {
    const seen: { method: string; hop: string | undefined }[] = [];
    const server = createServer((req, res) => {
      const hop = req.headers[HOP_AUTHORIZATION_HEADER] as string | undefined;
      seen.push({ method: req.method ?? '', hop });
      res.writeHead(hop === 'Bearer pod-token' ? 200 : 401, { [SOURCE_HEADER]: 'origin', 'content-length': '2' });
      res.end(req.method === 'HEAD' ? undefined : 'ok');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    t.teardown(() => server.close());
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const asked: string[] = [];
    const dispatcher = new Agent();
    t.teardown(() => dispatcher.close());
    const node = new ClusterTier({
      replicas: new ReplicaList([new URL(url)]),
      dispatcher,
      cooldownMs: 1000,
      authorize: async (_t, kind, reference) => {
        asked.push(`${kind} ${reference}`);
        return 'Bearer pod-token';
      },
    });
    const target = resolveTarget('registry.example/team/app', undefined, parseHostList(['*']), parseHostList([]));
    const digest = `sha256:${'a'.repeat(64)}`;
    const first = await node.request(target, 'GET', 'blob', digest, { ok: [200] });
    t.equal(first?.statusCode, 200, 'served with the credential');
    await first?.body.dump();
    t.same(
      seen,
      [
        { method: 'GET', hop: undefined },
        { method: 'GET', hop: 'Bearer pod-token' },
      ],
      'asked without, then with',
    );
    seen.length = 0;
    const second = await node.request(target, 'GET', 'manifest', 'v1', { ok: [200] });
    await second?.body.dump();
    t.same(seen, [{ method: 'GET', hop: 'Bearer pod-token' }], 'the repository needs one: sent at once');
    seen.length = 0;
    t.equal(await node.request(target, 'HEAD', 'manifest', 'v1', { ok: [200] }), undefined, 'a HEAD: to the origin');
    t.same(seen, [], 'without asking the replica');
    t.same(asked, [`blob ${digest}`, 'manifest v1'], 'a credential per request, none kept');
  },
);
