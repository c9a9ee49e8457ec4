/**
 * npx tsx bench/s3.ts [--quick] [--reps N] [--batch N]
 *
 * The S3 row: the cache registry on the lab's radosgw with redirects on. Warm blob MB/s and a
 * warm 20-layer CRI pull through a node proxy that hands out the registry's redirects, against a
 * GET of the presigned URL straight from the object store and against distribution on the same
 * bucket (redirecting, and relaying with redirects off); the node proxy's CPU seconds per GiB
 * (utime + stime of the proxy process, started as `npm start` starts it from dist/: run
 * `npm run build` first), and its CPU per warm blob GET alone: a batch of GETs answered with the
 * redirect and not followed (the proxy's work is the same either way), whose summed CPU over the
 * batch is not lost in /proc's 10 ms ticks nor dominated by whatever else the proxy does in one
 * repetition. Medians with min-max over the repetitions. PT_NODE_ARGS="--cpu-prof
 * --cpu-prof-dir=DIR" profiles the proxy (written when it exits). Ports 15443-15446, radosgw
 * 15447-15459, the proxy on a free port.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Pool, request } from 'undici';
import type { ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Lab, labAvailable } from '../test/helpers/lab.js';
import { cpuSeconds, fmtStat, startChild, stat, waitFor, type Stat } from './lib.js';

const run = promisify(execFile);
const argv = process.argv.slice(2);
const QUICK = argv.includes('--quick');
const REPS = Number(argv[argv.indexOf('--reps') + 1] ?? 0) || (QUICK ? 2 : 5);
const BLOB_MIB = QUICK ? 64 : 256;
/** Warm blob GETs per repetition whose redirect is not followed. */
const BATCH = Number(argv[argv.indexOf('--batch') + 1] ?? 0) || (QUICK ? 100 : 500);
/** The quiet before each repetition's warm blob, in which the proxy's CPU without requests is read. */
const IDLE_MS = 3_000;
const PT_NODE_ARGS = (process.env.PT_NODE_ARGS ?? '').split(' ').filter(Boolean);
const P = { bucket: 15443, relay: 15444, origin: 15445, cri: 15446, s3: 15447 };
const ORIGIN = `127.0.0.1:${P.origin}`;
const S3 = `127.0.0.1:${P.s3}`;
const CACHE_PREFIX = `127.0.0.1_${P.origin}`;

const log = (msg: string) => process.stderr.write(`[bench-s3 ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);

function vars(out: string): Record<string, string> {
  const v: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^([A-Z_0-9]+)=(.*)$/.exec(line.trim());
    if (m) v[m[1] as string] = (m[2] as string).replace(/^"|"$/g, '');
  }
  return v;
}

/** curl, following redirects when asked: status, bytes, seconds. */
async function curl(url: string, follow: boolean): Promise<{ status: number; bytes: number; seconds: number }> {
  const { stdout } = await run('curl', [
    '-sS',
    ...(follow ? ['-L'] : []),
    '-o',
    '/dev/null',
    '--max-time',
    '300',
    '-w',
    '%{http_code} %{size_download} %{time_total}',
    url,
  ]);
  const [code, size, t] = stdout.trim().split(' ');
  return { status: Number(code), bytes: Number(size), seconds: Number(t) };
}

/** The registry's own 307 for a blob: the presigned URL. */
async function presigned(base: string, repo: string, digest: string): Promise<string> {
  // undici's request does not follow redirects.
  const res = await request(`${base}/v2/${repo}/blobs/${digest}`);
  await res.body.dump();
  const loc = res.headers.location;
  if (res.statusCode !== 307 || typeof loc !== 'string') throw new Error(`no redirect: ${res.statusCode}`);
  return loc;
}

async function blobStored(repo: string, digest: string): Promise<boolean> {
  const url = `http://127.0.0.1:${P.bucket}/v2/${repo}/blobs/${digest}`;
  const { stdout } = await run('curl', ['-sS', '-I', '-L', '-o', '/dev/null', '-w', '%{http_code}', url]).catch(() => ({
    stdout: '',
  }));
  return stdout.trim() === '200';
}

const ROOT = resolve(import.meta.dirname, '..');

/** The node proxy as `npm start` runs it, on a port the kernel picks (found with ss). */
async function startNodeProxy(
  dir: string,
  logFile: string,
): Promise<{ child: ChildProcess; url: string; host: string }> {
  const child = startChild(
    process.execPath,
    [
      '--max-semi-space-size=1',
      ...PT_NODE_ARGS,
      join(ROOT, 'dist/main.js'),
      'proxy',
      '--listen',
      '127.0.0.1:0',
      '--data-dir',
      dir,
      '--cache-registry',
      `http://127.0.0.1:${P.bucket}`,
      '--insecure-registries',
      `${ORIGIN},${S3}`,
      '--metrics-listen',
      '',
      // The default level, as deployed: one log line per request.
      '--log-level',
      'info',
    ],
    logFile,
  );
  let port = 0;
  await waitFor(
    'the node proxy listening',
    async () => {
      const { stdout } = await run('ss', ['-ltnpH']);
      const line = stdout.split('\n').find((l) => l.includes(`pid=${child.pid},`));
      port = Number(/127\.0\.0\.1:(\d+)/.exec(line ?? '')?.[1] ?? 0);
      return port > 0;
    },
    20_000,
  );
  return { child, url: `http://127.0.0.1:${port}`, host: `127.0.0.1:${port}` };
}

const proxyCpu = (c: ChildProcess) => cpuSeconds(c.pid ?? 0).total;

/**
 * `n` GETs of one blob, one at a time on one kept-alive connection (as containerd reuses its
 * connections), each answered with a 307 that is not followed: the node proxy's CPU over the
 * batch, per request.
 */
async function redirectBatch(child: ChildProcess, url: string, path: string, n: number): Promise<number> {
  const pool = new Pool(url, { connections: 1 });
  try {
    const c0 = proxyCpu(child);
    for (let i = 0; i < n; i++) {
      const res = await pool.request({ method: 'GET', path });
      await res.body.dump();
      if (res.statusCode !== 307) throw new Error(`batch GET ${i}: ${res.statusCode}, not a redirect`);
    }
    return (proxyCpu(child) - c0) / n;
  } finally {
    await pool.close();
  }
}

async function main(): Promise<void> {
  if (!labAvailable()) throw new Error('the oci-lab is not installed');
  const lab = new Lab('bench-s3');
  let proxy: ChildProcess | undefined;
  let s3Up = false;
  try {
    const s3 = vars(await lab.script('s3-up.sh', ['s3', String(P.s3), '--memstore-mb', '4096']));
    s3Up = true;
    const onS3 = [
      '--s3',
      `http://${S3}`,
      '--s3-root',
      '/cache',
      '--s3-access-key',
      s3.S3_ACCESS_KEY ?? '',
      '--s3-secret-key',
      s3.S3_SECRET_KEY ?? '',
    ];
    await lab.registry('bucket', P.bucket, onS3);
    await lab.registry('relay', P.relay, [...onS3, '--no-redirect']);
    await lab.registry('origin', P.origin);
    const big = await lab.image(ORIGIN, 'lab/big', 'v1', ['--layers', '1', '--layer-mb', String(BLOB_MIB)]);
    const many = await lab.image(ORIGIN, 'lab/many', 'v1', ['--layers', '20', '--layer-mb', '2']);
    const bigDigest = big.layers[0] as string;
    // Pulls name the proxy or the registry in the reference: containerd speaks plain http to loopback.
    await lab.containerd('node', P.cri);
    const p = await startNodeProxy(lab.tempDir('bench-s3-pt'), join(lab.dir, 'pt.log'));
    proxy = p.child;
    const bigRepo = `${CACHE_PREFIX}/lab/big`;
    const manyRepo = `${CACHE_PREFIX}/lab/many`;

    log('filling the cache');
    const cold = await curl(`${p.url}/v2/${bigRepo}/blobs/${bigDigest}`, true);
    if (cold.status !== 200) throw new Error(`cold blob: ${cold.status}`);
    const pulled = await lab.criPull('node', `${p.host}/${manyRepo}@${many.digest}`);
    if (pulled.error) throw new Error(`cold pull: ${pulled.error}`);
    // Uploads to the cache registry yield to pulls for up to 30 s, then take their time.
    for (const d of [bigDigest, ...many.layers]) {
      const repo = d === bigDigest ? bigRepo : manyRepo;
      const until = Date.now() + 180_000;
      while (!(await blobStored(repo, d))) {
        if (Date.now() > until) throw new Error(`${d} not stored`);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }

    const mbps: Record<string, number[]> = { pt: [], s3: [], 'registry-redirect': [], 'registry-relay': [] };
    const pullS: Record<string, number[]> = { pt: [], 'registry-redirect': [], 'registry-relay': [] };
    const cpuPerGiB: number[] = [];
    /** Proxy CPU seconds per second without requests, before each repetition's warm blob. */
    const idleCpuPerS: number[] = [];
    /** Proxy CPU seconds per warm blob GET, over each repetition's batch. */
    const perRequest: number[] = [];
    // Summed over the repetitions: /proc counts CPU in 10 ms ticks.
    let blobCpu = 0;
    let blobBytes = 0;
    let pullCpu = 0;
    let pullBytes = 0;
    const blobFile = (d: string) =>
      join(lab.dir, 'origin/data/docker/registry/v2/blobs/sha256', d.slice(7, 9), d.slice(7), 'data');
    const manySize = many.layers.reduce((sum, d) => sum + statSync(blobFile(d)).size, 0);
    for (let rep = 1; rep <= REPS; rep++) {
      log(`rep ${rep}/${REPS}`);
      // What the proxy spends with no request at all (timers, background work of the previous
      // repetition), over as long as the warm blob download below takes.
      const i0 = proxyCpu(p.child);
      const idleStart = Date.now();
      await new Promise((r) => setTimeout(r, IDLE_MS));
      idleCpuPerS.push((proxyCpu(p.child) - i0) / ((Date.now() - idleStart) / 1000));
      const c0 = proxyCpu(p.child);
      const viaPt = await curl(`${p.url}/v2/${bigRepo}/blobs/${bigDigest}`, true);
      const used = proxyCpu(p.child) - c0;
      blobCpu += used;
      blobBytes += viaPt.bytes;
      if (viaPt.status !== 200) throw new Error(`pt blob: ${viaPt.status}`);
      perRequest.push(await redirectBatch(p.child, p.url, `/v2/${bigRepo}/blobs/${bigDigest}`, BATCH));
      mbps.pt?.push(viaPt.bytes / 2 ** 20 / viaPt.seconds);
      cpuPerGiB.push(used / (viaPt.bytes / 2 ** 30));
      const direct = await curl(await presigned(`http://127.0.0.1:${P.bucket}`, bigRepo, bigDigest), false);
      mbps.s3?.push(direct.bytes / 2 ** 20 / direct.seconds);
      const redir = await curl(`http://127.0.0.1:${P.bucket}/v2/${bigRepo}/blobs/${bigDigest}`, true);
      mbps['registry-redirect']?.push(redir.bytes / 2 ** 20 / redir.seconds);
      const relay = await curl(`http://127.0.0.1:${P.relay}/v2/${bigRepo}/blobs/${bigDigest}`, true);
      mbps['registry-relay']?.push(relay.bytes / 2 ** 20 / relay.seconds);

      for (const [id, host] of [
        ['pt', p.host],
        ['registry-redirect', `127.0.0.1:${P.bucket}`],
        ['registry-relay', `127.0.0.1:${P.relay}`],
      ] as const) {
        const ref = `${host}/${manyRepo}@${many.digest}`;
        await lab.removeImage('node', ref);
        const before = proxyCpu(p.child);
        const r = await lab.criPull('node', ref);
        if (r.error) throw new Error(`${id} pull: ${r.error} ${r.details ?? ''}`);
        if (id === 'pt') {
          pullCpu += proxyCpu(p.child) - before;
          pullBytes += manySize;
        }
        pullS[id]?.push(r.seconds);
        await lab.removeImage('node', ref);
      }
    }
    const rows: [string, Stat][] = Object.entries(mbps).map(([k, v]) => [k, stat(v)]);
    const out: string[] = [];
    out.push(`# S3 row (${QUICK ? 'quick' : 'full'}, ${REPS} reps, ${new Date().toISOString()})`);
    out.push(`blob ${BLOB_MIB} MiB (one gzip layer); image 20 layers, ${(manySize / 2 ** 20).toFixed(0)} MiB`);
    out.push('\n| warm blob MB/s | median (min-max) |\n| --- | --- |');
    for (const [k, s] of rows) out.push(`| ${k} | ${fmtStat(s, 0)} |`);
    out.push('\n| warm 20-layer CRI pull, s | median (min-max) |\n| --- | --- |');
    for (const [k, v] of Object.entries(pullS)) out.push(`| ${k} | ${fmtStat(stat(v), 3)} |`);
    const blobCpuPerGiB = blobCpu / (blobBytes / 2 ** 30);
    out.push(`\nnode proxy CPU s per GiB, all repetitions: warm blob ${blobCpuPerGiB.toFixed(4)} (per repetition`);
    out.push(`${fmtStat(stat(cpuPerGiB), 4)}); warm 20-layer pull ${(pullCpu / (pullBytes / 2 ** 30)).toFixed(4)}`);
    const ptMed = stat(mbps.pt ?? []).median;
    const s3Med = stat(mbps.s3 ?? []).median;
    out.push(`\npt / s3 direct (warm blob, medians): ${(ptMed / s3Med).toFixed(2)} (target >= 0.9)`);
    out.push(`node proxy CPU per warm GiB (blob, one curl -L per repetition): ${blobCpuPerGiB.toFixed(4)} s`);
    out.push(
      `node proxy CPU without requests (${IDLE_MS / 1000} s before each repetition): ` +
        `${fmtStat(stat(idleCpuPerS.map((s) => s * 1000)), 1)} ms per s`,
    );
    const perReq = stat(perRequest);
    const blobGiB = blobBytes / REPS / 2 ** 30;
    out.push(
      `\nnode proxy CPU per warm blob GET (${BATCH} GETs per repetition, redirect not followed): ` +
        `${fmtStat(stat(perRequest.map((s) => s * 1000)), 3)} ms`,
    );
    out.push(
      `node proxy CPU per warm GiB at ${BLOB_MIB} MiB per blob: ${(perReq.median / blobGiB).toFixed(4)} s ` +
        `(${(perReq.min / blobGiB).toFixed(4)}-${(perReq.max / blobGiB).toFixed(4)}) (target < 0.05); ` +
        `blobs above ${((perReq.median / 0.05) * 1024).toFixed(1)} MiB meet it at the median`,
    );
    process.stdout.write(`${out.join('\n')}\n`);
  } finally {
    const c = proxy;
    if (c?.exitCode === null) {
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      await exited;
    }
    if (s3Up) await lab.down('s3');
    await lab.cleanup();
  }
}

main().catch((err: unknown) => {
  log(`failed: ${(err as Error).stack ?? String(err)}`);
  process.exitCode = 1;
});
