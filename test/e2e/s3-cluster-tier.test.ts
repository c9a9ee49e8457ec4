/**
 * The cluster tier on object storage, and the S3 overlay's rolling update, with real parts: two
 * cache registry replicas as manifests/overlays/s3-registry runs them on one radosgw bucket,
 * behind a TCP balancer standing in for their Service (test/helpers/s3-lab.ts); a cluster proxy
 * and two node proxies on that registry; a real containerd.
 *
 * - Two nodes pull one cold image at once: the origin serves each blob once, the blobs land in
 *   the bucket; a warm pull through a node proxy is answered with the registry's redirects (no
 *   blob bytes through the node proxy); with the origin stopped the image still pulls.
 * - The overlay's rolling update (maxSurge 1, maxUnavailable 0, readiness on /v2/, preStop,
 *   http.draintimeout, terminationGracePeriodSeconds) replayed on the replicas while containerd
 *   and HTTP clients pull warm and cold images in loops: no pull fails, every blob verified, and
 *   no proxy warns (none went around the cache). Then a replica killed (SIGKILL) while the loops
 *   run: the pulls complete.
 * - A request a replica holds when it is killed is sent again and answered by another.
 *
 * The balancer here does not retry a refused connection: a Service's endpoint that refuses fails
 * the client's connection.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { MANIFEST_ACCEPT } from '../../src/oci/media-types.js';
import { accessLog, Lab, type Image } from '../helpers/lab.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { eventually } from '../helpers/wait.js';
import { renderS3Registry } from '../manifests/s3-overlay.js';
import { s3StoreFor, startBalancer, startReplica, startS3, type Balancer, type S3Keys } from '../helpers/s3-lab.js';

/** s3-up.sh takes S3..S3+12. */
const S3 = 15590;
const ORIGIN = 15603;
const FRONT = 15604;
const S3_FRONT = 15605;
const BALANCER = 15606;
const R1 = 15607;
const R2 = 15608;
/** The replicas a rolling update brings up. */
const R3 = 15609;
const R4 = 15610;
const TIER = 15611;
const NODE1 = 15612;
const NODE2 = 15613;
const CRI = 15614;

const lab = new Lab('s3-cluster-tier');
const agent = new Agent({ connect: { timeout: 2000 } });
const s3Front = `127.0.0.1:${S3_FRONT}`;
const originHost = `127.0.0.1:${FRONT}`;
const enc = `127.0.0.1_${FRONT}`;
const cacheUrl = `http://127.0.0.1:${BALANCER}`;
const tierUrl = `http://127.0.0.1:${TIER}`;
const replicas: string[] = [];
const started: TestProxy[] = [];
let s3Up = false;
let keys: S3Keys;
let balancer: Balancer | undefined;
let originFront = '';
let app: Image;
let origin: { url: string; host: string };

t.teardown(async () => {
  for (const p of started) await p.stop();
  await balancer?.close();
  await agent.close();
  for (const r of replicas) await lab.down(r);
  // Started with lab.script, so not in the lab's own list: stopped before cleanup removes its directory.
  if (s3Up) await lab.down('s3');
  await lab.cleanup();
});

async function replica(name: string, port: number, s3Endpoint = `http://${s3Front}`): Promise<void> {
  replicas.push(name);
  await startReplica(lab, name, port, s3Endpoint, keys);
}

const common = () => [
  '--cache-registry',
  cacheUrl,
  // The origin, and the object store the cache registry redirects to: both on loopback.
  '--insecure-registries',
  `${originHost},${s3Front}`,
  '--cache-timeout',
  '5s',
  '--cluster-proxy',
  tierUrl,
];

async function proxyOn(port: number, name: string, more: string[] = []): Promise<TestProxy> {
  const p = await startProxy(['--data-dir', lab.tempDir(`pt-${name}`), ...common(), ...more], { port });
  started.push(p);
  return p;
}

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/**
 * What a client that follows redirects does: the manifest by tag, then its config and layers,
 * each checked. Returns the status the proxy gave each blob GET.
 */
async function pull(p: TestProxy, repo: string, tag: string, digest?: string): Promise<number[]> {
  const m = await request(`${p.url}/v2/${enc}/${repo}/manifests/${tag}`, {
    headers: { accept: MANIFEST_ACCEPT },
    dispatcher: agent,
  });
  const bytes = Buffer.from(await m.body.arrayBuffer());
  if (m.statusCode !== 200) throw new Error(`manifest ${m.statusCode}: ${bytes.toString().slice(0, 300)}`);
  if (digest !== undefined && sha(bytes) !== digest) throw new Error(`manifest of ${repo} arrived corrupt`);
  const manifest = JSON.parse(bytes.toString()) as { config: { digest: string }; layers: { digest: string }[] };
  const statuses: number[] = [];
  for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
    const b = await request(`${p.url}/v2/${enc}/${repo}/blobs/${d}`, { dispatcher: agent });
    statuses.push(b.statusCode);
    let body: Buffer;
    if (b.statusCode === 307) {
      await b.body.dump();
      const to = await request(String(b.headers.location), { dispatcher: agent });
      body = Buffer.from(await to.body.arrayBuffer());
      if (to.statusCode !== 200) throw new Error(`blob ${d}: the redirect target answered ${to.statusCode}`);
    } else {
      body = Buffer.from(await b.body.arrayBuffer());
      if (b.statusCode !== 200) throw new Error(`blob ${d} ${b.statusCode}: ${body.toString().slice(0, 300)}`);
    }
    if (sha(body) !== d) throw new Error(`blob ${d} arrived corrupt`);
  }
  return statuses;
}

/** GETs that reached the origin, by path (manifests and blobs of `repo`). */
function originGets(repo: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const e of accessLog(originFront)) {
    if (e.method !== 'GET' || !e.uri.startsWith(`/v2/${repo}/`)) continue;
    const path = e.uri.split('?')[0] as string;
    counts.set(path, (counts.get(path) ?? 0) + 1);
  }
  return counts;
}

async function servedBytes(p: TestProxy): Promise<number> {
  return (await p.metrics.bytesServed.get()).values.reduce((sum, v) => sum + v.value, 0);
}

t.before(async () => {
  keys = await startS3(lab, S3);
  s3Up = true;
  await lab.logproxy('s3-front', S3_FRONT, `http://127.0.0.1:${S3}`);
  origin = await lab.registry('origin', ORIGIN);
  originFront = (await lab.logproxy('origin-front', FRONT, origin.url)).log;
  app = await lab.image(origin.host, 'library/app', 'v1', ['--layers', '4', '--layer-mb', '4']);
  await replica('r1', R1);
  await replica('r2', R2);
  balancer = await startBalancer(BALANCER, [R1, R2], { retryRefused: false });
});

t.test('the cluster tier on object storage', async (t) => {
  const tier = await proxyOn(TIER, 'tier', ['--cluster-self', tierUrl]);
  const n1 = await proxyOn(NODE1, 'node1');
  const n2 = await proxyOn(NODE2, 'node2');
  await lab.containerd('node', CRI);
  const ref = `${n1.host}/${enc}/library/app:v1`;

  t.test('two nodes pull a cold image at once: one origin fetch of each blob, stored in the bucket', async (t) => {
    const [cri, http] = await Promise.all([lab.criPull('node', ref), pull(n2, 'library/app', 'v1')]);
    t.notOk(cri.error, `containerd pulled through node 1: ${cri.error ?? ''} ${cri.details ?? ''}`);
    t.equal(http.length, app.layers.length + 1, 'a client pulled the whole image through node 2, verified');
    await tier.settle(180_000);
    for (const n of [n1, n2]) await n.settle(180_000);
    const blobs = [...originGets('library/app')].filter(([path]) => path.includes('/blobs/'));
    t.equal(blobs.length, app.layers.length + 1, 'the config and every layer came from the origin');
    t.same(
      blobs.filter(([, n]) => n !== 1),
      [],
      'each blob once',
    );
    const bucket = s3StoreFor(`http://127.0.0.1:${R2}`, agent);
    for (const l of app.layers) {
      t.ok(await bucket.statBlob(`${enc}/library/app`, l), `layer ${l.slice(7, 19)} is in the bucket`);
    }
    const stored = await request(`http://127.0.0.1:${R1}/v2/${enc}/library/app/manifests/${app.digest}`, {
      headers: { accept: MANIFEST_ACCEPT },
      dispatcher: agent,
    });
    await stored.body.dump();
    t.equal(stored.statusCode, 200, 'the manifest is stored');
    const failed = [tier, n1, n2].flatMap((p) =>
      p.logs().filter((l) => /could not persist|not stored|fill failed/.test(String(l.msg))),
    );
    t.same(failed, [], 'no proxy failed to store anything');
  });

  t.test('a warm pull through a node proxy is answered with redirects', async (t) => {
    await lab.removeImage('node', ref);
    const servedBefore = await servedBytes(n1);
    const linesBefore = n1.logs().length;
    const r = await lab.criPull('node', ref);
    t.notOk(r.error, `warm pull: ${r.error ?? ''} ${r.details ?? ''}`);
    const gets = n1
      .logs()
      .slice(linesBefore)
      .filter((l) => l.msg === 'request' && l.method === 'GET' && String(l.path).includes('/blobs/'));
    t.equal(gets.length, app.layers.length + 1, 'containerd asked node 1 for the config and every layer');
    t.ok(
      gets.every((l) => l.status === 307 && l.source === 'cache' && l.bytes === 0),
      'each answered with the registry redirect',
    );
    const served = (await servedBytes(n1)) - servedBefore;
    t.ok(served < 64 * 1024, `node 1 served ${served} bytes: manifests only`);
    const n2Before = await servedBytes(n2);
    const statuses = await pull(n2, 'library/app', 'v1');
    t.same(
      statuses.filter((s) => s !== 307),
      [],
      'node 2 redirects every blob too',
    );
    t.ok((await servedBytes(n2)) - n2Before < 64 * 1024, 'and serves no blob bytes');
  });

  t.test('the origin stopped: the image still pulls', async (t) => {
    await lab.down('origin-front');
    await lab.removeImage('node', ref);
    const r = await lab.criPull('node', ref);
    t.notOk(r.error, `pull with the origin stopped: ${r.error ?? ''} ${r.details ?? ''}`);
    const statuses = await pull(n2, 'library/app', 'v1');
    t.equal(statuses.length, app.layers.length + 1, 'a client pulls it through node 2, verified');
  });

  t.test('a rolling update while pulls run: no pull fails', async (t) => {
    const { rollout } = renderS3Registry();
    // The sequence below is the Deployment's for these settings: a new replica first (surge),
    // an old one taken out only once the new one is ready.
    t.same(
      [rollout.type, rollout.maxSurge, rollout.maxUnavailable, rollout.readinessPath],
      ['RollingUpdate', 1, 0, '/v2/'],
      'the overlay replaces one replica at a time, the new one ready first',
    );
    const preStopMs = Number(/^\d+$/.exec(rollout.preStop?.at(-1) ?? '')?.[0] ?? 0) * 1000;
    const graceMs = (rollout.terminationGracePeriodSeconds ?? 30) * 1000;
    t.ok(preStopMs > ENDPOINTS_LAG_MS, `a stopping replica keeps answering (preStop ${preStopMs} ms)`);

    originFront = (await lab.logproxy('origin-front', FRONT, origin.url)).log;
    const warm = await Promise.all(
      ['warm-a', 'warm-b'].map((r) =>
        lab.image(origin.host, `library/${r}`, 'v1', ['--layers', '2', '--layer-mb', '1']),
      ),
    );
    const cold: Image[] = [];
    for (let i = 0; i < 8; i += 4) {
      cold.push(
        ...(await Promise.all(
          [0, 1, 2, 3].map((j) =>
            lab.image(origin.host, `library/cold-${i + j}`, 'v1', ['--layers', '1', '--layer-mb', '1']),
          ),
        )),
      );
    }
    for (const w of warm) await pull(n2, repoOf(w), 'v1', w.digest);
    await tier.settle(120_000);
    await n2.settle(120_000);

    const loops = startLoops(warm, cold);
    let upstreams = [R1, R2];
    const setUpstreams = (ports: number[]) => {
      upstreams = ports;
      balancer?.setUpstreams(ports);
    };
    const phases: { what: string; from: number; to: number; warnings: string[] }[] = [];
    const proxies = [tier, n1, n2];
    /** From now on, the proxies' warnings (a failing cache registry: they then go to the origin). */
    const warningsFrom = () => {
      const marks = proxies.map((p) => p.logs().length);
      return () =>
        proxies.flatMap((p, i) =>
          p
            .logs()
            .slice(marks[i])
            .filter((l) => Number(l.level) >= 40)
            .map((l) => JSON.stringify({ msg: l.msg, op: l.op, err: l.err })),
        );
    };
    for (const [old, next] of [
      [
        { name: 'r1', port: R1 },
        { name: 'r3', port: R3 },
      ],
      [
        { name: 'r2', port: R2 },
        { name: 'r4', port: R4 },
      ],
    ] as const) {
      const from = Date.now();
      const warningsSince = warningsFrom();
      // Surge: the new pod starts; the readiness probe (its /v2/ answering) puts it in the endpoints.
      await replica(next.name, next.port);
      setUpstreams([...upstreams, next.port]);
      // The old pod is deleted: the endpoints controller drops it a moment later, meanwhile its
      // preStop runs; then SIGTERM, and SIGKILL once the grace period is over.
      const dropped = sleep(ENDPOINTS_LAG_MS).then(() => setUpstreams(upstreams.filter((p) => p !== old.port)));
      await sleep(preStopMs);
      await dropped;
      const how = await terminate(old.name, graceMs - preStopMs);
      phases.push({
        what: `${old.name} -> ${next.name} (${how})`,
        from,
        to: Date.now(),
        warnings: warningsSince(),
      });
    }

    // A crash: the container is killed; the endpoints drop it once the kubelet sees it, and the
    // restarted container is put back when ready.
    const from = Date.now();
    const crashWarnings = warningsFrom();
    process.kill(pidOf('r3'), 'SIGKILL');
    await sleep(ENDPOINTS_LAG_MS);
    setUpstreams(upstreams.filter((p) => p !== R3));
    await replica('r3-restarted', R3);
    setUpstreams([...upstreams, R3]);
    await loops.after(Date.now());
    const crash = { what: 'r3 killed and restarted', from, to: Date.now(), warnings: crashWarnings() };

    const { done, failures } = await loops.stop();
    for (const ph of [...phases, crash]) {
      const during = done.filter((d) => d.end > ph.from && d.start < ph.to);
      const kinds = new Set(during.map((d) => d.what));
      t.comment(`${ph.what}: ${during.length} pulls in ${ph.to - ph.from} ms`);
      t.same([...kinds].sort(), ['cold', 'containerd', 'warm'], `${ph.what}: every kind of pull ran across it`);
    }
    t.same(failures, [], `no pull failed (${done.length} pulls, every blob verified)`);
    // A graceful replacement costs the cache nothing: no request reached a replica that had
    // stopped listening, so no proxy went around the cache registry.
    for (const ph of phases) t.same(ph.warnings, [], `${ph.what}: no proxy warned (the cache answered throughout)`);
    t.comment(`warnings across the crash: ${crash.warnings.join('; ') || 'none'}`);
    await tier.settle(180_000);
    for (const n of [n1, n2]) await n.settle(180_000);
    const bucket = s3StoreFor(cacheUrl, agent);
    for (const c of cold) {
      for (const l of c.layers) {
        const opened = await bucket.openBlob(repoOf(c), l);
        if (!opened) continue;
        const hash = createHash('sha256');
        for await (const chunk of opened.stream) hash.update(chunk as Buffer);
        t.equal(`sha256:${hash.digest('hex')}`, l, `${repoOf(c)}: what the bucket holds is whole`);
      }
    }
  });

  t.test('a replica killed while it answers: the store asks again on another connection', async (t) => {
    // The ports of the replicas the rolling update replaced: a replica whose object store accepts
    // and never answers holds a request until it is killed.
    const hang = await lab.logproxy('s3-hang', R1, `http://127.0.0.1:${S3}`, ['--hang']);
    await replica('stuck', R2, `http://127.0.0.1:${R1}`);
    const fresh = new Agent({ connect: { timeout: 2000 } });
    t.teardown(() => fresh.close());
    // A store with no connection yet: its first one goes to the stuck replica.
    const store = s3StoreFor(cacheUrl, fresh);
    balancer?.setUpstreams([R2]);
    const layer = app.layers[0] as string;
    const stat = store.statBlob(`${enc}/library/app`, layer).then(
      (v) => v,
      (err: unknown) => (err instanceof Error ? err : new Error(String(err))),
    );
    await eventually(
      () => readFileSync(hang.log, 'utf8').trim().length > 0,
      'the stuck replica asked its object store',
      30_000,
    );
    // Its endpoint dropped, as for a pod whose container died; then the container dies.
    balancer?.setUpstreams([R3, R4]);
    process.kill(pidOf('stuck'), 'SIGKILL');
    const got = await stat;
    t.ok(
      !(got instanceof Error) && (got?.size ?? 0) > 0,
      `the stat is answered by another replica: ${got instanceof Error ? got.message : JSON.stringify(got)}`,
    );
  });

  /** One kind of pull, and when it ran. */
  interface Done {
    readonly what: 'containerd' | 'warm' | 'cold';
    readonly start: number;
    readonly end: number;
  }

  /**
   * Pulls in loops until stopped: containerd through node 1 (the warm app: removed, pulled again),
   * a client of the warm images through node 2, a client of a new cold image each round (then
   * round again) through node 1 and node 2 in turn.
   */
  function startLoops(warm: Image[], cold: Image[]) {
    let running = true;
    const done: Done[] = [];
    const failures: string[] = [];
    const waiters: { at: number; kinds: Set<string>; resolve: () => void }[] = [];
    const loop = async (what: Done['what'], once: (i: number) => Promise<void>) => {
      for (let i = 0; running; i++) {
        const start = Date.now();
        try {
          await once(i);
          done.push({ what, start, end: Date.now() });
          for (const w of waiters) {
            if (start >= w.at) w.kinds.add(what);
            if (w.kinds.size === 3) w.resolve();
          }
        } catch (err) {
          failures.push(`${what} #${i}: ${String(err)}`);
        }
      }
    };
    const all = Promise.all([
      loop('containerd', async () => {
        await lab.removeImage('node', ref);
        const r = await lab.criPull('node', ref);
        if (r.error) throw new Error(`${r.error} ${r.details ?? ''}`);
      }),
      loop('warm', async (i) => {
        const w = warm[i % warm.length] as Image;
        await pull(n2, repoOf(w), 'v1', w.digest);
      }),
      loop('cold', async (i) => {
        const c = cold[i % cold.length] as Image;
        await pull(i % 2 === 0 ? n1 : n2, repoOf(c), 'v1', c.digest);
      }),
    ]);
    return {
      /** Resolves once each kind of pull has completed one that started at `at` or later. */
      after: (at: number) => new Promise<void>((resolve) => waiters.push({ at, kinds: new Set(), resolve })),
      stop: async () => {
        running = false;
        await all;
        return { done, failures };
      },
    };
  }
});

/** How long after a pod's deletion the Service stops routing new connections to it. */
const ENDPOINTS_LAG_MS = 1000;

const repoOf = (i: Image) => i.ref.replace(/^[^/]+\//, '').replace(/:[^:]+$/, '');

function pidOf(name: string): number {
  return Number(readFileSync(join(lab.dir, name, 'registry.pid'), 'utf8').trim());
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** The kubelet's stop after preStop: SIGTERM, SIGKILL when the rest of the grace period is over. */
async function terminate(name: string, graceMs: number): Promise<string> {
  const pid = pidOf(name);
  const until = Date.now() + graceMs;
  process.kill(pid, 'SIGTERM');
  while (alive(pid)) {
    if (Date.now() > until) {
      process.kill(pid, 'SIGKILL');
      return 'killed after the grace period';
    }
    await sleep(100);
  }
  return 'exited on SIGTERM';
}
