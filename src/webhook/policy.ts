/**
 * What the webhook rewrites and what it leaves alone. One object built from the configuration and
 * shared by the pod mutator and the MutatingWebhookConfiguration selectors, so the selectors the
 * API server applies and the checks the webhook repeats cannot drift apart.
 */
import { DEFAULT_NODE_IDENTITY_REGISTRIES, type NamespaceMode, type PullPolicy } from '../config/webhook.js';
import { parseHostList, type HostList } from '../oci/host-pattern.js';
import { parseReference } from '../oci/reference.js';

export const IGNORE_LABEL = 'pullthrough.dev/image-caching-policy';
export const IGNORE_LABEL_VALUE = 'ignore';
/** node-setup labels its Node `true` or `false` (src/kube/node-readiness.ts). */
export const NODE_READY_LABEL = 'pullthrough.dev/node-ready';
export const ORIGINAL_IMAGES_ANNOTATION = 'pullthrough.dev/original-images';
export const SKIPPED_IMAGES_ANNOTATION = 'pullthrough.dev/skipped-images';
/** In `--namespaces=labelled` mode, only pods of namespaces carrying this label (value `true`) are rewritten. */
export const ENABLED_NAMESPACE_LABEL = 'pullthrough.dev/enabled';
export const ENABLED_NAMESPACE_LABEL_VALUE = 'true';
/** Namespaces never touched: the webhook's own (its pods must start without it) and kube-system. */
export const ALWAYS_EXCLUDED_NAMESPACES = ['kube-system'] as const;

/**
 * What the webhook knows of a namespace's labels, read from a local cache (admission answers must
 * not wait on the API server). `known: false` says why the namespace cannot be judged.
 */
export type NamespaceLookup =
  | { readonly known: true; readonly labels: Readonly<Record<string, string>> }
  | { readonly known: false; readonly reason: string };

export interface NamespaceDirectory {
  lookup(name: string): NamespaceLookup;
}

/** Nodes node-setup reported it cannot serve (src/kube's NotReadyNodes). */
export interface NodeReadinessDirectory {
  isNotReady(nodeName: string): boolean;
}

export interface RewritePolicy {
  /** host:port the rewritten images point at (containerd on every node resolves it to its proxy). */
  readonly proxyHost: string;
  /** Namespaces left alone, the webhook's own and kube-system included. */
  readonly excludedNamespaces: ReadonlySet<string>;
  /** An image matching any of these is left alone. */
  readonly ignoreImages: readonly RegExp[];
  /** When not empty, only images matching one of these are rewritten. */
  readonly acceptImages: readonly RegExp[];
  /** Containers with one of these pull policies are left alone. */
  readonly skipPullPolicies: ReadonlySet<PullPolicy>;
  /**
   * Registries the kubelet authenticates with the node's identity (credential provider plugins,
   * no imagePullSecrets): a rewritten image of theirs reaches a proxy that holds no credential for
   * it, so they are left alone unless the proxy runs those plugins too. One list per pattern, so
   * the reason names the pattern that matched.
   */
  readonly nodeIdentityRegistries: readonly HostList[];
  /**
   * Set in `--namespaces=labelled` mode: only pods of namespaces labelled
   * ENABLED_NAMESPACE_LABEL=true are rewritten, and a namespace it cannot judge is left alone.
   */
  readonly optInNamespaces?: NamespaceDirectory;
  /** A pod already bound to a node listed here (spec.nodeName set at admission) is left alone. */
  readonly nodeReadiness?: NodeReadinessDirectory;
}

export interface RewritePolicyInput {
  proxyHost: string;
  ownNamespace: string;
  excludeNamespaces?: readonly string[];
  ignoreImages?: readonly string[];
  acceptImages?: readonly string[];
  skipPullPolicies?: readonly PullPolicy[];
  /** Unset: DEFAULT_NODE_IDENTITY_REGISTRIES; empty: none is left alone for this reason. */
  nodeIdentityRegistries?: readonly string[];
  /** `labelled` needs `namespaceDirectory`. Default `all`. */
  namespaces?: NamespaceMode;
  namespaceDirectory?: NamespaceDirectory;
  nodeReadiness?: NodeReadinessDirectory;
}

export function compileRegexes(patterns: readonly string[], flag: string): RegExp[] {
  return patterns.map((p) => {
    try {
      return new RegExp(p);
    } catch (err) {
      throw new Error(`${flag}: invalid regular expression ${JSON.stringify(p)}: ${(err as Error).message}`);
    }
  });
}

export function createRewritePolicy(input: RewritePolicyInput): RewritePolicy {
  if (input.namespaces === 'labelled' && !input.namespaceDirectory) {
    throw new Error('--namespaces=labelled needs a view of the namespaces (a Kubernetes API client)');
  }
  return {
    proxyHost: input.proxyHost,
    excludedNamespaces: new Set([
      input.ownNamespace,
      ...ALWAYS_EXCLUDED_NAMESPACES,
      ...(input.excludeNamespaces ?? []),
    ]),
    ignoreImages: compileRegexes(input.ignoreImages ?? [], '--ignore-images'),
    acceptImages: compileRegexes(input.acceptImages ?? [], '--accept-images'),
    skipPullPolicies: new Set(input.skipPullPolicies ?? []),
    nodeIdentityRegistries: (input.nodeIdentityRegistries ?? DEFAULT_NODE_IDENTITY_REGISTRIES)
      .map((p) => parseHostList([p]))
      .filter((l) => l.patterns.length > 0),
    ...(input.namespaces === 'labelled' && input.namespaceDirectory
      ? { optInNamespaces: input.namespaceDirectory }
      : {}),
    ...(input.nodeReadiness ? { nodeReadiness: input.nodeReadiness } : {}),
  };
}

/**
 * Why a namespace is left alone in `--namespaces=labelled` mode, if it is: not labelled, or not
 * known to the webhook (never listed, or created after the last event it saw), which fails safe.
 */
export function optInReason(
  namespace: string,
  policy: RewritePolicy,
): { reason: string; kind: 'namespace-not-enabled' | 'namespace-unknown' } | undefined {
  const directory = policy.optInNamespaces;
  if (!directory) return undefined;
  const found = directory.lookup(namespace);
  if (!found.known)
    return { reason: `namespace ${namespace} cannot be looked up: ${found.reason}`, kind: 'namespace-unknown' };
  if (found.labels[ENABLED_NAMESPACE_LABEL] === ENABLED_NAMESPACE_LABEL_VALUE) return undefined;
  return {
    reason:
      `namespace ${namespace} is not labelled ${ENABLED_NAMESPACE_LABEL}=${ENABLED_NAMESPACE_LABEL_VALUE} ` +
      '(--namespaces=labelled)',
    kind: 'namespace-not-enabled',
  };
}

/**
 * Why an image is left alone because the kubelet pulls it with the node's own identity, if it is.
 * Asked only of images that would otherwise be rewritten, so the reference parses.
 */
export function nodeIdentityReason(image: string, policy: RewritePolicy): string | undefined {
  let registry: string;
  try {
    registry = parseReference(image).registry;
  } catch {
    return undefined;
  }
  const hit = policy.nodeIdentityRegistries.find((l) => l.matches(registry));
  if (!hit) return undefined;
  return (
    `registry ${registry} matches --node-identity-registries ${hit.patterns.join(',')}: the kubelet ` +
    'authenticates it with the node identity (a credential provider), which the proxy does not hold'
  );
}
