/**
 * The cluster tier's choice of replica: rendezvous hashing (every node picks the same owner, and
 * losing a replica moves only its own objects), replicas cooling down are skipped, and a headless
 * Service's name stands for every address it resolves to.
 */
import t from 'tap';
import { Agent } from 'undici';
import { baseUrl, ClusterTier, ReplicaList } from '../../src/proxy/cluster-tier.js';

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
