/**
 * The oci-lab scripts (../shared/oci-lab) as functions: real registries, real images, a real
 * containerd, fault-injecting proxies. Each test file passes its own lab directory and ports, so
 * files can run in parallel.
 */
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const LAB = process.env.OCI_LAB ?? resolve(import.meta.dirname, '../../../shared/oci-lab');

export function labAvailable(): boolean {
  return (
    existsSync(`${LAB}/registry-up.sh`) && existsSync('/usr/bin/docker-registry') && existsSync('/usr/bin/containerd')
  );
}

function parseVars(out: string): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) vars[m[1] as string] = (m[2] as string).replace(/^"|"$/g, '');
  }
  return vars;
}

/** containerd-up.sh's snapshotter check failed while its own listing shows overlayfs ok. */
function pipefailOnly(message: string): boolean {
  return (
    message.includes('snapshotter overlayfs not usable here') && /snapshotter\.v1\s+overlayfs\s+\S+\s+ok/.test(message)
  );
}

function daemonAlive(pidFile: string): boolean {
  try {
    process.kill(Number(readFileSync(pidFile, 'utf8').trim()), 0);
    return true;
  } catch {
    return false;
  }
}

export class Lab {
  readonly dir: string;
  private readonly cleanups: (() => Promise<unknown>)[] = [];

  /** A fresh lab directory named after the test file; nginx workers (not root) must write in it. */
  constructor(name: string) {
    this.dir = mkdtempSync(join(tmpdir(), `lab-${name}-`));
    chmodSync(this.dir, 0o755);
  }

  async script(name: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<string> {
    try {
      const { stdout } = await run(`${LAB}/${name}`, args, {
        env: { ...process.env, OCI_LAB_DIR: this.dir },
        timeout: opts.timeoutMs ?? 120_000,
        maxBuffer: 16 * 1024 * 1024,
      });
      return stdout;
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      throw new Error(`${name} ${args.join(' ')} failed: ${e.message}\n${e.stderr ?? ''}${e.stdout ?? ''}`);
    }
  }

  async registry(
    name: string,
    port: number,
    flags: string[] = [],
  ): Promise<{ url: string; dir: string; host: string }> {
    const v = parseVars(await this.script('registry-up.sh', [name, String(port), ...flags]));
    this.cleanups.push(() => this.down(name));
    return { url: v.URL as string, dir: v.DIR as string, host: `127.0.0.1:${port}` };
  }

  async down(name: string): Promise<void> {
    await this.script('registry-down.sh', [name]).catch(() => undefined);
  }

  /** Stops a registry but keeps its data so it can be started again. */
  async stop(name: string): Promise<void> {
    await this.script('registry-down.sh', [name, '--keep']);
  }

  async image(registry: string, repo: string, tag: string, flags: string[] = []): Promise<Image> {
    const v = parseVars(await this.script('make-image.sh', [registry, repo, tag, ...flags]));
    return {
      ref: v.REF as string,
      digest: v.DIGEST as string,
      mediaType: v.MEDIATYPE as string,
      layers: (v.LAYERS ?? '').split(' ').filter(Boolean),
      children: (v.CHILDREN ?? '').split(' ').filter(Boolean),
    };
  }

  async containerd(name: string, criPort: number): Promise<{ hostsDir: string; sock: string }> {
    // Registered first: a containerd that started but failed its checks is still torn down.
    this.cleanups.push(() => this.script('containerd-down.sh', [name]).catch(() => undefined));
    // containerd-up.sh checks the snapshotter with `ctr plugins ls | grep -q` under `pipefail`:
    // when grep has its line and exits before ctr finished writing, ctr dies of SIGPIPE and the
    // check fails although the listing it prints next says the snapshotter is ok. Then the daemon
    // is up and usable; the script only skipped printing where it is. A real failure (the
    // snapshotter not ok, the daemon gone) is retried from scratch.
    let out = '';
    for (let attempt = 1; ; attempt++) {
      try {
        out = await this.script('containerd-up.sh', [name, '--cri-port', String(criPort)]);
        break;
      } catch (err) {
        const dir = `${this.dir}/${name}`;
        if (pipefailOnly(String(err)) && daemonAlive(`${dir}/containerd.pid`)) {
          return { hostsDir: `${dir}/certs.d`, sock: `${dir}/containerd.sock` };
        }
        await this.script('containerd-down.sh', [name]).catch(() => undefined);
        if (attempt === 4) throw err;
        await new Promise((r) => setTimeout(r, 500 * attempt));
      }
    }
    const v = parseVars(out);
    return { hostsDir: v.HOSTS_DIR as string, sock: v.SOCK as string };
  }

  async hostsToml(hostsDir: string, registryHost: string, server: string, mirrors: string[] = []): Promise<void> {
    await this.script('hosts-toml.sh', [
      hostsDir,
      registryHost,
      '--server',
      server,
      ...mirrors.flatMap((m) => ['--mirror', m]),
    ]);
  }

  /** The kubelet's pull. Resolves with the parsed JSON line, whether it succeeded or not. */
  async criPull(
    node: string,
    ref: string,
    flags: string[] = [],
  ): Promise<{ image_ref?: string; error?: string; details?: string; seconds: number }> {
    try {
      const out = await this.script('cri-pull.sh', [node, ref, ...flags], { timeoutMs: 300_000 });
      return JSON.parse(out.trim().split('\n').pop() as string) as { image_ref: string; seconds: number };
    } catch (err) {
      const text = (err as Error).message;
      const line = text.split('\n').find((l) => l.startsWith('{"error"'));
      if (line) return JSON.parse(line) as { error: string; details: string; seconds: number };
      throw err;
    }
  }

  async removeImage(node: string, ref: string): Promise<void> {
    await run('/usr/bin/python3', [`${LAB}/cri.py`, `${this.dir}/${node}/containerd.sock`, 'rmi', ref]).catch(
      () => undefined,
    );
  }

  async logproxy(
    name: string,
    port: number,
    upstream: string,
    flags: string[] = [],
  ): Promise<{ url: string; log: string }> {
    const v = parseVars(await this.script('logproxy-up.sh', [name, String(port), upstream, ...flags]));
    this.cleanups.push(() => this.down(name));
    return { url: v.URL as string, log: v.LOG as string };
  }

  /** A scratch directory (a proxy's data dir) removed with the lab. */
  tempDir(prefix: string): string {
    const dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
    this.cleanups.unshift(async () => rmSync(dir, { recursive: true, force: true }));
    return dir;
  }

  /** Stops everything the lab started, then removes its directories. */
  async cleanup(): Promise<void> {
    for (const c of this.cleanups.reverse()) await c();
    this.cleanups.length = 0;
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface Image {
  readonly ref: string;
  readonly digest: string;
  readonly mediaType: string;
  readonly layers: string[];
  readonly children: string[];
}

export interface AccessEntry {
  method: string;
  uri: string;
  status: number;
  bytes: number;
  range: string;
  auth: string;
}

export function accessLog(file: string): AccessEntry[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as AccessEntry);
}

/** Registry access log lines (distribution's own, in registry.log): method and path of each request. */
export function registryRequests(dir: string): { method: string; path: string; status: number }[] {
  const file = `${dir}/registry.log`;
  if (!existsSync(file)) return [];
  const out: { method: string; path: string; status: number }[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    // combined log format: ... "GET /v2/... HTTP/1.1" 200 1234 ...
    const m = /"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP\/[\d.]+" (\d{3})/.exec(line);
    if (m) out.push({ method: m[1] as string, path: m[2] as string, status: Number(m[3]) });
  }
  return out;
}

/** Starts again a registry stopped with `stop()` (registry-up.sh would wipe its data). */
export async function restartRegistry(lab: Lab, name: string, port: number): Promise<void> {
  const { spawn } = await import('node:child_process');
  const { openSync, writeFileSync } = await import('node:fs');
  const dir = join(lab.dir, name);
  const log = openSync(join(dir, 'registry.log'), 'a');
  const child = spawn('docker-registry', ['serve', join(dir, 'config.yml')], {
    detached: true,
    stdio: ['ignore', log, log],
  });
  child.unref();
  writeFileSync(join(dir, 'registry.pid'), String(child.pid));
  for (let i = 0; i < 100; i++) {
    const ok = await fetch(`http://127.0.0.1:${port}/v2/`).then(
      (r) => r.status === 200 || r.status === 401,
      () => false,
    );
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`registry ${name} did not come back on ${port}`);
}
