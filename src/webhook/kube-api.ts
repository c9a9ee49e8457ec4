/**
 * What the certificate bootstrap needs from the Kubernetes API, and nothing more. Objects have
 * the API's own JSON shape (the client library's V1Secret and V1MutatingWebhookConfiguration fit),
 * so an adapter passes bodies through. src/kube implements it; tests use an in-memory one and one
 * speaking to the fake API server.
 *
 * Errors: a rejected create (the Secret exists) or replace (stale resourceVersion) must throw an
 * error whose `code`, `statusCode` or `status` is 409, as the API server answers; a missing
 * object on read is `undefined`, not an error.
 */
export interface SecretObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string> };
  type?: string;
  /** Values base64-encoded. */
  data?: Record<string, string>;
}

export interface WebhookConfigurationObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; resourceVersion?: string };
  webhooks?: {
    name: string;
    clientConfig?: { caBundle?: string; [field: string]: unknown };
    namespaceSelector?: unknown;
    objectSelector?: unknown;
    [field: string]: unknown;
  }[];
}

export interface JsonPatchOperation {
  op: 'add' | 'replace' | 'test' | 'remove';
  path: string;
  value?: unknown;
}

export interface WebhookKubeApi {
  /** GET /api/v1/namespaces/{ns}/secrets/{name} */
  readSecret(namespace: string, name: string): Promise<SecretObject | undefined>;
  /** POST /api/v1/namespaces/{ns}/secrets */
  createSecret(namespace: string, secret: SecretObject): Promise<void>;
  /** PUT /api/v1/namespaces/{ns}/secrets/{name}, metadata.resourceVersion set: a concurrent writer gets 409. */
  replaceSecret(namespace: string, name: string, secret: SecretObject): Promise<void>;
  /** GET /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name} */
  readMutatingWebhookConfiguration(name: string): Promise<WebhookConfigurationObject | undefined>;
  /** PATCH the same path, Content-Type application/json-patch+json. */
  patchMutatingWebhookConfiguration(name: string, ops: JsonPatchOperation[]): Promise<void>;
}

export function isConflict(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const e = err as { statusCode?: unknown; status?: unknown; code?: unknown };
  return e.statusCode === 409 || e.status === 409 || e.code === 409;
}
