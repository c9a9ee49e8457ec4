/**
 * A node proxy in the test process wired as `pullthrough proxy --node-name` wires it: the pod
 * informer and pull-secret reader against a fake API server, feeding the proxy's credentials and
 * access control. The kube module logs into the proxy's own log, so one text holds everything.
 */
import { createKubeClient, startPodCredentials, type NodeKube } from '../../src/kube/index.js';
import { writeKubeconfig, type FakeApiServer } from '../fake-apiserver/index.js';
import { startProxy, type TestProxy } from './proxy.js';

export const NODE = 'node-a';

export interface KubeProxy extends TestProxy {
  readonly kube: NodeKube;
}

export interface KubeProxyOptions {
  readonly port: number;
  /** Seconds a secret read is trusted (rotation shows after this). */
  readonly secretTtlSeconds?: number;
  readonly requestTimeoutMs?: number;
}

export async function startKubeProxy(
  api: FakeApiServer | string,
  flags: string[],
  opts: KubeProxyOptions,
): Promise<KubeProxy> {
  const client = createKubeClient({
    kubeconfig: await writeKubeconfig(api),
    requestTimeoutMs: opts.requestTimeoutMs ?? 1000,
  });
  let kube: NodeKube | undefined;
  const proxy = await startProxy(['--node-name', NODE, ...flags], {
    port: opts.port,
    extraDeps: (_config, log) => {
      kube = startPodCredentials({
        client,
        nodeName: NODE,
        logger: log.child({ component: 'kube' }),
        informer: { backoff: { initialMs: 50, maxMs: 500 }, watch: { timeoutSeconds: 60, connectTimeoutMs: 1000 } },
        cache: { ttlSeconds: opts.secretTtlSeconds ?? 30, unreachableSeconds: 1 },
      });
      return { podCredentials: kube.source, pods: kube.credentials };
    },
    onStop: async () => kube?.stop(),
  });
  if (!kube) throw new Error('the pod watcher was not started');
  return { ...proxy, kube };
}
