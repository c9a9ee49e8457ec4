/**
 * A node proxy in the test process wired as `pullthrough proxy --node-name` wires it: the pod
 * informer and pull-secret reader against a fake API server, feeding the proxy's credentials and
 * access control. The kube module logs into the proxy's own log, so one text holds everything.
 */
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildProxy, type BuiltProxy } from '../../src/main.js';
import { readProxyConfig } from '../../src/config/proxy.js';
import { createKubeClient, startPodCredentials, type NodeKube } from '../../src/kube/index.js';
import { createLogger } from '../../src/observability/logger.js';
import { writeKubeconfig, type FakeApiServer } from '../fake-apiserver/index.js';

export const NODE = 'node-a';

export interface KubeProxy extends BuiltProxy {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly kube: NodeKube;
  readonly logs: () => Record<string, unknown>[];
  readonly logText: () => string;
  settle(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface KubeProxyOptions {
  readonly port: number;
  /** Seconds a secret read is trusted (rotation shows after this). */
  readonly secretTtlSeconds?: number;
  readonly requestTimeoutMs?: number;
}

export async function startKubeProxy(api: FakeApiServer | string, flags: string[], opts: KubeProxyOptions): Promise<KubeProxy> {
  const { config } = readProxyConfig(['--metrics-listen', '', '--log-level', 'debug', '--node-name', NODE, ...flags], {});
  const sink = new PassThrough();
  let text = '';
  sink.on('data', (c: Buffer) => (text += c.toString('utf8')));
  const log = createLogger(config.logLevel, sink);
  const client = createKubeClient({ kubeconfig: await writeKubeconfig(api), requestTimeoutMs: opts.requestTimeoutMs ?? 1000 });
  const kube = startPodCredentials({
    client,
    nodeName: NODE,
    logger: log.child({ component: 'kube' }),
    informer: { backoff: { initialMs: 50, maxMs: 500 }, watch: { timeoutSeconds: 60, connectTimeoutMs: 1000 } },
    cache: { ttlSeconds: opts.secretTtlSeconds ?? 30, unreachableSeconds: 1 },
  });
  const proxy = buildProxy(config, { log, podCredentials: kube.source, pods: kube.credentials });
  await proxy.app.listen({ host: '127.0.0.1', port: opts.port });
  let stopped = false;
  return {
    ...proxy,
    kube,
    url: `http://127.0.0.1:${opts.port}`,
    host: `127.0.0.1:${opts.port}`,
    port: opts.port,
    logText: () => text,
    logs: () =>
      text
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    async settle(timeoutMs = 60_000) {
      const until = Date.now() + timeoutMs;
      while (proxy.pull.persister.pending > 0 || proxy.fills.size > 0) {
        if (Date.now() > until) throw new Error('proxy did not settle');
        await sleep(50);
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await proxy.close();
      await kube.stop();
    },
  };
}
