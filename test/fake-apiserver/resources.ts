/**
 * The resources the fake API server knows, and how a URL path maps onto them. Only what
 * pullthrough talks to: pods, secrets and serviceaccounts (core/v1, namespaced) and
 * mutatingwebhookconfigurations (admissionregistration.k8s.io/v1, cluster-scoped).
 */
export interface ResourceType {
  /** Plural, as in the URL. */
  readonly resource: string;
  readonly kind: string;
  readonly apiVersion: string;
  readonly namespaced: boolean;
}

export const RESOURCES: readonly ResourceType[] = [
  { resource: 'pods', kind: 'Pod', apiVersion: 'v1', namespaced: true },
  { resource: 'secrets', kind: 'Secret', apiVersion: 'v1', namespaced: true },
  { resource: 'serviceaccounts', kind: 'ServiceAccount', apiVersion: 'v1', namespaced: true },
  {
    resource: 'mutatingwebhookconfigurations',
    kind: 'MutatingWebhookConfiguration',
    apiVersion: 'admissionregistration.k8s.io/v1',
    namespaced: false,
  },
];

export function resourceByKind(kind: string): ResourceType | undefined {
  return RESOURCES.find((r) => r.kind === kind || r.resource === kind);
}

export interface ParsedPath {
  readonly type: ResourceType;
  /** Undefined for a cluster-wide list/watch of a namespaced resource, or a cluster-scoped one. */
  readonly namespace?: string;
  readonly name?: string;
}

/**
 * `/api/v1[/namespaces/{ns}]/{resource}[/{name}]` and
 * `/apis/{group}/{version}[/namespaces/{ns}]/{resource}[/{name}]`.
 */
export function parsePath(pathname: string): ParsedPath | undefined {
  const parts = pathname
    .split('/')
    .filter((p) => p !== '')
    .map(decodeURIComponent);
  let apiVersion: string;
  let rest: string[];
  if (parts[0] === 'api' && parts[1] === 'v1') {
    apiVersion = 'v1';
    rest = parts.slice(2);
  } else if (parts[0] === 'apis' && parts.length >= 3) {
    apiVersion = `${parts[1]}/${parts[2]}`;
    rest = parts.slice(3);
  } else {
    return undefined;
  }
  let namespace: string | undefined;
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  const [resource, name, ...more] = rest;
  if (resource === undefined || more.length > 0) return undefined;
  const type = RESOURCES.find((r) => r.resource === resource && r.apiVersion === apiVersion);
  if (!type) return undefined;
  if (namespace !== undefined && !type.namespaced) return undefined;
  // A namespaced resource read by name needs its namespace.
  if (name !== undefined && type.namespaced && namespace === undefined) return undefined;
  return { type, ...(namespace !== undefined ? { namespace } : {}), ...(name !== undefined ? { name } : {}) };
}
