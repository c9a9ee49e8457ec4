/** The admission webhook's public surface, for src/main.ts and src/kube. */
export {
  createWebhookServer,
  MUTATE_PATH,
  type WebhookServer,
  type WebhookServerOptions,
  type TlsMaterial,
} from './server.js';
export { runWebhook, type RunningWebhook, type WebhookDeps } from './run.js';
export type { WebhookKubeApi, SecretObject, WebhookConfigurationObject, JsonPatchOperation } from './kube-api.js';
export { isConflict } from './kube-api.js';
export {
  createRewritePolicy,
  ENABLED_NAMESPACE_LABEL,
  type RewritePolicy,
  type NamespaceDirectory,
  type NodeReadinessDirectory,
  type NamespaceLookup,
} from './policy.js';
export { ensureCertificates, serviceDnsNames } from './cert-bootstrap.js';
