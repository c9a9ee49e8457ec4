/**
 * `pullthrough controller`: reads the configuration and runs the CachedImage controller until
 * SIGTERM or SIGINT, handing its Lease back on the way out.
 */
import { CONTROLLER_HELP, parseControllerConfig, type ControllerConfig } from '../config/controller.js';
import { ConfigError } from '../config/flags.js';
import type { EventRecorder, KubeClient } from '../kube/index.js';
import { join } from 'node:path';
import { createLogger, type Logger } from '../observability/logger.js';
import { startMetricsServer } from '../observability/metrics-server.js';
import { ControllerMetrics } from '../observability/metrics.js';
import type { WriteHold } from '../cache/write-hold.js';
import type { LeaseWriteHold } from '../kube/gc-lease.js';
import { untilSignal } from './usage.js';

export async function runControllerCommand(argv: readonly string[]): Promise<number> {
  const parsed = parseControllerConfig(argv, process.env);
  if (parsed.help) {
    process.stdout.write(`${CONTROLLER_HELP}\n`);
    return 0;
  }
  const { config } = parsed;
  const log = createLogger(config.logLevel);
  const { createKubeClient, EventRecorder, secretCredentials } = await import('../kube/index.js');
  const { runController } = await import('../controller/run.js');
  const client = createKubeClient(config.kubeconfig !== undefined ? { kubeconfig: config.kubeconfig } : {});
  // Pre-warm runs the proxy's own pull path, configured by the proxy's flag parser; it writes to
  // the cache registry, so it waits while a collection holds the Lease, as every writer does.
  const writeHold = config.warmProxyArgs ? await startWriteHold(client, config.namespace, log) : undefined;
  const warming =
    config.warmProxyArgs && writeHold ? await startWarmer(config.warmProxyArgs, writeHold, log) : undefined;
  const events = new EventRecorder({ client, namespace: config.namespace, component: 'pullthrough-controller', log });
  const scans = config.scanner ? await scanQueue(config, client, events, log) : undefined;
  const collector = config.collection ? await registryCollector(config, client, log) : undefined;
  const running = runController(config, {
    client,
    log,
    events,
    ...(collector ? { collector } : {}),
    ...(scans ? { scans } : {}),
    ...(warming ? { warm: { warmer: warming.prewarmer, secrets: secretCredentials(client) } } : {}),
  });
  const metrics = new ControllerMetrics({
    isLeader: () => running.isLeader(),
    writes: () => running.writes(),
    backlog: () => running.backlog(),
    images: () => running.book.images().length,
    collections: () => running.collections(),
  });
  const metricsServer = config.metricsListen
    ? startMetricsServer(metrics.registry, config.metricsListen, log)
    : undefined;
  log.info({ identity: config.identity, lease: `${config.namespace}/${config.leaseName}` }, 'controller started');
  log.info({ signal: await untilSignal() }, 'shutting down');
  metricsServer?.close();
  await running.close();
  await warming?.close();
  await writeHold?.stop();
  return 0;
}

/** Scans of cached digests: the scanner adapter, reading the cache registry pre-warm writes to. */
async function scanQueue(config: ControllerConfig, client: KubeClient, events: EventRecorder, log: Logger) {
  const scanner = config.scanner;
  const registryUrl = config.cacheRegistry;
  if (!scanner || !registryUrl)
    throw new ConfigError('--scanner-url: scanning reads the cache registry; set --cache-registry');
  const { ScannerClient } = await import('../scan/client.js');
  const { DigestScanner } = await import('../scan/digest-scanner.js');
  const { registryPullCredentials } = await import('../scan/pull-credential.js');
  const { ScanQueue } = await import('../kube/scan-queue.js');
  const { createCachedImageApi } = await import('../kube/cached-images.js');
  const digests = new DigestScanner({
    client: new ScannerClient({
      url: scanner.url,
      ...(scanner.authorization ? { authorization: scanner.authorization } : {}),
      requestTimeoutMs: scanner.requestTimeoutMs,
      scanTimeoutMs: scanner.scanTimeoutMs,
      maxBodyBytes: scanner.maxReportBytes,
    }),
    credentials: registryPullCredentials({ registryUrl, ...(scanner.registryUser ?? {}) }),
    registryUrl,
    ...(scanner.registryUrl ? { scannerRegistryUrl: scanner.registryUrl } : {}),
  });
  log.info({ scanner: scanner.url, rescanIntervalMs: scanner.rescanIntervalMs }, 'scanning cached images');
  return new ScanQueue({
    api: createCachedImageApi(client),
    scan: (repository, digest, signal) => digests.scan(repository, digest, signal),
    rescanIntervalMs: scanner.rescanIntervalMs,
    ...(config.scanPolicy ? { policy: config.scanPolicy } : {}),
    events,
    log,
  });
}

/**
 * The collector of the cache registry: deletes through the registry API, holds the writers on the
 * collection Lease, and asks the registry pod's gc-runner to sweep. Deletes must be enabled.
 */
export async function registryCollector(config: ControllerConfig, client: KubeClient, log: Logger) {
  const collection = config.collection;
  const cacheRegistry = config.cacheRegistry;
  if (!collection || !cacheRegistry) return undefined;
  const { Agent } = await import('undici');
  const { RegistryClient } = await import('../oci/registry-client.js');
  const { RegistryCollector } = await import('../controller/registry-collector.js');
  const { runnerGarbageCollect, runnerStorage } = await import('../controller/gc-runner-client.js');
  const { holdGcLease } = await import('../kube/gc-lease.js');
  const collector = new RegistryCollector({
    client: new RegistryClient({
      name: 'cache',
      dispatcher: new Agent({ connections: 4 }),
      baseUrl: () => cacheRegistry,
      credentials: { credentialsFor: () => Promise.resolve([]) },
      userAgent: 'pullthrough-controller',
      headersTimeoutMs: 30_000,
      bodyTimeoutMs: 30_000,
    }),
    host: 'cache',
    holdWriters: (work) =>
      holdGcLease(
        {
          api: client.coordination,
          namespace: config.namespace,
          identity: config.identity,
          leaseDurationMs: config.leaseDurationMs,
          renewDeadlineMs: config.renewDeadlineMs,
          retryPeriodMs: config.retryPeriodMs,
          log,
        },
        work,
      ),
    settleMs: collection.settleMs,
    garbageCollect: runnerGarbageCollect(collection.runnerUrl),
    storage: runnerStorage(collection.runnerUrl),
    log,
  });
  log.info(
    {
      intervalMs: collection.intervalMs,
      maxCacheSize: collection.budget?.size,
      lowWater: collection.budget?.lowWater,
      runner: collection.runnerUrl,
    },
    'collecting the cache registry',
  );
  return collector;
}

async function startWriteHold(client: KubeClient, namespace: string, log: Logger): Promise<LeaseWriteHold> {
  const { LeaseWriteHold } = await import('../kube/gc-lease.js');
  const hold = new LeaseWriteHold({ api: client.coordination, namespace, log });
  hold.start();
  return hold;
}

async function startWarmer(args: readonly string[], writeHold: WriteHold, log: Logger) {
  const { readProxyConfig } = await import('../config/proxy.js');
  const { prepareSpoolDir } = await import('../cache/blob-fills.js');
  const { buildPrewarmer } = await import('../proxy/build-proxy.js');
  const { config } = readProxyConfig(args, {});
  await prepareSpoolDir(join(config.dataDir, 'tmp'));
  return buildPrewarmer(config, { log, writeHold });
}
