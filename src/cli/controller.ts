/**
 * `pullthrough controller`: reads the configuration and runs the CachedImage controller until
 * SIGTERM or SIGINT, handing its Lease back on the way out.
 */
import { CONTROLLER_HELP, parseControllerConfig } from '../config/controller.js';
import { createLogger } from '../observability/logger.js';
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
  const { createKubeClient } = await import('../kube/index.js');
  const { runController } = await import('../controller/run.js');
  const client = createKubeClient(config.kubeconfig !== undefined ? { kubeconfig: config.kubeconfig } : {});
  const running = runController(config, { client, log });
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
  return 0;
}
