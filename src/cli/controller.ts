/**
 * `pullthrough controller`: reads the configuration and runs the CachedImage controller until
 * SIGTERM or SIGINT, handing its Lease back on the way out.
 */
import { CONTROLLER_HELP, parseControllerConfig } from '../config/controller.js';
import { join } from 'node:path';
import { createLogger, type Logger } from '../observability/logger.js';
import { startMetricsServer } from '../observability/metrics-server.js';
import { ControllerMetrics } from '../observability/metrics.js';
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
  // Pre-warm runs the proxy's own pull path, configured by the proxy's flag parser.
  const warming = config.warmProxyArgs ? await startWarmer(config.warmProxyArgs, log) : undefined;
  const events = new EventRecorder({ client, namespace: config.namespace, component: 'pullthrough-controller', log });
  const running = runController(config, {
    client,
    log,
    events,
    ...(warming ? { warm: { warmer: warming.prewarmer, secrets: secretCredentials(client) } } : {}),
  });
  const metrics = new ControllerMetrics({
    isLeader: () => running.isLeader(),
    writes: () => running.writes(),
    backlog: () => running.backlog(),
    images: () => running.book.images().length,
  });
  const metricsServer = config.metricsListen
    ? startMetricsServer(metrics.registry, config.metricsListen, log)
    : undefined;
  log.info({ identity: config.identity, lease: `${config.namespace}/${config.leaseName}` }, 'controller started');
  log.info({ signal: await untilSignal() }, 'shutting down');
  metricsServer?.close();
  await running.close();
  await warming?.close();
  return 0;
}

async function startWarmer(args: readonly string[], log: Logger) {
  const { readProxyConfig } = await import('../config/proxy.js');
  const { prepareSpoolDir } = await import('../cache/blob-fills.js');
  const { buildPrewarmer } = await import('../proxy/build-proxy.js');
  const { config } = readProxyConfig(args, {});
  await prepareSpoolDir(join(config.dataDir, 'tmp'));
  return buildPrewarmer(config, { log });
}
