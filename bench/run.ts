/**
 * npm run bench [-- --quick] [--out FILE] [--reps N] [--only t1,t2] [--rate B/s] [--delay-ms MS]
 *               [--pt-main PATH] [--keep]
 *
 * pullthrough against pulling straight from the origin (direct), distribution's own pull-through
 * cache (anchor) and an nginx proxy_pass relay, on loopback and behind a slow link. Targets are
 * interleaved per repetition; medians with min-max. See docs/performance.md.
 */
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { request } from 'undici';
import { Lab, labAvailable } from '../test/helpers/lab.js';
import {
  OriginLog,
  ProcWatch,
  clientPull,
  curlGet,
  curlMany,
  fmt,
  fmtStat,
  headLoad,
  httpStatus,
  machineCpu,
  pageIn,
  portInUse,
  sleep,
  startChild,
  stat,
  summarize,
  waitFor,
  withChildren,
  type Stat,
} from './lib.js';
import { startNginxRelay } from './nginx-relay.js';
import { startSlowLink } from './slow-link.js';

// ---------------------------------------------------------------- options

const argv = process.argv.slice(2);
const flag = (name: string) => argv.includes(name);
const opt = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const QUICK = flag('--quick');
const REPS = Number(opt('--reps') ?? (QUICK ? 1 : 3));
const OUT = opt('--out');
const ONLY = opt('--only')?.split(',');
const RATE = Number(opt('--rate') ?? 32 * 1024 * 1024);
const DELAY_MS = Number(opt('--delay-ms') ?? 30);
const ROOT = resolve(import.meta.dirname, '..');
const PT_MAIN = resolve(opt('--pt-main') ?? join(ROOT, 'dist/main.js'));
const PT_NODE_ARGS = (process.env.PT_NODE_ARGS ?? '').split(' ').filter(Boolean);
/** The Node flags pullthrough ships with: those of `npm start` (the Dockerfile's are the same, tested). */
const SHIPPED_NODE_FLAGS = (
  JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } }
).scripts.start
  .split(' ')
  .filter((a) => a.startsWith('--'));
const KEEP = flag('--keep');

const SIZES = QUICK
  ? {
      bigMiB: 256,
      midMiB: 64,
      groups: [1, 4, 10, 25, 50].map((mb) => ({ n: 1, mb })),
      tags: 50,
      headSeconds: 2,
      headRampSeconds: 1,
      concurrent: 20,
    }
  : {
      bigMiB: 1024,
      midMiB: 256,
      groups: [1, 4, 10, 25, 50].map((mb) => ({ n: 4, mb })),
      tags: 200,
      headSeconds: 6,
      headRampSeconds: 2,
      concurrent: 20,
    };

const P = {
  origin: 15075,
  anchor: 15076,
  cacheRegistry: 15077,
  ptShared: 15078,
  ptEmbedded: 15079,
  nginx: 15080,
  delay: 15081,
  slow: 15082,
  anchorSlow: 15083,
  criStream: 15084,
};
/** The cluster row: one cluster proxy and up to 8 node proxies (15091-15098). */
const CLUSTER_PROXY = 15090;
const CLUSTER_NODES = Array.from({ length: 8 }, (_, i) => 15091 + i);
/** How many node proxies pull the same cold image at once in the cluster row. */
const CLUSTER_SIZES = [1, 4, 8];
const ORIGIN = `127.0.0.1:${P.origin}`;
const CORES = cpus().length;
const SLOW = `127.0.0.1:${P.slow}`;
const encoded = (host: string) => host.replace(':', '_');

type Regime = 'loop' | 'slow';
const originHost = (r: Regime) => (r === 'loop' ? ORIGIN : SLOW);

const log = (msg: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);

// ---------------------------------------------------------------- lab and targets

if (!labAvailable()) {
  log('the oci-lab (docker-registry, containerd) is not installed: run scripts/bench.sh');
  process.exit(2);
}
const lab = new Lab('bench');
const originLog = new OriginLog(join(lab.dir, 'origin', 'registry.log'));
const children: ChildProcess[] = [];
let originPid = 0;
let containerdPid = 0;
/** The delay responder and nginx's master; nginx's worker is found as the master's child. */
let slowLinkPids: number[] = [];
/** The nginx relay's master; its worker is found as the master's child. */
let nginxPid = 0;

interface Target {
  readonly id: string;
  readonly cache: boolean;
  base(r: Regime): string;
  name(r: Regime, repo: string): string;
  pids(): number[];
  reset(r: Regime): Promise<void>;
  committed(r: Regime, repo: string, digest: string): Promise<boolean>;
  /** The files of the target's own stored copy of these blobs (none for a relay). */
  storedFiles(r: Regime, repo: string, digests: string[]): string[];
}

/** Where distribution's filesystem driver keeps a blob under its data directory. */
const registryBlobFile = (dataDir: string, digest: string) => {
  const hex = digest.split(':')[1] as string;
  return join(dataDir, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
};

/**
 * Before each measured transfer: the origin's copy of its blobs and the target's own are read into
 * the page cache (see `pageIn`), so every target meets the same origin, serving from memory.
 */
const pageInBlobs = (t: Target, r: Regime, repo: string, digests: string[]) =>
  pageIn([
    ...digests.map((d) => registryBlobFile(join(lab.dir, 'origin', 'data'), d)),
    ...t.storedFiles(r, repo, digests),
  ]);

function pidFile(file: string): number {
  try {
    return Number(readFileSync(file, 'utf8').trim());
  } catch {
    return 0;
  }
}

const direct: Target = {
  id: 'direct',
  cache: false,
  base: (r) => `http://${originHost(r)}`,
  name: (_r, repo) => repo,
  pids: () => [originPid],
  reset: async () => undefined,
  committed: async () => true,
  storedFiles: () => [],
};

const nginx: Target = {
  id: 'nginx',
  cache: false,
  base: () => `http://127.0.0.1:${P.nginx}`,
  name: (_r, repo) => repo,
  pids: () => (nginxPid ? withChildren([nginxPid]) : []),
  reset: async () => undefined,
  committed: async () => true,
  storedFiles: () => [],
};

function anchorTarget(): Target {
  const dirs: Record<Regime, string> = { loop: join(lab.dir, 'anchor'), slow: join(lab.dir, 'anchor-slow') };
  return {
    id: 'anchor',
    cache: true,
    base: (r) => `http://127.0.0.1:${r === 'loop' ? P.anchor : P.anchorSlow}`,
    name: (_r, repo) => repo,
    pids: () => [pidFile(join(dirs.loop, 'registry.pid')), pidFile(join(dirs.slow, 'registry.pid'))].filter(Boolean),
    async reset(r) {
      const name = r === 'loop' ? 'anchor' : 'anchor-slow';
      await lab.down(name);
      await lab.registry(name, r === 'loop' ? P.anchor : P.anchorSlow, ['--proxy', `http://${originHost(r)}`]);
    },
    async committed(r, _repo, digest) {
      return existsSync(registryBlobFile(join(dirs[r], 'data'), digest));
    },
    storedFiles: (r, _repo, digests) => digests.map((d) => registryBlobFile(join(dirs[r], 'data'), d)),
  };
}

class Pullthrough implements Target {
  readonly cache = true;
  private child: ChildProcess | undefined;
  private dataDir = '';
  private gen = 0;
  constructor(
    readonly id: 'pt-shared' | 'pt-embedded',
    private readonly port: number,
  ) {}

  base(): string {
    return `http://127.0.0.1:${this.port}`;
  }
  name(r: Regime, repo: string): string {
    return `${encoded(originHost(r))}/${repo}`;
  }
  pids(): number[] {
    return this.child?.pid ? [this.child.pid] : [];
  }

  async start(): Promise<void> {
    this.dataDir = join(lab.dir, `${this.id}-data-${this.gen++}`);
    mkdirSync(this.dataDir, { recursive: true });
    const args = [
      ...SHIPPED_NODE_FLAGS,
      ...PT_NODE_ARGS,
      PT_MAIN,
      'proxy',
      '--listen',
      `127.0.0.1:${this.port}`,
      '--data-dir',
      this.dataDir,
      '--insecure-registries',
      `${ORIGIN},${SLOW}`,
      '--metrics-listen',
      '',
      '--log-level',
      'warn',
      ...(this.id === 'pt-shared' ? ['--cache-registry', `http://127.0.0.1:${P.cacheRegistry}`] : []),
    ];
    const child = startChild(process.execPath, args, join(lab.dir, `${this.id}.log`));
    children.push(child);
    this.child = child;
    await waitFor(
      `${this.id} /healthz`,
      async () => (await httpStatus(`${this.base()}/healthz`, 'GET')) === 200,
      20_000,
    );
  }

  async stop(): Promise<void> {
    const c = this.child;
    if (c?.exitCode !== null) return;
    const running = () => c.exitCode === null && c.signalCode === null;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    await Promise.race([exited, sleep(10_000)]);
    if (running()) c.kill('SIGKILL');
    this.child = undefined;
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  async reset(): Promise<void> {
    await this.stop();
    if (this.id === 'pt-shared') {
      await lab.down('cache');
      await lab.registry('cache', P.cacheRegistry);
    }
    await this.start();
  }

  async committed(r: Regime, repo: string, digest: string): Promise<boolean> {
    const cacheRepo = this.name(r, repo);
    if (this.id === 'pt-shared')
      return (await httpStatus(`http://127.0.0.1:${P.cacheRegistry}/v2/${cacheRepo}/blobs/${digest}`)) === 200;
    const [alg, hex] = digest.split(':') as [string, string];
    return (
      existsSync(join(this.dataDir, 'repos', cacheRepo, '_blobs', alg, hex)) &&
      existsSync(join(this.dataDir, 'blobs', alg, hex))
    );
  }

  storedFiles(_r: Regime, _repo: string, digests: string[]): string[] {
    if (this.id === 'pt-shared') return digests.map((d) => registryBlobFile(join(lab.dir, 'cache', 'data'), d));
    return digests.map((d) => join(this.dataDir, 'blobs', ...(d.split(':') as [string, string])));
  }
}

const anchor = anchorTarget();
const ptShared = new Pullthrough('pt-shared', P.ptShared);
const ptEmbedded = new Pullthrough('pt-embedded', P.ptEmbedded);
const CACHES: Target[] = [anchor, ptShared, ptEmbedded];
/**
 * The caches in the order of repetition `rep`: rotated each time, so that none is always the one
 * measured right after the origin alone (whatever the target before leaves behind, in the page
 * cache or the kernel's writeback, falls on each in turn).
 */
const caches = (rep: number): Target[] => CACHES.map((_, i) => CACHES[(i + rep - 1) % CACHES.length] as Target);

// ---------------------------------------------------------------- seeding

interface Seed {
  big: { repo: string; digest: string; size: number };
  mid: { repo: string; digest: string; size: number };
  multi: { repo: string; tag: string; size: number; blobs: string[]; layers: number };
  small: { repo: string; tags: string[] };
}

async function reg(method: string, path: string, body?: Buffer, headers: Record<string, string> = {}) {
  const url = path.startsWith('http') ? path : `http://${ORIGIN}${path}`;
  const res = await request(url, { method: method as 'GET', body, headers });
  const buf = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, body: buf };
}

async function pushBlob(repo: string, bytes: Buffer): Promise<string> {
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  const start = await reg('POST', `/v2/${repo}/blobs/uploads/`);
  const loc = new URL(String(start.headers.location), `http://${ORIGIN}`);
  loc.searchParams.set('digest', digest);
  const put = await reg('PUT', loc.toString(), bytes, { 'content-type': 'application/octet-stream' });
  if (put.status !== 201) throw new Error(`blob upload: ${put.status}`);
  return digest;
}

async function limit<T>(n: number, jobs: (() => Promise<T>)[]): Promise<T[]> {
  const out: T[] = [];
  let i = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (i < jobs.length) {
        const k = i++;
        out[k] = await (jobs[k] as () => Promise<T>)();
      }
    }),
  );
  return out;
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/**
 * Builds and pushes an image to the origin with the lab's make-image.sh, bounded by 15 minutes
 * rather than the lab's default 2: gzipping and pushing 1 GiB takes longer than that on 2 cores
 * that other work shares.
 */
async function makeImage(repo: string, tag: string, flags: string[]): Promise<{ layers: string[]; mediaType: string }> {
  const out = await lab.script('make-image.sh', [ORIGIN, repo, tag, ...flags], { timeoutMs: 15 * 60_000 });
  // KEY=value lines, values possibly quoted (the lab's own parser reads them the same way).
  const vars = new Map(
    out.split('\n').flatMap((line) => {
      const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
      return m ? [[m[1] as string, (m[2] as string).replace(/^"|"$/g, '')] as const] : [];
    }),
  );
  return { layers: (vars.get('LAYERS') ?? '').split(' ').filter(Boolean), mediaType: vars.get('MEDIATYPE') ?? '' };
}

async function seed(): Promise<Seed> {
  log(
    `seeding the origin: ${SIZES.bigMiB} MiB blob, ${SIZES.midMiB} MiB blob, ` +
      `${SIZES.groups.reduce((a, g) => a + g.n, 0)}-layer image, ${SIZES.tags} tags`,
  );
  const jobs = [
    () => makeImage('bench/big', 'v1', ['--layers', '1', '--layer-mb', String(SIZES.bigMiB)]),
    () => makeImage('bench/mid', 'v1', ['--layers', '1', '--layer-mb', String(SIZES.midMiB)]),
    ...SIZES.groups.map(
      (g, i) => () => makeImage('bench/multi', `g${i}`, ['--layers', String(g.n), '--layer-mb', String(g.mb)]),
    ),
    () => makeImage('bench/small', 'v0', ['--layers', '1', '--layer-mb', '1']),
  ];
  const images = await limit(2, jobs);
  const size = async (repo: string, digest: string) =>
    Number((await reg('HEAD', `/v2/${repo}/blobs/${digest}`)).headers['content-length']);
  const big = images[0]!;
  const mid = images[1]!;
  // The multi-layer image: the groups' layers in one manifest, sizes 1-50 MiB.
  const layers: { mediaType: string; digest: string; size: number }[] = [];
  const diffIds: string[] = [];
  const history: unknown[] = [];
  for (let i = 0; i < SIZES.groups.length; i++) {
    const m = JSON.parse(
      (await reg('GET', `/v2/bench/multi/manifests/g${i}`, undefined, { accept: OCI_MANIFEST })).body.toString(),
    ) as { config: { digest: string }; layers: typeof layers };
    const c = JSON.parse((await reg('GET', `/v2/bench/multi/blobs/${m.config.digest}`)).body.toString()) as {
      rootfs: { diff_ids: string[] };
      history?: unknown[];
    };
    layers.push(...m.layers);
    diffIds.push(...c.rootfs.diff_ids);
    history.push(...(c.history ?? []));
  }
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: {},
      rootfs: { type: 'layers', diff_ids: diffIds },
      history,
    }),
  );
  const configDigest = await pushBlob('bench/multi', config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers,
    }),
  );
  const put = await reg('PUT', '/v2/bench/multi/manifests/v1', manifest, { 'content-type': OCI_MANIFEST });
  if (put.status !== 201) throw new Error(`manifest PUT: ${put.status} ${put.body.toString()}`);
  // Small tags: one small image under many tags.
  const small = images[images.length - 1]!;
  const sm = await reg('GET', `/v2/bench/small/manifests/v0`, undefined, { accept: small.mediaType });
  const tags = Array.from({ length: SIZES.tags }, (_, i) => `t${i}`);
  await limit(
    8,
    tags.map((t) => async () => {
      const r = await reg('PUT', `/v2/bench/small/manifests/${t}`, sm.body, { 'content-type': small.mediaType });
      if (r.status !== 201) throw new Error(`tag PUT ${t}: ${r.status}`);
    }),
  );
  const imageSize = manifest.length + config.length + layers.reduce((a, l) => a + l.size, 0);
  return {
    big: { repo: 'bench/big', digest: big.layers[0]!, size: await size('bench/big', big.layers[0]!) },
    mid: { repo: 'bench/mid', digest: mid.layers[0]!, size: await size('bench/mid', mid.layers[0]!) },
    multi: {
      repo: 'bench/multi',
      tag: 'v1',
      size: imageSize,
      blobs: [configDigest, ...layers.map((l) => l.digest)],
      layers: layers.length,
    },
    small: { repo: 'bench/small', tags },
  };
}

// ---------------------------------------------------------------- samples

interface Sample {
  test: string;
  target: string;
  rep: number;
  values: Record<string, number>;
}
const samples: Sample[] = [];
const record = (test: string, target: string, rep: number, values: Record<string, number>) => {
  samples.push({ test, target, rep, values });
  log(
    `${test} ${target} #${rep}: ${Object.entries(values)
      .map(([k, v]) => `${k}=${fmt(v)}`)
      .join(' ')}`,
  );
};

const GiB = 1024 ** 3;

async function waitCommitted(t: Target, r: Regime, repo: string, digests: string[], maxMs = 180_000): Promise<void> {
  if (!t.cache) return;
  await waitFor(
    `${t.id} to hold ${repo}`,
    async () => {
      for (const d of digests) if (!(await t.committed(r, repo, d))) return false;
      return true;
    },
    maxMs,
    200,
  );
}

const blobUrl = (t: Target, r: Regime, repo: string, digest: string) =>
  `${t.base(r)}/v2/${t.name(r, repo)}/blobs/${digest}`;

async function blobOnce(
  test: string,
  label: string,
  rep: number,
  t: Target,
  r: Regime,
  blob: Seed['big'],
): Promise<void> {
  pageInBlobs(t, r, blob.repo, [blob.digest]);
  const mark = originLog.mark();
  const w = new ProcWatch(t.pids());
  const f = await curlGet(blobUrl(t, r, blob.repo, blob.digest));
  const p = w.finish();
  if (f.status !== 200 || f.bytes !== blob.size)
    throw new Error(`${label}: status ${f.status}, ${f.bytes} of ${blob.size} bytes`);
  await waitCommitted(t, r, blob.repo, [blob.digest]);
  await originLog.settle();
  const o = summarize(originLog.since(mark), blob.digest);
  record(test, label, rep, {
    MBps: f.bytes / f.seconds / 1e6,
    seconds: f.seconds,
    cpuSecPerGiB: t.pids().length ? p.cpuSeconds / (f.bytes / GiB) : NaN,
    // Of it in the kernel: it tells which phase of the benchmark machine a cold figure comes
    // from (docs/performance.md, "The benchmark machine").
    sysCpuSecPerGiB: t.pids().length ? p.sysCpuSeconds / (f.bytes / GiB) : NaN,
    peakRssMiB: t.pids().length ? p.peakRssMiB : NaN,
    rssGrowthMiB: t.pids().length ? p.rssGrowthMiB : NaN,
    originGets: o.blobGets,
    originBytesRatio: o.bytes / blob.size,
  });
}

// 1. The 1 GiB blob: throughput, CPU per GiB, peak RSS; cold and warm.
async function testBlob(s: Seed): Promise<void> {
  for (let rep = 1; rep <= REPS; rep++) {
    for (const t of [direct, nginx, ...caches(rep)]) {
      if (t.cache) {
        await t.reset('loop');
        await blobOnce('blob', `${t.id} cold`, rep, t, 'loop', s.big);
        await blobOnce('blob', `${t.id} warm`, rep, t, 'loop', s.big);
      } else {
        await blobOnce('blob', t.id, rep, t, 'loop', s.big);
      }
    }
  }
}

// 2. Full image pulls by a real containerd (CRI), cold then warm, on loopback or over the slow link.
async function testCri(s: Seed, r: Regime): Promise<void> {
  const test = r === 'loop' ? 'cri' : 'cri-slow';
  const pullOnce = async (label: string, rep: number, t: Target) => {
    const port = new URL(t.base(r)).port;
    const ref = `127.0.0.1:${port}/${t.name(r, s.multi.repo)}:${s.multi.tag}`;
    await lab.removeImage('ctd', ref);
    pageInBlobs(t, r, s.multi.repo, s.multi.blobs);
    const mark = originLog.mark();
    const w = new ProcWatch(t.pids());
    // The disk was synced by the first watcher.
    const ctd = new ProcWatch([containerdPid], { sync: false });
    const link = new ProcWatch(r === 'slow' ? withChildren(slowLinkPids) : [], { sync: false });
    const m0 = machineCpu();
    const res = await lab.criPull('ctd', ref);
    const p = w.finish();
    const c = ctd.finish();
    const l = link.finish();
    const m1 = machineCpu();
    await lab.removeImage('ctd', ref);
    if (res.error) throw new Error(`${label}: ${res.error} ${res.details ?? ''}`);
    await waitCommitted(t, r, s.multi.repo, s.multi.blobs);
    await originLog.settle();
    const o = summarize(originLog.since(mark));
    record(test, label, rep, {
      seconds: res.seconds,
      originRequests: o.requests,
      originBlobGets: o.blobGets,
      originBytesRatio: o.bytes / s.multi.size,
      peakRssMiB: t.pids().length ? p.peakRssMiB : NaN,
      // Where the machine's CPU went during the pull: is it the link or the cores that limit it?
      cpuSeconds: t.pids().length ? p.cpuSeconds : NaN,
      containerdCpuSeconds: c.cpuSeconds,
      ...(r === 'slow' ? { slowLinkCpuSeconds: l.cpuSeconds } : {}),
      machineBusyFraction: (m1.busy - m0.busy) / res.seconds / CORES,
      stealFraction: (m1.steal - m0.steal) / res.seconds / CORES,
    });
  };
  for (let rep = 1; rep <= REPS; rep++) {
    for (const t of [direct, ...caches(rep)]) {
      if (t.cache) {
        await t.reset(r);
        await pullOnce(`${t.id} cold`, rep, t);
        await pullOnce(`${t.id} warm`, rep, t);
      } else await pullOnce(t.id, rep, t);
    }
  }
}

// 3. The same image with a containerd-like client (HEAD tag, manifests, blobs 3 at a time).
async function testClient(s: Seed): Promise<void> {
  const once = async (label: string, rep: number, t: Target) => {
    pageInBlobs(t, 'loop', s.multi.repo, s.multi.blobs);
    const mark = originLog.mark();
    const w = new ProcWatch(t.pids());
    const res = await clientPull(t.base('loop'), t.name('loop', s.multi.repo), s.multi.tag);
    const p = w.finish();
    await waitCommitted(t, 'loop', s.multi.repo, s.multi.blobs);
    await originLog.settle();
    const o = summarize(originLog.since(mark));
    record('client', label, rep, {
      seconds: res.seconds,
      MBps: res.bytes / res.seconds / 1e6,
      originRequests: o.requests,
      originBytesRatio: o.bytes / s.multi.size,
      cpuSecPerGiB: t.pids().length ? p.cpuSeconds / (res.bytes / GiB) : NaN,
      peakRssMiB: t.pids().length ? p.peakRssMiB : NaN,
    });
  };
  for (let rep = 1; rep <= REPS; rep++) {
    for (const t of [direct, ...caches(rep)]) {
      if (t.cache) {
        await t.reset('loop');
        await once(`${t.id} cold`, rep, t);
        await once(`${t.id} warm`, rep, t);
      } else await once(t.id, rep, t);
    }
  }
}

// 4. Warm manifest HEADs: rate, latency, origin requests per lookup.
async function testHead(s: Seed): Promise<void> {
  for (let rep = 1; rep <= REPS; rep++) {
    for (const t of [direct, ...caches(rep)]) {
      const name = t.name('loop', s.small.repo);
      for (const tag of s.small.tags) await httpStatus(`${t.base('loop')}/v2/${name}/manifests/${tag}`);
      await originLog.settle(300);
      const mark = originLog.mark();
      // The same load first, not in the figures: its first second, in a proxy (or a load generator)
      // that has not run this path yet, is JIT warm-up and connection set-up, not lookups.
      const ramp = await headLoad(t.base('loop'), name, s.small.tags, {
        seconds: SIZES.headRampSeconds,
        concurrency: 8,
        maxRequests: 200_000,
      });
      const w = new ProcWatch(t.pids());
      const h = await headLoad(t.base('loop'), name, s.small.tags, {
        seconds: SIZES.headSeconds,
        concurrency: 8,
        maxRequests: 200_000,
      });
      const p = w.finish();
      // One lookup at a time: the latency a single pull sees, without queueing behind 7 others.
      const one = await headLoad(t.base('loop'), name, s.small.tags, {
        seconds: Math.min(3, SIZES.headSeconds),
        concurrency: 1,
        maxRequests: 2000,
      });
      await originLog.settle(300);
      const o = summarize(originLog.since(mark));
      record('head', t.id, rep, {
        perSecond: h.perSecond,
        p50Ms: h.p50Ms,
        p99Ms: h.p99Ms,
        seqP50Ms: one.p50Ms,
        seqP99Ms: one.p99Ms,
        rampP99Ms: ramp.p99Ms,
        errors: h.errors + ramp.errors,
        originRequestsPerLookup: o.requests / (ramp.requests + h.requests + one.requests),
        cpuSeconds: p.cpuSeconds,
      });
    }
  }
}

// 5. 20 concurrent cold pulls of one blob.
async function testConcurrentBlob(s: Seed): Promise<void> {
  for (let rep = 1; rep <= REPS; rep++) {
    for (const t of [direct, ...caches(rep)]) {
      await t.reset('loop');
      pageInBlobs(t, 'loop', s.mid.repo, [s.mid.digest]);
      const mark = originLog.mark();
      const w = new ProcWatch(t.pids());
      const res = await curlMany(blobUrl(t, 'loop', s.mid.repo, s.mid.digest), SIZES.concurrent);
      const p = w.finish();
      await waitCommitted(t, 'loop', s.mid.repo, [s.mid.digest]);
      await originLog.settle();
      const o = summarize(originLog.since(mark), s.mid.digest);
      record('concurrent-blob', t.id, rep, {
        seconds: res.seconds,
        complete: res.results.filter((f) => f.status === 200 && f.bytes === s.mid.size).length,
        originGets: o.blobGets,
        originBytesRatio: o.bytes / s.mid.size,
        peakRssMiB: t.pids().length ? p.peakRssMiB : NaN,
        rssGrowthMiB: t.pids().length ? p.rssGrowthMiB : NaN,
      });
    }
  }
}

// 6. 20 concurrent cold pulls of one image over the slow link (containerd-like clients).
async function testConcurrentImage(s: Seed): Promise<void> {
  for (let rep = 1; rep <= REPS; rep++) {
    for (const t of caches(rep)) {
      await t.reset('slow');
      pageInBlobs(t, 'slow', s.multi.repo, s.multi.blobs);
      const mark = originLog.mark();
      const w = new ProcWatch(t.pids());
      const t0 = performance.now();
      const res = await Promise.allSettled(
        Array.from({ length: SIZES.concurrent }, () =>
          clientPull(t.base('slow'), t.name('slow', s.multi.repo), s.multi.tag),
        ),
      );
      const seconds = (performance.now() - t0) / 1000;
      const p = w.finish();
      await waitCommitted(t, 'slow', s.multi.repo, s.multi.blobs);
      await originLog.settle();
      const o = summarize(originLog.since(mark));
      record('concurrent-image-slow', t.id, rep, {
        seconds,
        complete: res.filter((x) => x.status === 'fulfilled').length,
        originBlobGets: o.blobGets,
        originBytesRatio: o.bytes / s.multi.size,
        peakRssMiB: t.pids().length ? p.peakRssMiB : NaN,
        rssGrowthMiB: t.pids().length ? p.rssGrowthMiB : NaN,
      });
    }
  }
}

// 7. N node proxies sharing one cache registry and one cluster proxy (docs/cluster-tier.md), one
// containerd-like client each, pulling the same cold image at once over the slow link; against
// distribution as the one shared pull-through cache, with N clients.
async function testCluster(s: Seed): Promise<void> {
  const clusterUrl = `http://127.0.0.1:${CLUSTER_PROXY}`;
  for (let rep = 1; rep <= REPS; rep++) {
    for (const n of CLUSTER_SIZES) {
      for (const id of rep % 2 ? ['pt-cluster', 'anchor'] : ['anchor', 'pt-cluster']) {
        let bases: string[];
        let name: string;
        let pids: number[];
        const procs: ChildProcess[] = [];
        /** The node proxies' names (their log files). */
        const ids: string[] = [];
        if (id === 'anchor') {
          await anchor.reset('slow');
          bases = Array.from({ length: n }, () => anchor.base('slow'));
          name = anchor.name('slow', s.multi.repo);
          pids = anchor.pids();
        } else {
          await lab.down('cache');
          await lab.registry('cache', P.cacheRegistry);
          const cluster = ['--cache-registry', `http://127.0.0.1:${P.cacheRegistry}`, '--cluster-proxy', clusterUrl];
          procs.push(await startPt('cluster-proxy', CLUSTER_PROXY, [...cluster, '--cluster-self', clusterUrl]));
          const ports = CLUSTER_NODES.slice(0, n);
          for (const p of ports) {
            ids.push(`cluster-node-${p}`);
            procs.push(await startPt(`cluster-node-${p}`, p, cluster));
          }
          bases = ports.map((p) => `http://127.0.0.1:${p}`);
          name = `${encoded(SLOW)}/${s.multi.repo}`;
          pids = procs.map((c) => c.pid ?? 0);
        }
        pageIn(s.multi.blobs.map((d) => registryBlobFile(join(lab.dir, 'origin', 'data'), d)));
        const mark = originLog.mark();
        const w = new ProcWatch(pids);
        const t0 = performance.now();
        const res = await Promise.allSettled(bases.map((b) => clientPull(b, name, s.multi.tag)));
        const seconds = (performance.now() - t0) / 1000;
        const p = w.finish();
        await originLog.settle();
        const o = summarize(originLog.since(mark));
        for (const c of procs) await stopChild(c);
        // A node that went to the origin itself says so, with the reason (docs/cluster-tier.md).
        const fallbacks = ids.flatMap((p) =>
          readFileSync(join(lab.dir, `${p}.log`), 'utf8')
            .split('\n')
            .filter((l) => l.includes('cluster proxy did not answer')),
        );
        if (fallbacks[0]) log(`${fallbacks.length} tier fallback(s), first: ${fallbacks[0].slice(0, 300)}`);
        record('cluster-slow', `${id} N=${n}`, rep, {
          seconds,
          complete: res.filter((x) => x.status === 'fulfilled').length,
          originBlobGets: o.blobGets,
          originManifestRequests: o.manifestRequests,
          originBytesRatio: o.bytes / s.multi.size,
          tierFallbacks: fallbacks.length,
          cpuSeconds: p.cpuSeconds,
        });
      }
    }
  }
}

/** A pullthrough process for the cluster row, with its own data directory; resolves once healthy. */
async function startPt(id: string, port: number, extra: string[]): Promise<ChildProcess> {
  const dataDir = join(lab.dir, `${id}-data`);
  rmSync(dataDir, { recursive: true, force: true });
  mkdirSync(dataDir, { recursive: true });
  const args = [
    ...SHIPPED_NODE_FLAGS,
    ...PT_NODE_ARGS,
    PT_MAIN,
    'proxy',
    '--listen',
    `127.0.0.1:${port}`,
    '--data-dir',
    dataDir,
    '--insecure-registries',
    `${ORIGIN},${SLOW}`,
    '--metrics-listen',
    '',
    '--log-level',
    'warn',
    ...extra,
  ];
  const logFile = join(lab.dir, `${id}.log`);
  // Its log is this run's only: the row counts the tier fallbacks in it.
  rmSync(logFile, { force: true });
  const child = startChild(process.execPath, args, logFile);
  children.push(child);
  try {
    await waitFor(
      `${id} /healthz`,
      async () => (await httpStatus(`http://127.0.0.1:${port}/healthz`, 'GET')) === 200,
      60_000,
    );
  } catch (err) {
    const tail = existsSync(logFile) ? readFileSync(logFile, 'utf8').slice(-2000) : '';
    throw new Error(`${(err as Error).message}; exit ${child.exitCode ?? child.signalCode ?? 'none'}; log:\n${tail}`);
  }
  return child;
}

async function stopChild(c: ChildProcess): Promise<void> {
  const running = () => c.exitCode === null && c.signalCode === null;
  if (!running()) return;
  const exited = new Promise((r) => c.once('exit', r));
  c.kill('SIGTERM');
  await Promise.race([exited, sleep(10_000)]);
  if (running()) c.kill('SIGKILL');
}

// ---------------------------------------------------------------- report

type Summary = Record<string, Record<string, Record<string, Stat>>>;

function summarizeSamples(): Summary {
  const out: Summary = {};
  for (const smp of samples) {
    const byTarget = (out[smp.test] ??= {});
    const metrics = (byTarget[smp.target] ??= {});
    for (const k of Object.keys(smp.values)) {
      const vals = samples
        .filter((x) => x.test === smp.test && x.target === smp.target)
        .map((x) => x.values[k] as number);
      metrics[k] = stat(vals);
    }
  }
  return out;
}

function table(summary: Summary): string {
  const lines: string[] = [];
  for (const [test, byTarget] of Object.entries(summary)) {
    const metrics = [...new Set(Object.values(byTarget).flatMap((m) => Object.keys(m)))];
    lines.push(`\n### ${test}\n`);
    lines.push(`| target | ${metrics.join(' | ')} |`);
    lines.push(`| --- | ${metrics.map(() => '---').join(' | ')} |`);
    for (const [target, m] of Object.entries(byTarget)) {
      lines.push(`| ${target} | ${metrics.map((k) => (m[k] ? fmtStat(m[k]) : '-')).join(' | ')} |`);
    }
  }
  return lines.join('\n');
}

interface Check {
  target: string;
  value: number;
  goal: string;
  met: boolean;
}

function ratios(summary: Summary): { ratios: Record<string, number>; checks: Check[] } {
  const m = (test: string, target: string, metric: string) => summary[test]?.[target]?.[metric]?.median ?? NaN;
  const r: Record<string, number> = {};
  const checks: Check[] = [];
  const check = (target: string, value: number, goal: string, ok: (v: number) => boolean) => {
    if (Number.isFinite(value)) checks.push({ target, value, goal, met: ok(value) });
  };
  for (const pt of ['pt-shared', 'pt-embedded']) {
    // loopback blob
    r[`${pt} warm blob MB/s / direct`] = m('blob', `${pt} warm`, 'MBps') / m('blob', 'direct', 'MBps');
    r[`${pt} warm blob MB/s / anchor warm`] = m('blob', `${pt} warm`, 'MBps') / m('blob', 'anchor warm', 'MBps');
    r[`${pt} warm blob MB/s / nginx`] = m('blob', `${pt} warm`, 'MBps') / m('blob', 'nginx', 'MBps');
    r[`${pt} cold blob MB/s / direct`] = m('blob', `${pt} cold`, 'MBps') / m('blob', 'direct', 'MBps');
    r[`${pt} cold blob MB/s / anchor cold`] = m('blob', `${pt} cold`, 'MBps') / m('blob', 'anchor cold', 'MBps');
    // pulls
    for (const [test, what] of [
      ['cri', 'containerd pull (loopback)'],
      ['cri-slow', 'containerd pull (slow link)'],
      ['client', 'client pull (loopback)'],
    ] as const) {
      for (const phase of ['cold', 'warm']) {
        r[`${pt} ${phase} ${what} time / direct`] = m(test, `${pt} ${phase}`, 'seconds') / m(test, 'direct', 'seconds');
        r[`${pt} ${phase} ${what} time / anchor ${phase}`] =
          m(test, `${pt} ${phase}`, 'seconds') / m(test, `anchor ${phase}`, 'seconds');
      }
    }
    r[`${pt} HEAD/s / direct`] = m('head', pt, 'perSecond') / m('head', 'direct', 'perSecond');
    r[`${pt} HEAD/s / anchor`] = m('head', pt, 'perSecond') / m('head', 'anchor', 'perSecond');
    r[`${pt} HEAD p99 / direct`] = m('head', pt, 'p99Ms') / m('head', 'direct', 'p99Ms');
    r[`${pt} HEAD p99 / anchor`] = m('head', pt, 'p99Ms') / m('head', 'anchor', 'p99Ms');
    r[`${pt} 20x cold blob wall / direct`] =
      m('concurrent-blob', pt, 'seconds') / m('concurrent-blob', 'direct', 'seconds');
    r[`${pt} 20x cold blob wall / anchor`] =
      m('concurrent-blob', pt, 'seconds') / m('concurrent-blob', 'anchor', 'seconds');
    r[`${pt} 20x cold image (slow) wall / anchor`] =
      m('concurrent-image-slow', pt, 'seconds') / m('concurrent-image-slow', 'anchor', 'seconds');

    check(
      `${pt}: cold containerd pull over the slow link <= 1.05 x direct`,
      r[`${pt} cold containerd pull (slow link) time / direct`] as number,
      '<= 1.05',
      (v) => v <= 1.05,
    );
    check(
      `${pt}: origin bytes, one cold pull (slow link) = 1.0 x image`,
      m('cri-slow', `${pt} cold`, 'originBytesRatio'),
      '1.0',
      (v) => Math.abs(v - 1) < 0.01,
    );
    check(
      `${pt}: origin bytes, 20 concurrent cold image pulls = 1.0 x image`,
      m('concurrent-image-slow', pt, 'originBytesRatio'),
      '1.0',
      (v) => Math.abs(v - 1) < 0.01,
    );
    check(
      `${pt}: origin bytes, 20 concurrent cold blob pulls = 1.0 x blob`,
      m('concurrent-blob', pt, 'originBytesRatio'),
      '1.0',
      (v) => Math.abs(v - 1) < 0.01,
    );
    check(
      `${pt}: origin requests of a warm containerd pull within the tag TTL (slow link)`,
      m('cri-slow', `${pt} warm`, 'originRequests'),
      '0',
      (v) => v === 0,
    );
    check(`${pt}: origin requests per warm tag lookup`, m('head', pt, 'originRequestsPerLookup'), '0', (v) => v === 0);
    check(`${pt}: warm tag lookup p99, one at a time (ms)`, m('head', pt, 'seqP99Ms'), '<= 5', (v) => v <= 5);
    check(`${pt}: warm tag lookup p99, 8 concurrent (ms)`, m('head', pt, 'p99Ms'), '<= 5', (v) => v <= 5);
    check(`${pt}: warm HEAD rate / anchor`, r[`${pt} HEAD/s / anchor`] as number, '>= 5', (v) => v >= 5);
    check(`${pt}: warm HEAD p99 / direct`, r[`${pt} HEAD p99 / direct`] as number, '<= 1.0', (v) => v <= 1);
    check(
      `${pt}: cold blob MB/s / anchor cold`,
      r[`${pt} cold blob MB/s / anchor cold`] as number,
      '>= 0.5',
      (v) => v >= 0.5,
    );
    const rss = Math.max(
      m('blob', `${pt} cold`, 'peakRssMiB'),
      m('blob', `${pt} warm`, 'peakRssMiB'),
      m('concurrent-blob', pt, 'peakRssMiB'),
    );
    check(`${pt}: peak RSS streaming big blobs, 1 and 20 clients (MiB)`, rss, '<= 100', (v) => v <= 100);
    const growth = Math.max(
      m('blob', `${pt} cold`, 'rssGrowthMiB'),
      m('blob', `${pt} warm`, 'rssGrowthMiB'),
      m('concurrent-blob', pt, 'rssGrowthMiB'),
    );
    check(
      `${pt}: RSS growth over idle streaming big blobs, 1 and 20 clients (MiB)`,
      growth,
      '(nothing buffered)',
      (v) => v <= 100,
    );
  }
  check(
    'pt-shared: warm blob MB/s / nginx proxy_pass',
    r['pt-shared warm blob MB/s / nginx'] as number,
    '>= 0.8',
    (v) => v >= 0.8,
  );
  check(
    'pt-embedded: warm blob MB/s / direct',
    r['pt-embedded warm blob MB/s / direct'] as number,
    '>= 0.6',
    (v) => v >= 0.6,
  );
  return { ratios: r, checks };
}

// ---------------------------------------------------------------- main

async function setup(): Promise<void> {
  for (const port of [...Object.values(P), CLUSTER_PROXY, ...CLUSTER_NODES]) {
    if (await portInUse(port))
      throw new Error(
        `127.0.0.1:${port} is already in use: the benchmark needs ports ` +
          `${P.origin}-${P.criStream} and ${CLUSTER_PROXY}-${CLUSTER_PROXY + CLUSTER_NODES.length} free`,
      );
  }
  log(`lab dir ${lab.dir}; pullthrough ${PT_MAIN}; ${QUICK ? 'quick' : 'full'} run, ${REPS} repetition(s)`);
  const o = await lab.registry('origin', P.origin);
  originPid = pidFile(join(o.dir, 'registry.pid'));
  await lab.registry('cache', P.cacheRegistry);
  const relay = startNginxRelay({ dir: join(lab.dir, 'nginx'), port: P.nginx, upstream: ORIGIN });
  children.push(relay);
  nginxPid = relay.pid ?? 0;
  await waitFor(
    'the nginx relay',
    async () => (await httpStatus(`http://127.0.0.1:${P.nginx}/v2/`, 'GET')) === 200,
    20_000,
  );
  const link = startSlowLink({
    dir: join(lab.dir, 'slow-link'),
    port: P.slow,
    delayPort: P.delay,
    upstream: ORIGIN,
    rate: RATE,
    delayMs: DELAY_MS,
    root: ROOT,
  });
  children.push(...link);
  slowLinkPids = link.map((c) => c.pid ?? 0);
  await waitFor('the slow link', async () => (await httpStatus(`http://${SLOW}/v2/`, 'GET')) === 200, 20_000);
  await lab.registry('anchor', P.anchor, ['--proxy', `http://${ORIGIN}`]);
  await lab.registry('anchor-slow', P.anchorSlow, ['--proxy', `http://${SLOW}`]);
  await lab.containerd('ctd', P.criStream);
  containerdPid = pidFile(join(lab.dir, 'ctd', 'containerd.pid'));
  await ptShared.start();
  await ptEmbedded.start();
}

let cleaned = false;
async function teardown(): Promise<void> {
  if (cleaned) return;
  cleaned = true;
  await ptShared.stop().catch(() => undefined);
  await ptEmbedded.stop().catch(() => undefined);
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  if (!KEEP) {
    await lab.cleanup();
    rmSync(lab.dir, { recursive: true, force: true });
  }
}

process.on('SIGINT', () => void teardown().finally(() => process.exit(130)));
process.on('SIGTERM', () => void teardown().finally(() => process.exit(143)));

const TESTS: [string, (s: Seed) => Promise<void>][] = [
  ['blob', testBlob],
  ['client', testClient],
  ['head', testHead],
  ['concurrent-blob', testConcurrentBlob],
  ['cri', (s) => testCri(s, 'loop')],
  ['cri-slow', (s) => testCri(s, 'slow')],
  ['concurrent-image-slow', testConcurrentImage],
  ['cluster', testCluster],
];

async function main(): Promise<number> {
  const started = Date.now();
  await setup();
  const s = await seed();
  log(
    `seeded in ${((Date.now() - started) / 1000).toFixed(0)} s: ` +
      `image ${s.multi.layers} layers, ${(s.multi.size / 2 ** 20).toFixed(0)} MiB`,
  );
  for (const [name, fn] of TESTS) {
    if (ONLY && !ONLY.includes(name)) continue;
    const t0 = Date.now();
    await fn(s);
    log(`${name} done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    // Partial results survive an interrupted run.
    if (OUT) writeFileSync(`${OUT}.partial`, JSON.stringify({ quick: QUICK, reps: REPS, seed: s, samples }, null, 2));
  }
  const summary = summarizeSamples();
  const { ratios: rt, checks } = ratios(summary);
  const out: string[] = [];
  out.push(`# pullthrough benchmark (${QUICK ? 'quick' : 'full'}, ${REPS} rep(s), ${new Date().toISOString()})`);
  out.push(
    `big blob ${(s.big.size / 2 ** 20).toFixed(0)} MiB, concurrent blob ${(s.mid.size / 2 ** 20).toFixed(0)} MiB, ` +
      `image ${s.multi.layers} layers ${(s.multi.size / 2 ** 20).toFixed(0)} MiB, ${s.small.tags.length} tags; ` +
      `slow link ${(RATE / 2 ** 20).toFixed(0)} MiB/s per connection + ${DELAY_MS} ms per response`,
  );
  out.push(table(summary));
  out.push('\n### ratios (medians)\n');
  out.push('| ratio | value |\n| --- | --- |');
  for (const [k, v] of Object.entries(rt)) if (Number.isFinite(v)) out.push(`| ${k} | ${fmt(v)} |`);
  out.push('\n### targets\n');
  out.push('| target | value | goal | met |\n| --- | --- | --- | --- |');
  for (const c of checks) out.push(`| ${c.target} | ${fmt(c.value)} | ${c.goal} | ${c.met ? 'yes' : 'NO'} |`);
  out.push(`\ntotal ${((Date.now() - started) / 1000).toFixed(0)} s`);
  process.stdout.write(`${out.join('\n')}\n`);
  if (OUT) {
    writeFileSync(
      OUT,
      JSON.stringify(
        {
          quick: QUICK,
          reps: REPS,
          rate: RATE,
          delayMs: DELAY_MS,
          seed: s,
          samples,
          summary,
          ratios: rt,
          checks,
          seconds: (Date.now() - started) / 1000,
        },
        null,
        2,
      ),
    );
    log(`wrote ${OUT}`);
  }
  return 0;
}

const hardLimit = setTimeout(
  () => {
    log('hard time limit reached');
    void teardown().finally(() => process.exit(124));
  },
  // A quick run's repetitions each get its 10 minutes (`--reps 3 --only cluster` takes 15).
  (QUICK ? 10 * Math.max(1, REPS) : 90) * 60_000,
);
hardLimit.unref();

main()
  .then(async (code) => {
    await teardown();
    process.exit(code);
  })
  .catch(async (err: unknown) => {
    log(`failed: ${(err as Error).stack ?? String(err)}`);
    await teardown();
    process.exit(1);
  });
