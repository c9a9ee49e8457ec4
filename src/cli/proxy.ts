/**
 * `pullthrough proxy`: reads the configuration, starts the pod credentials when the proxy serves
 * a node, builds the proxy and its metrics listener, and serves until SIGTERM or SIGINT.
 */
import { join } from 'node:path';
import { prepareSpoolDir } from '../cache/blob-fills.js';
import { budgetRefusal, resolveStoreBudget } from '../cache/store-budget.js';
import { ConfigError } from '../config/flags.js';
import { PROXY_HELP, readProxyConfig, type ProxyConfig } from '../config/proxy.js';
// Type only: src/kube loads @kubernetes/client-node, whose RSS only the commands that need it pay.
import type { NodeKube } from '../kube/index.js';
import type { LeaseWriteHold } from '../kube/gc-lease.js';
import { createLogger, type Logger } from '../observability/logger.js';
import { startMetricsServer } from '../observability/metrics-server.js';
import { buildProxy } from '../proxy/build-proxy.js';
import type { StaleSink } from '../proxy/tag-resolver.js';
import { youngGcFunction } from '../runtime/young-gc.js';
import { untilSignal } from './usage.js';
import { startVerdicts } from './verdicts.js';

export async function runProxy(argv: readonly string[]): Promise<number> {
  const { config, help } = readProxyConfig(argv, process.env);
  if (help) {
    process.stdout.write(`${PROXY_HELP}\n`);
    return 0;
  }
  const log = createLogger(config.logLevel);
  await prepareSpoolDir(join(config.dataDir, 'tmp'));
  if (config.maxCacheSize && !config.cacheRegistry) {
    const refusal = await budgetRefusal(
      config.dataDir,
      resolveStoreBudget(config.maxCacheSize, config.cacheLowWater, config.dataDir),
    );
    if (refusal) throw new ConfigError(`--max-cache-size: ${refusal}`);
  }
  const kube = await startKube(config, log);
  const collectYoung = youngGcFunction();
  const onStale = kube ? await staleImageEvents(kube, log) : undefined;
  const verdicts = await startVerdicts(config.scanPolicy, log, config.kubeconfig);
  const writeHold = await startWriteHold(config, kube, log);
  const proxy = buildProxy(config, {
    log,
    ...(writeHold ? { writeHold } : {}),
    ...(verdicts ? { gate: verdicts.gate } : {}),
    ...(collectYoung ? { collectYoung } : {}),
    ...(kube ? { podCredentials: kube.source, pods: kube.credentials } : {}),
    ...(onStale ? { onStale } : {}),
  });
  proxy.metrics.trackVolume(config.dataDir);
  if (config.nodeSetupStatus) proxy.metrics.trackNodeSetup(config.nodeSetupStatus);
  const metricsServer = config.metricsListen
    ? startMetricsServer(proxy.metrics.registry, config.metricsListen, log)
    : undefined;
  await proxy.app.listen({ host: config.listen.host, port: config.listen.port });
  log.info(
    {
      listen: `${config.listen.host}:${config.listen.port}`,
      store: config.cacheRegistry ? `registry ${config.cacheRegistry.origin}` : `embedded ${config.dataDir}`,
      tagTtlMs: config.tagTtlMs,
      allowedRegistries: config.allowedRegistries,
      insecureRegistries: config.insecureRegistries,
      credentialEntries: config.credentials.length,
      podCredentials: kube
        ? { node: config.nodeName, authTtlMs: config.authTtlMs, privateWhenOriginDown: config.privateWhenOriginDown }
        : false,
      // Off only where V8 refused to hand out gc: then streaming's peak RSS is higher.
      youngGcPacing: collectYoung !== undefined,
      collectionLease: writeHold ? `${config.gcLeaseNamespace}/pullthrough-gc` : false,
    },
    'pullthrough proxy ready',
  );
  log.info({ signal: await untilSignal() }, 'shutting down');
  metricsServer?.close();
  await proxy.close();
  verdicts?.stop();
  await writeHold?.stop();
  await kube?.stop();
  return 0;
}

/**
 * The collection Lease's reader: with a cache registry and a Lease namespace, writes to the
 * registry wait while a collection runs there (src/kube/gc-lease.ts). It reads in the background;
 * until its first read says the Lease is free, writes wait.
 */
export async function startWriteHold(
  config: ProxyConfig,
  kube: NodeKube | undefined,
  log: Logger,
): Promise<LeaseWriteHold | undefined> {
  if (!config.cacheRegistry || !config.gcLeaseNamespace) return undefined;
  const { createKubeClient, KubeConfigError } = await import('../kube/index.js');
  const { LeaseWriteHold } = await import('../kube/gc-lease.js');
  let client = kube?.client;
  try {
    client ??= createKubeClient(config.kubeconfig ? { kubeconfig: config.kubeconfig } : {});
  } catch (err) {
    if (err instanceof KubeConfigError) throw new ConfigError(`--gc-lease-namespace: ${err.message}`);
    throw err;
  }
  const hold = new LeaseWriteHold({
    api: client.coordination,
    namespace: config.gcLeaseNamespace,
    log: log.child({ component: 'kube' }),
  });
  hold.start();
  return hold;
}

/** Events on this node's pods when a tag they use is served stale (src/kube/stale-image-events.ts). */
async function staleImageEvents(kube: NodeKube, log: Logger): Promise<StaleSink> {
  const { EventRecorder } = await import('../kube/event-recorder.js');
  const { StaleImageEvents } = await import('../kube/stale-image-events.js');
  const recorder = new EventRecorder({
    client: kube.client,
    // Every target is a pod, with its own namespace: this one is never used.
    namespace: 'default',
    component: 'pullthrough-proxy',
    log: log.child({ component: 'kube' }),
  });
  return new StaleImageEvents({ index: kube.informer.index, recorder }).served;
}

/**
 * The pod informer and pull-secret reader, started in the background: the proxy listens at once
 * and serves public images whether or not the API server answers. No node name: standalone.
 */
export async function startKube(config: ProxyConfig, log: Logger): Promise<NodeKube | undefined> {
  if (!config.nodeName || config.privateImages !== 'pods') return undefined;
  const { startPodCredentials, KubeConfigError } = await import('../kube/index.js');
  try {
    return startPodCredentials({
      nodeName: config.nodeName,
      ...(config.kubeconfig ? { kubeconfig: config.kubeconfig } : {}),
      logger: log.child({ component: 'kube' }),
    });
  } catch (err) {
    if (err instanceof KubeConfigError) throw new ConfigError(`--node-name ${config.nodeName}: ${err.message}`);
    throw err;
  }
}
