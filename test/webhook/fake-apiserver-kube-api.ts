/**
 * WebhookKubeApi over the fake API server's REST API with plain fetch: the same requests the
 * kube-backed adapter in src/kube must make.
 */
import type {
  JsonPatchOperation,
  SecretObject,
  WebhookConfigurationObject,
  WebhookKubeApi,
} from '../../src/webhook/kube-api.js';

class HttpError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

export function restKubeApi(base: string): WebhookKubeApi {
  async function call<T>(
    method: string,
    path: string,
    body?: unknown,
    contentType = 'application/json',
  ): Promise<T | undefined> {
    const res = await fetch(base + path, {
      method,
      headers: body === undefined ? {} : { 'content-type': contentType },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    if (method === 'GET' && res.status === 404) return undefined;
    if (!res.ok) throw new HttpError(res.status, `${method} ${path}: ${res.status} ${await res.text()}`);
    return (await res.json()) as T;
  }
  const mwc = (name: string) => `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${name}`;
  return {
    readSecret: (ns, name) => call<SecretObject>('GET', `/api/v1/namespaces/${ns}/secrets/${name}`),
    createSecret: async (ns, s) => {
      await call('POST', `/api/v1/namespaces/${ns}/secrets`, s);
    },
    replaceSecret: async (ns, name, s) => {
      await call('PUT', `/api/v1/namespaces/${ns}/secrets/${name}`, s);
    },
    readMutatingWebhookConfiguration: (name) => call<WebhookConfigurationObject>('GET', mwc(name)),
    patchMutatingWebhookConfiguration: async (name, ops: JsonPatchOperation[]) => {
      await call('PATCH', mwc(name), ops, 'application/json-patch+json');
    },
  };
}
