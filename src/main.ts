#!/usr/bin/env node
/**
 * The composition root: the `pullthrough` command and the wiring of every component. Nothing
 * else constructs dependencies; everything below takes them as arguments.
 */
import { createServer, type Server } from 'node:http';
import { realpathSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { Agent, type Dispatcher } from 'undici';
import { AccessControl, type PodDirectory } from './access/access-control.js';
import { registryProbe } from './access/origin-probe.js';
import { PrivacyBook } from './access/privacy.js';
import { BlobFills, prepareSpoolDir } from './cache/blob-fills.js';
import { SpoolError } from './cache/spool-writer.js';
import { FsStore } from './cache/fs-store.js';
import { RegistryStore } from './cache/registry-store.js';
import { ResilientStore } from './cache/resilient-store.js';
import type { Store } from './cache/store.js';
import { ConfigError, helpText } from './config/flags.js';
import { NODE_SETUP_HELP, NodeSetupConfigError, parseNodeSetupConfig } from './config/node-setup.js';
import { parseWebhookConfig, WEBHOOK_HELP, WebhookConfigError } from './config/webhook.js';
// Loaded only by the commands that use them: @kubernetes/client-node alone costs ~80 MiB of RSS.
import type { NodeKube } from './kube/index.js';
import { proxyFlags, readProxyConfig, type ProxyConfig } from './config/proxy.js';
import { StaticCredentialSource, type CredentialSource } from './oci/credentials.js';
import { createEgressPolicy, guardedConnector } from './oci/egress.js';
import { decodeImage, encodeImage } from './oci/encoding.js';
import { parseHostList } from './oci/host-pattern.js';
import { DOCKER_HUB, DOCKER_HUB_ENDPOINT, formatReference } from './oci/reference.js';
import { RegistryClient } from './oci/registry-client.js';
import { reportResponseBytes } from './oci/response-bytes.js';
import { createLogger, type Logger } from './observability/logger.js';
import { ProxyMetrics } from './observability/metrics.js';
import { PullService } from './proxy/pull-service.js';
import { createProxyServer } from './proxy/server.js';
import { YoungGcPacer, youngGcFunction, type CollectYoung } from './runtime/young-gc.js';

const VERSION = '0.1.0';
const USER_AGENT = `pullthrough/${VERSION}`;
const CACHE_HOST = 'cache-registry';

export interface ProxyDeps {
  readonly log: Logger;
  readonly metrics?: ProxyMetrics;
  /** Extra credential sources tried before --registry-credentials (the pods' secrets). */
  readonly podCredentials?: CredentialSource;
  /**
   * The pods on this node (src/kube's PodCredentials). With it, private images are served from
   * the cache only under the access model of docs/credentials.md; without it, every cached copy
   * is served (standalone, no pods to check against).
   */
  readonly pods?: PodDirectory;
  /**
   * A young-generation collection, run after every few MiB received from registries so that dead
   * socket buffers are freed early (src/runtime/young-gc.ts). Without it, V8 decides alone.
   */
  readonly collectYoung?: CollectYoung;
}

/**
 * Received bytes between two young-generation collections (see ProxyDeps.collectYoung). Measured
 * streaming a 512 MiB blob: 8 MiB took peak RSS from 96-99 to 86-89 MiB cold and from 101-106 to
 * 89-97 warm from the cache registry, with CPU within the noise; 4 MiB saved 3-6 MiB more for
 * twice the collections.
 */
const YOUNG_GC_EVERY_BYTES = 8 * 1024 * 1024;

export interface BuiltProxy {
  readonly app: ReturnType<typeof createProxyServer>;
  readonly pull: PullService;
  readonly store: ResilientStore;
  readonly fills: BlobFills;
  readonly metrics: ProxyMetrics;
  readonly access: AccessControl | undefined;
  /** Stops serving: in-flight requests get `graceMs` (default 10 s), then connections are cut. */
  close(graceMs?: number): Promise<void>;
}

/** Wires a node proxy from its configuration. The returned server is not listening yet. */
export function buildProxy(config: ProxyConfig, deps: ProxyDeps): BuiltProxy {
  const { log } = deps;
  const metrics = deps.metrics ?? new ProxyMetrics();
  const insecure = parseHostList(config.insecureRegistries);
  const allowed = parseHostList(config.allowedRegistries);
  const staticCreds = new StaticCredentialSource(config.credentials);
  const credentials: CredentialSource = deps.podCredentials
    ? {
        async credentialsFor(req) {
          const pods = (await deps.podCredentials?.credentialsFor(req)) ?? [];
          return [...pods, ...(await staticCreds.credentialsFor(req))];
        },
      }
    : staticCreds;

  const egress = createEgressPolicy([...insecure.literalHosts(), ...allowed.literalHosts()]);
  const pacer = deps.collectYoung ? new YoungGcPacer(deps.collectYoung, YOUNG_GC_EVERY_BYTES) : undefined;
  const paced = (agent: Agent): Dispatcher => (pacer ? agent.compose(reportResponseBytes(pacer.note)) : agent);
  const originAgent = new Agent({
    connect: guardedConnector(egress, { timeoutMs: config.originConnectTimeoutMs }),
    headersTimeout: config.originTimeoutMs,
    bodyTimeout: config.originIdleTimeoutMs,
    keepAliveTimeout: 30_000,
  });
  const origin = new RegistryClient({
    name: 'origin',
    dispatcher: paced(originAgent),
    baseUrl: (registry) => {
      if (registry === DOCKER_HUB) return `https://${DOCKER_HUB_ENDPOINT}`;
      return `${insecure.matches(registry) ? 'http' : 'https'}://${registry}`;
    },
    credentials,
    userAgent: USER_AGENT,
    headersTimeoutMs: config.originTimeoutMs,
    bodyTimeoutMs: config.originIdleTimeoutMs,
  });

  let inner: Store;
  let cacheAgent: Agent | undefined;
  if (config.cacheRegistry) {
    const base = config.cacheRegistry.toString().replace(/\/+$/, '');
    // The cache registry is configured by the operator, so its own address is trusted as given.
    cacheAgent = new Agent({
      connect: guardedConnector(createEgressPolicy([config.cacheRegistry.hostname]), { timeoutMs: config.cacheTimeoutMs }),
      headersTimeout: config.cacheTimeoutMs,
      bodyTimeout: config.originIdleTimeoutMs,
      keepAliveTimeout: 30_000,
      connections: 64,
    });
    const cacheClient = new RegistryClient({
      name: 'cache',
      dispatcher: paced(cacheAgent),
      baseUrl: () => base,
      credentials: {
        credentialsFor: async (req) => staticCreds.credentialsFor({ registry: config.cacheRegistry?.host ?? req.registry, repository: req.repository }),
      },
      userAgent: USER_AGENT,
      headersTimeoutMs: config.cacheTimeoutMs,
      bodyTimeoutMs: config.originIdleTimeoutMs,
    });
    inner = new RegistryStore(cacheClient, CACHE_HOST);
  } else {
    inner = new FsStore(config.dataDir);
  }
  const store = new ResilientStore(
    inner,
    {
      storeFailed: (op, err) => {
        metrics.storeFailures.inc({ op });
        log.warn({ op, store: inner.kind, err: err.message }, 'cache store failed; serving from the origin without caching');
      },
      storeRecovered: () => log.info({ store: inner.kind }, 'cache store answers again'),
    },
    config.cacheCooldownMs,
  );
  const fills = new BlobFills({
    tmpDir: join(config.dataDir, 'tmp'),
    store,
    spoolCooldownMs: config.cacheCooldownMs,
    // Uploads to the cache registry yield to pulls in progress (measured: they slowed a cold
    // containerd pull by a quarter); a rename into the embedded store costs nothing.
    ...(inner.kind === 'registry' ? { commitDeferMs: 30_000, commitConcurrency: 2 } : {}),
    events: {
      onVerified: (f) => {
        metrics.fills.inc({ result: 'verified' });
        metrics.fillBytes.inc(f.written);
      },
      onFailed: (f, err) => {
        metrics.fills.inc({ result: 'failed' });
        if (err instanceof SpoolError) metrics.storeFailures.inc({ op: 'spool' });
        log.warn({ repo: f.repo, digest: f.digest, bytes: f.written, err: err.message }, 'blob fill failed; nothing was cached');
      },
    },
  });
  metrics.trackFills(() => fills.size);
  // The cluster proxy has no pods to check against: a private image only with node-wide credentials.
  const pods: PodDirectory | undefined = deps.pods ?? (config.privateImages === 'node-credentials' ? NO_PODS : undefined);
  const privacy = pods
    ? new PrivacyBook({
        file: join(config.dataDir, 'access', 'privacy.json'),
        onError: (op, err) => log.warn({ op, err: err.message }, 'privacy record of repositories could not be read or written; kept in memory'),
      })
    : undefined;
  const access =
    pods && privacy
      ? new AccessControl({
          pods,
          probe: registryProbe(origin),
          privacy,
          authTtlMs: config.authTtlMs,
          originDown: config.privateWhenOriginDown,
          originDownGraceMs: config.originDownGraceMs,
          log,
          metrics: {
            refused: (reason) => metrics.accessRefusals.inc({ reason }),
            probed: (result) => metrics.accessProbes.inc({ result }),
            servedWhileOriginDown: () => metrics.accessServedOriginDown.inc(),
          },
        })
      : undefined;
  const pull = new PullService({
    origin,
    store,
    fills,
    tagTtlMs: config.tagTtlMs,
    platforms: config.platforms,
    log,
    ...(access ? { access } : {}),
  });
  const app = createProxyServer({ pull, allowed, self: parseHostList(config.proxyHosts), ready: () => store.ping(), log, metrics });
  return {
    app,
    pull,
    store,
    fills,
    metrics,
    access,
    async close(graceMs = 10_000) {
      // Cold fills stop at once (their clients resume elsewhere with Range); uploads still waiting
      // for quieter times run now, for a few seconds at most (the pod has 30 s to stop).
      await fills.flush(new Error('shutting down'), Math.min(5_000, graceMs / 2));
      fills.cancelAll(new Error('shutting down'));
      // Connections that sent no request yet (clients open them ahead) would hold close() until
      // the server's headers timeout: other in-flight answers get a grace period, then everything
      // is cut.
      const force = setTimeout(() => app.server.closeAllConnections(), graceMs);
      await app.close();
      clearTimeout(force);
      access?.close();
      privacy?.flush();
      await originAgent.close().catch(() => undefined);
      await cacheAgent?.close().catch(() => undefined);
      await inner.close();
    },
  };
}


function startMetricsServer(metrics: ProxyMetrics, listen: { host: string; port: number }, log: Logger): Server {
  const server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    metrics.registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body),
      (err: Error) => res.writeHead(500).end(err.message),
    );
  });
  server.on('error', (err) => log.error({ err: err.message }, 'metrics server failed'));
  server.listen(listen.port, listen.host);
  return server;
}

async function runProxy(argv: string[]): Promise<number> {
  const { config, help } = readProxyConfig(argv, process.env);
  if (help) {
    process.stdout.write(`${helpText('Usage: pullthrough proxy [flags]\n\nThe node proxy: serves image pulls from the cache, filling it from the origins.\nWith --node-name (or NODE_NAME) it uses the pull secrets of the pods on its node, and serves a\nprivate image (one the origin refuses to anonymous requests) from the cache only while a pod on\nthis node that uses it has credentials the origin accepts (docs/credentials.md).', proxyFlags)}\n`);
    return 0;
  }
  const log = createLogger(config.logLevel);
  await prepareSpoolDir(join(config.dataDir, 'tmp'));
  const kube = await startKube(config, log);
  const collectYoung = youngGcFunction();
  const proxy = buildProxy(config, { log, ...(collectYoung ? { collectYoung } : {}), ...(kube ? { podCredentials: kube.source, pods: kube.credentials } : {}) });
  const metricsServer = config.metricsListen ? startMetricsServer(proxy.metrics, config.metricsListen, log) : undefined;
  await proxy.app.listen({ host: config.listen.host, port: config.listen.port });
  log.info(
    {
      listen: `${config.listen.host}:${config.listen.port}`,
      store: config.cacheRegistry ? `registry ${config.cacheRegistry.origin}` : `embedded ${config.dataDir}`,
      tagTtlMs: config.tagTtlMs,
      allowedRegistries: config.allowedRegistries,
      insecureRegistries: config.insecureRegistries,
      credentialEntries: config.credentials.length,
      podCredentials: kube ? { node: config.nodeName, authTtlMs: config.authTtlMs, privateWhenOriginDown: config.privateWhenOriginDown } : false,
      // Off only where V8 refused to hand out gc: then peak RSS while streaming is ~10-15 MiB higher.
      youngGcPacing: collectYoung !== undefined,
    },
    'pullthrough proxy ready',
  );
  log.info({ signal: await untilSignal() }, 'shutting down');
  metricsServer?.close();
  await proxy.close();
  await kube?.stop();
  return 0;
}

/**
 * The pod informer and pull-secret reader, started in the background: the proxy listens at once
 * and serves public images whether or not the API server answers. No node name: standalone.
 */
const NO_PODS: PodDirectory = {
  podsUsing: () => [],
  lookup: async () => ({ known: false, credentials: [], skipped: [] }),
};

async function startKube(config: ProxyConfig, log: Logger): Promise<NodeKube | undefined> {
  if (!config.nodeName || config.privateImages !== 'pods') return undefined;
  const { startPodCredentials, KubeConfigError } = await import('./kube/index.js');
  try {
    return startPodCredentials({ nodeName: config.nodeName, ...(config.kubeconfig ? { kubeconfig: config.kubeconfig } : {}), logger: log.child({ component: 'kube' }) });
  } catch (err) {
    if (err instanceof KubeConfigError) throw new ConfigError(`--node-name ${config.nodeName}: ${err.message}`);
    throw err;
  }
}

function untilSignal(): Promise<string> {
  return new Promise((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
}

async function runWebhookCommand(argv: string[]): Promise<number> {
  const parsed = parseWebhookConfig(argv, process.env);
  if (parsed.help) {
    process.stdout.write(WEBHOOK_HELP);
    return 0;
  }
  const log = createLogger(parsed.config.logLevel);
  // With certificate files the webhook needs no API server (outside a cluster, or cert-manager).
  const { runWebhook } = await import('./webhook/index.js');
  let kubeApi: import('./webhook/index.js').WebhookKubeApi | undefined;
  if (!parsed.config.tlsCertFile) {
    const { createKubeClient, createWebhookKubeApi } = await import('./kube/index.js');
    kubeApi = createWebhookKubeApi(createKubeClient({}));
  }
  const running = await runWebhook(parsed.config, { ...(kubeApi ? { kubeApi } : {}), logger: log });
  log.info({ signal: await untilSignal() }, 'shutting down');
  await running.close();
  return 0;
}

async function runNodeSetupCommand(argv: string[]): Promise<number> {
  const parsed = parseNodeSetupConfig(argv, process.env);
  if (parsed.help) {
    process.stdout.write(NODE_SETUP_HELP);
    return 0;
  }
  const { runNodeSetup } = await import('./nodesetup/index.js');
  await runNodeSetup(parsed.config);
  return 0;
}

function runEncode(argv: string[]): number {
  const args = [...argv];
  let proxyHost = 'localhost:7439';
  const i = args.indexOf('--proxy-host');
  if (i >= 0) {
    proxyHost = args[i + 1] ?? '';
    args.splice(i, 2);
  }
  if (args.length !== 1 || args[0] === '--help') {
    process.stdout.write('Usage: pullthrough encode IMAGE [--proxy-host localhost:7439]\nPrints the reference the webhook writes into pods for IMAGE.\n');
    return args[0] === '--help' ? 0 : 2;
  }
  const r = encodeImage(args[0] as string, proxyHost);
  if (!r.ok) {
    process.stderr.write(`cannot encode: ${r.reason}\n`);
    return 1;
  }
  process.stdout.write(`${r.value}\n`);
  return 0;
}

function runDecode(argv: string[]): number {
  if (argv.length !== 1 || argv[0] === '--help') {
    process.stdout.write('Usage: pullthrough decode REFERENCE\nPrints the origin image a rewritten reference (localhost:7439/<registry>/<repo>...) stands for.\n');
    return argv[0] === '--help' ? 0 : 2;
  }
  const r = decodeImage(argv[0] as string);
  if (!r.ok) {
    process.stderr.write(`cannot decode: ${r.reason}\n`);
    return 1;
  }
  process.stdout.write(`${formatReference(r.value, { defaultTag: false })}\n`);
  return 0;
}

const USAGE = `Usage: pullthrough <command> [flags]

Commands:
  proxy       the node proxy (serves pulls from the cache, fills it from origins)
  webhook     the admission webhook that rewrites pod images to the node proxy
  node-setup  write containerd hosts.toml for the fallback chain (the DaemonSet's init step)
  encode      print the rewritten reference for an image
  decode      print the origin image a rewritten reference stands for

Run "pullthrough <command> --help" for the flags of a command.
`;

export async function main(argv: string[]): Promise<number> {
  // undici parses HTTP with llhttp compiled to WebAssembly, and V8 recompiles hot wasm with
  // TurboFan on a helper thread whose ~30 MiB of scratch memory then stays in the RSS for good
  // (measured: peak RSS streaming a cold 1 GiB blob 145 -> 120 MiB without it, and no slower: on
  // a body llhttp only counts bytes). It must be set before the first HTTP connection.
  setFlagsFromString('--liftoff-only');
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'proxy':
        return await runProxy(rest);
      case 'webhook':
        return await runWebhookCommand(rest);
      case 'node-setup':
        return await runNodeSetupCommand(rest);
      case 'encode':
        return runEncode(rest);
      case 'decode':
        return runDecode(rest);
      case undefined:
      case '--help':
      case 'help':
        process.stdout.write(USAGE);
        return command === undefined ? 2 : 0;
      default:
        process.stderr.write(`unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
        return 2;
    }
  } catch (err) {
    if (err instanceof ConfigError || err instanceof WebhookConfigError || err instanceof NodeSetupConfigError) {
      process.stderr.write(`pullthrough ${command}: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
}

function invokedDirectly(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (invokedDirectly()) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`pullthrough: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
