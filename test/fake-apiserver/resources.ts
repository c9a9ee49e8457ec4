/**
 * The resources the fake API server knows, and how a URL path maps onto them. Only what
 * pullthrough talks to: pods, secrets, serviceaccounts and events (core/v1, namespaced), events
 * (events.k8s.io/v1), leases (coordination.k8s.io/v1), mutatingwebhookconfigurations
 * (admissionregistration.k8s.io/v1, cluster-scoped) and the cachedimages custom resource
 * (pullthrough.dev/v1alpha1, cluster-scoped, with a status subresource) and namespaces (core/v1,
 * cluster-scoped; `/api/v1/namespaces/{name}` reads one) and nodes (core/v1, cluster-scoped).
 */
export interface ResourceType {
  /** Plural, as in the URL. */
  readonly resource: string;
  readonly kind: string;
  readonly apiVersion: string;
  readonly namespaced: boolean;
  /**
   * Status is written only through `/status` (as for a CRD with `subresources.status`): writes to
   * the object keep the stored status, writes to `/status` keep everything else, and
   * `metadata.generation` counts changes to everything but metadata and status.
   */
  readonly statusSubresource?: boolean;
}

export const RESOURCES: readonly ResourceType[] = [
  { resource: 'pods', kind: 'Pod', apiVersion: 'v1', namespaced: true },
  { resource: 'secrets', kind: 'Secret', apiVersion: 'v1', namespaced: true },
  { resource: 'serviceaccounts', kind: 'ServiceAccount', apiVersion: 'v1', namespaced: true },
  { resource: 'events', kind: 'Event', apiVersion: 'v1', namespaced: true },
  { resource: 'events', kind: 'Event', apiVersion: 'events.k8s.io/v1', namespaced: true },
  { resource: 'leases', kind: 'Lease', apiVersion: 'coordination.k8s.io/v1', namespaced: true },
  {
    resource: 'cachedimages',
    kind: 'CachedImage',
    apiVersion: 'pullthrough.dev/v1alpha1',
    namespaced: false,
    statusSubresource: true,
  },
  { resource: 'namespaces', kind: 'Namespace', apiVersion: 'v1', namespaced: false },
  { resource: 'nodes', kind: 'Node', apiVersion: 'v1', namespaced: false },
  {
    resource: 'mutatingwebhookconfigurations',
    kind: 'MutatingWebhookConfiguration',
    apiVersion: 'admissionregistration.k8s.io/v1',
    namespaced: false,
  },
];

/** By kind or plural; `Event` is the core/v1 one (the first listed). */
export function resourceByKind(kind: string): ResourceType | undefined {
  return RESOURCES.find((r) => r.kind === kind || r.resource === kind);
}

export interface ParsedPath {
  readonly type: ResourceType;
  /** Undefined for a cluster-wide list/watch of a namespaced resource, or a cluster-scoped one. */
  readonly namespace?: string;
  readonly name?: string;
  /** `status` for `.../{name}/status` of a type with a status subresource. */
  readonly subresource?: 'status';
}

/**
 * `/api/v1[/namespaces/{ns}]/{resource}[/{name}[/status]]` and
 * `/apis/{group}/{version}[/namespaces/{ns}]/{resource}[/{name}[/status]]`.
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
  const [resource, name, sub, ...more] = rest;
  if (resource === undefined || more.length > 0) return undefined;
  const type = RESOURCES.find((r) => r.resource === resource && r.apiVersion === apiVersion);
  if (!type) return undefined;
  if (sub !== undefined && (sub !== 'status' || type.statusSubresource !== true)) return undefined;
  if (namespace !== undefined && !type.namespaced) return undefined;
  // A namespaced resource read by name needs its namespace.
  if (name !== undefined && type.namespaced && namespace === undefined) return undefined;
  return {
    type,
    ...(namespace !== undefined ? { namespace } : {}),
    ...(name !== undefined ? { name } : {}),
    ...(sub !== undefined ? { subresource: 'status' as const } : {}),
  };
}
