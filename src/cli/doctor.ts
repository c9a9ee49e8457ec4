/**
 * `pullthrough doctor`: the preflight an operator (or node-setup's init container) runs on a node.
 * Each check prints one line, `ok`, `warn`, `fail` or `skip`, with why and, when it is not ok,
 * the fix; the exit code is 1 when a check failed (the node cannot pull through pullthrough as
 * configured), else 0. The runtime detection and the containerd config check are node-setup's own
 * (src/nodesetup), so the doctor judges exactly what node-setup does.
 */
import { execFile } from 'node:child_process';
import { lookup as dnsLookup } from 'node:dns/promises';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { request } from 'undici';
import { DOCTOR_HELP, parseDoctorConfig, type DoctorConfig } from '../config/doctor.js';
import {
  checkContainerdConfig,
  detectRuntime,
  nodePath,
  DROP_IN_MARKER,
  DROP_IN_NAME,
  HOSTS_MARKER,
} from '../nodesetup/index.js';
import { CredentialProviderConfigError, parseCredentialProviderConfig } from '../oci/credential-provider.js';
import { readCapped } from '../oci/registry-client.js';

export type Verdict = 'ok' | 'warn' | 'fail' | 'skip';

export interface CheckResult {
  readonly check: string;
  readonly verdict: Verdict;
  readonly why: string;
  readonly fix?: string;
}

export interface DoctorDeps {
  /** Every address a name resolves to, in the resolver's order. */
  readonly lookupAll?: (host: string) => Promise<{ address: string; family: number }[]>;
  readonly now?: () => number;
}

const run = promisify(execFile);

function errorCode(err: unknown): string {
  const e = err as { code?: unknown; cause?: { code?: unknown }; message?: string };
  const code = e.cause?.code ?? e.code;
  return typeof code === 'string' ? code : (e.message ?? String(err));
}

interface HttpAnswer {
  status: number;
  body: string;
  date: string | undefined;
}

async function httpGet(url: string, timeoutMs: number): Promise<HttpAnswer> {
  const res = await request(url, {
    signal: AbortSignal.timeout(timeoutMs),
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
  });
  // A health or /v2/ answer is small; a huge body is no answer worth holding in memory.
  const body = await readCapped(res.body, 64 * 1024);
  const date = res.headers.date;
  return { status: res.statusCode, body, date: Array.isArray(date) ? date[0] : date };
}

async function runtimeVersion(runtime: 'containerd' | 'cri-o'): Promise<string | undefined> {
  try {
    const { stdout } = await run(runtime === 'cri-o' ? 'crio' : 'containerd', ['--version'], { timeout: 5_000 });
    return stdout
      .split('\n')
      .find((l) => l.trim() !== '')
      ?.trim();
  } catch {
    return undefined;
  }
}

async function readText(file: string): Promise<{ text?: string; error?: string }> {
  try {
    return { text: await readFile(file, 'utf8') };
  } catch (err) {
    return { error: errorCode(err) };
  }
}

/** The checks, in the order they print. Never throws: a check that cannot run says so. */
export async function runChecks(config: DoctorConfig, deps: DoctorDeps = {}): Promise<CheckResult[]> {
  const lookupAll = deps.lookupAll ?? ((host: string) => dnsLookup(host, { all: true, verbatim: true }));
  const now = deps.now ?? Date.now;
  const results: CheckResult[] = [];
  const add = (r: CheckResult) => results.push(r);

  const runtime = await detectRuntime(config);
  const version = await runtimeVersion(runtime);
  const how =
    config.runtime === 'auto' ? `auto: ${config.crioDir} ${runtime === 'cri-o' ? 'exists' : 'absent'}` : '--runtime';
  add({
    check: 'runtime',
    verdict: 'ok',
    why: `${runtime} (${how}); version ${version ?? 'unknown: no binary on PATH here'}`,
  });

  if (runtime === 'containerd') {
    add(await containerdConfigPath(config));
    add(await hostsToml(config));
  } else {
    add(await crioDropIn(config));
  }

  const skews: { what: string; skewMs: number }[] = [];
  const noteDate = (what: string, date: string | undefined) => {
    const at = date === undefined ? NaN : Date.parse(date);
    if (Number.isFinite(at)) skews.push({ what, skewMs: now() - at });
  };

  add(await nodeProxy(config));
  add(await proxyHostResolution(config, lookupAll));

  if (config.cacheRegistryUrl) {
    const url = `${config.cacheRegistryUrl}/v2/`;
    try {
      const a = await httpGet(url, config.timeoutMs);
      noteDate('the cache registry', a.date);
      // 401: it answers and asks for credentials, which the proxies hold.
      add(
        a.status === 200 || a.status === 401
          ? { check: 'cache registry', verdict: 'ok', why: `${url} answers ${a.status}` }
          : {
              check: 'cache registry',
              verdict: 'fail',
              why: `${url} answers ${a.status}: the proxies cache nothing`,
              fix: 'check the pullthrough-registry Deployment, its volume and its logs',
            },
      );
    } catch (err) {
      add({
        check: 'cache registry',
        verdict: 'fail',
        why: `${url} unreachable (${errorCode(err)}): the proxies cache nothing`,
        fix: 'check the pullthrough-registry Service and pods, and the NetworkPolicy pullthrough-registry',
      });
    }
  } else {
    add({ check: 'cache registry', verdict: 'skip', why: 'no --cache-registry given' });
  }

  if (config.clusterProxyUrl) {
    const url = `${config.clusterProxyUrl}/readyz`;
    try {
      const a = await httpGet(url, config.timeoutMs);
      noteDate('the cluster proxy', a.date);
      add(
        a.status === 200
          ? { check: 'cluster proxy', verdict: 'ok', why: `${url} answers ready` }
          : {
              check: 'cluster proxy',
              verdict: 'warn',
              why: `${url} answers ${a.status}: a node whose proxy is down pulls from the origins`,
              fix: 'check the pullthrough-cluster-proxy Deployment and its logs',
            },
      );
    } catch (err) {
      add({
        check: 'cluster proxy',
        verdict: 'warn',
        why: `${url} unreachable (${errorCode(err)}): a node whose proxy is down pulls from the origins`,
        fix: 'check the pullthrough-cluster-proxy Service and pods, and that this node reaches Service IPs',
      });
    }
  } else {
    add({ check: 'cluster proxy', verdict: 'skip', why: 'no --cluster-proxy given' });
  }

  add(await credentialProviders(config));

  if (skews.length === 0) {
    add({ check: 'clock', verdict: 'skip', why: 'no remote clock answered to compare with' });
  } else {
    const worst = skews.reduce((a, b) => (Math.abs(b.skewMs) > Math.abs(a.skewMs) ? b : a));
    const seconds = Math.round(worst.skewMs / 1000);
    const off = `${Math.abs(seconds)} s ${seconds >= 0 ? 'ahead of' : 'behind'} ${worst.what}`;
    add(
      Math.abs(worst.skewMs) > config.maxClockSkewMs
        ? {
            check: 'clock',
            verdict: 'warn',
            why: `this node is ${off}: tokens and certificates may be refused as not yet or no longer valid`,
            fix: "sync the node's clock (chrony, systemd-timesyncd)",
          }
        : { check: 'clock', verdict: 'ok', why: `within ${config.maxClockSkewMs / 1000} s (${off})` },
    );
  }
  return results;
}

async function containerdConfigPath(config: DoctorConfig): Promise<CheckResult> {
  const check = 'containerd config_path';
  if (config.containerdConfig === '') return { check, verdict: 'skip', why: 'no --containerd-config given' };
  const { text, error } = await readText(config.containerdConfig);
  if (text === undefined) {
    return {
      check,
      verdict: 'warn',
      why: `cannot read ${config.containerdConfig} (${error}): config_path not checked`,
      fix: "mount the node's containerd config and pass it as --containerd-config",
    };
  }
  const c = checkContainerdConfig(text, nodePath(config.hostsDir, config.hostRoot));
  return c.ok
    ? { check, verdict: 'ok', why: `${c.message} (${config.containerdConfig})` }
    : {
        check,
        verdict: 'fail',
        why: `${c.message}: pods whose images the webhook rewrites cannot be pulled`,
        fix:
          `set config_path = "${config.hostsDir}" under [plugins."io.containerd.grpc.v1.cri".registry] ` +
          'and restart containerd',
      };
}

async function hostsToml(config: DoctorConfig): Promise<CheckResult> {
  const check = `hosts.toml for ${config.proxyHost}`;
  const file = join(config.hostsDir, config.proxyHost, 'hosts.toml');
  const { text, error } = await readText(file);
  const fix = 'run pullthrough node-setup (the node proxy pod runs it as its init container)';
  if (text === undefined) return { check, verdict: 'fail', why: `${file} cannot be read (${error})`, fix };
  if (!text.includes(HOSTS_MARKER)) {
    return { check, verdict: 'warn', why: `${file} was not written by node-setup`, fix };
  }
  if (!text.includes(`[host."${config.nodeProxyUrl}"]`)) {
    return { check, verdict: 'fail', why: `${file} does not name the node proxy ${config.nodeProxyUrl}`, fix };
  }
  const server = /^server\s*=\s*"([^"]*)"/m.exec(text)?.[1];
  return { check, verdict: 'ok', why: `${file}: ${config.nodeProxyUrl}, then ${server ?? 'nothing'}` };
}

async function crioDropIn(config: DoctorConfig): Promise<CheckResult> {
  const check = 'CRI-O registries.conf.d';
  const file = join(config.registriesConfDir, DROP_IN_NAME);
  const { text, error } = await readText(file);
  const fix = 'run pullthrough node-setup --runtime cri-o';
  if (text === undefined) return { check, verdict: 'fail', why: `${file} cannot be read (${error})`, fix };
  if (!text.includes(DROP_IN_MARKER)) {
    return { check, verdict: 'warn', why: `${file} was not written by node-setup`, fix };
  }
  return { check, verdict: 'ok', why: `${file} mirrors ${config.proxyHost} to the node proxy` };
}

async function nodeProxy(config: DoctorConfig): Promise<CheckResult> {
  const check = 'node proxy';
  const url = `${config.nodeProxyUrl}/readyz`;
  try {
    const a = await httpGet(url, config.timeoutMs);
    let state: { status?: string; caching?: boolean; reason?: string } = {};
    try {
      state = JSON.parse(a.body) as typeof state;
    } catch {
      // Not the proxy's JSON: judged by the status alone.
    }
    if (a.status !== 200) {
      return {
        check,
        verdict: 'fail',
        why: `${url} answers ${a.status}${state.reason ? `: ${state.reason}` : ''}`,
        fix: 'read the pullthrough-node-proxy pod log on this node',
      };
    }
    if (state.caching === false) {
      return {
        check,
        verdict: 'warn',
        why: `${url} ready but ${state.reason ?? 'not caching'}`,
        fix: 'pulls go on from the origins; see the cache registry check and the proxy log',
      };
    }
    return { check, verdict: 'ok', why: `${url} answers ready` };
  } catch (err) {
    return {
      check,
      verdict: 'fail',
      why: `${url} unreachable (${errorCode(err)}): containerd skips it for every rewritten image`,
      fix:
        'check the pullthrough-node-proxy pod on this node; a pod that does not start usually means ' +
        'its hostPort is taken',
    };
  }
}

/** What the proxy host's name resolves to first: `::1` misses a hostPort that listens on IPv4 only. */
async function proxyHostResolution(
  config: DoctorConfig,
  lookupAll: NonNullable<DoctorDeps['lookupAll']>,
): Promise<CheckResult> {
  const host = config.proxyHost.replace(/:\d+$/, '');
  const check = `${host} resolves`;
  if (isIP(host.replace(/^\[|\]$/g, ''))) return { check, verdict: 'skip', why: `${host} is an address` };
  let addresses: { address: string; family: number }[];
  try {
    addresses = await lookupAll(host);
  } catch (err) {
    return { check, verdict: 'warn', why: `${host} does not resolve here (${errorCode(err)})` };
  }
  const first = addresses[0];
  if (!first) return { check, verdict: 'warn', why: `${host} resolves to no address here` };
  const proxyHost = new URL(config.nodeProxyUrl).hostname.replace(/^\[|\]$/g, '');
  const list = addresses.map((a) => a.address).join(', ');
  if (first.family === 6 && isIP(proxyHost) === 4) {
    return {
      check,
      verdict: 'warn',
      why:
        `${host} resolves to ${first.address} first (${list}); the node proxy is at ${proxyHost} (IPv4): ` +
        'a client that uses the name and tries only the first address misses it',
      fix:
        `keep node-setup's hosts.toml (it names ${config.nodeProxyUrl}), ` +
        `or list 127.0.0.1 first for ${host} in /etc/hosts`,
    };
  }
  return { check, verdict: 'ok', why: `${host} resolves to ${first.address} first (${list})` };
}

async function credentialProviders(config: DoctorConfig): Promise<CheckResult> {
  const check = 'node identity';
  const file = config.credentialProviderConfig;
  if (file === '') return { check, verdict: 'skip', why: 'no --image-credential-provider-config given' };
  const { text, error } = await readText(file);
  if (text === undefined) {
    return {
      check,
      verdict: 'fail',
      why: `cannot read ${file} (${error})`,
      fix: "mount the kubelet's CredentialProviderConfig, or leave the flag out",
    };
  }
  try {
    // The kubelet reads YAML or JSON; JSON is YAML.
    const { loadYaml } = await import('@kubernetes/client-node');
    const providers = parseCredentialProviderConfig(loadYaml(text));
    const names = providers.map((p) => `${p.name} for ${p.matchImages.join(', ')}`).join('; ');
    return { check, verdict: 'ok', why: `the kubelet's credential providers: ${names}` };
  } catch (err) {
    const why = err instanceof CredentialProviderConfigError ? err.message : 'not valid YAML or JSON';
    return { check, verdict: 'fail', why: `${file}: ${why}`, fix: "use the kubelet's own file" };
  }
}

export function formatResult(r: CheckResult): string {
  return `${r.verdict.padEnd(4)}  ${r.check}: ${r.why}${r.fix ? `; fix: ${r.fix}` : ''}`;
}

/** Where the command reads its environment and writes its report; the process's own by default. */
export interface DoctorIo {
  readonly env?: NodeJS.ProcessEnv;
  readonly out?: { write(text: string): unknown };
  readonly deps?: DoctorDeps;
}

export async function runDoctorCommand(argv: readonly string[], io: DoctorIo = {}): Promise<number> {
  const out = io.out ?? process.stdout;
  const parsed = parseDoctorConfig(argv, io.env ?? process.env);
  if (parsed.help) {
    out.write(`${DOCTOR_HELP}\n`);
    return 0;
  }
  const results = await runChecks(parsed.config, io.deps);
  for (const r of results) out.write(`${formatResult(r)}\n`);
  const failed = results.filter((r) => r.verdict === 'fail').length;
  const warned = results.filter((r) => r.verdict === 'warn').length;
  out.write(
    failed > 0
      ? `this node cannot pull through pullthrough: ${failed} check(s) failed, ${warned} warning(s)\n`
      : `this node is fit: ${warned} warning(s)\n`,
  );
  return failed > 0 ? 1 : 0;
}
