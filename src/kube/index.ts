/**
 * src/kube: everything pullthrough asks the Kubernetes API. The only importer of
 * @kubernetes/client-node.
 *
 * Node proxy:
 *   const kube = startPodCredentials({ kubeconfig, nodeName, logger });   // returns at once
 *   kube.credentials.podsUsing(registry, repository)                       // PodRef[]
 *   await kube.credentials.lookup(pod, registry, repository)               // credentials + skip reasons
 *   kube.source                                                            // a CredentialSource
 *   await kube.stop();
 *
 * Admission webhook: createKubeClient, getSecret, createOrReplaceSecret, patchWebhookCABundle, and
 * NamespaceInformer (namespace labels for --namespaces=labelled).
 */
import { createKubeClient, type KubeClient, type KubeClientOptions } from './client.js';
import { silentLogger, type KubeLogger } from './logger.js';
import { PodCredentialSource } from './pod-credential-source.js';
import { PodCredentials, type PodCredentialsOptions } from './pod-credentials.js';
import { NodePodInformer, type PodInformerOptions } from './pod-informer.js';

export {
  createKubeClient,
  resolveNodeName,
  KubeConfigError,
  type KubeClient,
  type KubeClientOptions,
} from './client.js';
export { describeKubeError, type KubeFailure } from './errors.js';
export type { KubeLogger } from './logger.js';
export { silentLogger } from './logger.js';
export { NodePodInformer, PodInformer, type PodInformerOptions, type PodSink } from './pod-informer.js';
export { PodUsageFeed, type PodUsageTarget } from './pod-usage-feed.js';
export { PodIndex } from './pod-index.js';
export { podImages, podImageReferences, isLoopbackRegistry, type ProxyRegistryTest } from './pod-images.js';
export {
  PodCredentials,
  type PodCredentialLookup,
  type PodCredentialsOptions,
  type SkippedSource,
} from './pod-credentials.js';
export { PodCredentialSource } from './pod-credential-source.js';
export { parsePullSecret, PullSecretError, DOCKER_CFG, DOCKER_CONFIG_JSON } from './pull-secrets.js';
export { getSecret, createOrReplaceSecret, patchWebhookCABundle, KubeRequestError } from './webhook-api.js';
export type { PodCredential, PodRef, ImageRepository } from './types.js';

export interface NodeKubeOptions extends KubeClientOptions {
  readonly nodeName: string;
  readonly logger?: KubeLogger;
  /** An already built client (tests, or a shared one); otherwise built from the options above. */
  readonly client?: KubeClient;
  readonly informer?: Omit<PodInformerOptions, 'client' | 'nodeName' | 'logger'>;
  readonly cache?: PodCredentialsOptions['cache'];
}

export interface NodeKube {
  readonly client: KubeClient;
  readonly informer: NodePodInformer;
  readonly credentials: PodCredentials;
  readonly source: PodCredentialSource;
  stop(): Promise<void>;
}

/**
 * Everything the node proxy needs, started: the pod informer runs in the background (the proxy
 * serves meanwhile; until the first list the node has no known pods). Throws KubeConfigError only
 * for a missing or unreadable configuration, never because the API server is down.
 */
export function startPodCredentials(options: NodeKubeOptions): NodeKube {
  const logger = options.logger ?? silentLogger;
  const client = options.client ?? createKubeClient(options);
  const informer = new NodePodInformer({ ...options.informer, client, nodeName: options.nodeName, logger });
  const credentials = new PodCredentials({
    client,
    index: informer.index,
    logger,
    ...(options.cache ? { cache: options.cache } : {}),
  });
  informer.start();
  logger.info({ node: options.nodeName, server: client.server }, 'watching pods on this node for image pull secrets');
  return {
    client,
    informer,
    credentials,
    source: new PodCredentialSource(credentials),
    async stop() {
      await informer.stop();
      credentials.close();
    },
  };
}
export { createWebhookKubeApi } from './webhook-kube-api.js';
export { createCachedImageApi, type CachedImage, type CachedImageApi } from './cached-images.js';
export { EventRecorder, type EventRecorderOptions, type EventTarget } from './event-recorder.js';
export { secretCredentials, type SecretCredentials, type SecretRef } from './secret-credentials.js';
export { LeaderElector, type LeaderElectionOptions, type LeaseApi, type LeadFunction } from './leader-election.js';
export { NamespaceInformer, type NamespaceInformerOptions } from './namespace-informer.js';
export {
  reportNodeReadiness,
  NODE_READY_LABEL,
  NODE_SETUP_ANNOTATION,
  NODE_NOT_READY_REASON,
  type NodeReadiness,
  type NodeReadinessReport,
} from './node-readiness.js';
export { NotReadyNodes, type NotReadyNodesOptions } from './not-ready-nodes.js';
