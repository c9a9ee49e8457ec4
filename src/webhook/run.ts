/**
 * `pullthrough webhook`: wires the configuration, the certificates (files, or the Secret kept by
 * cert-bootstrap) and the HTTPS server, and keeps the certificate fresh while running.
 */
import { readFile } from 'node:fs/promises';
import { pino, type Logger } from 'pino';
import type { WebhookConfig } from '../config/webhook.js';
import type { WebhookMetrics } from '../observability/metrics.js';
import { ensureCertificates, serviceDnsNames } from './cert-bootstrap.js';
import type { WebhookKubeApi } from './kube-api.js';
import { createRewritePolicy, type NamespaceDirectory, type NodeReadinessDirectory } from './policy.js';
import { namespaceSelector, objectSelector } from './selectors.js';
import { createWebhookServer, type TlsMaterial, type WebhookServer } from './server.js';
import type { AdmissionGate } from './vulnerability-gate.js';

export interface WebhookDeps {
  /** Required unless the configuration names --tls-cert/--tls-key. */
  kubeApi?: WebhookKubeApi;
  logger?: Logger;
  /** How long to wait between failed certificate bootstraps at start. */
  retryDelayMs?: number;
  metrics?: WebhookMetrics;
  /** Required with --namespaces=labelled: the namespaces' labels (src/kube's NamespaceInformer). */
  namespaces?: NamespaceDirectory;
  /** Nodes node-setup labelled not ready (src/kube's NotReadyNodes); pods bound to them are left alone. */
  nodes?: NodeReadinessDirectory;
  /** The vulnerability gate (--scan-policy warn|enforce). */
  gate?: AdmissionGate;
}

export interface RunningWebhook {
  webhook: WebhookServer;
  /** e.g. https://0.0.0.0:8443 */
  address: string;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runWebhook(config: WebhookConfig, deps: WebhookDeps = {}): Promise<RunningWebhook> {
  const log = deps.logger ?? pino({ level: config.logLevel, name: 'pullthrough-webhook' });
  const policy = createRewritePolicy({
    proxyHost: config.proxyHost,
    ownNamespace: config.namespace,
    excludeNamespaces: config.excludeNamespaces,
    ignoreImages: config.ignoreImages,
    acceptImages: config.acceptImages,
    skipPullPolicies: config.skipPullPolicies,
    nodeIdentityRegistries: config.nodeIdentityRegistries,
    namespaces: config.namespaces,
    ...(deps.namespaces ? { namespaceDirectory: deps.namespaces } : {}),
    ...(deps.nodes ? { nodeReadiness: deps.nodes } : {}),
  });

  let refresh: () => Promise<TlsMaterial>;
  if (config.tlsCertFile && config.tlsKeyFile) {
    const certFile = config.tlsCertFile;
    const keyFile = config.tlsKeyFile;
    refresh = async () => ({ cert: await readFile(certFile, 'utf8'), key: await readFile(keyFile, 'utf8') });
  } else {
    const api = deps.kubeApi;
    if (!api)
      throw new Error('webhook: without --tls-cert/--tls-key a Kubernetes API client is needed to manage certificates');
    const options = {
      namespace: config.namespace,
      secretName: config.tlsSecretName,
      webhookConfigurationName: config.webhookConfigurationName,
      dnsNames: serviceDnsNames(config.serviceName, config.namespace),
      caValidityDays: config.caValidityDays,
      certValidityDays: config.certValidityDays,
      renewBeforeDays: config.renewBeforeDays,
      selectors: { namespaceSelector: namespaceSelector(policy), objectSelector: objectSelector() },
      labels: { 'app.kubernetes.io/name': 'pullthrough', 'app.kubernetes.io/component': 'webhook' },
      log,
    };
    refresh = async () => (await ensureCertificates(api, options)).serving;
  }

  // No certificate, nothing to serve: keep trying (the Deployment's readiness gate holds traffic).
  let tls: TlsMaterial | undefined;
  while (!tls) {
    try {
      tls = await refresh();
    } catch (err) {
      log.warn({ err }, 'webhook certificates not available yet; retrying');
      await sleep(deps.retryDelayMs ?? 5000);
    }
  }
  let current = tls;
  const webhook = createWebhookServer({
    policy,
    tls: current,
    logger: log,
    maxBodyBytes: config.maxBodyBytes,
    ...(deps.metrics ? { metrics: deps.metrics } : {}),
    ...(deps.gate ? { gate: deps.gate } : {}),
  });
  const address = await webhook.app.listen({ host: config.listenHost, port: config.listenPort });
  log.info(
    { address, proxyHost: config.proxyHost, excluded: [...policy.excludedNamespaces], namespaces: config.namespaces },
    'webhook listening',
  );

  const timer = setInterval(() => {
    refresh()
      .then((next) => {
        if (next.cert === current.cert && next.key === current.key) return;
        webhook.updateTls(next);
        current = next;
        log.info('webhook serving certificate reloaded');
      })
      .catch((err: unknown) => log.warn({ err }, 'webhook certificate check failed; keeping the current one'));
  }, config.certCheckIntervalSeconds * 1000);
  timer.unref();

  return {
    webhook,
    address,
    async close() {
      clearInterval(timer);
      await webhook.app.close();
    },
  };
}
