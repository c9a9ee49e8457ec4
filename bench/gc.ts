/**
 * npx tsx bench/gc.ts [--quick] [--anchor-s S]
 *
 * The collection row (docs/garbage-collection.md): a cache registry of N images (each its own
 * layer on a base layer all of them share) is collected down by half while warm pulls of the kept
 * images go on through a node proxy. Reports the pass's wall time and its parts (deletes, taking
 * the collection Lease, the writers' settle time, garbage-collect), the bytes it reclaims on the
 * registry's volume, the origin bytes during the pass and of one removed image's later refetch,
 * and the pulls' latency during the pass against the same pulls, in the same run, just before and
 * just after it (the anchor). Real parts: distribution as origin and as cache registry (deletes on, no blob
 * descriptor cache, as manifests/base/registry.yaml runs it), the node proxy and `pullthrough
 * gc-runner` from dist/ (run `npm run build` first), the lab's containerd for CRI pulls, the test
 * suite's fake API server for the collection Lease that the proxy reads, and the controller's
 * RegistryCollector. Ports 15630-15634 (the fake API server on a free port).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import { Agent, request } from 'undici';
import { RegistryCollector, type Removal } from '../src/controller/registry-collector.js';
import { runnerGarbageCollect } from '../src/controller/gc-runner-client.js';
import { holdGcLease } from '../src/kube/gc-lease.js';
import { createKubeClient, silentLogger } from '../src/kube/index.js';
import { RegistryClient } from '../src/oci/registry-client.js';
import { FakeApiServer, writeKubeconfig } from '../test/fake-apiserver/index.js';
import { Lab, labAvailable, restartRegistry } from '../test/helpers/lab.js';
import {
  MANIFEST_ACCEPT,
  OriginLog,
  clientPull,
  dirBytes,
  fmt,
  fmtStat,
  httpStatus,
  portInUse,
  sleep,
  startChild,
  stat,
  waitFor,
  type Stat,
} from './lib.js';

const argv = process.argv.slice(2);
const QUICK = argv.includes('--quick');
const opt = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
/** Cache sizes, in images; each pass removes half. */
const SIZES = QUICK ? [6] : [10, 50];
const BASE_MIB = 8;
const OWN_MIB = 2;
/** The anchor: how long the pulls are counted without a pass, before it and again after it. */
const ANCHOR_S = Number(opt('--anchor-s') ?? (QUICK ? 4 : 8));
/** Pulls before the anchor that are not counted: each loop's first ones are slower. */
const LEAD_IN_MS = 3000;
/** The controller's default --gc-settle: a writer's 5 s poll period plus the longest closing PUT. */
const SETTLE_MS = 15_000;
const P = { origin: 15630, cache: 15631, runner: 15632, proxy: 15633, cri: 15634 };
const ORIGIN = `127.0.0.1:${P.origin}`;
const ENC = `127.0.0.1_${P.origin}`;
const PROXY = `http://127.0.0.1:${P.proxy}`;
const CACHE_URL = `http://127.0.0.1:${P.cache}`;
const NS = 'pullthrough';
const ROOT = resolve(import.meta.dirname, '..');
const SHIPPED_NODE_FLAGS = (
  JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } }
).scripts.start
  .split(' ')
  .filter((a) => a.startsWith('--'));
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

const log = (msg: string) => process.stderr.write(`[bench-gc ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const MiB = (b: number) => b / 2 ** 20;

// ---------------------------------------------------------------- images at the origin

/** A one-file POSIX tar (ustar), as an image layer holds: header, data, padding, end blocks. */
function tarOf(name: string, data: Buffer): Buffer {
  const h = Buffer.alloc(512);
  const field = (off: number, len: number, s: string) => h.write(s.padEnd(len, '\0').slice(0, len), off, 'ascii');
  const octal = (off: number, len: number, n: number) => field(off, len, `${n.toString(8).padStart(len - 1, '0')}\0`);
  field(0, 100, name);
  octal(100, 8, 0o644);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, data.length);
  octal(136, 12, 0);
  h.fill(' ', 148, 156);
  field(156, 1, '0');
  field(257, 6, 'ustar');
  field(263, 2, '00');
  let sum = 0;
  for (const b of h) sum += b;
  field(148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  const pad = Buffer.alloc((512 - (data.length % 512)) % 512);
  return Buffer.concat([h, data, pad, Buffer.alloc(1024)]);
}

interface Layer {
  gz: Buffer;
  digest: string;
  diffId: string;
}

function layer(name: string, mib: number): Layer {
  const tar = tarOf(name, randomBytes(mib * 2 ** 20));
  const gz = gzipSync(tar, { level: 1 });
  return { gz, digest: sha(gz), diffId: sha(tar) };
}

async function originCall(method: string, path: string, body?: Buffer, headers: Record<string, string> = {}) {
  const url = path.startsWith('http') ? path : `http://${ORIGIN}${path}`;
  const res = await request(url, { method: method as 'GET', body, headers });
  await res.body.dump();
  return res;
}

async function pushBlob(repo: string, bytes: Buffer, digest = sha(bytes)): Promise<void> {
  const start = await originCall('POST', `/v2/${repo}/blobs/uploads/`);
  const loc = new URL(String(start.headers.location), `http://${ORIGIN}`);
  loc.searchParams.set('digest', digest);
  const put = await originCall('PUT', loc.toString(), bytes, { 'content-type': 'application/octet-stream' });
  if (put.statusCode !== 201) throw new Error(`blob upload to ${repo}: ${put.statusCode}`);
}

async function mountBlob(repo: string, from: string, digest: string): Promise<void> {
  const res = await originCall('POST', `/v2/${repo}/blobs/uploads/?mount=${digest}&from=${from}`);
  if (res.statusCode !== 201) throw new Error(`mount ${digest} into ${repo}: ${res.statusCode}`);
}

interface OriginImage {
  repo: string;
  digest: string;
  /** Manifest, config and both layers. */
  bytes: number;
  /** What no other image shares: manifest, config and its own layer. */
  ownBytes: number;
}

/** Image i: the shared base layer and a layer of its own, pushed as gc/appNN:v1. */
async function pushImage(i: number, base: Layer): Promise<OriginImage> {
  const repo = `gc/app${String(i).padStart(2, '0')}`;
  const own = layer(`app${i}.bin`, OWN_MIB);
  await mountBlob(repo, 'gc/base', base.digest);
  await pushBlob(repo, own.gz, own.digest);
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: [base.diffId, own.diffId] },
    }),
  );
  await pushBlob(repo, config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: [base, own].map((l) => ({
        mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
        digest: l.digest,
        size: l.gz.length,
      })),
    }),
  );
  const put = await originCall('PUT', `/v2/${repo}/manifests/v1`, manifest, { 'content-type': OCI_MANIFEST });
  if (put.statusCode !== 201) throw new Error(`manifest ${repo}: ${put.statusCode}`);
  const ownBytes = manifest.length + config.length + own.gz.length;
  return { repo, digest: sha(manifest), bytes: ownBytes + base.gz.length, ownBytes };
}

async function limit<T>(n: number, jobs: (() => Promise<T>)[]): Promise<T[]> {
  const out: T[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < jobs.length) {
        const k = next++;
        out[k] = await (jobs[k] as () => Promise<T>)();
      }
    }),
  );
  return out;
}

// ---------------------------------------------------------------- processes

function startDist(args: string[], logFile: string): ChildProcess {
  return startChild(process.execPath, [...SHIPPED_NODE_FLAGS, join(ROOT, 'dist/main.js'), ...args], logFile);
}

async function stopChild(c: ChildProcess | undefined): Promise<void> {
  const running = () => c?.exitCode === null && c.signalCode === null;
  if (!c || !running()) return;
  const exited = new Promise((r) => c.once('exit', r));
  c.kill('SIGTERM');
  await Promise.race([exited, sleep(10_000)]);
  if (running()) c.kill('SIGKILL');
}

async function headStatus(url: string): Promise<number> {
  try {
    const res = await request(url, { method: 'HEAD', headers: { accept: MANIFEST_ACCEPT } });
    await res.body.dump();
    return res.statusCode;
  } catch {
    return 0;
  }
}

// ---------------------------------------------------------------- load

interface Sample {
  kind: 'client' | 'cri';
  start: number;
  end: number;
  /** NaN when the pull failed. */
  seconds: number;
  failed?: string;
}

/**
 * Warm pulls of the kept images until `stop` is set: two client pulls at a time (manifest and
 * blobs, as containerd fetches them) and one CRI pull at a time through the lab's containerd (the
 * image removed from containerd first, so that it fetches every blob). A failed pull is a sample
 * that says why.
 */
function startLoad(lab: Lab, kept: OriginImage[]) {
  const samples: Sample[] = [];
  let stop = false;
  let turn = 0;
  const nextImage = () => kept[turn++ % kept.length] as OriginImage;
  const clientLoop = async () => {
    while (!stop) {
      const img = nextImage();
      const start = performance.now();
      try {
        const r = await clientPull(PROXY, `${ENC}/${img.repo}`, 'v1');
        if (r.bytes !== img.bytes) throw new Error(`${img.repo}: ${r.bytes} bytes, expected ${img.bytes}`);
        samples.push({ kind: 'client', start, end: performance.now(), seconds: r.seconds });
      } catch (err) {
        const failed = `client ${img.repo}: ${(err as Error).message}`;
        samples.push({ kind: 'client', start, end: performance.now(), seconds: NaN, failed });
      }
    }
  };
  const criLoop = async () => {
    while (!stop) {
      const img = nextImage();
      const ref = `127.0.0.1:${P.proxy}/${ENC}/${img.repo}:v1`;
      await lab.removeImage('node', ref);
      const start = performance.now();
      const r = await lab.criPull('node', ref);
      const failed = r.error ? `cri ${img.repo}: ${r.error} ${r.details ?? ''}` : undefined;
      samples.push({ kind: 'cri', start, end: performance.now(), seconds: failed ? NaN : r.seconds, failed });
    }
  };
  const loops = Promise.all([clientLoop(), clientLoop(), criLoop()]);
  return {
    samples,
    async finish(): Promise<void> {
      stop = true;
      await loops;
    },
  };
}

const secondsOf = (s: Sample[], kind: Sample['kind']) => stat(s.filter((x) => x.kind === kind).map((x) => x.seconds));
const overlapping = (s: Sample[], from: number, to: number) => s.filter((x) => x.end > from && x.start < to);
const both = (s: Sample[]) => ({ client: secondsOf(s, 'client'), cri: secondsOf(s, 'cri') });

// ---------------------------------------------------------------- one size

interface Result {
  n: number;
  removed: number;
  deleted: number;
  phases: { deletes: number; lease: number; settle: number; gc: number; release: number; wall: number };
  blobsDeleted: number;
  before: number;
  after: number;
  originDuring: { requests: number; bytes: number };
  refetch: { bytes: number; ownBytes: number; imageBytes: number };
  anchor: { client: Stat; cri: Stat };
  /** Over the whole pass, and over each of its parts: deletes, settle (only the hold), garbage-collect. */
  during: Record<'pass' | 'deletes' | 'settle' | 'gc', { client: Stat; cri: Stat }>;
  failures: { anchor: number; during: number; first: string | undefined };
  /** The node proxy logged that it saw the collection Lease held. */
  sawHold: boolean;
}

async function resetCache(lab: Lab): Promise<string> {
  await lab.down('cache');
  const dir = (await lab.registry('cache', P.cache)).dir;
  // As manifests/base/registry.yaml runs it: no in-memory blob descriptor cache, which would go on
  // answering for blobs garbage-collect swept (docs/garbage-collection.md).
  await lab.stop('cache');
  const config = join(dir, 'config.yml');
  writeFileSync(config, readFileSync(config, 'utf8').replace(/^\s*cache: \{blobdescriptor: inmemory\}\n/m, ''));
  await restartRegistry(lab, 'cache', P.cache);
  return dir;
}

async function measure(
  lab: Lab,
  images: OriginImage[],
  n: number,
  kubeconfig: string,
  collectorFor: (timing: Record<string, number>) => RegistryCollector,
): Promise<Result> {
  const cacheDir = await resetCache(lab);
  // At the shipped log level (info), which says when the proxy sees the collection Lease held.
  const ptLog = join(lab.dir, `pt-${n}.log`);
  const proxy = startDist(
    [
      'proxy',
      '--listen',
      `127.0.0.1:${P.proxy}`,
      '--data-dir',
      lab.tempDir(`bench-gc-pt-${n}`),
      '--cache-registry',
      CACHE_URL,
      '--insecure-registries',
      ORIGIN,
      '--kubeconfig',
      kubeconfig,
      '--gc-lease-namespace',
      NS,
      '--metrics-listen',
      '',
    ],
    ptLog,
  );
  try {
    await waitFor('the node proxy /healthz', async () => (await httpStatus(`${PROXY}/healthz`, 'GET')) === 200, 30_000);
    const cached = images.slice(0, n);
    // Every other image is removed: kept and removed ones alternate in pull order.
    const kept = cached.filter((_, i) => i % 2 === 0);
    const removed = cached.filter((_, i) => i % 2 === 1);

    log(`N=${n}: filling the cache`);
    const f0 = performance.now();
    await limit(
      4,
      cached.map((img) => () => clientPull(PROXY, `${ENC}/${img.repo}`, 'v1')),
    );
    for (const img of cached) {
      const repo = `${ENC}/${img.repo}`;
      await waitFor(
        `${img.repo} stored in the cache registry`,
        async () =>
          (await headStatus(`${CACHE_URL}/v2/${repo}/manifests/${img.digest}`)) === 200 &&
          (await headStatus(`${CACHE_URL}/v2/pullthrough-tags/${repo}/manifests/v1`)) === 200,
        180_000,
        250,
      );
    }
    const fillSeconds = (performance.now() - f0) / 1000;
    log(`N=${n}: filled in ${fillSeconds.toFixed(1)} s`);

    // Unmeasured: a first pull of each kept image after the fill is slower than the rest (code
    // paths compiled, the registry's files read back into the page cache).
    await limit(
      2,
      kept.map((img) => () => clientPull(PROXY, `${ENC}/${img.repo}`, 'v1')),
    );
    // One load runs throughout, and its samples are sorted by when they ran: the anchor is the
    // same pulls without a pass, ANCHOR_S just before the pass and ANCHOR_S just after it (so
    // drift in what else the machine runs falls on both sides), after a lead-in not counted (the
    // loops' first pulls are slower).
    const load = startLoad(lab, kept);
    await sleep(LEAD_IN_MS);
    const a0 = performance.now();
    log(`N=${n}: anchor pulls for ${ANCHOR_S} s`);
    await sleep(ANCHOR_S * 1000);

    log(`N=${n}: collection pass removing ${removed.length}`);
    const originLog = new OriginLog(join(lab.dir, 'origin', 'registry.log'));
    const before = dirBytes(join(cacheDir, 'data'));
    const mark = originLog.mark();
    const timing: Record<string, number> = {};
    const t0 = performance.now();
    const removals: Removal[] = removed.map((img) => ({ image: `${ORIGIN}/${img.repo}:v1`, digest: img.digest }));
    const outcome = await collectorFor(timing).collect(removals);
    const tEnd = performance.now();
    const after = dirBytes(join(cacheDir, 'data'));
    const sawHold = readFileSync(ptLog, 'utf8').includes('collection running: cache writes wait');
    log(`N=${n}: anchor pulls for ${ANCHOR_S} s`);
    await sleep(ANCHOR_S * 1000);
    const a1 = performance.now();
    await load.finish();
    // Kept images' pulls never reach the origin: the log since the mark is the pass's.
    await originLog.settle();
    const during = originLog.since(mark).filter((r) => r.path.startsWith('/v2/'));
    const anchorSamples = load.samples.filter(
      (x) => (x.start >= a0 && x.end <= t0) || (x.start >= tEnd && x.start < a1),
    );
    const passSamples = overlapping(load.samples, t0, tEnd);

    // A removed image pulled again: what it costs the origin.
    const refetchMark = originLog.mark();
    const again = removed[0] as OriginImage;
    await clientPull(PROXY, `${ENC}/${again.repo}`, 'v1');
    await originLog.settle();
    const refetchBytes = originLog
      .since(refetchMark)
      .filter((r) => r.method === 'GET' && r.path.startsWith('/v2/'))
      .reduce((a, r) => a + r.bytes, 0);

    const t = (k: string) => timing[k] ?? NaN;
    return {
      n,
      removed: removed.length,
      deleted: outcome.deleted,
      phases: {
        deletes: (t('holdAsked') - t0) / 1000,
        lease: (t('held') - t('holdAsked')) / 1000,
        settle: (t('gcStart') - t('held')) / 1000,
        gc: (t('gcEnd') - t('gcStart')) / 1000,
        release: (tEnd - t('gcEnd')) / 1000,
        wall: (tEnd - t0) / 1000,
      },
      blobsDeleted: t('blobsDeleted'),
      before,
      after,
      originDuring: {
        requests: during.length,
        bytes: during.filter((r) => r.method === 'GET').reduce((a, r) => a + r.bytes, 0),
      },
      refetch: { bytes: refetchBytes, ownBytes: again.ownBytes, imageBytes: again.bytes },
      anchor: { client: secondsOf(anchorSamples, 'client'), cri: secondsOf(anchorSamples, 'cri') },
      during: {
        pass: both(passSamples),
        deletes: both(overlapping(load.samples, t0, t('holdAsked'))),
        settle: both(overlapping(load.samples, t('held'), t('gcStart'))),
        gc: both(overlapping(load.samples, t('gcStart'), t('gcEnd'))),
      },
      sawHold,
      failures: {
        anchor: anchorSamples.filter((x) => x.failed).length,
        during: passSamples.filter((x) => x.failed).length,
        first: load.samples.find((x) => x.failed)?.failed,
      },
    };
  } finally {
    await stopChild(proxy);
  }
}

// ---------------------------------------------------------------- report

function report(results: Result[]): string {
  const out: string[] = [];
  out.push(`# Collection row (${QUICK ? 'quick' : 'full'}, ${new Date().toISOString()})`);
  out.push(
    `images: a ${BASE_MIB} MiB base layer shared by all, ${OWN_MIB} MiB of their own each; a pass removes every ` +
      `other image; settle ${SETTLE_MS / 1000} s (the controller's default --gc-settle); anchor: the same ` +
      `pulls, running throughout, in the ${ANCHOR_S} s just before the pass and the ${ANCHOR_S} s just after it`,
  );
  out.push(`load average at the start ${LOAD_AT_START} (1 min) on ${cpus().length} cores`);
  out.push(
    '\n| N | removed | pass wall s | deletes s | Lease s | settle s | garbage-collect s | release s |' +
      ' proxy saw the hold |',
  );
  out.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const r of results) {
    const p = r.phases;
    out.push(
      `| ${r.n} | ${r.removed} (${r.deleted} deleted) | ${fmt(p.wall)} | ${fmt(p.deletes, 3)} | ` +
        `${fmt(p.lease, 3)} | ${fmt(p.settle)} | ${fmt(p.gc, 3)} | ${fmt(p.release, 3)} | ` +
        `${r.sawHold ? 'yes' : 'NO'} |`,
    );
  }
  out.push(
    '\n| N | blobs swept | registry MiB before -> after (reclaimed) | origin during the pass: requests, bytes |' +
      ' refetch of a removed image: origin bytes, / its own bytes, / whole image |',
  );
  out.push('| --- | --- | --- | --- | --- |');
  for (const r of results) {
    const f = r.refetch;
    out.push(
      `| ${r.n} | ${r.blobsDeleted} | ` +
        `${fmt(MiB(r.before), 1)} -> ${fmt(MiB(r.after), 1)} (${fmt(MiB(r.before - r.after), 1)}) | ` +
        `${r.originDuring.requests}, ${r.originDuring.bytes} | ` +
        `${f.bytes}, ${(f.bytes / f.ownBytes).toFixed(3)}, ${(f.bytes / f.imageBytes).toFixed(3)} |`,
    );
  }
  out.push(
    '\n| N | warm pull of a kept image, s | anchor | during the pass | ratio (medians) | overlapping the deletes |' +
      ' the settle (only the hold) | garbage-collect | failures (anchor, pass) |',
  );
  out.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  const cell = (x: Stat) => `${fmtStat(x, 3)} n=${x.n}`;
  for (const r of results) {
    for (const [what, k] of [
      ['client (manifest + blobs, 2 at a time)', 'client'],
      ['CRI pull (containerd, 1 at a time)', 'cri'],
    ] as const) {
      const d = r.during;
      out.push(
        `| ${r.n} | ${what} | ${cell(r.anchor[k])} | ${cell(d.pass[k])} | ` +
          `${fmt(d.pass[k].median / r.anchor[k].median)} | ${cell(d.deletes[k])} | ${cell(d.settle[k])} | ` +
          `${cell(d.gc[k])} | ${r.failures.anchor}, ${r.failures.during} |`,
      );
    }
  }
  const first = results.find((r) => r.failures.first)?.failures.first;
  if (first) out.push(`\nfirst failed pull: ${first}`);
  return out.join('\n');
}

// ---------------------------------------------------------------- main

const LOAD_AT_START = loadavg()[0]?.toFixed(1) ?? '-';

async function main(): Promise<void> {
  if (!labAvailable()) throw new Error('the oci-lab is not installed');
  for (const port of Object.values(P)) {
    if (await portInUse(port)) throw new Error(`127.0.0.1:${port} is in use: the collection row needs 15630-15634`);
  }
  const started = Date.now();
  const lab = new Lab('bench-gc');
  const api = await FakeApiServer.start();
  const agent = new Agent({ connections: 4 });
  let runner: ChildProcess | undefined;
  try {
    await lab.registry('origin', P.origin);
    await lab.containerd('node', P.cri);
    const kubeconfig = await writeKubeconfig(api);
    const kube = createKubeClient({ kubeconfig });

    const most = Math.max(...SIZES);
    log(`pushing ${most} images to the origin`);
    const base = layer('base.bin', BASE_MIB);
    await pushBlob('gc/base', base.gz, base.digest);
    const images = await limit(
      4,
      Array.from({ length: most }, (_, i) => () => pushImage(i, base)),
    );

    log(`pushed in ${((Date.now() - started) / 1000).toFixed(0)} s since the start`);
    // The registry's directory and configuration file keep their path across resets.
    const registryConfig = join(lab.dir, 'cache', 'config.yml');
    await resetCache(lab);
    runner = startDist(
      [
        'gc-runner',
        '--listen',
        `127.0.0.1:${P.runner}`,
        '--registry-bin',
        'docker-registry',
        '--registry-config',
        registryConfig,
        '--log-level',
        'warn',
      ],
      join(lab.dir, 'gc-runner.log'),
    );
    await waitFor(
      'the gc-runner /healthz',
      async () => (await httpStatus(`http://127.0.0.1:${P.runner}/healthz`, 'GET')) === 200,
      30_000,
    );
    const garbageCollect = runnerGarbageCollect(`http://127.0.0.1:${P.runner}`);

    // As the controller builds it (src/cli/controller.ts, registryCollector), with each phase timed.
    const collectorFor = (timing: Record<string, number>) =>
      new RegistryCollector({
        client: new RegistryClient({
          name: 'cache',
          dispatcher: agent,
          baseUrl: () => CACHE_URL,
          credentials: { credentialsFor: () => Promise.resolve([]) },
          userAgent: 'pullthrough-bench',
          headersTimeoutMs: 30_000,
          bodyTimeoutMs: 30_000,
        }),
        host: 'cache',
        holdWriters: (work) => {
          timing.holdAsked = performance.now();
          return holdGcLease(
            { api: kube.coordination, namespace: NS, identity: 'bench-gc', log: silentLogger },
            (held) => {
              timing.held = performance.now();
              return work(held);
            },
          );
        },
        settleMs: SETTLE_MS,
        garbageCollect: async (signal) => {
          timing.gcStart = performance.now();
          const r = await garbageCollect(signal);
          timing.gcEnd = performance.now();
          timing.blobsDeleted = r.blobsDeleted;
          return r;
        },
        log: { info: () => undefined, warn: (o, m) => log(`${m} ${JSON.stringify(o)}`) },
      });

    const results: Result[] = [];
    for (const n of SIZES) results.push(await measure(lab, images, n, kubeconfig, collectorFor));
    process.stdout.write(`${report(results)}\n\nrow total ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
  } finally {
    await stopChild(runner);
    await agent.close();
    await api.close();
    await lab.cleanup();
  }
}

main().catch((err: unknown) => {
  log(`failed: ${(err as Error).stack ?? String(err)}`);
  process.exitCode = 1;
});
