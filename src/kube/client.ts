/**
 * Building the Kubernetes client: in-cluster (ServiceAccount token, CA and API server address the
 * kubelet mounts) or a kubeconfig file. Construction reads local files only and makes no request,
 * so the proxy starts and serves whether or not the API server answers. Every request carries a
 * deadline: an API server that accepts connections and never answers must not stall an image pull.
 *
 * This file and the others in src/kube are the only importers of @kubernetes/client-node.
 */
import * as k8s from '@kubernetes/client-node';

export interface KubeClientOptions {
  /** A kubeconfig file; without it the in-cluster configuration is used. */
  readonly kubeconfig?: string;
  /** Deadline for each API request (not watches). Default 5 s. */
  readonly requestTimeoutMs?: number;
  /** Environment to read the in-cluster address from; `process.env` by default. */
  readonly env?: NodeJS.ProcessEnv;
}

export interface KubeClient {
  readonly config: k8s.KubeConfig;
  readonly core: k8s.CoreV1Api;
  readonly admission: k8s.AdmissionregistrationV1Api;
  readonly coordination: k8s.CoordinationV1Api;
  readonly customObjects: k8s.CustomObjectsApi;
  readonly events: k8s.EventsV1Api;
  /** The API server address, for log lines. */
  readonly server: string;
  readonly requestTimeoutMs: number;
}

export class KubeConfigError extends Error {
  override readonly name = 'KubeConfigError';
}

const DEFAULT_REQUEST_TIMEOUT_MS = 5_000;

export function createKubeClient(options: KubeClientOptions = {}): KubeClient {
  const config = new k8s.KubeConfig();
  if (options.kubeconfig !== undefined) {
    try {
      config.loadFromFile(options.kubeconfig);
    } catch (err) {
      // The file may hold tokens and keys: say which file, never what it contains.
      const why = err instanceof Error && 'code' in err ? String(err.code) : 'invalid file';
      throw new KubeConfigError(`cannot load kubeconfig ${options.kubeconfig}: ${why}`);
    }
  } else {
    const env = options.env ?? process.env;
    if (!env.KUBERNETES_SERVICE_HOST || !env.KUBERNETES_SERVICE_PORT) {
      throw new KubeConfigError(
        'not running in a cluster (KUBERNETES_SERVICE_HOST/PORT unset) and no --kubeconfig given',
      );
    }
    config.loadFromCluster();
  }
  const cluster = config.getCurrentCluster();
  if (!cluster) throw new KubeConfigError('the kubeconfig has no current cluster');
  const requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  const deadline: k8s.Middleware = {
    pre: (ctx) => {
      ctx.setSignal(AbortSignal.timeout(requestTimeoutMs));
      return Promise.resolve(ctx);
    },
    post: (ctx) => Promise.resolve(ctx),
  };
  const configuration = k8s.createConfiguration({
    baseServer: new k8s.ServerConfiguration(cluster.server, {}),
    authMethods: { default: config },
    promiseMiddleware: [deadline],
  });
  return {
    config,
    core: new k8s.CoreV1Api(configuration),
    admission: new k8s.AdmissionregistrationV1Api(configuration),
    coordination: new k8s.CoordinationV1Api(configuration),
    customObjects: new k8s.CustomObjectsApi(configuration),
    events: new k8s.EventsV1Api(configuration),
    server: cluster.server,
    requestTimeoutMs,
  };
}

/** `--node-name`, else `NODE_NAME` (the downward API's spec.nodeName in the DaemonSet). */
export function resolveNodeName(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const name = (flag ?? env.NODE_NAME ?? '').trim();
  return name === '' ? undefined : name;
}
