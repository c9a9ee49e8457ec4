/**
 * `pullthrough webhook`: reads the configuration and runs the admission webhook until SIGTERM or
 * SIGINT. With certificate files the webhook needs no API server (outside a cluster, or
 * cert-manager), so the Kubernetes client is loaded only without them or with
 * --namespaces=labelled (which watches namespaces).
 */
import { parseWebhookConfig, WEBHOOK_HELP } from '../config/webhook.js';
import { createLogger } from '../observability/logger.js';
import { startMetricsServer } from '../observability/metrics-server.js';
import { WebhookMetrics } from '../observability/metrics.js';
import type { NamespaceDirectory, NodeReadinessDirectory, WebhookKubeApi } from '../webhook/index.js';
import { untilSignal } from './usage.js';
import { startVerdicts } from './verdicts.js';

export async function runWebhookCommand(argv: readonly string[]): Promise<number> {
  const parsed = parseWebhookConfig(argv, process.env);
  if (parsed.help) {
    process.stdout.write(`${WEBHOOK_HELP}\n`);
    return 0;
  }
  const log = createLogger(parsed.config.logLevel);
  const { runWebhook } = await import('../webhook/index.js');
  let kubeApi: WebhookKubeApi | undefined;
  let namespaces: (NamespaceDirectory & { stop(): Promise<void> }) | undefined;
  // With a Kubernetes client (the default install), pods bound to a node labelled not ready are left alone.
  let nodes: (NodeReadinessDirectory & { stop(): Promise<void> }) | undefined;
  if (!parsed.config.tlsCertFile || parsed.config.namespaces === 'labelled') {
    const { createKubeClient, createWebhookKubeApi, NamespaceInformer, NotReadyNodes } =
      await import('../kube/index.js');
    const { kubeconfig } = parsed.config;
    const client = createKubeClient(kubeconfig ? { kubeconfig } : {});
    if (!parsed.config.tlsCertFile) kubeApi = createWebhookKubeApi(client);
    if (parsed.config.namespaces === 'labelled') {
      const informer = new NamespaceInformer({ client, logger: log });
      informer.start();
      namespaces = informer;
    }
    const notReady = new NotReadyNodes({ client, logger: log });
    notReady.start();
    nodes = notReady;
  }
  const metrics = new WebhookMetrics();
  const { metricsListen } = parsed.config;
  // Before the certificates: a webhook stuck waiting for them still answers Prometheus.
  const metricsServer = metricsListen ? startMetricsServer(metrics.registry, metricsListen, log) : undefined;
  const verdicts = await startVerdicts(parsed.config.scanPolicy, log, parsed.config.kubeconfig);
  const running = await runWebhook(parsed.config, {
    ...(kubeApi ? { kubeApi } : {}),
    ...(namespaces ? { namespaces } : {}),
    ...(nodes ? { nodes } : {}),
    logger: log,
    metrics,
    ...(verdicts ? { gate: verdicts.gate } : {}),
  });
  log.info({ signal: await untilSignal() }, 'shutting down');
  verdicts?.stop();
  metricsServer?.close();
  await running.close();
  await namespaces?.stop();
  await nodes?.stop();
  return 0;
}
