/**
 * Benchmark helpers: process accounting from /proc, the origin registry's access log, clients
 * (curl for raw blob throughput, a containerd-like TS client, a HEAD load generator) and stats.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Agent, Pool, request } from 'undici';

export const run = promisify(execFile);
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const CLK_TCK = 100;

// ---------------------------------------------------------------- /proc

export interface ProcSample {
  readonly cpuSeconds: number;
}

/** utime + stime of a process (`total`) and stime alone (`sys`), in seconds (children not included). */
export function cpuSeconds(pid: number): { total: number; sys: number } {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may hold spaces: fields start after the closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    const sys = Number(fields[12]) / CLK_TCK;
    return { total: Number(fields[11]) / CLK_TCK + sys, sys };
  } catch {
    return { total: NaN, sys: NaN };
  }
}

/**
 * CPU seconds all cores have spent busy since boot, from /proc/stat, and of those the time the
 * hypervisor gave to other machines (steal: when it is high, every figure of the run is slower).
 */
export function machineCpu(): { busy: number; steal: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice (guest time is in user too)
  const busy = f.slice(0, 8).reduce((a, b) => a + b, 0) - (f[3] ?? 0) - (f[4] ?? 0);
  return { busy: busy / CLK_TCK, steal: (f[7] ?? 0) / CLK_TCK };
}

/** Peak resident set (VmHWM) in MiB. */
export function peakRssMiB(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Resets VmHWM to the current RSS (clear_refs 5), so the next peak is this phase's own. */
export function resetPeakRss(pid: number): void {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
  } catch {
    /* not permitted: the peak is then the process lifetime's */
  }
}

/** Samples CPU and peak RSS of a set of processes around a measured phase. */
export class ProcWatch {
  private readonly before = new Map<number, { total: number; sys: number }>();
  private readonly baseRss = new Map<number, number>();
  constructor(
    private readonly pids: number[],
    opts: { sync?: boolean } = {},
  ) {
    // Dirty pages of the target measured before (the anchor stores a 1 GiB blob, each reset frees
    // one) are otherwise written back by the kernel during the next measurement, on the same two
    // cores: each measurement starts with them on disk.
    if (opts.sync !== false) execFileSync('sync');
    for (const p of pids) {
      resetPeakRss(p);
      this.baseRss.set(p, rssMiB(p));
      this.before.set(p, cpuSeconds(p));
    }
  }
  /** CPU seconds used (of them in the kernel), peak RSS, and how far the peak rose above the RSS at the start. */
  finish(): { cpuSeconds: number; sysCpuSeconds: number; peakRssMiB: number; rssGrowthMiB: number } {
    let cpu = 0;
    let sys = 0;
    let rss = 0;
    let growth = 0;
    for (const p of this.pids) {
      const now = cpuSeconds(p);
      const before = this.before.get(p) ?? { total: 0, sys: 0 };
      cpu += now.total - before.total;
      sys += now.sys - before.sys;
      const peak = peakRssMiB(p);
      rss = Math.max(rss, peak);
      growth = Math.max(growth, peak - (this.baseRss.get(p) ?? 0));
    }
    return { cpuSeconds: cpu, sysCpuSeconds: sys, peakRssMiB: rss, rssGrowthMiB: growth };
  }
}

/**
 * Reads files through, discarding the bytes, so that they are in the page cache. This machine's
 * kernel pages out page cache that is not read again within seconds (a DAMON `pageout` scheme: a
 * 512 MiB blob read once is half gone 30 s later), so a registry's blob file read during the last
 * target may be partly on disk for the next: each measured transfer starts with the copies it
 * reads in memory, whichever target runs it. Missing files are skipped (a cold cache has none).
 */
export function pageIn(files: string[]): void {
  const buf = Buffer.allocUnsafe(1 << 20);
  for (const f of files) {
    let fd: number;
    try {
      fd = openSync(f, 'r');
    } catch {
      continue;
    }
    try {
      while (readSync(fd, buf, 0, buf.length, null) > 0);
    } finally {
      closeSync(fd);
    }
  }
}

/** Current resident set (VmRSS) in MiB. */
export function rssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Bytes of the files under a directory, as `du -sb` counts them (a registry's storage). */
export function dirBytes(dir: string): number {
  return Number(execFileSync('du', ['-sb', dir]).toString().split('\t')[0]);
}

/** True when something already listens on 127.0.0.1:port. */
export async function portInUse(port: number): Promise<boolean> {
  const { createConnection } = await import('node:net');
  return new Promise((res) => {
    const s = createConnection({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

// ---------------------------------------------------------------- origin access log

export interface OriginRequest {
  method: string;
  path: string;
  status: number;
  bytes: number;
}

/** Reads the combined-format lines distribution writes to registry.log, from a byte offset. */
export class OriginLog {
  constructor(readonly file: string) {}

  mark(): number {
    return existsSync(this.file) ? statSync(this.file).size : 0;
  }

  since(offset: number): OriginRequest[] {
    if (!existsSync(this.file)) return [];
    const size = statSync(this.file).size;
    if (size <= offset) return [];
    const fd = openSync(this.file, 'r');
    const buf = Buffer.alloc(size - offset);
    try {
      readSync(fd, buf, 0, buf.length, offset);
    } finally {
      closeSync(fd);
    }
    const out: OriginRequest[] = [];
    for (const line of buf.toString('utf8').split('\n')) {
      const m = /"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP\/[\d.]+" (\d{3}) (\d+|-)/.exec(line);
      if (m)
        out.push({
          method: m[1] as string,
          path: m[2] as string,
          status: Number(m[3]),
          bytes: m[4] === '-' ? 0 : Number(m[4]),
        });
    }
    return out;
  }

  /** Waits until the log stops growing (distribution writes the line when a response completes). */
  async settle(quietMs = 400, maxMs = 20_000): Promise<void> {
    const until = Date.now() + maxMs;
    let last = this.mark();
    let quietSince = Date.now();
    while (Date.now() < until) {
      await sleep(100);
      const now = this.mark();
      if (now !== last) {
        last = now;
        quietSince = Date.now();
      } else if (Date.now() - quietSince >= quietMs) return;
    }
  }
}

export interface OriginSummary {
  requests: number;
  blobGets: number;
  manifestRequests: number;
  bytes: number;
}

export function summarize(reqs: OriginRequest[], digest?: string): OriginSummary {
  const rel = (r: OriginRequest) => r.path.startsWith('/v2/') && (digest === undefined || r.path.includes(digest));
  const sel = reqs.filter(rel);
  return {
    requests: sel.length,
    blobGets: sel.filter((r) => r.method === 'GET' && r.path.includes('/blobs/')).length,
    manifestRequests: sel.filter((r) => r.path.includes('/manifests/')).length,
    bytes: sel.filter((r) => r.method === 'GET').reduce((a, r) => a + r.bytes, 0),
  };
}

// ---------------------------------------------------------------- clients

export interface Fetched {
  status: number;
  bytes: number;
  seconds: number;
}

/** One blob GET with curl (a C client, so the client is not the bottleneck): bytes and seconds. */
export async function curlGet(url: string, timeoutS = 300): Promise<Fetched> {
  const { stdout } = await run(
    'curl',
    [
      '-sS',
      '-o',
      '/dev/null',
      '--max-time',
      String(timeoutS),
      '-w',
      '%{http_code} %{size_download} %{time_total}',
      url,
    ],
    {
      timeout: (timeoutS + 10) * 1000,
    },
  );
  const [code, size, t] = stdout.trim().split(' ');
  return { status: Number(code), bytes: Number(size), seconds: Number(t) };
}

/** N concurrent curl GETs of one URL, as N separate clients. */
export async function curlMany(
  url: string,
  n: number,
  timeoutS = 600,
): Promise<{ seconds: number; results: Fetched[] }> {
  const t0 = performance.now();
  const results = await Promise.all(
    Array.from({ length: n }, () => curlGet(url, timeoutS).catch(() => ({ status: 0, bytes: 0, seconds: NaN }))),
  );
  return { seconds: (performance.now() - t0) / 1000, results };
}

export const MANIFEST_ACCEPT = [
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  '*/*',
].join(', ');

interface Desc {
  digest: string;
  size: number;
  platform?: { architecture?: string; os?: string };
}

const clientAgent = new Agent({
  connections: 256,
  keepAliveTimeout: 10_000,
  bodyTimeout: 300_000,
  headersTimeout: 300_000,
});

async function drain(body: AsyncIterable<Buffer>): Promise<number> {
  let n = 0;
  for await (const c of body) n += c.length;
  return n;
}

/**
 * A containerd-like pull: HEAD the tag, GET the manifest (and the platform's child) by digest,
 * then the config and layers with 3 concurrent fetches, as containerd 1.6 does by default.
 */
export async function clientPull(
  base: string,
  name: string,
  tag: string,
  concurrency = 3,
): Promise<{ seconds: number; bytes: number; requests: number }> {
  const t0 = performance.now();
  let requests = 0;
  const get = async (path: string, accept: string, method: 'GET' | 'HEAD' = 'GET') => {
    requests++;
    const res = await request(`${base}/v2/${name}/${path}`, {
      method,
      reset: false,
      headers: { accept, 'user-agent': 'bench-client' },
      dispatcher: clientAgent,
    });
    if (res.statusCode !== 200) {
      await res.body.dump();
      throw new Error(`${method} ${path}: ${res.statusCode}`);
    }
    return res;
  };
  const head = await get(`manifests/${tag}`, MANIFEST_ACCEPT, 'HEAD');
  await head.body.dump();
  let digest = String(head.headers['docker-content-digest']);
  let bytes = 0;
  let manifest: { manifests?: Desc[]; config?: Desc; layers?: Desc[] };
  for (let depth = 0; ; depth++) {
    const res = await get(`manifests/${digest}`, MANIFEST_ACCEPT);
    const buf = Buffer.from(await res.body.arrayBuffer());
    bytes += buf.length;
    manifest = JSON.parse(buf.toString('utf8')) as typeof manifest;
    if (!manifest.manifests || depth > 0) break;
    const child =
      manifest.manifests.find((m) => m.platform?.architecture === 'amd64' && m.platform.os === 'linux') ??
      manifest.manifests[0];
    if (!child) throw new Error('empty index');
    digest = child.digest;
  }
  const blobs = [manifest.config, ...(manifest.layers ?? [])].filter((d): d is Desc => d !== undefined);
  let next = 0;
  const worker = async () => {
    while (next < blobs.length) {
      const d = blobs[next++] as Desc;
      const res = await get(`blobs/${d.digest}`, '*/*');
      const n = await drain(res.body);
      if (n !== d.size) throw new Error(`blob ${d.digest}: ${n} bytes, expected ${d.size}`);
      bytes += n;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { seconds: (performance.now() - t0) / 1000, bytes, requests };
}

/** Warm manifest HEADs cycling through tags, `concurrency` in flight, bounded in time and count. */
export async function headLoad(
  base: string,
  name: string,
  tags: string[],
  opts: { seconds: number; concurrency: number; maxRequests: number },
): Promise<{ requests: number; errors: number; perSecond: number; p50Ms: number; p99Ms: number }> {
  const pool = new Pool(base, { connections: opts.concurrency, pipelining: 1, keepAliveTimeout: 10_000 });
  const lat: number[] = [];
  let errors = 0;
  let i = 0;
  const deadline = performance.now() + opts.seconds * 1000;
  const t0 = performance.now();
  const worker = async () => {
    while (performance.now() < deadline && i < opts.maxRequests) {
      const tag = tags[i++ % tags.length] as string;
      const s = performance.now();
      try {
        // reset: false keeps the connection, as containerd does (undici closes it after a HEAD).
        const res = await pool.request({
          path: `/v2/${name}/manifests/${tag}`,
          method: 'HEAD',
          reset: false,
          headers: { accept: MANIFEST_ACCEPT },
        });
        await res.body.dump();
        if (res.statusCode !== 200) errors++;
      } catch {
        errors++;
      }
      lat.push(performance.now() - s);
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  const secs = (performance.now() - t0) / 1000;
  await pool.close();
  lat.sort((a, b) => a - b);
  return {
    requests: lat.length,
    errors,
    perSecond: lat.length / secs,
    p50Ms: quantile(lat, 0.5),
    p99Ms: quantile(lat, 0.99),
  };
}

export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  maxMs: number,
  everyMs = 100,
): Promise<void> {
  const until = Date.now() + maxMs;
  while (Date.now() < until) {
    if (await check()) return;
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${maxMs} ms waiting for ${what}`);
}

export async function httpStatus(url: string, method: 'GET' | 'HEAD' = 'HEAD'): Promise<number> {
  try {
    const res = await request(url, { method, dispatcher: clientAgent });
    await res.body.dump();
    return res.statusCode;
  } catch {
    return 0;
  }
}

// ---------------------------------------------------------------- stats

export function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[idx] as number;
}

export interface Stat {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function stat(values: number[]): Stat {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return { median: NaN, min: NaN, max: NaN, n: 0 };
  const mid = Math.floor(v.length / 2);
  const median = v.length % 2 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
  return { median, min: v[0] as number, max: v[v.length - 1] as number, n: v.length };
}

export function fmt(x: number, digits = 2): string {
  if (!Number.isFinite(x)) return '-';
  if (Math.abs(x) >= 100) return x.toFixed(0);
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(digits);
}

export function fmtStat(s: Stat, digits = 2): string {
  if (s.n === 0) return '-';
  if (s.n === 1 || s.min === s.max) return fmt(s.median, digits);
  return `${fmt(s.median, digits)} (${fmt(s.min, digits)}-${fmt(s.max, digits)})`;
}

/** The pids and their children (nginx's worker under its master). */
export function withChildren(pids: number[]): number[] {
  return pids.flatMap((p) => {
    try {
      return [
        p,
        ...readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number),
      ];
    } catch {
      return [p];
    }
  });
}

/** Starts a detached child and returns it with its pid; output goes to a file. */
export function startChild(cmd: string, args: string[], logFile: string, env: NodeJS.ProcessEnv = process.env) {
  const fd = openSync(logFile, 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], env });
  closeSync(fd);
  return child;
}

/**
 * nginx in the foreground, for the bench's own relays: one worker, no access log, every file in
 * `dir`; `http` is the body of its http block (upstreams and servers). Returns the master.
 */
export function startNginx(dir: string, http: string): ChildProcess {
  mkdirSync(join(dir, 'tmp'), { recursive: true });
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body; proxy_temp_path ${dir}/tmp/proxy; fastcgi_temp_path ${dir}/tmp/fcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi; scgi_temp_path ${dir}/tmp/scgi;
${http}
}
`,
  );
  return startChild('nginx', ['-p', dir, '-c', conf, '-e', join(dir, 'error.log')], join(dir, 'nginx.out'));
}
