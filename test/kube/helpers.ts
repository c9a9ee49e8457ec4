/** Shared builders for the kube tests: pods, pull secrets, a capturing logger, a running NodeKube. */
import { FakeApiServer, writeKubeconfig, type RecordedRequest } from '../fake-apiserver/index.js';
import { createKubeClient, startPodCredentials, type KubeLogger, type NodeKube } from '../../src/kube/index.js';

export const NODE = 'node-a';

export { eventually } from '../helpers/wait.js';

/**
 * A list or a watch of secrets, cluster-wide or in one namespace (the collection path, `?watch`, or
 * the legacy `/watch/` prefix): every way to read secrets the node did not name.
 */
export function listsOrWatchesSecrets(r: RecordedRequest): boolean {
  const m = /^\/api\/v1\/(watch\/)?(?:namespaces\/[^/]+\/)?secrets(?:\/([^/]+))?\/?$/.exec(r.path);
  if (!m) return false;
  return m[1] !== undefined || m[2] === undefined || r.watch;
}

export interface PodOptions {
  node?: string;
  namespace?: string;
  images?: string[];
  initImages?: string[];
  ephemeralImages?: string[];
  pullSecrets?: string[];
  serviceAccount?: string;
  annotations?: Record<string, string>;
  phase?: string;
}

export function pod(name: string, o: PodOptions = {}) {
  return {
    metadata: { namespace: o.namespace ?? 'team-a', name, ...(o.annotations ? { annotations: o.annotations } : {}) },
    spec: {
      nodeName: o.node ?? NODE,
      ...(o.serviceAccount ? { serviceAccountName: o.serviceAccount } : {}),
      containers: (o.images ?? ['nginx']).map((image, i) => ({ name: `c${i}`, image })),
      ...(o.initImages ? { initContainers: o.initImages.map((image, i) => ({ name: `i${i}`, image })) } : {}),
      ...(o.ephemeralImages
        ? { ephemeralContainers: o.ephemeralImages.map((image, i) => ({ name: `e${i}`, image })) }
        : {}),
      ...(o.pullSecrets ? { imagePullSecrets: o.pullSecrets.map((name) => ({ name })) } : {}),
    },
    status: { phase: o.phase ?? 'Running' },
  };
}

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

export interface AuthEntry {
  auth?: string;
  username?: string;
  password?: string;
  identitytoken?: string;
  registrytoken?: string;
}

export function basicAuth(username: string, password: string): AuthEntry {
  return { auth: b64(`${username}:${password}`) };
}

export function dockerConfigSecret(namespace: string, name: string, auths: Record<string, AuthEntry>) {
  return {
    metadata: { namespace, name },
    type: 'kubernetes.io/dockerconfigjson',
    data: { '.dockerconfigjson': b64(JSON.stringify({ auths })) },
  };
}

export function dockercfgSecret(namespace: string, name: string, auths: Record<string, AuthEntry>) {
  return {
    metadata: { namespace, name },
    type: 'kubernetes.io/dockercfg',
    data: { '.dockercfg': b64(JSON.stringify(auths)) },
  };
}

export function serviceAccount(namespace: string, name: string, pullSecrets: string[]) {
  return { metadata: { namespace, name }, imagePullSecrets: pullSecrets.map((n) => ({ name: n })) };
}

/** A logger that keeps every line as JSON text, the way pino would write it. */
export function captureLogger(): { logger: KubeLogger; lines: string[] } {
  const lines: string[] = [];
  const at = (level: string) => (obj: object, msg: string) => {
    lines.push(
      JSON.stringify({ level, ...obj, msg }, (_k, v: unknown) =>
        v instanceof Error ? { message: v.message, stack: v.stack } : v,
      ),
    );
  };
  return { logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }, lines };
}

export interface Harness {
  api: FakeApiServer;
  kube: NodeKube;
  lines: string[];
}

interface Teardown {
  teardown(fn: () => unknown): void;
}

export async function startHarness(
  t: Teardown,
  opts: { cacheTtlSeconds?: number; requestTimeoutMs?: number; api?: FakeApiServer } = {},
): Promise<Harness> {
  const api = opts.api ?? (await FakeApiServer.start());
  const { logger, lines } = captureLogger();
  const client = createKubeClient({
    kubeconfig: await writeKubeconfig(api),
    requestTimeoutMs: opts.requestTimeoutMs ?? 2000,
  });
  const kube = startPodCredentials({
    client,
    nodeName: NODE,
    logger,
    informer: { backoff: { initialMs: 20, maxMs: 200 }, watch: { timeoutSeconds: 60, connectTimeoutMs: 2000 } },
    cache: { ttlSeconds: opts.cacheTtlSeconds ?? 30, unreachableSeconds: 1 },
  });
  t.teardown(async () => {
    await kube.stop();
    await api.close();
  });
  return { api, kube, lines };
}

export const names = (refs: readonly { namespace: string; name: string }[]): string[] =>
  refs.map((r) => `${r.namespace}/${r.name}`);
